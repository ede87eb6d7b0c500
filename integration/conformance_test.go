package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	_ "github.com/cachedpq/cachedpq"
)

// drivers are run through the same conformance suite: cachedpq with nothing
// registered must behave exactly like lib/pq.
var drivers = []string{"postgres", "cachedpq"}

// transcript records what a scenario observed, so the two drivers' runs can
// be compared as a whole.
type transcript []string

func (tr *transcript) add(format string, args ...any) {
	*tr = append(*tr, fmt.Sprintf(format, args...))
}

// conformance runs scenario once per driver, each in a fresh schema, and
// requires the two transcripts to be identical and non-empty.
func conformance(t *testing.T, scenario func(t *testing.T, db *sqlx.DB, tr *transcript)) {
	t.Helper()
	var got [2]transcript
	for i, name := range drivers {
		t.Run(name, func(t *testing.T) {
			db := openSchema(t, name)
			scenario(t, db, &got[i])
		})
	}
	if len(got[0]) == 0 {
		t.Fatal("scenario recorded nothing")
	}
	if !reflect.DeepEqual(got[0], got[1]) {
		t.Errorf("transcripts differ\npostgres: %q\ncachedpq: %q", got[0], got[1])
	}
}

func TestQueryAndExec(t *testing.T) {
	conformance(t, func(t *testing.T, db *sqlx.DB, tr *transcript) {
		mustExec(t, db, `create table items (id int8 primary key, name text, price numeric(10,2), tags text[], seen timestamptz)`)
		res, err := db.Exec(`insert into items values (1,'a',1.50,'{x,y}','2024-01-02 03:04:05+00'), (2,'b',null,null,null)`)
		if err != nil {
			t.Fatal(err)
		}
		n, err := res.RowsAffected()
		tr.add("insert affected %d %v", n, err)
		if n != 2 {
			t.Fatalf("RowsAffected = %d, want 2", n)
		}
		_, err = res.LastInsertId()
		tr.add("LastInsertId err %v", err != nil)

		rows, err := db.Query(`select id, name, price, tags, seen from items order by id`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var (
				id    int64
				name  sql.NullString
				price sql.NullString
				tags  pq.StringArray
				seen  sql.NullTime
			)
			if err := rows.Scan(&id, &name, &price, &tags, &seen); err != nil {
				t.Fatal(err)
			}
			tr.add("row %d %v %v %q %v", id, name, price, tags, seen.Time.UTC())
		}
		tr.add("rows err %v close %v", rows.Err(), rows.Close())

		var name string
		err = db.QueryRow(`select name from items where id = $1`, 1).Scan(&name)
		tr.add("queryrow %q %v", name, err)
		err = db.QueryRow(`select name from items where id = $1`, 99).Scan(&name)
		tr.add("queryrow missing %v", errors.Is(err, sql.ErrNoRows))
		if !errors.Is(err, sql.ErrNoRows) {
			t.Fatalf("missing row: %v", err)
		}

		res, err = db.Exec(`update items set name = $1 where id > $2`, "z", 0)
		n, _ = res.RowsAffected()
		tr.add("update %d %v", n, err)
		res, err = db.Exec(`delete from items where id = 2`)
		n, _ = res.RowsAffected()
		tr.add("delete %d %v", n, err)
	})
}

func TestPreparedStatements(t *testing.T) {
	conformance(t, func(t *testing.T, db *sqlx.DB, tr *transcript) {
		mustExec(t, db, `create table kv (k text primary key, v int4)`)
		ins, err := db.Prepare(`insert into kv values ($1, $2)`)
		if err != nil {
			t.Fatal(err)
		}
		defer ins.Close()
		for i := range 5 {
			res, err := ins.Exec(fmt.Sprintf("k%d", i), i*10)
			n, _ := res.RowsAffected()
			tr.add("exec %d %d %v", i, n, err)
		}
		sel, err := db.Prepare(`select v from kv where k = $1`)
		if err != nil {
			t.Fatal(err)
		}
		defer sel.Close()
		for _, k := range []string{"k1", "k4", "nope"} {
			var v int
			err := sel.QueryRow(k).Scan(&v)
			tr.add("get %s %d %v", k, v, err)
		}
		_, err = ins.Exec("k1", 1)
		var pqErr *pq.Error
		tr.add("duplicate %v %s", errors.As(err, &pqErr), pqErrCode(err))
		if pqErrCode(err) != "23505" {
			t.Fatalf("duplicate insert: %v", err)
		}
	})
}

