package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq"
	"github.com/cachedpq/cachedpq/internal/redistest"
)

// The load benchmarks: 16 concurrent clients, side by side on raw lib/pq,
// cachedpq over Redis and cachedpq over the in-process store. Run with
//
//	go test -run '^$' -bench 'Load|ReadOnly|BreakerOpen' -benchtime 5s ./integration/
//
// Each reports throughput (ops/s) and p50/p95/p99 latency in ms.

// loadClients is the number of concurrent clients.
const loadClients = 16

// listQuery is the registered read: the whole 50-row items table, the
// cheapest 50-row list Postgres can serve, and so the hardest for a cache
// to beat.
const listQuery = `select id, name, score from items order by id`

// loadWrite is the write of BenchmarkLoad: one listed item's score. Every
// such write voids the list.
const loadWrite = `update items set score = score + 1 where id = $1`

// catalogQuery is the registered read of the catalog benchmarks: one page
// of 50 rows of a 20,000-row table, by category, as an application lists
// them (the list of the engine benchmarks in the root package).
const catalogQuery = `select id, name, score from catalog where category = $1 order by id limit 50`

// catalogWrite is the write of BenchmarkLoadCatalog: one catalog row's
// score. Every such write voids the list, which depends on the table.
const catalogWrite = `update catalog set score = score + 1 where id = $1`

// catalogSetup creates and fills the catalog table: 20,000 rows, 100
// categories of 200.
const catalogSetup = `create table catalog (id int8 primary key, category int4 not null, name text not null, score float8 not null);
	insert into catalog select g, g % 100, 'item ' || g, g * 0.5 from generate_series(1, 20000) g;
	create index on catalog (category, id);
	analyze catalog`

// loadRead is the registered read a load benchmark's clients run, and
// the statements that create its table, if the stress schema lacks it.
type loadRead struct {
	query string
	args  []any
	setup string
}

var (
	itemsList   = loadRead{query: listQuery}
	catalogList = loadRead{query: catalogQuery, args: []any{7}, setup: catalogSetup}
)

// loadOtherWrite is the write of BenchmarkLoadOtherTable: a row of a table
// the list does not read.
const loadOtherWrite = `insert into events (item) values ($1)`

// BenchmarkLoad runs 95% registered reads of a 50-row list and 5% writes
// to the listed table: the worst case for a cache of the list, since every
// write voids it, and 16 clients then wait for one reload.
func BenchmarkLoad(b *testing.B) { sideBySide(b, itemsList, 0.05, loadWrite) }

// BenchmarkLoadOtherTable is BenchmarkLoad with the writes going to a table
// the list does not read, as when most writes of an application change
// data other than its hottest reads: what the cache's hits, invalidations
// and purges cost beside writes that commit.
func BenchmarkLoadOtherTable(b *testing.B) { sideBySide(b, itemsList, 0.05, loadOtherWrite) }

// BenchmarkLoadCatalog is BenchmarkLoad with a list that costs Postgres
// what an application's list does: a page of a larger table, by category.
func BenchmarkLoadCatalog(b *testing.B) { sideBySide(b, catalogList, 0.05, catalogWrite) }

// BenchmarkLoadCatalogOtherTable is BenchmarkLoadOtherTable with the
// catalog's list.
func BenchmarkLoadCatalogOtherTable(b *testing.B) {
	sideBySide(b, catalogList, 0.05, loadOtherWrite)
}

// sideBySide runs the same clients on raw lib/pq, cachedpq over Redis and
// cachedpq over the in-process store.
func sideBySide(b *testing.B, read loadRead, writeShare float64, write string) {
	for _, kind := range []string{"raw", "redis", "memory"} {
		b.Run(kind, func(b *testing.B) {
			db, conn := loadDB(b, kind, read)
			runClients(b, db, read, writeShare, write)
			logStats(b, kind, conn)
		})
	}
}

// BenchmarkWriteOnly runs only BenchmarkLoadOtherTable's writes on raw
// lib/pq: the most writes per second the machine commits. A mix with 5%
// writes cannot run faster than 20 times that, however cheap its reads.
func BenchmarkWriteOnly(b *testing.B) {
	db, _ := loadDB(b, "raw", itemsList)
	runClients(b, db, itemsList, 1, loadOtherWrite)
}

// BenchmarkReadOnly is BenchmarkLoad without writes: the hit path alone.
func BenchmarkReadOnly(b *testing.B) { sideBySide(b, itemsList, 0, "") }

// BenchmarkReadOnlyCatalog is BenchmarkReadOnly with the catalog's list.
func BenchmarkReadOnlyCatalog(b *testing.B) { sideBySide(b, catalogList, 0, "") }

// BenchmarkBreakerOpen compares registered reads with Redis down against
// raw lib/pq reads: once a cache operation has failed, reads skip the
// cache until it answers again (see waitSkipping).
func BenchmarkBreakerOpen(b *testing.B) {
	for _, kind := range []string{"raw", "redis_down"} {
		b.Run(kind, func(b *testing.B) {
			db, conn := loadDB(b, kind, itemsList)
			runClients(b, db, itemsList, 0, "")
			logStats(b, kind, conn)
		})
	}
}

