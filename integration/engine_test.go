package integration

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq"
)

// cacheEnv is one cached DB under test with a raw lib/pq DB on the same
// schema to compare against.
type cacheEnv struct {
	db     *sqlx.DB // through cachedpq
	raw    *sqlx.DB // through lib/pq
	conn   *cachedpq.Connector
	reg    *cachedpq.Registry
	rdb    redis.UniversalClient // nil for the in-process store
	prefix string
	schema string
}

var prefixSeq atomic.Int64

// stores lists the cache backends every engine test runs against.
var stores = []string{"memory", "redis"}

// newEnv opens a cached DB in a fresh schema, on the in-process store or
// on the test Redis under a fresh prefix.
func newEnv(t *testing.T, store string) *cacheEnv {
	t.Helper()
	var rdb redis.UniversalClient
	if store == "redis" {
		rdb = newRedis(t)
	}
	return newEnvWith(t, rdb)
}

func newEnvWith(t *testing.T, rdb redis.UniversalClient) *cacheEnv {
	t.Helper()
	schema := newSchema(t)
	return newEnvDSN(t, rdb, schema, baseDSN()+" search_path="+schema)
}

// newEnvDSN opens a cached DB and a raw one on dsn, whose search_path
// starts with schema; each of set changes the Options first.
func newEnvDSN(t *testing.T, rdb redis.UniversalClient, schema, dsn string, set ...func(*cachedpq.Options)) *cacheEnv {
	t.Helper()
	env := &cacheEnv{
		reg:    cachedpq.NewRegistry(),
		rdb:    rdb,
		prefix: fmt.Sprintf("cpqtest%d_%d", time.Now().UnixNano()%1e9, prefixSeq.Add(1)),
		schema: schema,
	}
	opts := cachedpq.Options{Redis: rdb, Prefix: env.prefix, Registry: env.reg, Timeout: time.Second}
	for _, f := range set {
		f(&opts)
	}
	conn, err := cachedpq.NewConnector(dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	env.conn = conn
	env.db = sqlx.NewDb(sql.OpenDB(conn), "cachedpq")
	raw, err := sqlx.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	env.raw = raw
	t.Cleanup(func() {
		env.db.Close()
		raw.Close()
		if rdb != nil {
			cleanPrefix(rdb, env.prefix)
		}
	})
	return env
}

// cleanPrefix deletes the test's keys.
func cleanPrefix(rdb redis.UniversalClient, prefix string) {
	ctx := context.Background()
	del := func(c *redis.Client) {
		iter := c.Scan(ctx, 0, prefix+":*", 500).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	}
	switch c := rdb.(type) {
	case *redis.Client:
		del(c)
	case *redis.ClusterClient:
		c.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { del(c); return nil })
	}
}

func (env *cacheEnv) register(t *testing.T, query string, p cachedpq.Policy) {
	t.Helper()
	if p.TTL == 0 {
		p.TTL = time.Minute
	}
	if err := env.reg.Register(query, p); err != nil {
		t.Fatal(err)
	}
}

func (env *cacheEnv) stats() cachedpq.Stats { return env.conn.Stats() }

