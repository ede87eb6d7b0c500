package cachedpq

import (
	"math"
	"time"
)

// Histogram is a snapshot of one of a Connector's latency histograms, for
// exporters that need more than Stats' percentiles: a sum for a mean, or the
// buckets themselves. Counts[i] observations took more than Bounds[i-1] and
// at most Bounds[i]; the last bucket also holds everything slower than its
// bound (over an hour).
type Histogram struct {
	Bounds []time.Duration // upper bound of each bucket, strictly ascending
	Counts []uint64        // observations in each bucket, not cumulative
}

// LatencyHistograms returns snapshots of the histograms behind
// Stats.CacheLatency (cache lookups) and Stats.DBLatency (Postgres loads of
// registered queries). It is safe for concurrent use.
func (c *Connector) LatencyHistograms() (cache, db Histogram) {
	return c.eng.stats.cacheLat.export(), c.eng.stats.dbLat.export()
}

// export copies the buckets. The finest buckets share their bounds (a
// microsecond cannot be split in four); they are merged, so that Bounds
// ascend strictly as exposition formats require.
func (h *histogram) export() Histogram {
	out := Histogram{Bounds: make([]time.Duration, 0, histBuckets), Counts: make([]uint64, 0, histBuckets)}
	for i := range h.buckets {
		n, b := h.buckets[i].Load(), upper(i)
		if last := len(out.Bounds) - 1; last >= 0 && b <= out.Bounds[last] {
			out.Counts[last] += n
			continue
		}
		out.Bounds = append(out.Bounds, b)
		out.Counts = append(out.Counts, n)
	}
	return out
}

// Count is the number of observations.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Sum estimates the total of all observations, counting each at the middle
// of its bucket. Buckets are about 19% wide, so the estimate is within
// about 10% of the true sum; rate(sum)/rate(count) gives a usable mean.
func (h Histogram) Sum() time.Duration {
	var sum float64
	var lower time.Duration
	for i, c := range h.Counts {
		sum += float64(c) * float64(lower+h.Bounds[i]) / 2
		lower = h.Bounds[i]
	}
	return time.Duration(sum)
}

// Quantile returns the upper bound of the bucket that holds the
// observation of rank ⌈q·Count⌉, as Stats' P50, P95 and P99 do, or 0 when
// the histogram is empty.
func (h Histogram) Quantile(q float64) time.Duration {
	total := h.Count()
	if total == 0 || len(h.Bounds) == 0 {
		return 0
	}
	rank := max(uint64(math.Ceil(q*float64(total))), 1)
	var seen uint64
	for i, c := range h.Counts {
		if seen += c; seen >= rank {
			return h.Bounds[i]
		}
	}
	return h.Bounds[len(h.Bounds)-1]
}
