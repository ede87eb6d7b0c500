package cachedpq

import (
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
)

// TestPreparedLoads: with Options.Prepare, a registered read's miss runs
// as a statement its connection prepared once. A statement dropped behind
// the driver's back, or made stale by a change of its table's columns,
// is run unprepared and prepared anew: the reader sees no error. Reads in
// a transaction, and loads without Prepare, prepare nothing.
func TestPreparedLoads(t *testing.T) {
	eachStore(t, func(t *testing.T, rdb redis.UniversalClient) {
		db, c, _ := engineDB(t, rdb)
		c.opts.Prepare = true
		db.SetMaxOpenConns(1) // one session, whose statements pg_prepared_statements lists
		const q = `select v from kv where k = $1`
		const star = `select * from kv where k = $1`
		must(t, c.opts.Registry.Register(q, Policy{TTL: time.Hour}))
		must(t, c.opts.Registry.Register(star, Policy{TTL: time.Hour}))
		prepared := func(query string) int {
			t.Helper()
			var n int
			must(t, db.QueryRow(`select count(*) from pg_prepared_statements where statement = $1`, query).Scan(&n))
			return n
		}
		read := func(k int) {
			t.Helper()
			if got, want := getV(t, db, k), "v"+strconv.Itoa(k); got != want {
				t.Fatalf("k %d: %q, want %q", k, got, want)
			}
			c.eng.bg.Wait()
		}

		for k := 1; k <= 3; k++ {
			read(k)
		}
		if n, s := prepared(q), c.Stats(); n != 1 || s.Misses != 3 {
			t.Fatalf("3 misses: %d statements prepared, %+v", n, s.Counters)
		}
		read(1) // a hit runs nothing
		if s := c.Stats(); s.Hits != 1 {
			t.Fatalf("no hit: %+v", s.Counters)
		}

		_, err := db.Exec(`deallocate all`)
		must(t, err)
		read(4) // the statement is gone: run unprepared
		if n := prepared(q); n != 0 {
			t.Fatalf("after DEALLOCATE ALL and a miss: %d statements", n)
		}
		read(5)
		if n := prepared(q); n != 1 {
			t.Fatalf("not prepared anew: %d statements", n)
		}

		cols := func(k int) []string {
			t.Helper()
			rows, err := db.Query(star, k)
			must(t, err)
			defer rows.Close()
			names, err := rows.Columns()
			must(t, err)
			for rows.Next() {
			}
			must(t, rows.Err())
			c.eng.bg.Wait()
			return names
		}
		cols(6)
		if n := prepared(star); n != 1 {
			t.Fatalf("select * not prepared: %d", n)
		}
		_, err = db.Exec(`alter table kv add column extra int default 7`)
		must(t, err)
		// The prepared statement's result type is stale ("cached plan must
		// not change result type"): it runs unprepared, with the new column.
		if got := cols(7); len(got) != 3 || got[2] != "extra" {
			t.Fatalf("after a new column: %v", got)
		}

		tx, err := db.Begin()
		must(t, err)
		var v string
		must(t, tx.QueryRow(q, 8).Scan(&v))
		must(t, tx.Commit())
		if n := prepared(q); v != "v8" || n != 1 {
			t.Fatalf("in a transaction: %q, %d statements", v, n)
		}

		// Errors of a prepared statement are Postgres's, as without it.
		const gone = `select v from gone where k = $1`
		_, err = db.Exec(`create table gone (k int, v text)`)
		must(t, err)
		must(t, c.opts.Registry.Register(gone, Policy{TTL: time.Hour}))
		if err := db.QueryRow(gone, 1).Scan(&v); err != sql.ErrNoRows {
			t.Fatal(err)
		}
		if n := prepared(gone); n != 1 {
			t.Fatalf("%d statements for gone", n)
		}
		_, err = db.Exec(`drop table gone`)
		must(t, err)
		var pqErr *pq.Error
		if err := db.QueryRow(gone, 2).Scan(&v); !errors.As(err, &pqErr) || pqErr.Code != "42P01" {
			t.Fatalf("a read of a dropped table: %v", err)
		}
	})
}