// waitFills waits until the background fills reach n: Redis fills are off
// the caller's path.
func (env *cacheEnv) waitFills(t *testing.T, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for env.stats().Fills < n {
		if time.Now().After(deadline) {
			t.Fatalf("fills = %d, want %d (errors %d)", env.stats().Fills, n, env.stats().FillErrors)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rowsOf reads a whole result as strings, for comparisons.
func rowsOf(t *testing.T, db *sqlx.DB, query string, args ...any) []string {
	t.Helper()
	return rowsOfCtx(t, context.Background(), db, query, args...)
}

// rowsOfCtx is rowsOf under ctx.
func rowsOfCtx(t *testing.T, ctx context.Context, db *sqlx.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.QueryxContext(ctx, query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.SliceScan()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%v", vals))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// same asserts the cached DB answers exactly as Postgres does now.
func (env *cacheEnv) same(t *testing.T, query string, args ...any) []string {
	t.Helper()
	got := rowsOf(t, env.db, query, args...)
	want := rowsOf(t, env.raw, query, args...)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s %v:\ncachedpq: %v\npostgres: %v", query, args, got, want)
	}
	return got
}

func forEachStore(t *testing.T, test func(t *testing.T, env *cacheEnv)) {
	for _, store := range stores {
		t.Run(store, func(t *testing.T) { test(t, newEnv(t, store)) })
	}
}

const usersDDL = `create table users (id int8 primary key, name text not null, score numeric(8,2), seen timestamptz);
	insert into users select g, 'user' || g, g * 1.5, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour'
	from generate_series(1, 50) g`

func TestHitAndMiss(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, usersDDL)
		q := `select id, name, score, seen from users where id = $1`
		env.register(t, q, cachedpq.Policy{})

		first := env.same(t, q, 7)
		env.waitFills(t, 1)
		if s := env.stats(); s.Misses != 1 || s.Hits != 0 {
			t.Fatalf("after first read: %+v", s)
		}
		// Whitespace, case and comments do not matter: same fingerprint.
		second := env.same(t, "SELECT id, name, score, seen\n FROM users /* again */ WHERE id = $1", 7)
		if s := env.stats(); s.Hits != 1 {
			t.Fatalf("second read was not a hit: %+v", s)
		}
		if !reflect.DeepEqual(first, second) {
			t.Fatalf("hit %v != miss %v", second, first)
		}
		// Other arguments are other entries.
		env.same(t, q, 8)
		if s := env.stats(); s.Misses != 2 {
			t.Fatalf("another argument hit: %+v", s)
		}
	})
}

func TestHitMatchesLibPQMetadata(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, usersDDL)
		q := `select id, name, score, seen, null::uuid u, '{1,2}'::int[] a from users where id < $1 order by id`
		env.register(t, q, cachedpq.Policy{})
		describe := func(db *sqlx.DB) []string {
			rows, err := db.Query(q, 4)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			cts, _ := rows.ColumnTypes()
			var out []string
			for _, ct := range cts {
				l, lok := ct.Length()
				p, s, dok := ct.DecimalSize()
				n, nok := ct.Nullable()
				out = append(out, fmt.Sprint(ct.Name(), ct.DatabaseTypeName(), ct.ScanType(), l, lok, p, s, dok, n, nok))
			}
			for rows.Next() {
				var (
					id    int64
					name  string
					score float64
					seen  time.Time
					u     sql.NullString
					a     pq.Int64Array
				)
				if err := rows.Scan(&id, &name, &score, &seen, &u, &a); err != nil {
					t.Fatal(err)
				}
				out = append(out, fmt.Sprint(id, name, score, seen, seen.Location(), u, a))
			}
			return out
		}
		want := describe(env.raw)
		miss := describe(env.db)
		env.waitFills(t, 1)
		hit := describe(env.db)
		if env.stats().Hits != 1 {
			t.Fatalf("no hit: %+v", env.stats())
		}
		if !reflect.DeepEqual(miss, want) || !reflect.DeepEqual(hit, want) {
			t.Fatalf("metadata or values differ\nlib/pq: %v\nmiss:   %v\nhit:    %v", want, miss, hit)
		}
	})
}

// execer is what a write runs on: the DB, or a transaction.
type execer interface {
	Exec(query string, args ...any) (sql.Result, error)
	QueryRow(query string, args ...any) *sql.Row
}

// writeCase is one way of writing that must invalidate a cached read.
type writeCase struct {
	name   string
	setup  string // extra DDL, run raw before the read is cached
	write  func(t *testing.T, db execer)
	dbOnly bool // the write manages its own transaction or connection
}

func execWrite(query string, args ...any) func(t *testing.T, db execer) {
	return func(t *testing.T, db execer) {
		t.Helper()
		mustExec(t, db, query, args...)
	}
}

