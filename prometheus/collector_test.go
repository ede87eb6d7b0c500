package prometheus

import (
	"strings"
	"testing"
	"time"

	"github.com/cachedpq/cachedpq"
	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeSource serves fixed statistics.
type fakeSource struct {
	stats        cachedpq.Stats
	cacheLat, db cachedpq.Histogram
}

func (f *fakeSource) Stats() cachedpq.Stats { return f.stats }

func (f *fakeSource) LatencyHistograms() (cache, db cachedpq.Histogram) {
	return f.cacheLat, f.db
}

func newFake() *fakeSource {
	user := cachedpq.Counters{Hits: 3, NegativeHits: 1, Misses: 1, Fills: 1, FillBytes: 120,
		Bypass: map[string]uint64{"transaction": 2, "too_large": 0}}
	list := cachedpq.Counters{Hits: 4, Misses: 2, Bypass: map[string]uint64{"transaction": 1}}
	return &fakeSource{
		stats: cachedpq.Stats{
			Counters:      cachedpq.Counters{Hits: 7, Misses: 3, Bypass: map[string]uint64{"transaction": 3}},
			Invalidations: 5, EpochBumps: 1, CacheErrors: 2, Breaker: "half-open", Pending: true,
			Queries: map[string]cachedpq.Counters{"user": user, "list/0a1b2c3d": list},
		},
		cacheLat: cachedpq.Histogram{
			Bounds: []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond},
			Counts: []uint64{2, 1, 1},
		},
	}
}

func TestCollectorExposition(t *testing.T) {
	const want = `
# HELP cachedpq_hits_total Registered reads served from the cache.
# TYPE cachedpq_hits_total counter
cachedpq_hits_total{query="list/0a1b2c3d"} 4
cachedpq_hits_total{query="user"} 3
# HELP cachedpq_negative_hits_total Cache hits on an empty result (also counted in hits).
# TYPE cachedpq_negative_hits_total counter
cachedpq_negative_hits_total{query="list/0a1b2c3d"} 0
cachedpq_negative_hits_total{query="user"} 1
# HELP cachedpq_bypass_total Registered reads that skipped the cache, by reason.
# TYPE cachedpq_bypass_total counter
cachedpq_bypass_total{query="list/0a1b2c3d",reason="transaction"} 1
cachedpq_bypass_total{query="user",reason="too_large"} 0
cachedpq_bypass_total{query="user",reason="transaction"} 2
# HELP cachedpq_invalidations_total Table stamps replaced after writes or explicit invalidation.
# TYPE cachedpq_invalidations_total counter
cachedpq_invalidations_total 5
# HELP cachedpq_breaker_state State of the circuit breaker in front of Redis: 1 for the current state.
# TYPE cachedpq_breaker_state gauge
cachedpq_breaker_state{state="closed"} 0
cachedpq_breaker_state{state="half-open"} 1
cachedpq_breaker_state{state="open"} 0
# HELP cachedpq_invalidations_pending 1 while reads skip Redis because an invalidation has not reached it yet.
# TYPE cachedpq_invalidations_pending gauge
cachedpq_invalidations_pending 1
# HELP cachedpq_cache_lookup_duration_seconds Time taken by cache lookups of registered reads.
# TYPE cachedpq_cache_lookup_duration_seconds summary
cachedpq_cache_lookup_duration_seconds{quantile="0.5"} 0.001
cachedpq_cache_lookup_duration_seconds{quantile="0.95"} 0.004
cachedpq_cache_lookup_duration_seconds{quantile="0.99"} 0.004
cachedpq_cache_lookup_duration_seconds_sum 0.0055
cachedpq_cache_lookup_duration_seconds_count 4
# HELP cachedpq_db_load_duration_seconds Time Postgres took to answer registered reads that missed.
# TYPE cachedpq_db_load_duration_seconds summary
cachedpq_db_load_duration_seconds{quantile="0.5"} 0
cachedpq_db_load_duration_seconds{quantile="0.95"} 0
cachedpq_db_load_duration_seconds{quantile="0.99"} 0
cachedpq_db_load_duration_seconds_sum 0
cachedpq_db_load_duration_seconds_count 0
`
	c := NewCollector(newFake(), Options{})
	err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"cachedpq_hits_total", "cachedpq_negative_hits_total", "cachedpq_bypass_total",
		"cachedpq_invalidations_total", "cachedpq_breaker_state", "cachedpq_invalidations_pending",
		"cachedpq_cache_lookup_duration_seconds", "cachedpq_db_load_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
}

func TestCollectorOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		breaker string
		metric  string
		want    string
	}{
		{"totals without query labels", Options{NoQueryLabels: true}, "closed", "cachedpq_hits_total", `
# HELP cachedpq_hits_total Registered reads served from the cache.
# TYPE cachedpq_hits_total counter
cachedpq_hits_total 7
`},
		{"namespace and const labels", Options{Namespace: "app_cache", ConstLabels: prom.Labels{"db": "orders"}, NoQueryLabels: true}, "closed", "app_cache_misses_total", `
# HELP app_cache_misses_total Registered reads that ran on Postgres and were recorded.
# TYPE app_cache_misses_total counter
app_cache_misses_total{db="orders"} 3
`},
		{"no breaker for the in-process store", Options{}, "", "cachedpq_breaker_state", ``},
		{"nothing pending for the in-process store", Options{}, "", "cachedpq_invalidations_pending", ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFake()
			src.stats.Breaker = tt.breaker
			c := NewCollector(src, tt.opts)
			if err := testutil.CollectAndCompare(c, strings.NewReader(tt.want), tt.metric); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCollectorLint(t *testing.T) {
	for _, opts := range []Options{{}, {NoQueryLabels: true}} {
		problems, err := testutil.CollectAndLint(NewCollector(newFake(), opts))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint %s: %s", p.Metric, p.Text)
		}
	}
}

// TestCollectorRegisters checks that the descriptions are consistent with
// the metrics: a pedantic registry refuses a collector that sends
// undescribed metrics or inconsistent label sets.
func TestCollectorRegisters(t *testing.T) {
	reg := prom.NewPedanticRegistry()
	if err := reg.Register(NewCollector(newFake(), Options{})); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) == 0 {
		t.Fatal("no metric families gathered")
	}
}
