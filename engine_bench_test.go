package cachedpq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The engine benchmarks measure raw lib/pq, raw go-redis and cachedpq in
// the same run, on a point lookup, a 50-row list and an expensive
// aggregate. Compare runs with benchstat:
//
//	go test -run '^$' -bench Engine -benchmem -count 6 . > new.txt
//
// They need the test Postgres and Redis (they skip without them).

const (
	benchPoint = `select id, name, score, created from bench_items where id = $1`
	benchList  = `select id, name, score, created from bench_items where category = $1 order by id limit 50`
	benchAgg   = `select category, count(*), avg(score), max(name), min(created) from bench_items group by category order by category`
	benchWrite = `update bench_items set score = score + 1 where id = $1`
	benchMiss  = `select id, name, score, created from bench_items where id = $1 and $2::int8 >= 0`
	benchRows  = 200_000
)

var benchSchema struct {
	once sync.Once
	dsn  string
	err  error
}

// benchDSN creates the benchmark schema once per process and returns a DSN
// that uses it. The schema is named per process; TestMain drops it.
func benchDSN(b *testing.B) string {
	b.Helper()
	dsn := pqDSN(b)
	benchSchema.once.Do(func() {
		schema := fmt.Sprintf("bench_%d", os.Getpid())
		admin, err := sql.Open("postgres", dsn)
		if err != nil {
			benchSchema.err = err
			return
		}
		defer admin.Close()
		_, err = admin.Exec(`create schema ` + schema + `;
			create table ` + schema + `.bench_items (id int8 primary key, category int4, name text, score numeric(10,2), created timestamptz);
			insert into ` + schema + `.bench_items select g, g % 100, 'item ' || g, g * 0.5, '2024-01-01'::timestamptz + g * interval '1 minute'
			from generate_series(1, ` + fmt.Sprint(benchRows) + `) g;
			create index on ` + schema + `.bench_items (category, id);
			analyze ` + schema + `.bench_items`)
		benchSchema.err = err
		benchSchema.dsn = dsn + " search_path=" + schema
	})
	if benchSchema.err != nil {
		b.Fatal(benchSchema.err)
	}
	return benchSchema.dsn
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchSchema.dsn != "" {
		if admin, err := sql.Open("postgres", localTestDSN()); err == nil {
			admin.Exec(fmt.Sprintf("drop schema bench_%d cascade", os.Getpid()))
			admin.Close()
		}
	}
	os.Exit(code)
}

// benchDB opens the DB a benchmark variant reads through.
func benchDB(b *testing.B, variant string) (*sql.DB, *Connector) {
	b.Helper()
	dsn := benchDSN(b)
	if variant == "raw" {
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		return db, nil
	}
	opts := Options{Registry: NewRegistry(), Prefix: fmt.Sprintf("bench%d", os.Getpid())}
	if variant == "redis" || variant == "sequential" || variant == "prepared" { // sequential: no early queries
		opts.NoEarlyQueries = variant == "sequential"
		opts.Prepare = variant == "prepared"
		opts.Redis = testRedis(b)
		opts.Prefix = testPrefix(b, opts.Redis) // each run starts cold
	}
	if variant != "unregistered" {
		for _, q := range []string{benchPoint, benchList, benchAgg, benchMiss} {
			if err := opts.Registry.Register(q, Policy{TTL: time.Hour}); err != nil {
				b.Fatal(err)
			}
		}
	}
	c, err := NewConnector(dsn, opts)
	if err != nil {
		b.Fatal(err)
	}
	db := sql.OpenDB(c)
	b.Cleanup(func() {
		db.Close()
		if opts.Redis != nil {
			c.InvalidateAll(context.Background())
		}
	})
	return db, c
}