var writeCases = []writeCase{
	{name: "insert", write: execWrite(`insert into users values (100, 'new', 1, now())`)},
	{name: "insert on conflict", write: execWrite(`insert into users values (1, 'upserted', 1, now()) on conflict (id) do update set name = excluded.name`)},
	{name: "update", write: execWrite(`update users set name = 'changed' where id = $1`, 1)},
	{name: "update from", setup: `create table renames (id int8, name text); insert into renames values (1, 'viafrom')`,
		write: execWrite(`update users u set name = r.name from renames r where r.id = u.id`)},
	{name: "delete", write: execWrite(`delete from users where id = 1`)},
	{name: "delete using", setup: `create table doomed (id int8); insert into doomed values (1)`,
		write: execWrite(`delete from users u using doomed d where d.id = u.id`)},
	{name: "merge", write: execWrite(`merge into users u using (values (1::int8, 'merged')) v(id, name) on u.id = v.id
		when matched then update set name = v.name`)},
	{name: "truncate", write: execWrite(`truncate users`)},
	{name: "truncate cascade", setup: `create table orders (id int8 primary key, user_id int8 references users);
		insert into orders values (1, 1)`,
		write: execWrite(`truncate users cascade`)},
	{name: "schema qualified quoted", write: func(t *testing.T, db execer) {
		var schema string
		db.QueryRow(`select current_schema()`).Scan(&schema)
		mustExec(t, db, fmt.Sprintf(`update %q."users" set name = 'quoted' where id = 1`, schema))
	}},
	{name: "multi statement", write: execWrite(`select 1; update users set name = 'multi' where id = 1`)},
	{name: "insert returning via query", write: func(t *testing.T, db execer) {
		var id int64
		if err := db.QueryRow(`insert into users values (101, 'ret', 1, now()) returning id`).Scan(&id); err != nil {
			t.Fatal(err)
		}
	}},
	{name: "writable cte via query", write: func(t *testing.T, db execer) {
		var n int
		if err := db.QueryRow(`with d as (delete from users where id = 1 returning id) select count(*) from d`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%d %v", n, err)
		}
	}},
	{name: "copy in", dbOnly: true, write: func(t *testing.T, db execer) {
		tx, err := db.(*sqlx.DB).Begin()
		if err != nil {
			t.Fatal(err)
		}
		st, err := tx.Prepare(pq.CopyIn("users", "id", "name"))
		if err != nil {
			t.Fatal(err)
		}
		st.Exec(200, "copied")
		if _, err := st.Exec(); err != nil {
			t.Fatal(err)
		}
		st.Close()
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}},
	{name: "alter table", write: execWrite(`alter table users alter column name set default 'd'; update users set name = default where id = 1`)},
	{name: "do block", write: execWrite(`do $$ begin update users set name = 'from do' where id = 1; end $$`)},
	{name: "call procedure", setup: `create procedure rename_one() language sql as $$ update users set name = 'proc' where id = 1 $$`,
		write: execWrite(`call rename_one()`)},
	{name: "volatile function in select", setup: `create function bump_name() returns int language sql volatile as $$ update users set name = 'fn' where id = 1 returning 1 $$`,
		write: func(t *testing.T, db execer) {
			var n int
			if err := db.QueryRow(`select bump_name()`).Scan(&n); err != nil {
				t.Fatal(err)
			}
		}},
	{name: "foreign key cascade", setup: `create table orders (id int8 primary key, user_id int8 references users on delete cascade);
		insert into orders values (1, 1)`,
		write: execWrite(`delete from users where id = 1`)},
	{name: "write through view", setup: `create view active_users as select id, name from users`,
		write: execWrite(`update active_users set name = 'via view' where id = 1`)},
	{name: "raw begin commit", dbOnly: true, write: func(t *testing.T, db execer) {
		c, err := db.(*sqlx.DB).Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, q := range []string{`begin`, `update users set name = 'raw tx' where id = 1`, `commit`} {
			if _, err := c.ExecContext(context.Background(), q); err != nil {
				t.Fatal(err)
			}
		}
	}},
}

