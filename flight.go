package cachedpq

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
)

// flight is one load of a missing entry that concurrent readers of the same
// key share. The first reader leads: its query runs under the flight's own
// context, which ends only once the leader and every waiter have given up,
// so a leader whose context ends does not fail or cancel the others.
type flight struct {
	done chan struct{} // closed by finish
	ent  *entry        // the loaded entry; nil if the load failed or was not cacheable

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex // guards parties and ended
	parties int        // the leader and the waiters still interested
	ended   bool

	// void is set when InvalidateQuery removed the key while the load
	// ran: its entry is handed to the readers already waiting, not stored.
	void atomic.Bool
}

// flightGroup holds the flights in progress, by key and the stamps their
// readers saw: a reader joins only a flight whose leader saw the same stamps,
// so a load that began before a write this process committed is never
// handed to a reader that began after it.
type flightGroup struct {
	mu      sync.Mutex // guards flights
	flights map[string]*flight
}

// join returns the flight for id and whether the caller leads it, or
// else the flight for cold ("" for none) if one is in progress, and
// whether it joined that one: a flight whose leader saw the stamps
// missing, which serves the caller only if the stamps its leader read
// are the caller's. A leader must call finish exactly once; a waiter that
// gives up calls leave.
func (g *flightGroup) join(id, cold string, leaderCtx context.Context) (f *flight, leader, joinedCold bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.flights[id]; ok && f.joinable() {
		return f, false, false
	}
	if f, ok := g.flights[cold]; ok && cold != "" && f.joinable() {
		return f, false, true
	}
	return g.lead(id, leaderCtx), true, false
}

// start returns a new flight for id, which the caller leads, or nil if a
// flight holds id: a reader that must not join another's load (see
// engine.early) loads through the lookup instead.
func (g *flightGroup) start(id string, leaderCtx context.Context) *flight {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.flights[id]; ok {
		return nil
	}
	return g.lead(id, leaderCtx)
}

// lead adds a flight under id, led by a reader with leaderCtx. g.mu is
// held.
func (g *flightGroup) lead(id string, leaderCtx context.Context) *flight {
	if g.flights == nil {
		g.flights = make(map[string]*flight)
	}
	f := &flight{done: make(chan struct{}), parties: 1}
	if leaderCtx.Done() == nil {
		// A leader that cannot be cancelled never leaves, so the load
		// needs no cancellation of its own, and lib/pq no goroutine to
		// watch for one.
		f.ctx, f.cancel = leaderCtx, func() {}
	} else {
		f.ctx, f.cancel = context.WithCancel(context.WithoutCancel(leaderCtx))
	}
	g.flights[id] = f
	return f
}

// alias makes readers of id join f too, unless another flight holds id.
// A leader aliases its flight under the stamps it read before its query:
// readers that see those stamps began after every write the load sees, so
// they may share it, even when the leader itself had seen other stamps
// (missing ones, which reading created).
func (g *flightGroup) alias(id string, f *flight) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.flights[id]; ok {
		return false
	}
	g.flights[id] = f
	return true
}

// voidKey removes the flights of key from the group and marks them void:
// readers that come later load afresh, and the loads do not store.
// Flights are named by their key and 8 bytes per stamp (see flightID).
func (g *flightGroup) voidKey(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, f := range g.flights {
		if strings.HasPrefix(id, key) && (len(id)-len(key))%8 == 0 {
			f.void.Store(true)
			delete(g.flights, id)
		}
	}
}

// forget removes f from the group, so that later readers start afresh.
func (g *flightGroup) forget(id string, f *flight) {
	g.mu.Lock()
	if g.flights[id] == f {
		delete(g.flights, id)
	}
	g.mu.Unlock()
}

// joinable registers a waiter, unless the flight has ended; a flight that
// ended with an entry still serves it to those who join, until forgotten.
func (f *flight) joinable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return f.ent != nil
	}
	f.parties++
	return true
}

// leave drops one party; when none is left the load is cancelled.
func (f *flight) leave() {
	f.mu.Lock()
	f.parties--
	last := f.parties == 0 && !f.ended
	f.mu.Unlock()
	if last {
		f.cancel()
	}
}

// finish publishes the result (nil: waiters must load for themselves) and
// releases the flight's context.
func (f *flight) finish(ent *entry) {
	f.mu.Lock()
	if f.ended {
		f.mu.Unlock()
		return
	}
	f.ended = true
	f.ent = ent
	f.mu.Unlock()
	close(f.done)
	f.cancel()
}

// wait blocks until the flight ends or ctx does.
func (f *flight) wait(ctx context.Context) (*entry, error) {
	select {
	case <-f.done:
		return f.ent, nil
	case <-ctx.Done():
		f.leave()
		return nil, ctx.Err()
	}
}
