package otel

import (
	"github.com/cachedpq/cachedpq"
	"go.opentelemetry.io/otel/metric"
)

// field is one counter of cachedpq.Counters or cachedpq.Stats: its
// instrument's name, unit and description.
type field[T any] struct {
	name, unit, desc string
	get              func(T) uint64
}

// counterFields are the per-query counters, Bypass apart.
var counterFields = []field[cachedpq.Counters]{
	{"cachedpq.hits", "{hit}", "Registered reads served from the cache.", func(c cachedpq.Counters) uint64 { return c.Hits }},
	{"cachedpq.negative_hits", "{hit}", "Cache hits on an empty result, also counted in cachedpq.hits.", func(c cachedpq.Counters) uint64 { return c.NegativeHits }},
	{"cachedpq.misses", "{miss}", "Registered reads that ran on Postgres and were recorded.", func(c cachedpq.Counters) uint64 { return c.Misses }},
	{"cachedpq.stale", "{entry}", "Entries rejected because a table they read was written.", func(c cachedpq.Counters) uint64 { return c.Stale }},
	{"cachedpq.expired", "{entry}", "Entries found past their TTL.", func(c cachedpq.Counters) uint64 { return c.Expired }},
	{"cachedpq.foreign", "{entry}", "Values that did not decode or answered another query.", func(c cachedpq.Counters) uint64 { return c.Foreign }},
	{"cachedpq.coalesced", "{read}", "Reads that waited for another reader's load.", func(c cachedpq.Counters) uint64 { return c.Coalesced }},
	{"cachedpq.early_queries", "{read}", "Misses whose query began while their cache lookup was on its way, also in cachedpq.misses.", func(c cachedpq.Counters) uint64 { return c.EarlyQueries }},
	{"cachedpq.early_found", "{read}", "Early queries whose lookup found a current entry after all.", func(c cachedpq.Counters) uint64 { return c.EarlyFound }},
	{"cachedpq.early_refreshes", "{refresh}", "Loads started before expiry or while serving a stale entry.", func(c cachedpq.Counters) uint64 { return c.EarlyRefreshes }},
	{"cachedpq.stale_served", "{read}", "Expired entries served while one refresh ran.", func(c cachedpq.Counters) uint64 { return c.StaleServed }},
	{"cachedpq.fills", "{entry}", "Entries written to the cache.", func(c cachedpq.Counters) uint64 { return c.Fills }},
	{"cachedpq.fill_errors", "{error}", "Entries that could not be written to the cache.", func(c cachedpq.Counters) uint64 { return c.FillErrors }},
	{"cachedpq.fill.raw_size", "By", "Size of filled results before encoding.", func(c cachedpq.Counters) uint64 { return c.FillBytesRaw }},
	{"cachedpq.fill.size", "By", "Size of filled entries as stored.", func(c cachedpq.Counters) uint64 { return c.FillBytes }},
}

// globalFields are the Connector-wide counters.
var globalFields = []field[cachedpq.Stats]{
	{"cachedpq.invalidations", "{tag}", "Table stamps replaced after writes or explicit invalidation.", func(s cachedpq.Stats) uint64 { return s.Invalidations }},
	{"cachedpq.epoch_bumps", "{bump}", "Invalidations of the whole namespace.", func(s cachedpq.Stats) uint64 { return s.EpochBumps }},
	{"cachedpq.cache.errors", "{error}", "Failed or timed-out cache operations.", func(s cachedpq.Stats) uint64 { return s.CacheErrors }},
}

// create makes every instrument on meter.
func (in *instruments) create(m metric.Meter) error {
	var err error
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		if err != nil {
			return nil
		}
		var c metric.Int64ObservableCounter
		c, err = m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		return c
	}
	for _, f := range counterFields {
		in.counters = append(in.counters, counter(f.name, f.unit, f.desc))
	}
	in.bypasses = counter("cachedpq.bypasses", "{read}", "Registered reads that skipped the cache, by reason.")
	for _, f := range globalFields {
		in.global = append(in.global, counter(f.name, f.unit, f.desc))
	}
	in.latency[0].count = counter("cachedpq.cache.lookups", "{lookup}", "Cache lookups of registered reads.")
	in.latency[1].count = counter("cachedpq.db.loads", "{load}", "Postgres loads of registered reads that missed.")
	if err != nil {
		return err
	}
	return in.createGauges(m)
}

// createGauges makes the latency, breaker and pending gauges.
func (in *instruments) createGauges(m metric.Meter) error {
	var err error
	if in.latency[0].duration, err = m.Float64ObservableGauge("cachedpq.cache.lookup.duration",
		metric.WithUnit("s"), metric.WithDescription("Percentiles of cache lookup latency.")); err != nil {
		return err
	}
	if in.latency[1].duration, err = m.Float64ObservableGauge("cachedpq.db.load.duration",
		metric.WithUnit("s"), metric.WithDescription("Percentiles of Postgres load latency for misses.")); err != nil {
		return err
	}
	if in.breaker, err = m.Int64ObservableGauge("cachedpq.breaker.state", metric.WithUnit("{state}"),
		metric.WithDescription("State of the circuit breaker in front of Redis: 1 for the current state.")); err != nil {
		return err
	}
	in.pending, err = m.Int64ObservableGauge("cachedpq.invalidations.pending", metric.WithUnit("{state}"),
		metric.WithDescription("1 while reads skip Redis because an invalidation has not reached it yet."))
	return err
}