// readsFor lists the cached reads each write case checks: one of users,
// and one through a join that the cascade and view cases reach.
var readsFor = []string{
	`select id, name from users order by id limit 5`,
	`select count(*) from users`,
}

func TestReadYourWrites(t *testing.T) {
	for _, store := range stores {
		for _, wc := range writeCases {
			t.Run(store+"/"+wc.name, func(t *testing.T) {
				readYourWrites(t, store, wc, false)
			})
			if wc.dbOnly {
				continue
			}
			t.Run(store+"/in tx/"+wc.name, func(t *testing.T) {
				readYourWrites(t, store, wc, true)
			})
		}
	}
}

// readYourWrites caches reads, runs the write (in a transaction when inTx,
// checking that nothing changes before the commit), then requires every
// read to answer as Postgres does.
func readYourWrites(t *testing.T, store string, wc writeCase, inTx bool) {
	t.Helper()
	env := newEnv(t, store)
	mustExec(t, env.raw, usersDDL)
	if wc.setup != "" {
		mustExec(t, env.raw, wc.setup)
	}
	reads := slices.Clone(readsFor)
	if strings.Contains(wc.setup, "orders") {
		reads = append(reads, `select count(*) from orders`)
	}
	if strings.Contains(wc.setup, "view") {
		reads = append(reads, `select id, name from active_users order by id limit 3`)
	}
	for _, q := range reads {
		env.register(t, q, cachedpq.Policy{})
		env.same(t, q)
	}
	env.waitFills(t, uint64(len(reads)))
	committed := map[string][]string{}
	for _, q := range reads {
		committed[q] = env.same(t, q) // hits
	}
	if h := env.stats().Hits; h != uint64(len(reads)) {
		t.Fatalf("hits = %d, want %d", h, len(reads))
	}
	if !inTx {
		wc.write(t, env.db)
	} else {
		tx, err := env.db.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		wc.write(t, tx)
		// Still the committed state, from the cache (Postgres itself may be
		// locked by the open transaction, as after TRUNCATE: a read that
		// misses waits for the commit, so the test fails after a minute
		// rather than hangs).
		hits := env.stats().Hits
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, q := range reads {
			if got := rowsOfCtx(t, ctx, env.db, q); !reflect.DeepEqual(got, committed[q]) {
				t.Fatalf("before commit %s: %v, want %v", q, got, committed[q])
			}
		}
		if env.stats().Hits != hits+uint64(len(reads)) {
			t.Fatalf("a write inside a transaction invalidated before its commit: %+v", env.stats().Counters)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range reads {
		env.same(t, q)
	}
}

func TestTransactionsInvalidateAtCommit(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		q := cachedUserName(t, env)

		tx, err := env.db.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, `update users set name = 'in tx' where id = 1`)
		// Inside the transaction the read goes to Postgres and sees the write.
		var inTx string
		tx.Get(&inTx, q, 1)
		if inTx != "in tx" {
			t.Fatalf("read in tx = %q", inTx)
		}
		// Outside, before commit, the cached (committed) value is right.
		if got := env.same(t, q, 1); got[0] != "[user1]" {
			t.Fatalf("before commit: %v", got)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		hits := env.stats().Hits
		env.same(t, q, 1)
		if env.stats().Hits != hits+1 {
			t.Fatal("a rollback invalidated the entry")
		}

		tx, _ = env.db.Beginx()
		mustExec(t, tx, `update users set name = 'committed' where id = 1`)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := env.same(t, q, 1); got[0] != "[committed]" {
			t.Fatalf("after commit: %v", got)
		}
		if env.stats().Bypass["transaction"] == 0 {
			t.Fatal("the read in the transaction was not counted as a bypass")
		}
	})
}

func TestSessionStateBypassesTheCache(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		read := sessionReads(t, env)
		if name, cached := read(`set search_path = pg_catalog, ` + env.schema); cached || name != "user1" {
			t.Fatalf("a read after SET used the cache, or read %q: %+v", name, env.stats())
		}
		if env.stats().Bypass["session_state"] != 1 {
			t.Fatalf("the read after SET was not counted as a bypass: %+v", env.stats())
		}
	})
}

