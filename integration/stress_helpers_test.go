package integration

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq"
)

// maxConns bounds each stress test's pool: every caller waiting on a shared
// load holds a pooled connection (database/sql takes it before calling the
// driver), and the Postgres server is shared with other test packages.
const maxConns = 40

// countedDDL creates the items table and counted(id), a STABLE function
// that counts its calls in a sequence (non-transactional, so a cancelled
// call counts too), waits on the schema's gate (an advisory lock the test
// may hold to keep a load in flight) and sleeps knob.sleep seconds so that
// concurrent readers overlap. nextval in a STABLE plpgsql function is legal
// at run time; STABLE keeps the registered query cacheable.
const countedDDL = `
	create sequence calls;
	create table knob (sleep float8 not null);
	insert into knob values (0.05);
	create table items (id int8 primary key, name text not null, score numeric(8,2) not null);
	insert into items select g, 'item' || g, g * 1.5 from generate_series(1, 50) g;
	create function counted(id int8) returns int8 language plpgsql stable as $$
	begin
		perform nextval('calls');
		perform pg_advisory_xact_lock_shared(hashtext(current_schema()));
		perform pg_sleep((select sleep from knob));
		return id;
	end $$`

// countedQuery is the registered read whose executions Postgres counts:
// the primary key matches one row, so counted runs once per execution.
const countedQuery = `select id, name, counted(id) from items where id = $1`

// stressEnv is a cached DB on a fresh schema with the counted function,
// plus a raw lib/pq DB on the same schema.
type stressEnv struct {
	*cacheEnv
	dsn string
}

// newStressEnv opens a stress environment on the in-process store (rdb
// nil) or on rdb under a fresh prefix, with the given cache timeout.
func newStressEnv(t testing.TB, rdb redis.UniversalClient, timeout time.Duration) *stressEnv {
	t.Helper()
	schema := newSchema(t)
	env := &stressEnv{
		cacheEnv: &cacheEnv{
			reg:    cachedpq.NewRegistry(),
			rdb:    rdb,
			prefix: fmt.Sprintf("cpqstress%d_%d", time.Now().UnixNano()%1e9, prefixSeq.Add(1)),
			schema: schema,
		},
		dsn: baseDSN() + " search_path=" + schema,
	}
	raw, err := sqlx.Open("postgres", env.dsn)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(8)
	env.raw = raw
	t.Cleanup(func() { raw.Close() })
	mustExec(t, raw, countedDDL)
	env.db, env.conn = env.open(t, rdb, timeout)
	if rdb != nil {
		t.Cleanup(func() { cleanPrefix(rdb, env.prefix) })
	}
	return env
}

// open makes another Connector on the environment's schema, registry and
// prefix, as a second process sharing the cache would have.
func (env *stressEnv) open(t testing.TB, rdb redis.UniversalClient, timeout time.Duration) (*sqlx.DB, *cachedpq.Connector) {
	t.Helper()
	conn, err := cachedpq.NewConnector(env.dsn, cachedpq.Options{
		Redis: rdb, Prefix: env.prefix, Registry: env.reg, Timeout: timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	db := sqlx.NewDb(sql.OpenDB(conn), "cachedpq")
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	t.Cleanup(func() { db.Close() })
	return db, conn
}

// calls is how often counted has started in this schema.
func (env *stressEnv) calls(t testing.TB) int64 {
	t.Helper()
	var n int64
	if err := env.raw.Get(&n, `select case when is_called then last_value else 0 end from calls`); err != nil {
		t.Fatal(err)
	}
	return n
}

// setSleep sets how long each counted call sleeps.
func (env *stressEnv) setSleep(t testing.TB, d time.Duration) {
	t.Helper()
	mustExec(t, env.raw, `update knob set sleep = $1`, d.Seconds())
}

// holdGate takes the schema's gate: counted blocks until the returned
// func releases it. The lock lives on a connection of its own.
func (env *stressEnv) holdGate(t testing.TB) (release func()) {
	t.Helper()
	ctx := context.Background()
	c, err := env.raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, `select pg_advisory_lock(hashtext($1))`, env.schema); err != nil {
		t.Fatal(err)
	}
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		if _, err := c.ExecContext(ctx, `select pg_advisory_unlock(hashtext($1))`, env.schema); err != nil {
			t.Error(err)
		}
		c.Close()
	}
	t.Cleanup(release)
	return release
}

// readItem runs countedQuery for id and returns its one row as a string.
func readItem(ctx context.Context, db *sqlx.DB, id int64) (string, error) {
	rows, err := db.QueryContext(ctx, countedQuery, id)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var out string
	for rows.Next() {
		var (
			gotID, counted int64
			name           string
		)
		if err := rows.Scan(&gotID, &name, &counted); err != nil {
			return "", err
		}
		out += fmt.Sprintf("%d/%s/%d;", gotID, name, counted)
	}
	return out, rows.Err()
}

// waitFor polls cond every few milliseconds until it holds, failing the
// test after limit.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// quantiles returns the p-quantiles of ds (sorted in place).
func quantiles(ds []time.Duration, ps ...float64) []time.Duration {
	out := make([]time.Duration, len(ps))
	if len(ds) == 0 {
		return out
	}
	slices.Sort(ds)
	for i, p := range ps {
		idx := int(p*float64(len(ds))+0.5) - 1
		out[i] = ds[min(max(idx, 0), len(ds)-1)]
	}
	return out
}

// envDuration reads a duration from the environment, or returns def.
func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return def
}

// sortedKeys lists a map's keys in order, for stable logs.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
