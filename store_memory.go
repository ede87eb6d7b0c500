package cachedpq

// The embedded in-process store: the same stamp protocol as the Redis store,
// for a single process, on an otter cache bounded in bytes.

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"
)

const (
	// defaultMemBytes bounds the in-process store when the options leave it 0.
	defaultMemBytes = 64 << 20
	// memEntryOverhead approximates the bytes an entry costs beyond its
	// encoded size: the otter node, the memItem, the index members.
	memEntryOverhead = 128
	// memMinEntrySize is the smallest size charged for an entry, so that an
	// entry whose size the engine left 0 still counts against the bound.
	memMinEntrySize = 64
)

// memItem is the value held in otter: the shared entry plus what the store
// needs to expire and unindex it.
type memItem struct {
	e        *entry
	ttl      time.Duration
	deadline int64    // Unix nanoseconds: the fill's time plus ttl
	tags     []string // the tags the key is indexed under; not to be modified
}

// hasTag reports whether the item is indexed under tag.
func (it *memItem) hasTag(tag string) bool {
	for _, t := range it.tags {
		if t == tag {
			return true
		}
	}
	return false
}

// memLease is a held fill lease.
type memLease struct {
	token   uint64
	tag     string // the stamps of the load it guards
	expires int64  // unix nanoseconds
}

// memStore is the in-process store. It is safe for concurrent use.
// Stamps live in a plain map and are never evicted (there is one per table
// and reserved tag); entries live in otter, bounded in bytes and by TTL.
type memStore struct {
	cache *otter.Cache[string, *memItem]
	clock *memClock

	stampMu sync.RWMutex      // guards stamps
	stamps  map[string]uint64 // tag -> current stamp, never 0

	// idxMu guards index. No cache call that may run maintenance (and so
	// the deletion listener, which takes idxMu) is made while holding it.
	idxMu sync.Mutex
	index map[string]map[string]struct{} // tag -> entry keys

	leaseMu    sync.Mutex          // guards leases and leaseSweep
	leases     map[string]memLease // entry key -> held lease
	leaseSweep int                 // len(leases) at which expired leases are swept
}

// newMemStore returns a store bounded to about maxBytes of entries;
// maxBytes <= 0 means defaultMemBytes.
func newMemStore(maxBytes int64) *memStore {
	if maxBytes <= 0 {
		maxBytes = defaultMemBytes
	}
	s := &memStore{
		stamps:     make(map[string]uint64),
		index:      make(map[string]map[string]struct{}),
		leases:     make(map[string]memLease),
		leaseSweep: 64,
		clock:      newMemClock(),
	}
	s.cache = otter.Must(&otter.Options[string, *memItem]{
		MaximumWeight:    uint64(maxBytes),
		Weigher:          memWeight,
		ExpiryCalculator: otter.ExpiryWritingFunc(itemTTL),
		OnDeletion:       s.unindex,
		Executor:         callerRuns,
		Clock:            s.clock,
	})
	return s
}

// callerRuns is the cache's executor: maintenance and deletion events run
// on the goroutine that caused them. otter's default starts a goroutine
// for them after most writes, and waking a thread for it cost a miss on
// the in-process store more CPU than the rest of its fill (see
// BenchmarkEngineMiss).
func callerRuns(fn func()) { fn() }

// memWeight charges an entry its encoded size, at least memMinEntrySize,
// plus its key and a fixed overhead.
func memWeight(key string, it *memItem) uint32 {
	w := int64(max(it.e.size, memMinEntrySize)) + int64(len(key)) + memEntryOverhead
	return uint32(min(w, math.MaxUint32))
}

// itemTTL is the per-entry expiry: the TTL its fill asked for.
func itemTTL(e otter.Entry[string, *memItem]) time.Duration { return e.Value.ttl }

// lookup returns the entry under key (nil if absent or expired) and the
// current stamps of tags (0 where missing), appended to buf[:0].
func (s *memStore) lookup(_ context.Context, key string, tags []string, buf []uint64) (*entry, []uint64, error) {
	e, stamps := s.lookupAt(key, tags, buf, wallNow.at(monoNow()))
	return e, stamps, nil
}

// lookupAt is lookup at now, a wall-clock time in Unix nanoseconds just
// read: otter's clock lags (see memClock), so the item's deadline is
// checked here. With a buf of capacity len(tags) a hit allocates nothing.
func (s *memStore) lookupAt(key string, tags []string, buf []uint64, now int64) (*entry, []uint64) {
	var e *entry
	if it, ok := s.cache.GetIfPresent(key); ok && now < it.deadline {
		e = it.e
	}
	buf = buf[:0]
	s.stampMu.RLock()
	for _, tag := range tags {
		buf = append(buf, s.stamps[tag])
	}
	s.stampMu.RUnlock()
	return e, buf
}

// readStamps returns the current stamps of tags, creating missing ones.
func (s *memStore) readStamps(_ context.Context, tags []string) ([]uint64, error) {
	out := make([]uint64, len(tags))
	missing := false
	s.stampMu.RLock()
	for i, tag := range tags {
		out[i] = s.stamps[tag]
		missing = missing || out[i] == 0
	}
	s.stampMu.RUnlock()
	if missing {
		s.createStamps(tags, out)
	}
	return out, nil
}

