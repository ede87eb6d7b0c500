package cachedpq

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/zeebo/xxh3"
)

// Fill leases coordinate the processes sharing a cache: one loads a missing
// entry while the others wait a bounded time for it. A lease is taken for
// the stamps its load read, so a write to the entry's tables voids it as it
// voids the entry: a reader after the write does not wait for a load that
// began before it, whose entry it could not use.

// heldLease is a fill lease this process holds, or is asking for. It is
// registered under its token before the request leaves (see ask): a reader
// told by the cache that this token holds the lease it needs finds it here
// however soon after the grant, and claims it rather than wait for it.
type heldLease struct {
	key   string // the entry key it guards
	token uint64
	// taken is set by the load that uses the lease (or by its asker,
	// withdrawing it). A lease that a lookup took waits, untaken, for the
	// load of a reader who saw the miss; if none comes for it within
	// leaseClaim, it is given back.
	taken atomic.Bool
	// unclaimed gives back a lease a lookup took if no load claims it in
	// time; the claim stops it, so a load leaves no timer behind.
	unclaimed atomic.Pointer[time.Timer]
}

// leaseClaim is how long a lease a lookup took waits for its load.
const leaseClaim = 100 * time.Millisecond

// storeLookup is one lookup in the shared store. Where the store can, a
// lookup that finds no current entry (none, or one a write voided) takes
// the fill lease in the same round trip,
// so that a miss costs one round trip before its query, not three. Keys
// whose last lookup was a hit skip that: a plain MGET costs less than the
// lease's round trip, and they are likely hits again (if not, the lease
// costs one more round trip). So do the other keys while most lookups of
// keys not known hot find a current entry (see coldOutcomes): their lease
// would mostly be given back unused, in a second round trip.
func (e *engine) storeLookup(ctx context.Context, key string, tags []string) (*entry, []uint64, uint64, error) {
	h := xxh3.HashString(key)
	seq := e.bumps.now() // a local write from here on makes the key's next lookup take the lease
	hot := e.hot.has(h)
	e.seen.mark(h)
	if !e.leasing || hot && !e.bumps.since(tags, e.hot.foundAt(h)) || !hot && e.cold.likelyFound() {
		ent, stamps, err := e.store.lookup(ctx, key, tags, nil)
		current := err == nil && ent != nil && sameStamps(ent.stamps, stamps)
		if current {
			e.hot.setAt(h, seq)
		} else {
			e.hot.set(h, false)
		}
		if !hot && err == nil {
			e.cold.note(current)
		}
		return ent, stamps, 0, err
	}
	lh := e.ask(key)
	ent, stamps, holder, err := e.store.(leaser).lookupLease(ctx, key, tags, leaseTTL, false, lh.token)
	current := ent != nil && sameStamps(ent.stamps, stamps)
	if current {
		e.hot.setAt(h, seq)
	}
	if !hot && err == nil {
		e.cold.note(current)
	}
	switch {
	case err != nil:
		e.withdrawLost(lh)
	case holder != lh.token:
		e.withdraw(lh)
	default:
		t := time.AfterFunc(leaseClaim, func() {
			// After close the client may be closed too: the lease expires.
			if !e.closed() && lh.taken.CompareAndSwap(false, true) {
				e.drop(lh)
			}
		})
		lh.unclaimed.Store(t)
		if lh.taken.Load() { // claimed before the timer was stored
			t.Stop()
		}
	}
	return ent, stamps, holder, err
}

// hotKeys remembers, lossily, the hashes of the keys whose last lookup
// found an entry with current stamps, and when (see localBumps). It is
// direct-mapped: bounded whatever the number of keys, at the price of
// forgetting some.
type hotKeys struct {
	slots [hotSlots]atomic.Uint64 // key hashes
	at    [hotSlots]atomic.Uint64 // the localBumps sequence when the slot's key was found current
}

const hotSlots = 4096

func (t *hotKeys) has(h uint64) bool { return t.slots[h%hotSlots].Load() == h }

// foundAt is when the key of h was last found current (if has(h)).
func (t *hotKeys) foundAt(h uint64) uint64 { return t.at[h%hotSlots].Load() }

func (t *hotKeys) set(h uint64, hot bool) {
	slot := &t.slots[h%hotSlots]
	if hot {
		slot.Store(h)
	} else {
		slot.CompareAndSwap(h, 0)
	}
}

// setAt marks h hot, found current at sequence seq.
func (t *hotKeys) setAt(h, seq uint64) {
	t.at[h%hotSlots].Store(seq)
	t.slots[h%hotSlots].Store(h)
}

// coldOutcomes tallies whether lookups of keys not known hot found a
// current entry, halving both counts every coldWindow lookups so that
// recent ones weigh most. Where most do (a shared cache warmed by other
// processes, a keyspace larger than hotKeys holds), such lookups skip the
// lease, as hot keys' do: a hit then costs one MGET, where the lease
// pipeline also took a lease and gave it back in a second round trip,
// and a miss costs a second round trip, for its lease.
type coldOutcomes struct {
	looked, found atomic.Uint64
}