func TestTransactions(t *testing.T) {
	conformance(t, func(t *testing.T, db *sqlx.DB, tr *transcript) {
		mustExec(t, db, `create table acct (id int primary key, bal int)`)
		mustExec(t, db, `insert into acct values (1, 100)`)
		ctx := context.Background()

		tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
		if err != nil {
			t.Fatal(err)
		}
		var level string
		tx.QueryRow(`show transaction_isolation`).Scan(&level)
		tr.add("isolation %s", level)
		tx.Exec(`update acct set bal = 50 where id = 1`)
		tr.add("rollback %v", tx.Rollback())
		tr.add("after rollback %d", balance(t, db))

		tx, err = db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		tx.QueryRow(`show transaction_isolation`).Scan(&level)
		var ro string
		tx.QueryRow(`show transaction_read_only`).Scan(&ro)
		_, err = tx.Exec(`update acct set bal = 1`)
		tr.add("read only %s %s %s", level, ro, pqErrCode(err))
		tx.Rollback()

		tx, _ = db.Begin()
		tx.Exec(`update acct set bal = 75 where id = 1`)
		tr.add("commit %v", tx.Commit())
		tr.add("after commit %d", balance(t, db))
		if balance(t, db) != 75 {
			t.Fatal("commit lost")
		}
	})
}

