package otel

import (
	"context"
	"testing"
	"time"

	"github.com/cachedpq/cachedpq"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// fakeSource serves fixed statistics.
type fakeSource struct{ stats cachedpq.Stats }

func (f *fakeSource) Stats() cachedpq.Stats { return f.stats }

func newFake() *fakeSource {
	return &fakeSource{stats: cachedpq.Stats{
		Counters:      cachedpq.Counters{Hits: 7, Misses: 3, FillBytes: 300, Bypass: map[string]uint64{"transaction": 3}},
		Invalidations: 5, EpochBumps: 1, CacheErrors: 2, Breaker: "open", Pending: true,
		CacheLatency: cachedpq.Latency{Count: 10, P50: 100 * time.Microsecond, P95: time.Millisecond, P99: 2 * time.Millisecond},
		Queries: map[string]cachedpq.Counters{
			"user": {Hits: 3, Misses: 1, FillBytes: 100, Bypass: map[string]uint64{"transaction": 2}},
			"list": {Hits: 4, Misses: 2, FillBytes: 200, Bypass: map[string]uint64{"transaction": 1}},
		},
	}}
}

// collect registers src with opts on a fresh provider and reads it once.
func collect(t *testing.T, src Source, opts Options) map[string]metricdata.Metrics {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	reg, err := Register(mp.Meter("test"), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Unregister() })
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// point is one expected data point: its attributes and value.
type point struct {
	attrs []attribute.KeyValue
	value float64
}

func TestRegister(t *testing.T) {
	db := attribute.String("db.namespace", "orders")
	tests := []struct {
		name   string
		opts   Options
		metric string
		unit   string
		want   []point
	}{
		{"hits per query", Options{}, "cachedpq.hits", "{hit}", []point{
			{[]attribute.KeyValue{QueryKey.String("user")}, 3},
			{[]attribute.KeyValue{QueryKey.String("list")}, 4},
		}},
		{"hits in total", Options{NoQueryAttributes: true}, "cachedpq.hits", "{hit}", []point{{nil, 7}}},
		{"bypasses by reason", Options{}, "cachedpq.bypasses", "{read}", []point{
			{[]attribute.KeyValue{QueryKey.String("user"), BypassReasonKey.String("transaction")}, 2},
			{[]attribute.KeyValue{QueryKey.String("list"), BypassReasonKey.String("transaction")}, 1},
		}},
		{"bytes with extra attributes", Options{Attributes: []attribute.KeyValue{db}, NoQueryAttributes: true}, "cachedpq.fill.size", "By", []point{
			{[]attribute.KeyValue{db}, 300},
		}},
		{"invalidations", Options{}, "cachedpq.invalidations", "{tag}", []point{{nil, 5}}},
		{"lookups", Options{}, "cachedpq.cache.lookups", "{lookup}", []point{{nil, 10}}},
		{"latency in seconds", Options{}, "cachedpq.cache.lookup.duration", "s", []point{
			{[]attribute.KeyValue{QuantileKey.String("0.5")}, 0.0001},
			{[]attribute.KeyValue{QuantileKey.String("0.95")}, 0.001},
			{[]attribute.KeyValue{QuantileKey.String("0.99")}, 0.002},
		}},
		{"breaker state", Options{}, "cachedpq.breaker.state", "{state}", []point{
			{[]attribute.KeyValue{BreakerStateKey.String("closed")}, 0},
			{[]attribute.KeyValue{BreakerStateKey.String("half-open")}, 0},
			{[]attribute.KeyValue{BreakerStateKey.String("open")}, 1},
		}},
		{"invalidations pending", Options{}, "cachedpq.invalidations.pending", "{state}", []point{{nil, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := collect(t, newFake(), tt.opts)[tt.metric]
			if !ok {
				t.Fatalf("no metric %s", tt.metric)
			}
			if m.Unit != tt.unit {
				t.Errorf("unit %q, want %q", m.Unit, tt.unit)
			}
			got := points(t, m)
			if len(got) != len(tt.want) {
				t.Fatalf("%d points %v, want %d", len(got), got, len(tt.want))
			}
			for _, w := range tt.want {
				set := attribute.NewSet(w.attrs...)
				if v, ok := got[set]; !ok || v != w.value {
					t.Errorf("point %v = %v (present %v), want %v", w.attrs, v, ok, w.value)
				}
			}
		})
	}
}

// points flattens a metric's data points by attribute set; counters must
// be cumulative and monotonic.
func points(t *testing.T, m metricdata.Metrics) map[attribute.Set]float64 {
	t.Helper()
	out := map[attribute.Set]float64{}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		if !d.IsMonotonic || d.Temporality != metricdata.CumulativeTemporality {
			t.Errorf("%s: monotonic %v, temporality %v", m.Name, d.IsMonotonic, d.Temporality)
		}
		for _, p := range d.DataPoints {
			out[p.Attributes] = float64(p.Value)
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out[p.Attributes] = float64(p.Value)
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			out[p.Attributes] = p.Value
		}
	default:
		t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
	}
	return out
}

func TestNoBreakerForMemoryStore(t *testing.T) {
	src := newFake()
	src.stats.Breaker = ""
	for _, name := range []string{"cachedpq.breaker.state", "cachedpq.invalidations.pending"} {
		if m, ok := collect(t, src, Options{})[name]; ok && len(points(t, m)) > 0 {
			t.Fatalf("%s reported for the in-process store: %v", name, m)
		}
	}
}

func TestUnregisterStopsObserving(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	calls := 0
	src := countingSource{fakeSource: newFake(), calls: &calls}
	reg, err := Register(mp.Meter("test"), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	reader.Collect(context.Background(), &rm)
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	reader.Collect(context.Background(), &rm)
	if calls != 1 {
		t.Fatalf("Stats read %d times, want once (one collection before Unregister)", calls)
	}
}

// countingSource counts reads of Stats.
type countingSource struct {
	*fakeSource
	calls *int
}

func (c countingSource) Stats() cachedpq.Stats {
	*c.calls++
	return c.fakeSource.Stats()
}