// readAll scans a whole result the way an application would.
func benchScan(b *testing.B, db *sql.DB, query string, args ...any) int {
	rows, err := db.Query(query, args...)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	n := 0
	vals := make([]any, 5)
	ptrs := make([]any, 5)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	cols, _ := rows.Columns()
	for rows.Next() {
		if err := rows.Scan(ptrs[:len(cols)]...); err != nil {
			b.Fatal(err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return n
}

var benchReads = []struct {
	name, query string
	arg         any
}{
	{"point", benchPoint, int64(4242)},
	{"list50", benchList, int64(7)},
	{"aggregate", benchAgg, nil},
}

func BenchmarkEngineRead(b *testing.B) {
	for _, r := range benchReads {
		for _, variant := range []string{"raw", "unregistered", "floor", "memory", "redis"} {
			if r.name == "aggregate" && variant == "unregistered" {
				continue
			}
			b.Run(r.name+"/"+variant, func(b *testing.B) {
				var args []any
				if r.arg != nil {
					args = []any{r.arg}
				}
				var db *sql.DB
				var c *Connector
				if variant == "floor" {
					db = floorDB(b, r.query, args)
				} else {
					db, c = benchDB(b, variant)
				}
				benchScan(b, db, r.query, args...) // warm: fill the cache
				if c != nil && c.eng.shared {
					waitFor(b, func() bool { return c.Stats().Fills > 0 || c.Stats().Hits > 0 })
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					benchScan(b, db, r.query, args...)
				}
				b.StopTimer()
				if c != nil && variant != "unregistered" && c.Stats().Hits < uint64(b.N) {
					b.Fatalf("only %d hits in %d reads", c.Stats().Hits, b.N)
				}
			})
		}
	}
}

// floorDB returns a DB whose every query hands out the result of query
// on the benchmark table, read once through lib/pq, and does nothing else:
// its reads cost what database/sql itself costs, its pool, its locks and
// Scan, the floor of an in-process hit. BenchmarkEngineRead's floor
// variant measures it in the same run, to tell how much of a hit is the
// driver's.
func floorDB(b *testing.B, query string, args []any) *sql.DB {
	raw, _ := benchDB(b, "raw")
	conn, err := raw.Conn(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	named := make([]driver.NamedValue, len(args))
	for i, a := range args {
		named[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	var res readRows
	err = conn.Raw(func(dc any) error {
		rows, err := dc.(driver.QueryerContext).QueryContext(context.Background(), query, named)
		if err != nil {
			return err
		}
		defer rows.Close()
		res.cols = rows.Columns()
		res.rows, err = readResult(rows, len(res.cols))
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	db := sql.OpenDB(snapConnector{func() driver.Rows {
		r := res
		return &r
	}})
	b.Cleanup(func() { db.Close() })
	return db
}

// BenchmarkEngineHitDriver is BenchmarkEngineRead's in-process hit on the
// driver itself, without database/sql, whose own work (its pool, its
// locks, Scan) is most of a hit's time there and hides the driver's: the
// query, Columns, Next to io.EOF and Close, on one connection.
func BenchmarkEngineHitDriver(b *testing.B) {
	for _, r := range benchReads[:2] {
		b.Run(r.name, func(b *testing.B) {
			db, c := benchDB(b, "memory")
			benchScan(b, db, r.query, r.arg)
			ctx := context.Background()
			sc, err := db.Conn(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer sc.Close()
			args := []driver.NamedValue{{Ordinal: 1, Value: r.arg}}
			b.ReportAllocs()
			err = sc.Raw(func(dc any) error {
				qc := dc.(driver.QueryerContext)
				var dest []driver.Value
				for b.Loop() {
					rows, err := qc.QueryContext(ctx, r.query, args)
					if err != nil {
						return err
					}
					n := len(rows.Columns())
					dest = slices.Grow(dest[:0], n)[:n]
					for rows.Next(dest) == nil {
					}
					if err := rows.Close(); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			if c.Stats().Hits < uint64(b.N) {
				b.Fatalf("only %d hits in %d reads", c.Stats().Hits, b.N)
			}
		})
	}
}

// BenchmarkEngineRedisGet is the floor for a Redis hit: a raw go-redis GET
// of the same entry bytes, plus decoding them.
func BenchmarkEngineRedisGet(b *testing.B) {
	for _, r := range benchReads {
		b.Run(r.name, func(b *testing.B) {
			db, c := benchDB(b, "redis")
			var args []any
			if r.arg != nil {
				args = []any{r.arg}
			}
			benchScan(b, db, r.query, args...)
			c.eng.bg.Wait()
			key := entryKey(b, c, r.name)
			rdb := c.opts.Redis.(*redis.Client)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				getDecode(b, rdb, key)
			}
		})
	}
}

// entryKey finds the Redis key of the entry c filled for the read named
// name of benchReads.
func entryKey(b *testing.B, c *Connector, name string) string {
	rdb := c.opts.Redis.(*redis.Client)
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, c.opts.Prefix+":bench_items:*").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, k := range keys {
		if v, _ := rdb.Get(ctx, k).Bytes(); len(v) > 0 {
			if e, err := benchBackend.decode(v); err == nil && (len(e.snap.rows) == 50) == (name == "list50") &&
				(len(e.snap.columns) == 5) == (name == "aggregate") {
				return k
			}
		}
	}
	b.Fatal("entry not found")
	return ""
}

// BenchmarkEngineMiss reads a registered point lookup with a new argument
// every time. ns/op is what the caller waits; each miss's fill, which runs
// after the caller has its rows, finishes outside the timed part so that
// it does not weigh on the next miss. The floor is raw+rt: a raw go-redis
// GET, then the raw query. The sequential variant's misses wait for their
// lookup (NoEarlyQueries); the prepared variant's queries run prepared
// (Options.Prepare). The cached variants are timed in their steady
// state, once coldMin misses have taught them that misses are likely.
func BenchmarkEngineMiss(b *testing.B) {
	for _, variant := range []string{"raw", "raw+rt", "memory", "redis", "sequential", "prepared"} {
		b.Run(variant, func(b *testing.B) {
			db, c, rt := benchFloor(b, variant)
			b.ReportAllocs()
			i := int64(0)
			for ; c != nil && i < 2*coldMin; i++ {
				benchScan(b, db, benchMiss, i%benchRows+1, i)
				c.eng.bg.Wait()
			}
			for b.Loop() {
				i++
				rt()
				benchScan(b, db, benchMiss, i%benchRows+1, i)
				b.StopTimer()
				if c != nil {
					c.eng.bg.Wait()
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkEngineQueryGap is the raw query of BenchmarkEngineMiss after a
// short busy wait, with no cache at all. It measures what the host charges
// for any work between two queries: on the 2-vCPU VM of November 2026, a
// 5µs wait made the query 20–30µs slower (107–124µs, then 135–147µs),
// as if the idle Postgres backend took that long to wake. A miss does such
// work (its key, its flight, recording its rows) where the raw variant's
// queries run back to back, and BenchmarkEngineMiss's memory variant, which
// has no cache round trip, pays about that much over raw.
func BenchmarkEngineQueryGap(b *testing.B) {
	db, _ := benchDB(b, "raw")
	for _, gap := range []time.Duration{0, 5 * time.Microsecond, 25 * time.Microsecond} {
		b.Run(gap.String(), func(b *testing.B) {
			i := int64(0)
			for b.Loop() {
				i++
				for t := time.Now(); time.Since(t) < gap; {
				}
				benchScan(b, db, benchMiss, i%benchRows+1, i)
			}
		})
	}
}

// benchFloor opens the DB of a miss or write benchmark's variant, and the
// cache round trip its floor adds to the raw statement: for raw+rt, a
// go-redis GET of a missing key; for the others, nothing.
func benchFloor(b *testing.B, variant string) (*sql.DB, *Connector, func()) {
	if variant != "raw+rt" {
		db, c := benchDB(b, variant)
		return db, c, func() {}
	}
	db, _ := benchDB(b, "raw")
	rdb := testRedis(b)
	return db, nil, func() { missingGet(b, rdb) }
}

// BenchmarkEngineWrite is a write through the driver: the raw write plus
// one invalidation. The floor is raw+rt: a raw go-redis GET, then the raw
// write.
func BenchmarkEngineWrite(b *testing.B) {
	for _, variant := range []string{"raw", "raw+rt", "memory", "redis"} {
		b.Run(variant, func(b *testing.B) {
			db, _, rt := benchFloor(b, variant)
			b.ReportAllocs()
			i := int64(0)
			for b.Loop() {
				i++
				rt()
				if _, err := db.Exec(benchWrite, i%1000+1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEngineColdHits reads point entries cached in Redis but not
// known hot here: 20,000 keys, more than hotKeys holds, read in turn (the
// setup fills them, about ten seconds). Such hits cost a plain MGET once
// most lookups of cold keys hit (see coldOutcomes).
func BenchmarkEngineColdHits(b *testing.B) {
	db, c := benchDB(b, "redis")
	const n = 20_000
	for i := int64(1); i <= n; i++ {
		benchScan(b, db, benchPoint, i)
	}
	c.eng.bg.Wait()
	i := int64(0)
	for b.Loop() {
		i++
		benchScan(b, db, benchPoint, i%n+1)
	}
}
