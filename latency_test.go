package cachedpq

import (
	"testing"
	"time"
)

func TestHistogramExport(t *testing.T) {
	tests := []struct {
		name string
		obs  []time.Duration
	}{
		{"empty", nil},
		{"one fast", []time.Duration{time.Nanosecond}},
		{"spread", []time.Duration{3 * time.Microsecond, 80 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 40 * time.Millisecond}},
		{"slower than the last bucket", []time.Duration{3 * time.Hour, time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h histogram
			var sum time.Duration
			for _, d := range tt.obs {
				h.observe(d)
				sum += d
			}
			got := h.export()
			checkAscending(t, got)
			if got.Count() != uint64(len(tt.obs)) {
				t.Fatalf("Count = %d, want %d", got.Count(), len(tt.obs))
			}
			want := h.summary()
			for _, q := range []struct {
				q    float64
				want time.Duration
			}{{0.5, want.P50}, {0.95, want.P95}, {0.99, want.P99}} {
				if g := got.Quantile(q.q); g != q.want {
					t.Errorf("Quantile(%v) = %v, want %v as in Stats", q.q, g, q.want)
				}
			}
			if len(tt.obs) > 0 && tt.obs[0] < time.Hour {
				checkSum(t, got.Sum(), sum)
			}
		})
	}
}

func checkAscending(t *testing.T, h Histogram) {
	t.Helper()
	if len(h.Bounds) != len(h.Counts) {
		t.Fatalf("%d bounds, %d counts", len(h.Bounds), len(h.Counts))
	}
	for i := 1; i < len(h.Bounds); i++ {
		if h.Bounds[i] <= h.Bounds[i-1] {
			t.Fatalf("bound %d (%v) not above bound %d (%v)", i, h.Bounds[i], i-1, h.Bounds[i-1])
		}
	}
}

// checkSum allows the estimate 12% off, plus a microsecond per observation
// for durations below the histogram's resolution.
func checkSum(t *testing.T, got, want time.Duration) {
	t.Helper()
	slack := want*12/100 + 10*time.Microsecond
	if got < want-slack || got > want+slack {
		t.Errorf("Sum = %v, want %v ± %v", got, want, slack)
	}
}
