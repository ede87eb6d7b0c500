package integration

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// BenchmarkLoadPaired runs the load benchmarks' workloads on raw lib/pq,
// cachedpq over Redis and cachedpq over the in-process store in turns of
// loadSlice each, so that drift in the host's load weighs on all three
// alike (the host here swings by a third within minutes, and the separate
// benchmarks run minutes apart). It reports each one's throughput and the
// cached/raw ratios. Run with
//
//	go test -run '^$' -bench LoadPaired -benchtime 8x ./integration/
func BenchmarkLoadPaired(b *testing.B) {
	for _, w := range []struct {
		name  string
		read  loadRead
		write string
	}{
		{"catalog-other-table", catalogList, loadOtherWrite},
		{"catalog", catalogList, catalogWrite},
		{"items-other-table", itemsList, loadOtherWrite},
		{"items", itemsList, loadWrite},
	} {
		b.Run(w.name, func(b *testing.B) {
			kinds := []string{"raw", "redis", "memory"}
			dbs := make(map[string]*sqlx.DB, len(kinds))
			for _, k := range kinds {
				dbs[k], _ = loadDB(b, k, w.read)
			}
			ops := make(map[string]int64, len(kinds))
			spent := make(map[string]time.Duration, len(kinds))
			n := 0
			for b.Loop() {
				for j := range kinds {
					k := kinds[(j+n)%len(kinds)]
					done, took, err := runSlice(dbs[k], w.read, 0.05, w.write, loadSlice)
					if err != nil {
						b.Fatalf("%s: %v", k, err)
					}
					ops[k] += done
					spent[k] += took
				}
				n++
			}
			rate := func(k string) float64 { return float64(ops[k]) / spent[k].Seconds() }
			for _, k := range kinds {
				b.ReportMetric(rate(k), k+"-ops/s")
			}
			b.ReportMetric(rate("redis")/rate("raw"), "redis/raw")
			b.ReportMetric(rate("memory")/rate("raw"), "memory/raw")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// loadSlice is how long one variant runs in one turn of BenchmarkLoadPaired.
const loadSlice = 500 * time.Millisecond

// runSlice runs loadClients clients on db for d, a writeShare of their
// operations the write and the others the read, and returns how many
// operations completed and how long they took.
func runSlice(db *sqlx.DB, read loadRead, writeShare float64, write string, d time.Duration) (int64, time.Duration, error) {
	var (
		done     atomic.Int64
		firstErr error
		once     sync.Once
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range loadClients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := loadOp(db, read, writeShare, write); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return done.Load(), time.Since(start), firstErr
}