// createStamps fills the zeros of out with the tags' stamps, creating the
// ones that are still missing under the write lock.
func (s *memStore) createStamps(tags []string, out []uint64) {
	s.stampMu.Lock()
	defer s.stampMu.Unlock()
	for i, tag := range tags {
		if out[i] != 0 {
			continue
		}
		if out[i] = s.stamps[tag]; out[i] == 0 {
			out[i] = newStamp()
			s.stamps[tag] = out[i]
		}
	}
}

// bump replaces the stamps of tags with fresh random values.
func (s *memStore) bump(_ context.Context, tags []string) error {
	s.stampMu.Lock()
	for _, tag := range tags {
		s.stamps[tag] = newStamp()
	}
	s.stampMu.Unlock()
	return nil
}

// dropStamp forgets tag's stamp, as an eviction would in Redis.
func (s *memStore) dropStamp(tag string) {
	s.stampMu.Lock()
	delete(s.stamps, tag)
	s.stampMu.Unlock()
}

// fill stores e under key for ttl and indexes key under tags. e is shared
// with every reader from then on and must not be modified.
//
// The key is indexed after the write, and only while the cache still holds
// this item: an eviction's listener (which may run during Set) then either
// sees the item gone before indexing, or unindexes after it. A purge that
// runs in between misses the item; its stamps were replaced first, so it
// is never served, and the next purge of its tags or its TTL removes it.
func (s *memStore) fill(_ context.Context, key string, e *entry, ttl time.Duration, tags []string) error {
	if ttl <= 0 {
		return errBadTTL
	}
	// A fresh reading, which otter's clock is then too (see memClock).
	deadline := wallNow.read() + int64(ttl)
	it := &memItem{e: e, ttl: ttl, deadline: deadline, tags: append([]string(nil), tags...)}
	s.cache.Set(key, it)
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	if cur, ok := s.cache.GetEntryQuietly(key); !ok || cur.Value != it {
		return nil
	}
	for _, tag := range tags {
		keys := s.index[tag]
		if keys == nil {
			keys = make(map[string]struct{})
			s.index[tag] = keys
		}
		keys[key] = struct{}{}
	}
	return nil
}

// unindex is otter's deletion listener: it drops a deleted entry's key from
// the indexes of its tags, except those a newer entry under the same key is
// indexed under (a replacement's event may arrive after the new fill).
func (s *memStore) unindex(ev otter.DeletionEvent[string, *memItem]) {
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	cur, live := s.cache.GetEntryQuietly(ev.Key)
	for _, tag := range ev.Value.tags {
		if live && cur.Value.hasTag(tag) {
			continue
		}
		s.dropIndexed(tag, ev.Key)
	}
}

// dropIndexed removes key from tag's index, and the index once empty.
// idxMu must be held.
func (s *memStore) dropIndexed(tag, key string) {
	keys := s.index[tag]
	delete(keys, key)
	if len(keys) == 0 {
		delete(s.index, tag)
	}
}

// purge deletes the entries indexed under tags. The indexes are detached
// under the lock and the entries deleted outside it, so fills are not held
// up; an entry filled meanwhile under a purged key is merely deleted early.
func (s *memStore) purge(_ context.Context, tags []string) error {
	for _, tag := range tags {
		s.idxMu.Lock()
		keys := s.index[tag]
		delete(s.index, tag)
		s.idxMu.Unlock()
		for key := range keys {
			s.cache.Invalidate(key)
		}
	}
	return nil
}

// remove deletes the entries under keys.
func (s *memStore) remove(_ context.Context, keys ...string) error {
	for _, key := range keys {
		s.cache.Invalidate(key)
	}
	return nil
}

// acquireLease tries to take the exclusive right to fill key for ttl, for
// loads under the stamps tag names.
func (s *memStore) acquireLease(_ context.Context, key, tag string, ttl time.Duration) (uint64, bool, error) {
	if ttl <= 0 {
		return 0, false, errBadTTL
	}
	now := time.Now().UnixNano()
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if l, held := s.leases[key]; held && l.expires > now && l.tag == tag {
		return 0, false, nil
	}
	s.sweepLeases(now)
	token := newStamp()
	s.leases[key] = memLease{token: token, tag: tag, expires: now + int64(ttl)}
	return token, true, nil
}

// sweepLeases drops expired leases once the map has doubled since the last
// sweep, so leases whose holders never released them cannot pile up, at an
// amortised constant cost per acquire. leaseMu must be held.
func (s *memStore) sweepLeases(now int64) {
	if len(s.leases) < s.leaseSweep {
		return
	}
	for k, l := range s.leases {
		if l.expires <= now {
			delete(s.leases, k)
		}
	}
	s.leaseSweep = max(2*len(s.leases), 64)
}

// releaseLease gives the lease on key back if token still holds it.
func (s *memStore) releaseLease(_ context.Context, key string, token uint64) error {
	s.leaseMu.Lock()
	if l, held := s.leases[key]; held && l.token == token {
		delete(s.leases, key)
	}
	s.leaseMu.Unlock()
	return nil
}

// close stops the cache's background goroutines; the store must not be used
// afterwards. A store that is dropped without close only leaks them.
func (s *memStore) close() {
	s.cache.StopAllGoroutines()
	s.clock.close()
}
