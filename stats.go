package cachedpq

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// bypassReason says why a registered query went to Postgres without the
// cache; its name is the key in Stats.Bypass.
type bypassReason uint8

const (
	bypassTransaction bypassReason = iota // read inside a transaction
	bypassSession                         // the connection's session state changed
	bypassBreakerOpen                     // the cache is failing; the breaker skips it
	bypassPending                         // an invalidation is not yet confirmed
	bypassTooLarge                        // over MaxRows/MaxBytes, or a value the cache cannot store (or must not: see namesCatalog)
	bypassArguments                       // an argument type that cannot be keyed
	bypassCacheError                      // a cache operation failed or timed out
	bypassVolatile                        // the query calls a volatile function
	bypassStandby                         // the connection reached a standby (see probe.go)
	bypassSettings                        // the connection started with other settings (see probe.go)
	bypassSequence                        // the query reads a sequence, which nextval advances under no tag
	bypassView                            // a view it reads calls what a registered query may not (see viewDef)
	bypassWriting                         // a write to a table it reads was running (see marks.go)
	numBypassReasons
)

var bypassNames = [numBypassReasons]string{"transaction", "session_state", "breaker_open",
	"invalidation_pending", "too_large", "arguments", "cache_error", "volatile", "standby",
	"server_settings", "sequence", "view", "writing"}

// Stats is a snapshot of a Connector's counters since it was created.
type Stats struct {
	Counters

	Invalidations uint64 // tags whose stamps were replaced
	EpochBumps    uint64 // invalidations of the whole namespace
	CacheErrors   uint64 // failed or timed-out cache operations

	// Breaker is the state of the circuit breaker in front of Redis:
	// "closed", "half-open" or "open"; empty for the in-process store.
	Breaker string

	// Pending is true while an invalidation has not reached the cache:
	// reads then skip it (Bypass "invalidation_pending") until a retry
	// lands, whatever the breaker's state.
	Pending bool

	CacheLatency Latency // lookups in Redis (the in-process store's are not timed)
	DBLatency    Latency // Postgres loads of registered queries (misses)

	// Queries holds the counters of each registered query that ran, by
	// Policy.Name, or by first table and fingerprint when it has none.
	Queries map[string]Counters
}

// Counters count what happened to registered reads, in total (Stats) or
// per query (Stats.Queries).
type Counters struct {
	Hits           uint64 // served from the cache
	NegativeHits   uint64 // hits on an empty result (also counted in Hits)
	Misses         uint64 // ran on Postgres and were recorded
	Stale          uint64 // entries found but rejected: a tag's stamp had changed
	Expired        uint64 // entries found past their TTL
	Foreign        uint64 // bytes under a key that did not decode, or answered another query
	Coalesced      uint64 // readers that waited for another reader's load
	EarlyQueries   uint64 // misses (also in Misses) whose query began while their lookup was on its way (see Options.NoEarlyQueries)
	EarlyFound     uint64 // early queries whose lookup found a current entry after all
	EarlyRefreshes uint64 // loads started before expiry (XFetch) or while serving stale
	StaleServed    uint64 // expired entries served while one refresh ran
	Fills          uint64 // entries written to the cache
	FillErrors     uint64
	FillBytesRaw   uint64 // size of the filled results before encoding
	FillBytes      uint64 // size of the filled entries as stored
	// Bypass counts reads that skipped the cache, by reason: transaction,
	// session_state, breaker_open, invalidation_pending, too_large,
	// arguments, cache_error, volatile, standby, server_settings, sequence,
	// view, writing.
	Bypass map[string]uint64
}

// HitRatio is Hits / (Hits + Misses), or 0 before any read.
func (c Counters) HitRatio() float64 {
	if c.Hits+c.Misses == 0 {
		return 0
	}
	return float64(c.Hits) / float64(c.Hits+c.Misses)
}

// Latency summarizes a latency histogram.
type Latency struct {
	Count         uint64
	P50, P95, P99 time.Duration
}

// counters are live Counters; every field is updated atomically.
type counters struct {
	hits, negativeHits, misses, stale, expired, foreign atomic.Uint64
	coalesced, earlyRefreshes, staleServed              atomic.Uint64
	earlyQueries, earlyFound                            atomic.Uint64
	fills, fillErrors, fillBytesRaw, fillBytes          atomic.Uint64
	bypass                                              [numBypassReasons]atomic.Uint64
}

func (c *counters) snapshot() Counters {
	out := Counters{
		Hits: c.hits.Load(), NegativeHits: c.negativeHits.Load(), Misses: c.misses.Load(),
		Stale: c.stale.Load(), Expired: c.expired.Load(), Foreign: c.foreign.Load(),
		Coalesced: c.coalesced.Load(), EarlyRefreshes: c.earlyRefreshes.Load(),
		EarlyQueries: c.earlyQueries.Load(), EarlyFound: c.earlyFound.Load(),
		StaleServed: c.staleServed.Load(), Fills: c.fills.Load(), FillErrors: c.fillErrors.Load(),
		FillBytesRaw: c.fillBytesRaw.Load(), FillBytes: c.fillBytes.Load(),
		Bypass: make(map[string]uint64, numBypassReasons),
	}
	for i, name := range bypassNames {
		out.Bypass[name] = c.bypass[i].Load()
	}
	return out
}

