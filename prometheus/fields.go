package prometheus

import (
	"github.com/cachedpq/cachedpq"
	prom "github.com/prometheus/client_golang/prometheus"
)

// counterDesc is one per-query counter: its description and its field.
type counterDesc struct {
	desc *prom.Desc
	get  func(cachedpq.Counters) uint64
}

// globalDesc is one Connector-wide counter.
type globalDesc struct {
	desc *prom.Desc
	get  func(cachedpq.Stats) uint64
}

// counterFields maps every field of cachedpq.Counters but Bypass (which
// has its own reason label) to a metric name, without the namespace.
var counterFields = []struct {
	name, help string
	get        func(cachedpq.Counters) uint64
}{
	{"hits_total", "Registered reads served from the cache.", func(c cachedpq.Counters) uint64 { return c.Hits }},
	{"negative_hits_total", "Cache hits on an empty result (also counted in hits).", func(c cachedpq.Counters) uint64 { return c.NegativeHits }},
	{"misses_total", "Registered reads that ran on Postgres and were recorded.", func(c cachedpq.Counters) uint64 { return c.Misses }},
	{"stale_total", "Entries rejected because a table they read was written.", func(c cachedpq.Counters) uint64 { return c.Stale }},
	{"expired_total", "Entries found past their TTL.", func(c cachedpq.Counters) uint64 { return c.Expired }},
	{"foreign_total", "Values that did not decode or answered another query.", func(c cachedpq.Counters) uint64 { return c.Foreign }},
	{"coalesced_total", "Reads that waited for another reader's load instead of querying.", func(c cachedpq.Counters) uint64 { return c.Coalesced }},
	{"early_queries_total", "Misses whose query began while their cache lookup was on its way (also in misses).", func(c cachedpq.Counters) uint64 { return c.EarlyQueries }},
	{"early_found_total", "Early queries whose lookup found a current entry after all.", func(c cachedpq.Counters) uint64 { return c.EarlyFound }},
	{"early_refreshes_total", "Loads started before expiry or while serving a stale entry.", func(c cachedpq.Counters) uint64 { return c.EarlyRefreshes }},
	{"stale_served_total", "Expired entries served while one refresh ran.", func(c cachedpq.Counters) uint64 { return c.StaleServed }},
	{"fills_total", "Entries written to the cache.", func(c cachedpq.Counters) uint64 { return c.Fills }},
	{"fill_errors_total", "Entries that could not be written to the cache.", func(c cachedpq.Counters) uint64 { return c.FillErrors }},
	{"fill_raw_bytes_total", "Size of filled results before encoding, in bytes.", func(c cachedpq.Counters) uint64 { return c.FillBytesRaw }},
	{"fill_bytes_total", "Size of filled entries as stored, in bytes.", func(c cachedpq.Counters) uint64 { return c.FillBytes }},
}

// globalFields are the Connector-wide counters of cachedpq.Stats.
var globalFields = []struct {
	name, help string
	get        func(cachedpq.Stats) uint64
}{
	{"invalidations_total", "Table stamps replaced after writes or explicit invalidation.", func(s cachedpq.Stats) uint64 { return s.Invalidations }},
	{"epoch_bumps_total", "Invalidations of the whole namespace.", func(s cachedpq.Stats) uint64 { return s.EpochBumps }},
	{"cache_errors_total", "Failed or timed-out cache operations.", func(s cachedpq.Stats) uint64 { return s.CacheErrors }},
}