const (
	coldWindow = 1024 // lookups between two halvings
	coldMin    = 64   // lookups tallied before any judgement
)

// note tallies one lookup of a key not known hot.
func (c *coldOutcomes) note(found bool) {
	if found {
		c.found.Add(1)
	}
	if n := c.looked.Add(1); n >= coldWindow { // races may halve twice, or not quite: a tally
		c.looked.Store(n / 2)
		c.found.Store(c.found.Load() / 2)
	}
}

// likelyFound reports whether at least three in four of the lookups
// tallied found a current entry.
func (c *coldOutcomes) likelyFound() bool {
	n := c.looked.Load()
	return n >= coldMin && 4*c.found.Load() >= 3*n
}

// likelyMissed reports whether at most one in four of the lookups tallied
// found a current entry.
func (c *coldOutcomes) likelyMissed() bool {
	n := c.looked.Load()
	return n >= coldMin && 4*c.found.Load() <= n
}

// seenKeys remembers, lossily, the hashes of the keys this process has
// looked up lately, hit or miss. Direct-mapped, as hotKeys.
type seenKeys struct {
	slots [hotSlots]atomic.Uint64
}

func (t *seenKeys) mark(h uint64) {
	if slot := &t.slots[h%hotSlots]; slot.Load() != h {
		slot.Store(h)
	}
}

// first marks h and reports whether it was not marked before.
func (t *seenKeys) first(h uint64) bool {
	slot := &t.slots[h%hotSlots]
	return slot.Load() != h && slot.Swap(h) != h
}

// localBumps remembers, lossily, when this process last invalidated each
// tag, as a sequence number. A hot key read under a tag this process has
// written since its entry was found current is likely stale: its lookup
// goes through the lease script, which takes the lease with the lookup,
// instead of MGET and a second round trip. Writes by other processes are
// not seen here; their hot keys still cost that second round trip.
type localBumps struct {
	seq  atomic.Uint64
	tags [64]atomic.Uint64 // by tag hash: the sequence of its last bump
}

// record notes a local invalidation of tags.
func (b *localBumps) record(tags []string) {
	n := b.seq.Add(1)
	for _, t := range tags {
		b.tags[xxh3.HashString(t)%64].Store(n)
	}
}

func (b *localBumps) now() uint64 { return b.seq.Load() }

// since reports whether any of tags (or a tag sharing its slot) was
// invalidated here after sequence at.
func (b *localBumps) since(tags []string, at uint64) bool {
	for _, t := range tags {
		if b.tags[xxh3.HashString(t)%64].Load() > at {
			return true
		}
	}
	return false
}

// ask registers a lease on key that this process is about to ask the
// cache for, under a fresh token.
func (e *engine) ask(key string) *heldLease {
	h := &heldLease{key: key, token: newStamp()}
	e.leases.Store(h.token, h)
	return h
}

// withdraw forgets a lease asked for and not granted, unless a reader has
// claimed it meanwhile: the cache granted it after all (the answer was
// lost), and that reader's load now owns it. It reports whether it forgot
// the lease.
func (e *engine) withdraw(h *heldLease) bool {
	if h.taken.CompareAndSwap(false, true) {
		e.leases.CompareAndDelete(h.token, h)
		return true
	}
	return false
}

// withdrawLost withdraws a lease whose request failed, and gives it back
// in the background: the cache may have granted it before the answer was
// lost (the caller's context ended while it was on its way), and left to
// expire it would make every reader of the key, here and in other
// processes, wait leaseWait for a load that never comes. The release
// checks the token, so giving back a lease never granted is harmless.
// After close the lease is left to expire.
func (e *engine) withdrawLost(h *heldLease) {
	if e.withdraw(h) {
		e.goBackground(func() { e.giveBack(h) })
	}
}

// claim makes the caller the load that uses the lease token holds, if this
// process holds it and no load has claimed it yet.
func (e *engine) claim(token uint64) *heldLease {
	if token == 0 {
		return nil
	}
	v, _ := e.leases.Load(token)
	if h, ok := v.(*heldLease); ok && h.taken.CompareAndSwap(false, true) {
		if t := h.unclaimed.Load(); t != nil {
			t.Stop()
		}
		return h
	}
	return nil
}

// awaitLease takes the fill lease for r's key under stamps in a shared
// cache; holder is the token that holds it, if r's lookup learnt it. If
// this process holds it unclaimed, r's load claims it. If another process
// holds it, it waits a bounded time for that process's entry and returns
// it; nil means: load it yourself.
func (e *engine) awaitLease(ctx context.Context, r *read, stamps []uint64, holder uint64) *entry {
	if !e.shared {
		return nil
	}
	if r.held = e.claim(holder); r.held != nil {
		return nil // the lookup that saw the miss took it for this load
	}
	if ent, load, err := e.takeLease(ctx, r, stamps); ent != nil || load || err != nil {
		return ent
	}
	deadline := time.Now().Add(leaseWait)
	poll := leasePollMin // the holder may be about to fill: look soon, then less often
	t := time.NewTimer(poll)
	defer t.Stop()
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		poll = min(2*poll, leasePoll)
		t.Reset(poll)
		if ent, more := e.leasedEntry(ctx, r, stamps); ent != nil || !more {
			return ent
		}
		// The holder may have let go without leaving an entry we can use
		// (its load failed, or an older load's fill overwrote its entry):
		// then take over rather than wait out leaseWait.
		if ent, load, err := e.takeLease(ctx, r, stamps); ent != nil || load || err != nil {
			return ent
		}
	}
	return nil
}

