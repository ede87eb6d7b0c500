package cachedpq

import (
	"context"
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Breaker settings: open after this many consecutive failures, probe again
// after breakerOpenFor.
const (
	breakerTrip    = 5
	breakerOpenFor = time.Second
)

// errBreakerOpen reports a cache call skipped because the breaker is open.
var errBreakerOpen = errors.New("cachedpq: cache circuit breaker open")

// guarded runs every call to a shared cache through a circuit breaker, so
// that while the cache is down callers skip it at no cost instead of each
// waiting for a timeout.
type guarded struct {
	inner backend
	cb    *gobreaker.TwoStepCircuitBreaker[struct{}]
}

var _ backend = (*guarded)(nil)

func newGuarded(inner backend, onChange func(from, to gobreaker.State)) *guarded {
	return &guarded{inner: inner, cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "cachedpq",
		MaxRequests: 1,
		Timeout:     breakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= breakerTrip },
		IsSuccessful: func(err error) bool {
			var corrupt errCorruptEntry
			return err == nil || errors.As(err, &corrupt) // the cache answered
		},
		IsExcluded: func(err error) bool {
			// An entry the codec refused never reached the cache: it says
			// nothing of it.
			return errors.Is(err, context.Canceled) || errors.Is(err, errCallerGone) ||
				errors.Is(err, errUncacheable) || errors.Is(err, errTooLarge)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) { onChange(from, to) },
	})}
}

// allow asks the breaker; the returned func reports the outcome.
func (g *guarded) allow() (func(error), error) {
	done, err := g.cb.Allow()
	if err != nil {
		return nil, errBreakerOpen
	}
	return done, nil
}

// errCallerGone is what the breaker is told of a call its caller cut short
// (see callerGone): nothing, as of a cancelled one.
var errCallerGone = errors.New("cachedpq: cache call cut short by its caller")

// outcome is what the breaker learns from a call under ctx that returned err.
func outcome(ctx context.Context, err error) error {
	if err != nil && callerGone(ctx) {
		return errCallerGone
	}
	return err
}

func (g *guarded) open() bool { return g.cb.State() == gobreaker.StateOpen }

func (g *guarded) lookup(ctx context.Context, key string, tags []string, buf []uint64) (*entry, []uint64, error) {
	done, err := g.allow()
	if err != nil {
		return nil, nil, err
	}
	e, s, err := g.inner.lookup(ctx, key, tags, buf)
	done(outcome(ctx, err))
	return e, s, err
}

func (g *guarded) readStamps(ctx context.Context, tags []string) ([]uint64, error) {
	done, err := g.allow()
	if err != nil {
		return nil, err
	}
	s, err := g.inner.readStamps(ctx, tags)
	done(outcome(ctx, err))
	return s, err
}

func (g *guarded) fill(ctx context.Context, key string, e *entry, ttl time.Duration, tags []string) error {
	return g.run(ctx, func() error { return g.inner.fill(ctx, key, e, ttl, tags) })
}

func (g *guarded) fillReleasing(ctx context.Context, key string, e *entry, ttl time.Duration, tags []string, token uint64) error {
	return g.run(ctx, func() error { return g.inner.(releasingFiller).fillReleasing(ctx, key, e, ttl, tags, token) })
}

func (g *guarded) bump(ctx context.Context, tags []string) error {
	return g.run(ctx, func() error { return g.inner.bump(ctx, tags) })
}

func (g *guarded) purge(ctx context.Context, tags []string) error {
	return g.run(ctx, func() error { return g.inner.purge(ctx, tags) })
}

func (g *guarded) remove(ctx context.Context, keys ...string) error {
	return g.run(ctx, func() error { return g.inner.remove(ctx, keys...) })
}

func (g *guarded) lookupLease(ctx context.Context, key string, tags []string, ttl time.Duration, always bool, token uint64) (*entry, []uint64, uint64, error) {
	done, err := g.allow()
	if err != nil {
		return nil, nil, 0, err
	}
	e, s, tok, err := g.inner.(leaser).lookupLease(ctx, key, tags, ttl, always, token)
	done(outcome(ctx, err))
	return e, s, tok, err
}

func (g *guarded) acquireLease(ctx context.Context, key, tag string, ttl time.Duration) (uint64, bool, error) {
	done, err := g.allow()
	if err != nil {
		return 0, false, err
	}
	tok, ok, err := g.inner.acquireLease(ctx, key, tag, ttl)
	done(outcome(ctx, err))
	return tok, ok, err
}

func (g *guarded) releaseLease(ctx context.Context, key string, token uint64) error {
	return g.run(ctx, func() error { return g.inner.releaseLease(ctx, key, token) })
}

func (g *guarded) run(ctx context.Context, op func() error) error {
	done, err := g.allow()
	if err != nil {
		return err
	}
	err = op()
	done(outcome(ctx, err))
	return err
}
