package cachedpq

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Every cache operation runs under its own deadline. A context with a
// timer per operation costs a Redis hit about a microsecond and five
// allocations (the timer is armed and stopped, on a host that charges
// for each). Operations whose caller can never cancel them (database/sql
// passes context.Background to a Query without a context; the engine's
// own background work) share instead one deadline per tick: a context
// that ends between d and d+d/tickSlack after the operation began.

// errCacheTimeout is the cause of a cache operation's own deadline. It
// tells a cache too slow to answer from a caller that stopped waiting.
var errCacheTimeout = errors.New("cachedpq: cache operation timed out")

// tickSlack sets how much longer than its timeout a shared deadline may
// give an operation: d/tickSlack, so that a new tick, and its timer, is
// needed only every d/tickSlack.
const tickSlack = 8

// withCacheTimeout bounds a cache operation by d, its own timeout.
func withCacheTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if ctx.Done() != nil { // the caller may cancel: the operation needs its own context
		return context.WithTimeoutCause(ctx, d, errCacheTimeout)
	}
	t := tickerOf(d).current(time.Now())
	if ctx == context.Background() {
		return t.ctx, noCancel
	}
	return &tickCtx{Context: ctx, tick: t.ctx}, noCancel
}

func noCancel() {}

// tick is a deadline that operations share.
type tick struct {
	ctx    context.Context // ends at at, with errCacheTimeout
	cancel context.CancelFunc
	at     time.Time
}

// ticker hands out the ticks of one timeout.
type ticker struct {
	d   time.Duration
	mu  sync.Mutex // serialises making ticks
	cur atomic.Pointer[tick]
}

// tickers holds a ticker per timeout in use: a few (Options.Timeout, the
// fill's and the purge's).
var tickers sync.Map // time.Duration → *ticker

func tickerOf(d time.Duration) *ticker {
	if t, ok := tickers.Load(d); ok {
		return t.(*ticker)
	}
	t, _ := tickers.LoadOrStore(d, &ticker{d: d})
	return t.(*ticker)
}

// current returns a tick that ends no sooner than d after now.
func (t *ticker) current(now time.Time) *tick {
	due := now.Add(t.d)
	if c := t.cur.Load(); c != nil && !c.at.Before(due) {
		return c
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.cur.Load(); c != nil && !c.at.Before(due) {
		return c
	}
	at := due.Add(t.d / tickSlack)
	ctx, cancel := context.WithDeadlineCause(context.Background(), at, errCacheTimeout)
	c := &tick{ctx: ctx, cancel: cancel, at: at} // its timer cancels it
	t.cur.Store(c)
	return c
}

// tickCtx is a tick's deadline under a parent that cannot be cancelled
// (ctx.Done() is nil), whose values it keeps.
type tickCtx struct {
	context.Context // the parent
	tick            context.Context
}

func (c *tickCtx) Deadline() (time.Time, bool) { return c.tick.Deadline() }
func (c *tickCtx) Done() <-chan struct{}       { return c.tick.Done() }
func (c *tickCtx) Err() error                  { return c.tick.Err() }

// Value answers the tick's own keys first: context.Cause finds the tick's
// cause through them.
func (c *tickCtx) Value(key any) any {
	if v := c.tick.Value(key); v != nil {
		return v
	}
	return c.Context.Value(key)
}