func TestColumnTypes(t *testing.T) {
	conformance(t, func(t *testing.T, db *sqlx.DB, tr *transcript) {
		rows, err := db.Query(`select 1::int2 a, 2::int4 b, 3::int8 c, 1.5::float4 d, 2.5::float8 e,
			12.34::numeric(6,2) f, 'x'::text g, 'y'::varchar(12) h, 'z'::char(3) i, true j,
			'\x01'::bytea k, now() l, current_date m, '{1,2}'::int[] n, null::uuid o, '{}'::jsonb p`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cts, err := rows.ColumnTypes()
		if err != nil {
			t.Fatal(err)
		}
		for _, ct := range cts {
			l, lok := ct.Length()
			p, s, dok := ct.DecimalSize()
			nl, nok := ct.Nullable()
			tr.add("%s %s %v %d/%v %d.%d/%v %v/%v", ct.Name(), ct.DatabaseTypeName(), ct.ScanType(), l, lok, p, s, dok, nl, nok)
		}
		if len(cts) != 16 || cts[5].DatabaseTypeName() != "NUMERIC" {
			t.Fatalf("unexpected column types: %v", *tr)
		}
	})
}

func TestArraysAndArguments(t *testing.T) {
	conformance(t, func(t *testing.T, db *sqlx.DB, tr *transcript) {
		mustExec(t, db, `create table nums (n int8)`)
		mustExec(t, db, `insert into nums select generate_series(1, 10)`)
		var got []int64
		err := db.Select(&got, `select n from nums where n = any($1) order by n`, []int64{2, 4, 6})
		tr.add("[]int64 arg %v %v", got, err)
		if len(got) != 3 {
			t.Fatalf("[]int64 argument: %v %v", got, err)
		}
		var arr pq.Int64Array
		err = db.QueryRow(`select array_agg(n order by n) from nums where n < $1`, 4).Scan(&arr)
		tr.add("pq.Array scan %v %v", arr, err)
		var n int
		err = db.QueryRow(`select count(*) from nums where n = any($1)`, pq.Array([]string{"1", "3"})).Scan(&n)
		tr.add("pq.Array arg %d %v", n, err)
		var null sql.NullInt64
		err = db.QueryRow(`select null::int8`).Scan(&null)
		tr.add("null %v %v", null, err)
		var u uint64
		err = db.QueryRow(`select $1::int8`, uint64(7)).Scan(&u)
		tr.add("uint64 %d %v", u, err)
	})
}

func TestCopyIn(t *testing.T) {
	conformance(t, func(t *testing.T, db *sqlx.DB, tr *transcript) {
		mustExec(t, db, `create table bulk (id int, name text)`)
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		st, err := tx.Prepare(pq.CopyIn("bulk", "id", "name"))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			if _, err := st.Exec(i, fmt.Sprintf("n%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		res, err := st.Exec()
		if err != nil {
			t.Fatal(err)
		}
		n, _ := res.RowsAffected()
		tr.add("copy flushed %d close %v commit %v", n, st.Close(), tx.Commit())
		var count int
		db.QueryRow(`select count(*) from bulk`).Scan(&count)
		tr.add("count %d", count)
		if count != 100 {
			t.Fatalf("copied %d rows, want 100", count)
		}
	})
}

func TestErrors(t *testing.T) {
	conformance(t, func(t *testing.T, db *sqlx.DB, tr *transcript) {
		_, err := db.Exec(`select * from no_such_table`)
		var pqErr *pq.Error
		tr.add("exec err %v %s %s", errors.As(err, &pqErr), pqErrCode(err), err)
		_, err = db.Query(`selec 1`)
		tr.add("query err %s %s", pqErrCode(err), err)
		err = db.QueryRow(`select 1/0`).Scan(new(int))
		tr.add("row err %s", pqErrCode(err))
		if pqErrCode(err) != "22012" {
			t.Fatalf("division by zero: %v", err)
		}
	})
}

func TestCancellation(t *testing.T) {
	conformance(t, func(t *testing.T, db *sqlx.DB, tr *transcript) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := db.ExecContext(ctx, `select pg_sleep(10)`)
		tr.add("cancelled %v %v", err != nil, time.Since(start) < 5*time.Second)
		if err == nil {
			t.Fatal("pg_sleep was not cancelled")
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel2()
		rows, err := db.QueryContext(ctx2, `select pg_sleep(10)`)
		if err == nil {
			for rows.Next() {
			}
			err = rows.Err()
			rows.Close()
		}
		tr.add("query cancelled %v", err != nil)
		var one int
		err = db.QueryRow(`select 1`).Scan(&one)
		tr.add("usable after cancel %d %v", one, err)
	})
}

func TestPoolReuse(t *testing.T) {
	conformance(t, func(t *testing.T, db *sqlx.DB, tr *transcript) {
		db.SetMaxOpenConns(2)
		var pids = map[int]bool{}
		for range 20 {
			var pid int
			if err := db.QueryRow(`select pg_backend_pid()`).Scan(&pid); err != nil {
				t.Fatal(err)
			}
			pids[pid] = true
		}
		tr.add("connections used <= 2: %v", len(pids) <= 2)
		if err := db.Ping(); err != nil {
			t.Fatal(err)
		}
		tr.add("stats open <= 2: %v", db.Stats().OpenConnections <= 2)
	})
}

func TestSqlx(t *testing.T) {
	type item struct {
		ID   int64  `db:"id"`
		Name string `db:"name"`
	}
	conformance(t, func(t *testing.T, db *sqlx.DB, tr *transcript) {
		mustExec(t, db, `create table people (id int8 primary key, name text)`)
		res, err := db.NamedExec(`insert into people (id, name) values (:id, :name)`,
			[]item{{1, "ann"}, {2, "bob"}, {3, "cy"}})
		if err != nil {
			t.Fatal(err)
		}
		n, _ := res.RowsAffected()
		tr.add("named insert %d", n)
		var one item
		err = db.Get(&one, db.Rebind(`select id, name from people where id = ?`), 2)
		tr.add("get %+v %v", one, err)
		q, args, err := sqlx.In(`select id, name from people where id in (?) order by id`, []int64{1, 3})
		if err != nil {
			t.Fatal(err)
		}
		var some []item
		err = db.Select(&some, db.Rebind(q), args...)
		tr.add("in %+v %v", some, err)
		if len(some) != 2 || one.Name != "bob" {
			t.Fatalf("sqlx results: %+v %+v", one, some)
		}
		tr.add("bindtype %d", sqlx.BindType(db.DriverName()))
	})
}

func balance(t *testing.T, db *sqlx.DB) int {
	t.Helper()
	var b int
	if err := db.QueryRow(`select bal from acct where id = 1`).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

func pqErrCode(err error) string {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return string(pqErr.Code)
	}
	if err != nil {
		return "non-pq: " + strings.SplitN(err.Error(), ":", 2)[0]
	}
	return ""
}