// TestLoadsAreNotPreparedByDefault: without Options.Prepare a miss leaves
// no statement in its session.
func TestLoadsAreNotPreparedByDefault(t *testing.T) {
	db, c, _ := engineDB(t, nil)
	db.SetMaxOpenConns(1)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	getV(t, db, 1)
	var n int
	must(t, db.QueryRow(`select count(*) from pg_prepared_statements`).Scan(&n))
	if n != 0 || c.Stats().Misses != 1 {
		t.Fatalf("%d statements prepared, %+v", n, c.Stats().Counters)
	}
}

// TestPrepareFromDSN: cache_prepare=true in the DSN sets Options.Prepare.
func TestPrepareFromDSN(t *testing.T) {
	for dsn, want := range map[string]bool{
		"dbname=d cache_prepare=true":  true,
		"dbname=d cache_prepare=false": false,
		"dbname=d":                     false,
	} {
		c, err := NewConnector(dsn, Options{})
		must(t, err)
		if c.opts.Prepare != want {
			t.Errorf("%q: Prepare %v", dsn, c.opts.Prepare)
		}
		c.Close()
	}
}

// TestPreparedLoadsMatchLibPQ: a prepared load's rows and column types
// are lib/pq's, for the first load (which prepares) and later ones.
func TestPreparedLoadsMatchLibPQ(t *testing.T) {
	db, c, raw := engineDB(t, nil)
	c.opts.Prepare = true
	db.SetMaxOpenConns(1)
	const q = `select $1::int8 + k, $2::text || v, '2024-02-29 12:34:56.123456+05:30'::timestamptz,
		'\x00ff'::bytea, 1.5::numeric(4,2), '{1,2}'::int[], 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid,
		'{"a":1}'::jsonb, k > 1, 1.1::float4, null::text, '12:34'::time from kv where k <= $1 order by k`
	must(t, c.opts.Registry.Register(q, Policy{TTL: time.Hour}))
	describe := func(db *sql.DB, args ...any) string {
		t.Helper()
		rows, err := db.Query(q, args...)
		must(t, err)
		defer rows.Close()
		cts, err := rows.ColumnTypes()
		must(t, err)
		var b strings.Builder
		for _, ct := range cts {
			l, lok := ct.Length()
			p, s, dok := ct.DecimalSize()
			fmt.Fprintln(&b, ct.Name(), ct.DatabaseTypeName(), ct.ScanType(), l, lok, p, s, dok)
		}
		vals := make([]any, len(cts))
		ptrs := make([]any, len(cts))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			must(t, rows.Scan(ptrs...))
			for _, v := range vals {
				fmt.Fprintf(&b, "%T %#v|", v, v)
			}
			b.WriteString("\n")
		}
		must(t, rows.Err())
		return b.String()
	}
	for i, args := range [][]any{{2, "a"}, {3, "b"}, {1, "c"}} {
		want := describe(raw, args...)
		if got := describe(db, args...); got != want {
			t.Fatalf("load %d differs\nlib/pq:\n%s\nprepared:\n%s", i, want, got)
		}
		c.eng.bg.Wait()
	}
	if s := c.Stats(); s.Misses != 3 {
		t.Fatalf("not 3 loads: %+v", s.Counters)
	}
	var n int
	must(t, db.QueryRow(`select count(*) from pg_prepared_statements where statement = $1`, q).Scan(&n))
	if n != 1 {
		t.Fatalf("%d statements prepared", n)
	}
}

// TestPreparedLoadsReachTheDatabase: with Options.Prepare, the first load
// of a registered read prepares its statement and runs it; later loads
// run it only; a hit reaches nothing.
func TestPreparedLoadsReachTheDatabase(t *testing.T) {
	reg := NewRegistry()
	const q = `select name from users where id = $1`
	must(t, reg.Register(q, Policy{TTL: time.Hour}))
	db, mock := mockDBWith(t, Options{Registry: reg, Prepare: true})
	prep := mock.ExpectPrepare(q)
	prep.ExpectQuery().WithArgs(int64(1)).WillReturnRows(sqlmock.NewRows([]string{"name"}).AddRow("ann"))
	prep.ExpectQuery().WithArgs(int64(2)).WillReturnRows(sqlmock.NewRows([]string{"name"}).AddRow("bob"))
	for _, read := range []struct {
		id   int
		want string
	}{{1, "ann"}, {2, "bob"}, {1, "ann"}} {
		var name string
		if err := db.QueryRow(q, read.id).Scan(&name); err != nil || name != read.want {
			t.Fatalf("id %d: %q %v", read.id, name, err)
		}
	}
}
