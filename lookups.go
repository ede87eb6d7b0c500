package cachedpq

import (
	"context"
	"slices"
	"sync"
	"time"
)

// lookupGroup merges concurrent lookups of one key in a shared cache into
// one round trip and one decode. A hot key read by many clients otherwise
// costs a round trip and a decode per read, which under load spends the
// CPU a cache is meant to save.
//
// A reader never gets the answer of a lookup sent before it arrived: that
// lookup may predate a write which committed before the reader began, and
// the answer would then be stale. So readers join only a lookup that has
// not been sent yet. The first reader of a key sends at once; readers who
// arrive while its lookup is on its way join the next one, which is sent
// as soon as the first returns, and so on. With no concurrency nothing
// waits; under load each key costs one lookup per round trip.
type lookupGroup struct {
	fn      lookupFunc    // the lookup itself
	timeout time.Duration // how long a lookup may take

	mu   sync.Mutex // guards keys
	keys map[string]*lookupSlot
}

// lookupSlot exists while a lookup of its key is on its way to the cache,
// and holds the next, which readers may still join.
type lookupSlot struct {
	tags []string // the tags its lookups read
	next *lookupCall
}

// lookupCall is one lookup and, once done is closed, its answer, which
// its readers share and must not modify.
type lookupCall struct {
	tags   []string
	done   chan struct{}
	ent    *entry
	stamps []uint64
	holder uint64 // the token of the fill lease under stamps, if the lookup learnt it
	err    error
}

// lookupFunc reads the entry under key and the stamps of tags, and the
// token of the fill lease held under those stamps, if it learns it (0 if
// not).
type lookupFunc func(ctx context.Context, key string, tags []string) (*entry, []uint64, uint64, error)

// do answers a lookup of key and tags, sharing it with concurrent
// readers of key as described on lookupGroup. Each reader waits only as
// long as its own context allows; a shared lookup runs under g.timeout
// whatever happens to the readers that wait for it.
func (g *lookupGroup) do(ctx context.Context, key string, tags []string) (*entry, []uint64, uint64, error) {
	g.mu.Lock()
	s := g.keys[key]
	switch {
	case s == nil:
		if g.keys == nil {
			g.keys = make(map[string]*lookupSlot)
		}
		g.keys[key] = &lookupSlot{tags: tags}
		g.mu.Unlock()
		ent, stamps, holder, err := g.send(ctx, key, tags)
		g.landed(key)
		return ent, stamps, holder, err
	case !slices.Equal(s.tags, tags):
		g.mu.Unlock() // another registration under this key: not ours to share
		return g.send(ctx, key, tags)
	}
	c := s.next
	if c == nil {
		c = &lookupCall{tags: tags, done: make(chan struct{})}
		s.next = c
	}
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.ent, c.stamps, c.holder, c.err
	case <-ctx.Done():
		return nil, nil, 0, ctx.Err()
	}
}

// landed notes that the lookup of key on its way has returned: the next
// one is sent now if readers wait for it; otherwise the slot retires.
func (g *lookupGroup) landed(key string) {
	g.mu.Lock()
	s := g.keys[key]
	c := s.next
	if c != nil {
		s.next = nil // from now on c is sent: nobody joins it
	} else {
		delete(g.keys, key)
	}
	g.mu.Unlock()
	if c != nil {
		go g.sendShared(key, c)
	}
}

// sendShared sends c, a lookup its readers share, and publishes its answer.
// The readers wake before the next lookup is started: Go runs the
// goroutine started last first, so the next lookup leaves while they
// replay their rows. (Started first, it queued behind them: 16 readers
// of one hot key made a quarter to a third fewer reads per second.)
func (g *lookupGroup) sendShared(key string, c *lookupCall) {
	c.ent, c.stamps, c.holder, c.err = g.send(context.Background(), key, c.tags)
	close(c.done)
	g.landed(key)
}

// send runs one lookup under g.timeout.
func (g *lookupGroup) send(ctx context.Context, key string, tags []string) (*entry, []uint64, uint64, error) {
	ctx, cancel := withCacheTimeout(ctx, g.timeout)
	defer cancel()
	return g.fn(ctx, key, tags)
}