// takeLease tries to take r's lease under stamps; on success this process
// holds it until releaseLease. It returns the entry if one can be served
// after all, since the previous holder may have filled it and let go after
// our lookup (taking the lease then would run the query twice), and load
// if the caller should load it now: it holds the lease, or a write voided
// the stamps, so that nobody's lease will bring an entry it can use.
func (e *engine) takeLease(ctx context.Context, r *read, stamps []uint64) (ent *entry, load bool, err error) {
	lctx, cancel := e.cacheCtx(ctx)
	defer cancel()
	if !e.leasing {
		return e.acquireThenLook(lctx, r, stamps)
	}
	lh := e.ask(r.key)
	ent, now, holder, err := e.store.(leaser).lookupLease(lctx, r.key, r.tags, leaseTTL, true, lh.token)
	if errors.As(err, new(errCorruptEntry)) {
		err = nil // a foreign value is no entry: replace it
	}
	switch {
	case err != nil:
		e.withdrawLost(lh)
		e.fail(lctx, "lease", err)
		return nil, false, err
	case holder == lh.token && lh.taken.CompareAndSwap(false, true):
		r.held = lh
	default: // another load holds it, or claimed ours first
		if holder != lh.token {
			e.withdraw(lh)
		}
		if sameStamps(stamps, now) {
			r.held = e.claim(holder) // held here, unclaimed: a lookup's
		}
	}
	switch {
	case !sameStamps(stamps, now):
		e.releaseLease(r)
		return nil, true, nil
	case usable(r, ent, stamps, now) && ent.created > r.replaces:
		e.releaseLease(r)
		return ent, false, nil
	}
	return nil, r.held != nil, nil
}

// acquireThenLook is takeLease in two round trips, for a cache that cannot
// run lookupScript.
func (e *engine) acquireThenLook(ctx context.Context, r *read, stamps []uint64) (*entry, bool, error) {
	token, _, err := e.store.acquireLease(ctx, r.key, stampTag(stamps), leaseTTL)
	if err != nil {
		e.fail(ctx, "lease", err)
		return nil, false, err
	}
	if token == 0 {
		return nil, false, nil
	}
	r.held = &heldLease{key: r.key, token: token}
	r.held.taken.Store(true)
	e.leases.Store(token, r.held)
	if ent, _ := e.leasedEntry(ctx, r, stamps); ent != nil && ent.created > r.replaces {
		e.releaseLease(r)
		return ent, false, nil
	}
	return nil, true, nil
}

// leasedEntry looks for r's entry filled under stamps. more is false when
// waiting longer is pointless: the cache failed, or a write voided the
// stamps.
func (e *engine) leasedEntry(ctx context.Context, r *read, stamps []uint64) (ent *entry, more bool) {
	lctx, cancel := e.cacheCtx(ctx)
	ent, now, err := e.store.lookup(lctx, r.key, r.tags, nil)
	cancel()
	if errors.As(err, new(errCorruptEntry)) {
		ent, err = nil, nil // a foreign value is no entry yet: the holder's fill replaces it
	}
	switch {
	case err != nil, !sameStamps(stamps, now):
		return nil, false
	case usable(r, ent, stamps, now) && ent.created > r.replaces:
		return ent, false // (an early refresh waits for a newer entry than the one it replaces)
	}
	return nil, true
}

// usable reports whether ent answers r, filled under stamps, which are still
// the current ones (now), and unexpired.
func usable(r *read, ent *entry, stamps, now []uint64) bool {
	return ent != nil && ent.check == r.check && sameStamps(stamps, now) && sameStamps(ent.stamps, now) &&
		time.Now().UnixNano() < ent.expires
}

// stampTag names stamps in a lease's value, as lookupScript does.
func stampTag(stamps []uint64) string { return string(appendStampTag(nil, stamps)) }

// releaseLease gives up the lease r's load holds, if any.
func (e *engine) releaseLease(r *read) {
	if h := r.held; h != nil {
		r.held = nil
		e.drop(h)
	}
}

// drop forgets h and releases it in the cache, unless it is gone already.
func (e *engine) drop(h *heldLease) {
	if e.leases.CompareAndDelete(h.token, h) {
		e.giveBack(h)
	}
}

// giveBack releases h in the cache.
func (e *engine) giveBack(h *heldLease) {
	ctx, cancel := e.cacheCtx(context.Background())
	defer cancel()
	if err := e.store.releaseLease(ctx, h.key, h.token); err != nil {
		e.fail(ctx, "release lease", err)
	}
}
