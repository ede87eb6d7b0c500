// Package otel reports a cachedpq Connector's statistics through an
// OpenTelemetry metric.Meter, keeping the driver itself free of the
// OpenTelemetry API.
//
//	c, _ := cachedpq.NewConnector(dsn, cachedpq.Options{})
//	reg, err := cpqotel.Register(otel.Meter("cachedpq"), c, cpqotel.Options{})
//	defer reg.Unregister()
//
// Every instrument is asynchronous: one callback reads Connector.Stats once
// per collection. Counters (cachedpq.hits, cachedpq.misses, ...) carry the
// attribute cachedpq.query, the policy Name or first table and fingerprint,
// so that summing over it gives the totals; cachedpq.bypasses also carries
// cachedpq.bypass.reason. Latency percentiles are gauges in seconds with a
// cachedpq.quantile attribute, since an observable histogram does not exist.
package otel

import (
	"context"

	"github.com/cachedpq/cachedpq"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Attribute keys set on the observations.
const (
	QueryKey        = attribute.Key("cachedpq.query")
	BypassReasonKey = attribute.Key("cachedpq.bypass.reason")
	QuantileKey     = attribute.Key("cachedpq.quantile")
	BreakerStateKey = attribute.Key("cachedpq.breaker.state")
)

// Source is what the instruments observe; *cachedpq.Connector implements it.
type Source interface {
	Stats() cachedpq.Stats
}

// Options configures Register. The zero value works.
type Options struct {
	// Attributes are added to every observation, to tell apart the
	// Connectors of one process. Nil means none.
	Attributes []attribute.KeyValue

	// NoQueryAttributes reports the Connector's totals without the
	// cachedpq.query attribute. False means one series per registered
	// query that ran.
	NoQueryAttributes bool
}

// instruments are the registered instruments of one Source.
type instruments struct {
	src      Source
	opts     Options
	counters []metric.Int64ObservableCounter // in counterFields order
	bypasses metric.Int64ObservableCounter
	global   []metric.Int64ObservableCounter // in globalFields order
	latency  [2]latencyInstruments           // cache lookups, db loads
	breaker  metric.Int64ObservableGauge
	pending  metric.Int64ObservableGauge
}

// latencyInstruments report one latency summary.
type latencyInstruments struct {
	duration metric.Float64ObservableGauge
	count    metric.Int64ObservableCounter
}

// Register creates the instruments on meter and a callback that observes
// src. Unregister the returned Registration to stop observing. Register is
// safe for concurrent use if meter is, as the OpenTelemetry SDK's is.
func Register(meter metric.Meter, src Source, opts Options) (metric.Registration, error) {
	in := &instruments{src: src, opts: opts}
	if err := in.create(meter); err != nil {
		return nil, err
	}
	return meter.RegisterCallback(in.observe, in.all()...)
}

// all lists every instrument, for RegisterCallback.
func (in *instruments) all() []metric.Observable {
	obs := []metric.Observable{in.bypasses, in.breaker, in.pending}
	for _, c := range in.counters {
		obs = append(obs, c)
	}
	for _, c := range in.global {
		obs = append(obs, c)
	}
	for _, l := range in.latency {
		obs = append(obs, l.duration, l.count)
	}
	return obs
}

// observe reads the Source once and records every instrument.
func (in *instruments) observe(_ context.Context, o metric.Observer) error {
	s := in.src.Stats()
	if in.opts.NoQueryAttributes {
		in.observeCounters(o, s.Counters)
	} else {
		for q, qc := range s.Queries {
			in.observeCounters(o, qc, QueryKey.String(q))
		}
	}
	base := metric.WithAttributes(in.opts.Attributes...)
	for i, f := range globalFields {
		o.ObserveInt64(in.global[i], int64(f.get(s)), base)
	}
	for i, l := range []cachedpq.Latency{s.CacheLatency, s.DBLatency} {
		in.observeLatency(o, in.latency[i], l)
	}
	if s.Breaker != "" {
		for _, st := range breakerStates {
			o.ObserveInt64(in.breaker, boolValue(st == s.Breaker), in.with(BreakerStateKey.String(st)))
		}
		o.ObserveInt64(in.pending, boolValue(s.Pending), in.with())
	}
	return nil
}

// observeCounters records one set of Counters with extra attributes.
func (in *instruments) observeCounters(o metric.Observer, c cachedpq.Counters, extra ...attribute.KeyValue) {
	opt := in.with(extra...)
	for i, f := range counterFields {
		o.ObserveInt64(in.counters[i], int64(f.get(c)), opt)
	}
	for reason, n := range c.Bypass {
		o.ObserveInt64(in.bypasses, int64(n), in.with(append(extra, BypassReasonKey.String(reason))...))
	}
}

// observeLatency records a summary's count and its percentiles in seconds.
func (in *instruments) observeLatency(o metric.Observer, li latencyInstruments, l cachedpq.Latency) {
	o.ObserveInt64(li.count, int64(l.Count), in.with())
	for _, q := range []struct {
		name string
		v    float64
	}{{"0.5", l.P50.Seconds()}, {"0.95", l.P95.Seconds()}, {"0.99", l.P99.Seconds()}} {
		o.ObserveFloat64(li.duration, q.v, in.with(QuantileKey.String(q.name)))
	}
}

// with is the measurement option for the configured attributes plus extra.
func (in *instruments) with(extra ...attribute.KeyValue) metric.MeasurementOption {
	all := make([]attribute.KeyValue, 0, len(in.opts.Attributes)+len(extra))
	all = append(append(all, in.opts.Attributes...), extra...)
	return metric.WithAttributes(all...)
}

// breakerStates are the values Stats.Breaker takes for a Redis cache.
var breakerStates = []string{"closed", "half-open", "open"}

func boolValue(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