// cachedUserName creates users and returns a registered read of a user's
// name, cached for user 1.
func cachedUserName(t *testing.T, env *cacheEnv) string {
	t.Helper()
	mustExec(t, env.raw, usersDDL)
	q := `select name from users where id = $1`
	env.register(t, q, cachedpq.Policy{})
	env.same(t, q, 1)
	env.waitFills(t, 1)
	return q
}

// sessionReads caches a read of a user's name (see cachedUserName) and
// returns read: it runs stmt on a connection of its own, then the read
// there, and returns the name read and whether the read used the cache (a
// hit, or a miss that fills it) rather than skip it for the session.
func sessionReads(t *testing.T, env *cacheEnv) (read func(stmt string) (string, bool)) {
	t.Helper()
	q := cachedUserName(t, env)
	ctx := context.Background()
	c, err := env.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func(stmt string) (string, bool) {
		t.Helper()
		if _, err := c.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
		bypassed := env.stats().Bypass["session_state"]
		var name string
		if err := c.GetContext(ctx, &name, q, 1); err != nil {
			t.Fatalf("after %s: %v", stmt, err)
		}
		return name, env.stats().Bypass["session_state"] == bypassed
	}
}

// TestHarmlessSettingsKeepTheCache: a connection that sets only what
// changes how queries run, not what they answer (statement_timeout, as
// poolers and frameworks set on every connection), still reads from the
// cache; one that then sets search_path does not.
func TestHarmlessSettingsKeepTheCache(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		read := sessionReads(t, env)
		for _, set := range []string{
			`set statement_timeout = '5s'`, `set local lock_timeout = 0`,
			`set application_name to 'worker'`, `reset statement_timeout`, `set enable_seqscan = off`,
		} {
			if name, cached := read(set); !cached || name != "user1" {
				t.Fatalf("after %s the read skipped the cache, or read %q: %+v", set, name, env.stats())
			}
		}
		if _, cached := read(`set search_path = pg_catalog, ` + env.schema); cached {
			t.Fatal("a read after SET search_path used the cache")
		}
	})
}

// TestDiscardAllRestoresTheCache: DISCARD ALL leaves the session as a new
// connection's, so a connection that ran SET or created a temporary table
// uses the cache again once it has answered the probe; DISCARD PLANS, or
// RESET ALL (which keeps the role and temporary relations), leaves it off.
func TestDiscardAllRestoresTheCache(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		read := sessionReads(t, env)
		for _, step := range []struct {
			stmt, name string
			cached     bool
		}{
			{`set search_path = pg_catalog, ` + env.schema, "user1", false},
			{`discard plans`, "user1", false},
			{`reset all`, "user1", false},
			{`discard all`, "user1", true},
			{`create temp table users (id int8, name text); insert into users values (1, 'temp')`, "temp", false},
			{`DISCARD ALL;`, "user1", true},
		} {
			if name, cached := read(step.stmt); cached != step.cached || name != step.name {
				t.Fatalf("after %s: read %q, cached %v; want %q, %v (%+v)", step.stmt, name, cached,
					step.name, step.cached, env.stats())
			}
		}
	})
}

func TestNegativeCaching(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, usersDDL)
		q := `select name from users where id = $1`
		env.register(t, q, cachedpq.Policy{NegativeTTL: time.Minute})
		noRows := `select id from users where name = $1`
		env.register(t, noRows, cachedpq.Policy{NegativeTTL: -1})
		if got := env.same(t, q, 999); len(got) != 0 {
			t.Fatal(got)
		}
		env.waitFills(t, 1)
		env.same(t, q, 999)
		if s := env.stats(); s.NegativeHits != 1 {
			t.Fatalf("empty result not cached: %+v", s)
		}
		env.same(t, noRows, "nobody")
		env.same(t, noRows, "nobody")
		if s := env.stats(); s.NegativeHits != 1 || s.Misses != 3 {
			t.Fatalf("NegativeTTL < 0 cached an empty result: %+v", s)
		}
		// An insert makes the empty answer wrong: it is invalidated.
		mustExec(t, env.db, `insert into users values (999, 'late', 0, now())`)
		if got := env.same(t, q, 999); len(got) != 1 {
			t.Fatal(got)
		}
	})
}

