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

// lookupSlot holds the lookups of one key: one on its way to the cache,
// and the next, which readers may still join.
type lookupSlot struct {
	sent *lookupCall
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
	if s == nil {
		c := &lookupCall{tags: tags, done: make(chan struct{})}
		if g.keys == nil {
			g.keys = make(map[string]*lookupSlot)
		}
		g.keys[key] = &lookupSlot{sent: c}
		g.mu.Unlock()
		c.ent, c.stamps, c.holder, c.err = g.send(ctx, key, tags)
		g.finish(key, c)
		return c.ent, c.stamps, c.holder, c.err
	}
	if !slices.Equal(s.sent.tags, tags) {
		g.mu.Unlock() // another registration under this key: not ours to share
		return g.send(ctx, key, tags)
	}
	c := s.next
	if c == nil {
		c = &lookupCall{tags: tags, done: make(chan struct{})}
		s.next = c
		go g.sendAfter(key, s.sent, c)
	}
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.ent, c.stamps, c.holder, c.err
	case <-ctx.Done():
		return nil, nil, 0, ctx.Err()
	}
}

// sendAfter sends c once prev, the lookup of key on its way, has returned.
func (g *lookupGroup) sendAfter(key string, prev, c *lookupCall) {
	<-prev.done
	g.mu.Lock()
	s := g.keys[key]
	s.sent, s.next = c, nil // from now on c is sent: nobody joins it
	g.mu.Unlock()
	c.ent, c.stamps, c.holder, c.err = g.send(context.Background(), key, c.tags)
	g.finish(key, c)
}

// send runs one lookup under g.timeout.
func (g *lookupGroup) send(ctx context.Context, key string, tags []string) (*entry, []uint64, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	return g.fn(ctx, key, tags)
}

// finish publishes c's answer and retires key's slot unless a next
// lookup waits for c.
func (g *lookupGroup) finish(key string, c *lookupCall) {
	g.mu.Lock()
	if s := g.keys[key]; s.sent == c && s.next == nil {
		delete(g.keys, key)
	}
	g.mu.Unlock()
	close(c.done)
}