// addTo adds c's counts to sum.
func (c *counters) addTo(sum *counters) {
	from, to := c.all(), sum.all()
	for i := range from {
		to[i].Add(from[i].Load())
	}
}

// all lists every counter of c, in a fixed order.
func (c *counters) all() []*atomic.Uint64 {
	out := []*atomic.Uint64{&c.hits, &c.negativeHits, &c.misses, &c.stale, &c.expired, &c.foreign,
		&c.coalesced, &c.earlyRefreshes, &c.staleServed, &c.fills, &c.fillErrors, &c.fillBytesRaw, &c.fillBytes,
		&c.earlyQueries, &c.earlyFound}
	for i := range c.bypass {
		out = append(out, &c.bypass[i])
	}
	return out
}

// stats are a Connector's live counters.
type stats struct {
	counters
	invalidations, epochBumps, cacheErrors atomic.Uint64
	cacheLat, dbLat                        histogram
}

// counterOf picks one counter, so that an event counts in the total and in its
// query's counters with one call.
type counterOf func(*counters) *atomic.Uint64

func hitsF(c *counters) *atomic.Uint64           { return &c.hits }
func negativeHitsF(c *counters) *atomic.Uint64   { return &c.negativeHits }
func missesF(c *counters) *atomic.Uint64         { return &c.misses }
func staleF(c *counters) *atomic.Uint64          { return &c.stale }
func expiredF(c *counters) *atomic.Uint64        { return &c.expired }
func foreignF(c *counters) *atomic.Uint64        { return &c.foreign }
func coalescedF(c *counters) *atomic.Uint64      { return &c.coalesced }
func earlyRefreshesF(c *counters) *atomic.Uint64 { return &c.earlyRefreshes }
func earlyQueriesF(c *counters) *atomic.Uint64   { return &c.earlyQueries }
func earlyFoundF(c *counters) *atomic.Uint64     { return &c.earlyFound }
func staleServedF(c *counters) *atomic.Uint64    { return &c.staleServed }
func fillsF(c *counters) *atomic.Uint64          { return &c.fills }
func fillErrorsF(c *counters) *atomic.Uint64     { return &c.fillErrors }

// note counts one event in the total and in rs, the query's own counters.
func (e *engine) note(rs *regState, f counterOf) {
	f(&e.stats.counters).Add(1)
	f(&rs.c).Add(1)
}

// bypassed counts a read that skipped the cache.
func (e *engine) bypassed(rs *regState, r bypassReason) {
	e.stats.bypass[r].Add(1)
	rs.c.bypass[r].Add(1)
}

func (e *engine) snapshot() Stats {
	s := &e.stats
	out := Stats{
		Counters:      s.counters.snapshot(),
		Invalidations: s.invalidations.Load(), EpochBumps: s.epochBumps.Load(),
		CacheErrors:  s.cacheErrors.Load(),
		CacheLatency: s.cacheLat.summary(), DBLatency: s.dbLat.summary(),
		Queries: map[string]Counters{},
	}
	if e.breakr != nil {
		out.Breaker = e.breakr.cb.State().String()
	}
	out.Pending = e.unsure.Load()
	byLabel := map[string]*counters{} // queries may share a Policy.Name: add them up
	e.regs.Range(func(k, v any) bool {
		label := k.(*registration).label
		if byLabel[label] == nil {
			byLabel[label] = new(counters)
		}
		v.(*regState).c.addTo(byLabel[label])
		return true
	})
	for label, c := range byLabel {
		out.Queries[label] = c.snapshot()
	}
	return out
}

// Stats returns the Connector's counters. It is safe for concurrent use.
func (c *Connector) Stats() Stats { return c.eng.snapshot() }

// histogram is a lock-free latency histogram with buckets a quarter of a
// power of two wide (about 19% apart), from 1µs to over an hour.
type histogram struct {
	buckets [histBuckets]atomic.Uint64
}

const (
	histSub     = 4 // buckets per power of two
	histBuckets = 33 * histSub
)

// bucketOf maps a duration to its bucket: the power of two of its
// microseconds, refined by the next two bits.
func bucketOf(d time.Duration) int {
	us := uint64(max(d/time.Microsecond, 1))
	exp := bits.Len64(us) - 1
	sub := 0
	if exp >= 2 {
		sub = int(us>>(exp-2)) & (histSub - 1)
	} else if exp == 1 {
		sub = int(us&1) * 2
	}
	return min(exp*histSub+sub, histBuckets-1)
}

// upper is the largest duration bucket b holds.
func upper(b int) time.Duration {
	exp, sub := b/histSub, b%histSub
	us := (uint64(1) << exp) + (uint64(sub+1)<<exp)/histSub
	return time.Duration(us) * time.Microsecond
}

func (h *histogram) observe(d time.Duration) { h.buckets[bucketOf(d)].Add(1) }

// summary reads the counts and the 50th, 95th and 99th percentiles, each
// given as its bucket's upper bound.
func (h *histogram) summary() Latency {
	var counts [histBuckets]uint64
	var total uint64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	l := Latency{Count: total}
	if total == 0 {
		return l
	}
	quantile := func(q float64) time.Duration {
		rank := uint64(math.Ceil(q * float64(total)))
		var seen uint64
		for i, c := range counts {
			if seen += c; seen >= rank {
				return upper(i)
			}
		}
		return upper(histBuckets - 1)
	}
	l.P50, l.P95, l.P99 = quantile(0.50), quantile(0.95), quantile(0.99)
	return l
}