func TestOversizeServedNotCached(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, usersDDL)
		q := `select id, name from users order by id`
		env.register(t, q, cachedpq.Policy{MaxRows: 10})
		big := `select repeat('x', 5000) from users`
		env.register(t, big, cachedpq.Policy{MaxBytes: 10_000})
		for range 2 {
			if got := env.same(t, q); len(got) != 50 {
				t.Fatalf("served %d rows", len(got))
			}
			env.same(t, big)
		}
		s := env.stats()
		if s.Hits != 0 || s.Fills != 0 || s.Bypass["too_large"] != 4 {
			t.Fatalf("oversize results cached: %+v", s)
		}
	})
}

func TestPartialReadsAreCompletedOrNotStored(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, usersDDL)
		q := `select id, name from users where id > $1 order by id`
		env.register(t, q, cachedpq.Policy{})
		// QueryRow reads one row and closes: the rest is drained and stored.
		var id int64
		var name string
		if err := env.db.QueryRow(q, 0).Scan(&id, &name); err != nil || id != 1 {
			t.Fatal(id, err)
		}
		env.waitFills(t, 1)
		if got := env.same(t, q, 0); len(got) != 50 {
			t.Fatalf("a partial read was stored as the whole result: %d rows", len(got))
		}
		if env.stats().Hits != 1 {
			t.Fatalf("the drained result was not stored: %+v", env.stats())
		}
	})
}

func TestExplicitInvalidation(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, usersDDL)
		q := `select name from users where id = $1`
		env.register(t, q, cachedpq.Policy{})
		ctx := context.Background()
		check := func(step string, f func() error) {
			t.Helper()
			env.same(t, q, 1)
			env.same(t, q, 1)
			// A script writes behind the application's back.
			mustExec(t, env.raw, `update users set name = $1 where id = 1`, step)
			if got := rowsOf(t, env.db, q, 1); got[0] == "["+step+"]" {
				t.Fatalf("%s: the write was seen before invalidating", step)
			}
			if err := f(); err != nil {
				t.Fatal(err)
			}
			if got := env.same(t, q, 1); got[0] != "["+step+"]" {
				t.Fatalf("%s: %v", step, got)
			}
			// The invalidation also deletes the tables' entries, gathered
			// over 10 ms in the background; a pass landing in the next step
			// would delete the entry that step fills (early, which is
			// harmless) and make its read after the script's write miss.
			time.Sleep(100 * time.Millisecond)
		}
		check("tables", func() error { return env.conn.InvalidateTables(ctx, "public.USERS") })
		check("all", func() error { return env.conn.InvalidateAll(ctx) })
		check("query", func() error { return env.conn.InvalidateQuery(ctx, q, 1) })
		c, err := cachedpq.ConnectorOf(env.db.DB)
		if err != nil || c != env.conn {
			t.Fatalf("ConnectorOf: %v", err)
		}
	})
}

func TestForeignValuesAreMisses(t *testing.T) {
	env := newEnv(t, "redis")
	q := cachedUserName(t, env)
	ctx := context.Background()
	var keys []string
	iter := env.rdb.Scan(ctx, 0, env.prefix+":users:*", 100).Iterator()
	for iter.Next(ctx) {
		if !strings.HasSuffix(iter.Val(), ":lease") {
			keys = append(keys, iter.Val())
		}
	}
	if len(keys) != 1 {
		t.Fatalf("entry keys: %v", keys)
	}
	for i, junk := range []string{"", "garbage", "\x00\x01\x02\x03\x04\x05\x06\x07\x08", strings.Repeat("\xff", 4096)} {
		env.rdb.Set(ctx, keys[0], junk, time.Minute)
		env.same(t, q, 1)
		if s := env.stats(); s.Foreign != uint64(i+1) || s.Hits != 0 {
			t.Fatalf("junk %d: %+v", i, s)
		}
		env.waitFills(t, uint64(i+2))
	}
	// A value of another Redis type is a miss too.
	env.rdb.Del(ctx, keys[0])
	env.rdb.LPush(ctx, keys[0], "x")
	env.same(t, q, 1)
}

