package cachedpq

import "sync/atomic"

// bypassReason says why a registered query went to Postgres without the
// cache; its name is the key in Stats.Bypass.
type bypassReason uint8

const (
	bypassTransaction bypassReason = iota // read inside a transaction
	bypassSession                         // the connection's session state changed
	bypassBreakerOpen                     // the cache is failing; the breaker skips it
	bypassPending                         // an invalidation is not yet confirmed
	bypassTooLarge                        // over MaxRows/MaxBytes, or a value the cache cannot store
	bypassArguments                       // an argument type that cannot be keyed
	bypassCacheError                      // a cache operation failed or timed out
	bypassVolatile                        // the query calls a volatile function
	numBypassReasons
)

var bypassNames = [numBypassReasons]string{"transaction", "session_state", "breaker_open",
	"invalidation_pending", "too_large", "arguments", "cache_error", "volatile"}

// Stats is a snapshot of a Connector's counters since it was created.
type Stats struct {
	Hits           uint64 // served from the cache
	NegativeHits   uint64 // hits on an empty result (also counted in Hits)
	Misses         uint64 // registered reads that ran on Postgres and were recorded
	Stale          uint64 // entries found but rejected: a tag's stamp had changed
	Expired        uint64 // entries found past their TTL
	Foreign        uint64 // bytes under a key that did not decode, or answered another query
	Coalesced      uint64 // readers that waited for another reader's load
	EarlyRefreshes uint64 // loads started before expiry (XFetch) or while serving stale
	StaleServed    uint64 // expired entries served while one refresh ran
	Fills          uint64 // entries written to the cache
	FillErrors     uint64
	Invalidations  uint64 // tags whose stamps were replaced
	EpochBumps     uint64 // invalidations of the whole namespace
	CacheErrors    uint64 // failed or timed-out cache operations
	// Bypass counts registered reads that skipped the cache, by reason:
	// transaction, session_state, breaker_open, invalidation_pending,
	// too_large, arguments, cache_error, volatile.
	Bypass map[string]uint64
}

// stats are the live counters; every field is updated atomically.
type stats struct {
	hits, negativeHits, misses, stale, expired, foreign atomic.Uint64
	coalesced, earlyRefreshes, staleServed              atomic.Uint64
	fills, fillErrors, invalidations, epochBumps        atomic.Uint64
	cacheErrors                                         atomic.Uint64
	bypass                                              [numBypassReasons]atomic.Uint64
}

func (s *stats) bypassed(r bypassReason) { s.bypass[r].Add(1) }

func (s *stats) snapshot() Stats {
	out := Stats{
		Hits: s.hits.Load(), NegativeHits: s.negativeHits.Load(), Misses: s.misses.Load(),
		Stale: s.stale.Load(), Expired: s.expired.Load(), Foreign: s.foreign.Load(),
		Coalesced: s.coalesced.Load(), EarlyRefreshes: s.earlyRefreshes.Load(),
		StaleServed: s.staleServed.Load(), Fills: s.fills.Load(), FillErrors: s.fillErrors.Load(),
		Invalidations: s.invalidations.Load(), EpochBumps: s.epochBumps.Load(),
		CacheErrors: s.cacheErrors.Load(), Bypass: make(map[string]uint64, numBypassReasons),
	}
	for i, name := range bypassNames {
		out.Bypass[name] = s.bypass[i].Load()
	}
	return out
}

// Stats returns the Connector's counters. It is safe for concurrent use.
func (c *Connector) Stats() Stats { return c.eng.stats.snapshot() }