// loadDB opens the DB a sub-benchmark measures, on a fresh schema with
// read's table, and registers read.
func loadDB(b *testing.B, kind string, read loadRead) (*sqlx.DB, *cachedpq.Connector) {
	b.Helper()
	var env *stressEnv
	switch kind {
	case "raw", "memory":
		env = newStressEnv(b, nil, faultTimeout)
	case "redis":
		env = newStressEnv(b, newRedis(b), faultTimeout)
	case "redis_down":
		srv := redistest.Start(b)
		env = newStressEnv(b, timedClient(b, srv.Addr), faultTimeout)
		srv.Kill()
	}
	mustExec(b, env.raw, `create table events (id bigserial primary key, item int8 not null, at timestamptz not null default now())`)
	if read.setup != "" {
		mustExec(b, env.raw, read.setup)
	}
	if err := env.reg.Register(read.query, cachedpq.Policy{TTL: time.Minute}); err != nil {
		b.Fatal(err)
	}
	db := env.db
	if kind == "raw" {
		db = env.raw
	}
	db.SetMaxOpenConns(loadClients)
	db.SetMaxIdleConns(loadClients)
	if kind == "redis_down" {
		waitSkipping(b, db, env.conn, read)
	}
	readList(b, db, read)
	return db, env.conn
}

// waitSkipping reads until reads skip the dead cache: the first failure
// leaves invalidations pending (the namespace must be invalidated before
// any hit is served again), and reads then go straight to Postgres, as
// they do while the breaker is open.
func waitSkipping(b *testing.B, db *sqlx.DB, conn *cachedpq.Connector, read loadRead) {
	skipped := func() uint64 {
		s := conn.Stats()
		return s.Bypass["breaker_open"] + s.Bypass["invalidation_pending"]
	}
	deadline := time.Now().Add(10 * time.Second)
	for before := skipped(); ; {
		readList(b, db, read)
		if skipped() > before {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("reads still try the dead cache: %+v", conn.Stats())
		}
	}
}

// logStats logs what the cache did during a cached sub-benchmark.
func logStats(b *testing.B, kind string, conn *cachedpq.Connector) {
	if kind == "raw" {
		return
	}
	s := conn.Stats()
	b.Logf("%s: hits %d misses %d coalesced %d stale %d fill errors %d cache errors %d breaker %s bypass %v cache latency %+v",
		kind, s.Hits, s.Misses, s.Coalesced, s.Stale, s.FillErrors, s.CacheErrors, s.Breaker, s.Bypass, s.CacheLatency)
}

// readList reads a whole list and checks its length.
func readList(b *testing.B, db *sqlx.DB, read loadRead) {
	if err := scanList(db, read); err != nil {
		b.Fatal(err)
	}
}

// scanList reads a whole list, scanning each row as an application would,
// and checks its length.
func scanList(db *sqlx.DB, read loadRead) error {
	rows, err := db.Query(read.query, read.args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	n := 0
	var (
		id    int64
		name  string
		score float64
	)
	for rows.Next() {
		if err := rows.Scan(&id, &name, &score); err != nil {
			return err
		}
		n++
	}
	if err := rows.Err(); err != nil || n != 50 {
		return fmt.Errorf("list: %d rows, %v", n, err)
	}
	return nil
}

// loadOp is one client operation: the write, for a writeShare of them,
// else the read.
func loadOp(db *sqlx.DB, read loadRead, writeShare float64, write string) error {
	if rand.Float64() < writeShare {
		_, err := db.Exec(write, rand.Int64N(50)+1)
		return err
	}
	return scanList(db, read)
}

// runClients runs b.N operations on loadClients goroutines, a writeShare
// of them the write and the others read, and reports throughput and
// latency quantiles.
func runClients(b *testing.B, db *sqlx.DB, read loadRead, writeShare float64, write string) {
	b.SetParallelism((loadClients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	var mu sync.Mutex // guards all
	var all []time.Duration
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var lat []time.Duration
		for pb.Next() {
			t0 := time.Now()
			if err := loadOp(db, read, writeShare, write); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(t0))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	q := quantiles(all, 0.50, 0.95, 0.99)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "ops/s")
	for i, name := range []string{"p50-ms", "p95-ms", "p99-ms"} {
		b.ReportMetric(float64(q[i])/float64(time.Millisecond), name)
	}
	b.ReportMetric(0, "ns/op") // the per-op figure of RunParallel is wall time / N; ops/s says it plainly
}

// quietRedis drops go-redis's own log lines, which the fault benchmarks and
// tests provoke by the thousand (a dead server fails every dial) and which
// would otherwise split the benchmark result lines benchstat reads.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func init() { redis.SetLogger(quietRedis{}) }
