// Package prometheus exports a cachedpq Connector's statistics as
// Prometheus metrics, keeping the driver itself free of client_golang.
//
//	c, _ := cachedpq.NewConnector(dsn, cachedpq.Options{})
//	prometheus.MustRegister(cpqprom.NewCollector(c, cpqprom.Options{}))
//
// Counters carry a query label (the policy Name, or first table and
// fingerprint), so sum without (query) gives the totals:
//
//	cachedpq_hits_total{query}            cachedpq_misses_total{query}
//	cachedpq_bypass_total{query,reason}   cachedpq_fill_bytes_total{query}
//	cachedpq_invalidations_total          cachedpq_cache_errors_total
//	cachedpq_cache_lookup_duration_seconds{quantile}  (summary)
//	cachedpq_db_load_duration_seconds{quantile}       (summary)
//	cachedpq_breaker_state{state}         1 for the current state, else 0
//	cachedpq_invalidations_pending        1 while reads skip the cache for an
//	                                      invalidation that has not landed
//
// Every value is read from the Connector at scrape time; the collector
// keeps no state of its own.
package prometheus

import (
	"time"

	"github.com/cachedpq/cachedpq"
	prom "github.com/prometheus/client_golang/prometheus"
)

// Source is what the collector reads; *cachedpq.Connector implements it.
type Source interface {
	Stats() cachedpq.Stats
	LatencyHistograms() (cache, db cachedpq.Histogram)
}

// Options configures a Collector. The zero value works.
type Options struct {
	// Namespace prefixes every metric name. Empty means "cachedpq".
	Namespace string

	// ConstLabels are added to every metric, to tell apart the Connectors
	// of one process (for example {"db": "orders"}). Nil means none.
	ConstLabels prom.Labels

	// NoQueryLabels drops the query label: counters then report the
	// Connector's totals only, for processes with many registered queries.
	// False means one series per registered query that ran.
	NoQueryLabels bool
}

// Collector is a prometheus.Collector over a Source. It is safe for
// concurrent use, as the Prometheus registry requires.
type Collector struct {
	src      Source
	perQuery bool
	counters []counterDesc
	bypass   *prom.Desc
	global   []globalDesc
	cacheLat *prom.Desc
	dbLat    *prom.Desc
	breaker  *prom.Desc
	pending  *prom.Desc
}

var _ prom.Collector = (*Collector)(nil)

// breakerStates are the values Stats.Breaker takes for a Redis cache.
var breakerStates = []string{"closed", "half-open", "open"}

// quantiles are the ones Stats reports.
var quantiles = []float64{0.5, 0.95, 0.99}

// NewCollector returns a Collector reading src at every scrape.
func NewCollector(src Source, opts Options) *Collector {
	ns := opts.Namespace
	if ns == "" {
		ns = "cachedpq"
	}
	var qlabels []string
	if !opts.NoQueryLabels {
		qlabels = []string{"query"}
	}
	newDesc := func(name, help string, labels ...string) *prom.Desc {
		return prom.NewDesc(prom.BuildFQName(ns, "", name), help, labels, opts.ConstLabels)
	}
	c := &Collector{src: src, perQuery: !opts.NoQueryLabels}
	for _, f := range counterFields {
		c.counters = append(c.counters, counterDesc{newDesc(f.name, f.help, qlabels...), f.get})
	}
	c.bypass = newDesc("bypass_total", "Registered reads that skipped the cache, by reason.", append(qlabels, "reason")...)
	for _, f := range globalFields {
		c.global = append(c.global, globalDesc{newDesc(f.name, f.help), f.get})
	}
	c.cacheLat = newDesc("cache_lookup_duration_seconds", "Time taken by cache lookups of registered reads.")
	c.dbLat = newDesc("db_load_duration_seconds", "Time Postgres took to answer registered reads that missed.")
	c.breaker = newDesc("breaker_state", "State of the circuit breaker in front of Redis: 1 for the current state.", "state")
	c.pending = newDesc("invalidations_pending", "1 while reads skip Redis because an invalidation has not reached it yet.")
	return c
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prom.Desc) {
	for _, d := range c.counters {
		ch <- d.desc
	}
	for _, d := range c.global {
		ch <- d.desc
	}
	ch <- c.bypass
	ch <- c.cacheLat
	ch <- c.dbLat
	ch <- c.breaker
	ch <- c.pending
}

// Collect reads the Source once and sends its values.
func (c *Collector) Collect(ch chan<- prom.Metric) {
	s := c.src.Stats()
	if c.perQuery {
		for q, qc := range s.Queries {
			c.collectCounters(ch, qc, q)
		}
	} else {
		c.collectCounters(ch, s.Counters)
	}
	for _, d := range c.global {
		ch <- prom.MustNewConstMetric(d.desc, prom.CounterValue, float64(d.get(s)))
	}
	cache, db := c.src.LatencyHistograms()
	ch <- summary(c.cacheLat, cache)
	ch <- summary(c.dbLat, db)
	if s.Breaker != "" {
		for _, st := range breakerStates {
			ch <- prom.MustNewConstMetric(c.breaker, prom.GaugeValue, boolValue(st == s.Breaker), st)
		}
		ch <- prom.MustNewConstMetric(c.pending, prom.GaugeValue, boolValue(s.Pending))
	}
}

// collectCounters sends one set of Counters; labels is the query, or
// nothing for the totals.
func (c *Collector) collectCounters(ch chan<- prom.Metric, cs cachedpq.Counters, labels ...string) {
	for _, d := range c.counters {
		ch <- prom.MustNewConstMetric(d.desc, prom.CounterValue, float64(d.get(cs)), labels...)
	}
	for reason, n := range cs.Bypass {
		ch <- prom.MustNewConstMetric(c.bypass, prom.CounterValue, float64(n), append(labels, reason)...)
	}
}

// summary turns a histogram into a constant summary in seconds. The sum is
// the histogram's estimate (within about 10%): cachedpq keeps no exact sum
// on its hot path.
func summary(d *prom.Desc, h cachedpq.Histogram) prom.Metric {
	qs := make(map[float64]float64, len(quantiles))
	for _, q := range quantiles {
		qs[q] = seconds(h.Quantile(q))
	}
	return prom.MustNewConstSummary(d, h.Count(), seconds(h.Sum()), qs)
}

func seconds(d time.Duration) float64 { return d.Seconds() }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
