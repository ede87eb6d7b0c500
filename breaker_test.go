package cachedpq

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

// TestCallerDeadlineIsNoCacheFailure: a lookup cut short by its caller's
// deadline, well within the cache's own timeout, says nothing about the
// cache. Counted as a failure, it made this process skip the cache and
// invalidate the whole namespace for every process, and it counted toward
// opening the breaker. The cache's own timeout is still a failure.
func TestCallerDeadlineIsNoCacheFailure(t *testing.T) {
	tests := []struct {
		name           string
		cacheTimeout   time.Duration
		callerDeadline time.Duration // 0: none
		failure        bool
	}{
		{"caller's deadline", time.Second, 30 * time.Millisecond, false},
		{"cache timeout", 30 * time.Millisecond, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const query = `select v from kv where k = $1`
			rdb, slow := slowRedis(t, 100*time.Millisecond)
			db, c, _ := engineDB(t, rdb)
			must(t, c.opts.Registry.Register(query, Policy{TTL: time.Hour}))
			c.eng.opts.Timeout, c.eng.lookups.timeout = tt.cacheTimeout, tt.cacheTimeout

			slow.on.Store(true)
			ctx := context.Background()
			if tt.callerDeadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.callerDeadline)
				defer cancel()
			}
			if rows, err := db.QueryContext(ctx, query, 1); err == nil {
				rows.Close()
			}
			slow.on.Store(false)
			failures := c.eng.breakr.cb.Counts().TotalFailures
			if pending := c.Stats().Pending; pending != tt.failure || (failures > 0) != tt.failure {
				t.Errorf("pending %v, breaker failures %d; want a cache failure: %v", pending, failures, tt.failure)
			}
		})
	}
}

// TestSharedLookupFailureCountsOnce: readers who share one lookup share
// its failure, which is one cache error (and one OnError call), not one
// per reader.
func TestSharedLookupFailureCountsOnce(t *testing.T) {
	const query = `select v from kv where k = $1`
	rdb, slow := slowRedis(t, 100*time.Millisecond)
	db, c, _ := engineDB(t, rdb)
	must(t, c.opts.Registry.Register(query, Policy{TTL: time.Hour}))
	c.eng.opts.Timeout, c.eng.lookups.timeout = 30*time.Millisecond, 30*time.Millisecond
	// No server checks: the background retry of the pending invalidation
	// checks the server too, and a cut script of its check is no lookup's.
	c.eng.direct.(*redisBackend).watch.off.Store(true)
	slow.on.Store(true)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { getV(t, db, 1) })
	}
	wg.Wait()
	slow.on.Store(false)
	failures := slow.cut.Load() // the breaker's counts restart when it opens
	if got := c.Stats().CacheErrors; failures == 0 || got != uint64(failures) {
		t.Fatalf("%d cache errors for %d failed lookups", got, failures)
	}
}

// TestUnstorableEntriesAreNoCacheFailure: a fill refused before it reaches
// Redis (a value the format cannot hold, an entry over the decode limit)
// says nothing about Redis. Counted as failures, a few such fills in a row
// opened the breaker, and every read skipped a healthy cache.
func TestUnstorableEntriesAreNoCacheFailure(t *testing.T) {
	rdb := testRedis(t)
	rb := &redisBackend{redisStore: newRedisStore(rdb, testPrefix(t, rdb)), maxBytes: 64}
	g := newGuarded(rb, func(from, to gobreaker.State) {})
	ctx := context.Background()
	big := oneValueEntry(strings.Repeat("x", 100))
	big.stamps = []uint64{1}
	for range 2 * breakerTrip {
		if err := g.fill(ctx, "k", oneValueEntry(struct{}{}), time.Minute, nil); !errors.Is(err, errUncacheable) {
			t.Fatalf("fill of an unstorable value: %v", err)
		}
		if err := g.fill(ctx, "k", big, time.Minute, nil); !errors.Is(err, errTooLarge) {
			t.Fatalf("fill of a large entry: %v", err)
		}
	}
	if c := g.cb.Counts(); g.open() || c.TotalFailures > 0 {
		t.Fatalf("breaker open %v after fills Redis never saw: %+v", g.open(), c)
	}
}
