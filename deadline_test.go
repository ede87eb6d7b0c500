package cachedpq

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

func TestCacheTimeoutDeadline(t *testing.T) {
	const d = 20 * time.Millisecond
	for _, tc := range []struct {
		name   string
		parent context.Context
	}{
		{"background", context.Background()},
		{"values", context.WithValue(context.Background(), ctxKey{}, "v")},
		{"without cancel", context.WithoutCancel(context.WithValue(context.Background(), ctxKey{}, "v"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			ctx, cancel := withCacheTimeout(tc.parent, d)
			defer cancel()
			at, ok := ctx.Deadline()
			if !ok || at.Before(start.Add(d)) || at.After(time.Now().Add(d+d/tickSlack)) {
				t.Fatalf("deadline %v after start, want within [%v, %v]", at.Sub(start), d, d+d/tickSlack)
			}
			if got, want := ctx.Value(ctxKey{}), tc.parent.Value(ctxKey{}); got != want {
				t.Fatalf("value %v, want the parent's %v", got, want)
			}
			if ctx.Err() != nil || callerGone(ctx) {
				t.Fatalf("ended early: %v", ctx.Err())
			}
			<-ctx.Done()
			if time.Now().Before(start.Add(d)) {
				t.Fatal("ended before its timeout")
			}
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(ctx), errCacheTimeout) {
				t.Fatalf("err %v, cause %v; want the deadline, caused by the cache timeout", ctx.Err(), context.Cause(ctx))
			}
			if callerGone(ctx) {
				t.Fatal("the cache's own timeout counted as the caller's")
			}
		})
	}
}

// A later operation never gets a deadline that ends sooner than its
// timeout, though it shares the tick of an earlier one.
func TestCacheTimeoutTicksAdvance(t *testing.T) {
	const d = 5 * time.Millisecond
	for range 50 {
		start := time.Now()
		ctx, _ := withCacheTimeout(context.Background(), d)
		if at, _ := ctx.Deadline(); at.Before(start.Add(d)) {
			t.Fatalf("deadline %v after start, want at least %v", at.Sub(start), d)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCacheTimeoutCallerCancels(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	ctx, cancel := withCacheTimeout(parent, time.Hour)
	defer cancel()
	stop()
	<-ctx.Done()
	if !callerGone(ctx) {
		t.Fatalf("a caller's cancellation (cause %v) counted as the cache's timeout", context.Cause(ctx))
	}
}
