package cachedpq

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// benchTags are the tags of a typical registered query: a table and the
// namespace epoch.
var benchTags = []string{"users", "\x00epoch"}

// BenchmarkStoreMemLookupHit measures the in-process hit path: one otter
// read and the stamps under a read lock, into a reused buffer.
func BenchmarkStoreMemLookupHit(b *testing.B) {
	s := newMemStore(0)
	ctx := context.Background() // a benchmark may run longer than testCtx allows
	_, err := s.readStamps(ctx, benchTags)
	must(b, err)
	must(b, s.fill(ctx, "cachedpq:users:k", bytesEntry(make([]byte, 1024)), time.Hour, benchTags))
	b.Run("serial", func(b *testing.B) {
		buf := make([]uint64, 0, len(benchTags))
		b.ReportAllocs()
		for b.Loop() {
			if e, _, _ := s.lookup(ctx, "cachedpq:users:k", benchTags, buf); e == nil {
				b.Fatal("miss")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]uint64, 0, len(benchTags))
			for pb.Next() {
				if e, _, _ := s.lookup(ctx, "cachedpq:users:k", benchTags, buf); e == nil {
					b.Fatal("miss")
				}
			}
		})
	})
}

// BenchmarkStoreRedisLookup compares a hit lookup (entry and stamps in one
// pipeline) with a raw go-redis GET of the same bytes, in the same run, for
// a small and a larger value.
func BenchmarkStoreRedisLookup(b *testing.B) {
	c := testRedis(b)
	ctx := context.Background() // a benchmark may run longer than testCtx allows
	s := newRedisStore(c, testPrefix(b, c))
	key := s.prefix + ":e:k"
	for _, size := range []int{128, 16 << 10} {
		val := bytes.Repeat([]byte{'x'}, size)
		_, err := s.readStamps(ctx, benchTags)
		must(b, err)
		must(b, s.fill(ctx, key, val, time.Hour, benchTags))
		b.Run(sizeName(size)+"/raw-get", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if v, err := c.Get(ctx, key).Bytes(); err != nil || len(v) != size {
					b.Fatal(err)
				}
			}
		})
		b.Run(sizeName(size)+"/lookup", func(b *testing.B) {
			buf := make([]uint64, 0, len(benchTags))
			b.ReportAllocs()
			for b.Loop() {
				if v, _, err := s.lookup(ctx, key, benchTags, buf); err != nil || len(v) != size {
					b.Fatal(err)
				}
			}
		})
	}
}

// sizeName names a value size for a sub-benchmark.
func sizeName(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// BenchmarkStoreRedisPaired alternates a raw GET and a lookup of the same
// bytes in one loop and reports each one's mean time and their ratio, so
// that load from other processes weighs on both alike.
func BenchmarkStoreRedisPaired(b *testing.B) {
	c := testRedis(b)
	ctx := context.Background()
	s := newRedisStore(c, testPrefix(b, c))
	key := s.prefix + ":e:k"
	val := bytes.Repeat([]byte{'x'}, 1024)
	_, err := s.readStamps(ctx, benchTags)
	must(b, err)
	must(b, s.fill(ctx, key, val, time.Hour, benchTags))
	buf := make([]uint64, 0, len(benchTags))
	var raw, look time.Duration
	for b.Loop() {
		t0 := time.Now()
		if v, err := c.Get(ctx, key).Bytes(); err != nil || len(v) != len(val) {
			b.Fatal(err)
		}
		t1 := time.Now()
		if v, _, err := s.lookup(ctx, key, benchTags, buf); err != nil || len(v) != len(val) {
			b.Fatal(err)
		}
		raw, look = raw+t1.Sub(t0), look+time.Since(t1)
	}
	b.ReportMetric(float64(raw.Nanoseconds())/float64(b.N), "raw-ns/op")
	b.ReportMetric(float64(look.Nanoseconds())/float64(b.N), "lookup-ns/op")
	b.ReportMetric(float64(look)/float64(raw), "lookup/raw")
}

// BenchmarkLeaseTrips is a miss's lookup, which takes the fill lease, each
// right after a Postgres query as on a miss: the lease pipeline (see
// leaseByGuess), the lookup script it stands in for, and a raw go-redis
// GET of a missing key, the round trip a miss's floor allows.
func BenchmarkLeaseTrips(b *testing.B) {
	raw, _ := benchDB(b, "raw")
	c := testRedis(b)
	ctx := context.Background()
	s := newRedisStore(c, testPrefix(b, c))
	_, err := s.readStamps(ctx, benchTags) // the guess: the stamps seen last
	must(b, err)
	must(b, lookupScript.Load(ctx, c).Err())
	i := 0
	lease := func(script bool) func() {
		return func() {
			i++
			key := s.prefix + ":e:" + strconv.Itoa(i)
			var err error
			if script { // as lookupLease runs it when the guess fails
				keys := []string{key, leaseKey(key)}
				args := []any{int64(10_000), formatStamp(newStamp()), "0"}
				for _, tag := range benchTags {
					keys = append(keys, s.stampKey(tag))
					args = append(args, formatStamp(newStamp()))
				}
				err = lookupScript.Run(ctx, c, keys, args...).Err()
			} else {
				_, _, _, err = s.lookupLease(ctx, key, benchTags, 10*time.Second, false, newStamp())
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	j := int64(0)
	query := func() { j++; benchScan(b, raw, benchMiss, j%benchRows+1, j) }
	runPaired(b, []pairedOp{
		{name: "get", run: func() { missingGet(b, c) }, settle: query},
		{name: "pipeline", run: lease(false), settle: query},
		{name: "script", run: lease(true), settle: query},
	}, [2]string{"pipeline", "get"}, [2]string{"script", "get"})
}
