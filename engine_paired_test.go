package cachedpq

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The paired engine benchmarks run each variant once per iteration, in
// turns, and report each one's mean time and their ratios: load from other
// processes on a shared machine then weighs on every variant alike, where
// the separate benchmarks above compare runs minutes apart. Run with
//
//	go test -run '^$' -bench EnginePaired -count 6 . > paired.txt
//	benchstat paired.txt

// pairedOp is one variant: run is timed, settle (if set) runs untimed
// after it, to let background work finish.
type pairedOp struct {
	name        string
	run, settle func()
}

// runPaired times ops in turns and reports "<name>-ns/op" for each, and
// "<a>/<b>" for each pair of names in ratios.
func runPaired(b *testing.B, ops []pairedOp, ratios ...[2]string) {
	for _, op := range ops { // warm up connections and caches
		op.run()
		if op.settle != nil {
			op.settle()
		}
	}
	sums := make(map[string]time.Duration, len(ops))
	n := 0
	for b.Loop() {
		// In a new order each time: what ran just before weighs on an op
		// (a Postgres backend that has just worked, another's that idled),
		// and a fixed order, even rotated, has each op follow the same one.
		for _, j := range rand.Perm(len(ops)) {
			op := ops[j]
			start := time.Now()
			op.run()
			sums[op.name] += time.Since(start)
			if op.settle != nil {
				op.settle()
			}
		}
		n++
	}
	for _, op := range ops {
		b.ReportMetric(float64(sums[op.name].Nanoseconds())/float64(n), op.name+"-ns/op")
	}
	for _, r := range ratios {
		b.ReportMetric(float64(sums[r[0]])/float64(sums[r[1]]), r[0]+"/"+r[1])
	}
}

// BenchmarkEnginePairedMiss pairs BenchmarkEngineMiss's variants, a miss
// that waits for its lookup before its query (sequential, as with
// Options.NoEarlyQueries) and one whose query runs prepared (prepared,
// Options.Prepare). Each cached miss's fill finishes untimed; the floor is
// raw+rt.
func BenchmarkEnginePairedMiss(b *testing.B) {
	i := int64(0)
	miss := func(db *sql.DB) {
		i++
		benchScan(b, db, benchMiss, i%benchRows+1, i)
	}
	seq, sc := benchDB(b, "sequential")
	prep, pc := benchDB(b, "prepared")
	for range 2 * coldMin { // as runPairedFloor warms the redis variant
		miss(prep)
		pc.eng.bg.Wait()
	}
	runPairedFloor(b, true, miss,
		pairedOp{name: "sequential", run: func() { miss(seq) }, settle: sc.eng.bg.Wait},
		pairedOp{name: "prepared", run: func() { miss(prep) }, settle: pc.eng.bg.Wait})
}

