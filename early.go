package cachedpq

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync"
	"time"

	"github.com/zeebo/xxh3"
)

// Early queries. A miss in a shared cache costs a round trip, then the
// query. Where a miss is the likely outcome, the caller need not wait for
// the round trip: the query is sent at once, and the lookup, which still
// takes the fill lease, follows in the background (see earlyLookupWait for
// when). The entry then records the stamps this process last saw under its
// tags (stampSlot), not those the lookup reads: each was current at some
// time before the query began, as the stamp protocol asks, so an entry of
// a load that raced a write is never served. The lookup tells whether the
// entry may be stored: only if it holds the lease and the stamps it read
// are those the entry records (if another process wrote since this one
// last saw the stamps, the entry would be void anyway).
//
// A miss is likely for a key this process has not looked up lately while
// at least three in four lookups of such keys miss (see coldOutcomes). Hot
// keys, and keys read again, keep the usual path, whose lease makes
// concurrent readers in every process wait for one load: early queries do
// not multiply the loads of a key that many readers want.

// earlyLookupWait is how long after its query an early query's lookup
// starts if the query is not known to be fast (its last load took less).
// A fast query's lookup starts once the query is answered: beside it, the
// lookup would take CPU the query needs on a host that runs Postgres or
// Redis as well: on a 2-vCPU VM (November 2026) such a miss cost more than
// the query and a round trip (BenchmarkEnginePairedMiss, redis/raw+rt
// 1.069 ± 8%; 0.911 ± 9% after, runs alternating). A slow query's lookup
// still takes the lease soon, so that readers in other processes wait for
// its entry instead of querying too.
const earlyLookupWait = time.Millisecond

// early runs r's query at once if a miss is likely and this process knows
// the stamps of r's tags, and reports whether it did. key is r's key.
func (e *engine) early(ctx context.Context, r *read, key []byte) (driver.Rows, bool, error) {
	if e.guess == nil || !e.cold.likelyMissed() || ctx.Err() != nil {
		return nil, false, nil
	}
	h := xxh3.Hash(key)
	if e.hot.has(h) || !e.seen.first(h) {
		return nil, false, nil
	}
	var sb [stampBufCap]uint64
	guess, ok := e.guess(r.tags, sb[:0])
	if !ok {
		return nil, false, nil
	}
	r.keep(key)
	stamps := make([]uint64, len(guess))
	copy(stamps, guess)
	// Readers whose lookups saw these stamps may join this load (see
	// flightGroup): they began after every write it sees. An early reader
	// joins none: another load under guessed stamps may predate a write
	// this process committed, whose stamps a racing lookup overwrote in
	// stampSlot with older ones.
	id := flightID(r.key, stamps)
	f := e.flights.start(id, ctx)
	if f == nil {
		return nil, false, nil
	}
	if e.closed() {
		e.flights.forget(id, f)
		f.finish(nil)
		return nil, false, nil // the usual path stores nothing either
	}
	// The background lookup keeps a copy; r stays on the caller's stack.
	lr := new(read)
	*lr = *r
	// The rows, once recorded, meet the lookup here: the entry, or nil if
	// there is none; sent once.
	recorded := make(chan *entry, 1)
	// The lookup starts once the query is answered (see earlyLookupWait),
	// unless the query failed (lookUp(false)). The caller's call comes
	// after the timer's, if it fired, under mu: its rows are returned after
	// the lookup has joined the background work.
	var mu sync.Mutex
	started := false
	lookUp := func(run bool) {
		mu.Lock()
		defer mu.Unlock()
		if started {
			return
		}
		started = true
		if !run || !e.goBackground(func() { e.earlyLookup(lr, stamps, f, id, recorded) }) {
			e.flights.forget(id, f) // no lookup took a lease: nothing is stored
		}
	}
	var slow *time.Timer
	if d := lr.rs.load.Load(); d == 0 || d >= int64(earlyLookupWait) {
		slow = time.AfterFunc(earlyLookupWait, func() { lookUp(true) })
	}
	stop := func() bool { return false }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, f.leave)
	}
	start := time.Now()
	rows, err := lr.run(f.ctx)
	if slow != nil {
		slow.Stop()
	}
	if err != nil {
		stop()
		lookUp(false)
		f.finish(nil)
		recorded <- nil
		return nil, true, err
	}
	lookUp(true)
	e.note(lr.rs, missesF)
	e.note(lr.rs, earlyQueriesF)
	rec := e.record(lr, rows, stamps, start, stop, func(ent *entry) {
		f.finish(ent) // readers who joined get it now, stored or not
		recorded <- ent
	})
	rows, err = e.handOver(ctx, rec)
	return rows, true, err
}

// earlyLookup is an early query's lookup: it takes the fill lease, and
// once the rows are recorded stores them if it may (see early).
func (e *engine) earlyLookup(r *read, stamps []uint64, f *flight, id string, recorded <-chan *entry) {
	if e.beforeEarlyLookup != nil {
		e.beforeEarlyLookup(r.key)
	}
	ctx, cancel := e.cacheCtx(context.Background())
	found, now, lease := e.lookupHolding(ctx, r)
	cancel()
	stored := func() { e.flights.forget(id, f) }
	var ent *entry
	select {
	case ent = <-recorded:
	case <-e.closing: // the rows are still being read: the lease expires
		stored()
		return
	}
	switch {
	case found:
		e.note(r.rs, earlyFoundF)
	case ent == nil || lease == nil || !sameStamps(stamps, now):
		// Not recorded, another load holds the lease, or a write came
		// since the stamps the entry records were seen: it would be void.
	default:
		r.held = lease
		e.fillShared(r, ent, &f.void, stored)
		return
	}
	stored()
	if lease != nil && !e.closed() {
		e.drop(lease)
	}
}

// lookupHolding looks r's key up, taking the fill lease if no current
// entry is there. It reports whether the entry there may be served, the
// stamps read, and the lease if this load holds it: a reader here told by
// its own lookup that the lease is this process's may claim it first, and
// load for itself.
func (e *engine) lookupHolding(ctx context.Context, r *read) (found bool, stamps []uint64, held *heldLease) {
	h := xxh3.HashString(r.key)
	seq := e.bumps.now()
	lh := e.ask(r.key)
	start := monoNow()
	ent, stamps, holder, err := e.store.(leaser).lookupLease(ctx, r.key, r.tags, leaseTTL, false, lh.token)
	e.stats.cacheLat.observe(monoNow() - start)
	if err != nil && !errors.As(err, new(errCorruptEntry)) {
		e.fail(ctx, "lookup", err)
		if e.withdraw(lh) && !e.closed() && !errors.Is(err, errBreakerOpen) {
			e.giveBack(lh) // it may have been granted before the answer was lost
		}
		return false, nil, nil
	}
	if err != nil {
		e.note(r.rs, foreignF)
		ent = nil // a foreign value: the fill replaces it
	}
	current := ent != nil && sameStamps(ent.stamps, stamps)
	if current {
		e.hot.setAt(h, seq)
	}
	e.cold.note(current)
	found = current && ent.check == r.check && time.Now().UnixNano() < ent.expires
	if holder != lh.token || !lh.taken.CompareAndSwap(false, true) {
		e.withdraw(lh)
		return found, stamps, nil
	}
	return found, stamps, lh
}