func TestEvictedStampInvalidates(t *testing.T) {
	env := newEnv(t, "redis")
	q := cachedUserName(t, env)
	env.same(t, q, 1)
	if env.stats().Hits != 1 {
		t.Fatal("no hit")
	}
	ctx := context.Background()
	if n, _ := env.rdb.Del(ctx, env.prefix+":stamp:users").Result(); n != 1 {
		t.Fatalf("stamp key not found")
	}
	mustExec(t, env.raw, `update users set name = 'behind' where id = 1`)
	// The evicted stamp reads as missing: the entry cannot be trusted.
	if got := env.same(t, q, 1); got[0] != "[behind]" {
		t.Fatal(got)
	}
	if env.stats().Stale != 1 {
		t.Fatalf("stale = %d", env.stats().Stale)
	}
}

// TestInstancesShareEntriesAndInvalidations: two Connectors on one Redis
// prefix stand for two application instances. One fills, the other hits;
// a write through either is seen by both (peers key on a random
// per-process prefix, or invalidate only locally).
func TestInstancesShareEntriesAndInvalidations(t *testing.T) {
	a := newEnv(t, "redis")
	mustExec(t, a.raw, usersDDL)
	b, err := cachedpq.NewConnector(baseDSN()+" search_path="+a.schema, cachedpq.Options{
		Redis: a.rdb, Prefix: a.prefix, Registry: a.reg, Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	bdb := sqlx.NewDb(sql.OpenDB(b), "cachedpq")
	defer bdb.Close()
	q := `select name from users where id = $1`
	a.register(t, q, cachedpq.Policy{})
	a.same(t, q, 1)
	a.waitFills(t, 1)
	if got := rowsOf(t, bdb, q, 1); got[0] != "[user1]" || b.Stats().Hits != 1 {
		t.Fatalf("the second instance did not share the entry: %v %+v", got, b.Stats().Counters)
	}
	mustExec(t, bdb, `update users set name = 'from b' where id = 1`)
	if got := a.same(t, q, 1); got[0] != "[from b]" {
		t.Fatalf("instance a did not see b's write: %v", got)
	}
}

// TestFailedWritesInvalidateNothing: a statement Postgres rejects changed
// nothing, so entries stay (peers flush on every write, even failed ones).
func TestFailedWritesInvalidateNothing(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		q := cachedUserName(t, env)
		if _, err := env.db.Exec(`insert into users values (1, 'dup', 0, now())`); err == nil {
			t.Fatal("duplicate key accepted")
		}
		env.same(t, q, 1)
		if s := env.stats(); s.Hits != 1 || s.Invalidations != 0 {
			t.Fatalf("a failed write invalidated: %+v", s)
		}
	})
}

// TestJoinedTablesInvalidate: a write to any table of a join invalidates
// it, not only to the statement's main table.
func TestJoinedTablesInvalidate(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, usersDDL+`; create table badges (user_id int8, badge text);
			insert into badges values (1, 'gold'), (2, 'silver')`)
		q := `select u.name, b.badge from users u join badges b on b.user_id = u.id
			where u.id in (select user_id from badges where badge <> $1) order by 1`
		env.register(t, q, cachedpq.Policy{})
		env.same(t, q, "none")
		env.waitFills(t, 1)
		mustExec(t, env.db, `update badges set badge = 'bronze' where user_id = 2`)
		if got := env.same(t, q, "none"); got[1] != "[user2 bronze]" {
			t.Fatal(got)
		}
	})
}