// BenchmarkEnginePairedWrite pairs BenchmarkEngineWrite's variants; the
// floor is raw+rt. A write's background work (its mark taken back, see
// marks.go; the purge of its tables' entries) runs beside the next ops, as
// it would beside an application's: waiting for it (settle) would idle the
// machine for purgeDelay after each write, and the ops after it would be
// timed on cold caches.
func BenchmarkEnginePairedWrite(b *testing.B) {
	i := int64(0)
	runPairedFloor(b, false, func(db *sql.DB) {
		i++
		if _, err := db.Exec(benchWrite, i%1000+1); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkEnginePairedReturning is BenchmarkEnginePairedWrite's write
// run through Query with RETURNING, whose invalidation comes before its
// rows' Close returns; the floor is raw+rt.
func BenchmarkEnginePairedReturning(b *testing.B) {
	i := int64(0)
	runPairedFloor(b, false, func(db *sql.DB) {
		i++
		var score string
		if err := db.QueryRow(benchWrite+` returning score`, i%1000+1).Scan(&score); err != nil {
			b.Fatal(err)
		}
	})
}

// runPairedFloor runs stmt in turns on raw lib/pq, on raw lib/pq after a
// go-redis round trip (raw+rt, the floor), and through cachedpq over the
// in-process store and over Redis, and reports redis/raw+rt and
// memory/raw. With settle, the Redis variant's background work (a miss's
// fill) finishes untimed after each statement. Each extra op is run too,
// and reported against raw+rt and redis.
func runPairedFloor(b *testing.B, settle bool, stmt func(db *sql.DB), extra ...pairedOp) {
	raw, _ := benchDB(b, "raw")
	mem, _ := benchDB(b, "memory")
	red, rc := benchDB(b, "redis")
	rdb := testRedis(b)
	on := func(db *sql.DB) func() { return func() { stmt(db) } }
	cached := pairedOp{name: "redis", run: on(red)}
	if settle {
		cached.settle = rc.eng.bg.Wait
		// The steady state of misses: a Connector judges whether misses
		// are likely only after coldMin lookups (see coldOutcomes).
		for range 2 * coldMin {
			cached.run()
			cached.settle()
		}
	}
	ops := []pairedOp{
		{name: "raw", run: on(raw)},
		{name: "raw+rt", run: func() { missingGet(b, rdb); stmt(raw) }},
		{name: "memory", run: on(mem)},
		cached,
	}
	ratios := [][2]string{{"redis", "raw+rt"}, {"memory", "raw"}}
	for _, op := range extra {
		ops = append(ops, op)
		ratios = append(ratios, [2]string{op.name, "raw+rt"}, [2]string{"redis", op.name})
	}
	runPaired(b, ops, ratios...)
}

// BenchmarkEnginePairedHit pairs a Redis hit with its floor, a raw go-redis
// GET of the same entry and its decoding, and an in-process hit with the
// raw query; for the point lookup, also an unregistered query through
// cachedpq with the raw query.
func BenchmarkEnginePairedHit(b *testing.B) {
	for _, r := range benchReads {
		b.Run(r.name, func(b *testing.B) {
			var args []any
			if r.arg != nil {
				args = []any{r.arg}
			}
			raw, _ := benchDB(b, "raw")
			mem, _ := benchDB(b, "memory")
			red, rc := benchDB(b, "redis")
			benchScan(b, red, r.query, args...)
			rc.eng.bg.Wait()
			key := entryKey(b, rc, r.name)
			rdb := rc.opts.Redis.(*redis.Client)
			read := func(db *sql.DB) func() { return func() { benchScan(b, db, r.query, args...) } }
			ops := []pairedOp{
				{name: "get+decode", run: func() { getDecode(b, rdb, key) }},
				{name: "redis", run: read(red)},
				{name: "memory", run: read(mem)},
			}
			ratios := [][2]string{{"redis", "get+decode"}}
			if r.name == "point" { // the aggregate's raw query takes 1,000 times longer than the rest
				unreg, _ := benchDB(b, "unregistered")
				ops = append(ops, pairedOp{name: "raw", run: read(raw)}, pairedOp{name: "unregistered", run: read(unreg)})
				ratios = append(ratios, [2]string{"raw", "memory"}, [2]string{"unregistered", "raw"})
			}
			runPaired(b, ops, ratios...)
		})
	}
}

// missingGet is one cache round trip: a go-redis GET of a missing key.
func missingGet(b *testing.B, rdb *redis.Client) {
	if err := rdb.Get(context.Background(), "cachedpq-bench-missing").Err(); err != redis.Nil {
		b.Fatal(err)
	}
}

// getDecode is a hit's floor: a go-redis GET of an entry, decoded.
func getDecode(b *testing.B, rdb *redis.Client, key string) {
	v, err := rdb.Get(context.Background(), key).Bytes()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := benchBackend.decode(v); err != nil {
		b.Fatal(err)
	}
}

// benchBackend decodes Redis values as a lookup does: the stamps the entry
// was loaded under, then the entry.
var benchBackend = &redisBackend{maxBytes: maxDecodeSize}
