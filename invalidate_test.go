package cachedpq

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestInvalidateQueryVoidsARacingLoad: a load that read Postgres before a
// change behind the driver's back must not store its rows after
// InvalidateQuery has removed the entry.
func TestInvalidateQueryVoidsARacingLoad(t *testing.T) {
	eachStore(t, func(t *testing.T, rdb redis.UniversalClient) {
		const query = `select v from kv where k = $1`
		db, c, raw := engineDB(t, rdb)
		must(t, c.opts.Registry.Register(query, Policy{TTL: time.Hour}))
		reached, proceed := make(chan struct{}), make(chan struct{})
		var once sync.Once
		c.eng.beforeFill = func(string) { once.Do(func() { close(reached); <-proceed }) }
		read := make(chan string)
		go func() { read <- getV(t, db, 1) }()
		<-reached
		if _, err := raw.Exec(`update kv set v = 'new' where k = 1`); err != nil {
			t.Fatal(err)
		}
		must(t, c.InvalidateQuery(context.Background(), query, 1))
		close(proceed)
		<-read
		c.eng.bg.Wait()
		if got := getV(t, db, 1); got != "new" {
			t.Fatalf("after InvalidateQuery: %q, want the new value", got)
		}
	})
}

// blockingBumps is a backend whose first bump waits for release.
type blockingBumps struct {
	backend
	entered, release chan struct{}
	once             sync.Once
	bumps            atomic.Int32
}

func (b *blockingBumps) bump(ctx context.Context, tags []string) error {
	b.once.Do(func() { close(b.entered); <-b.release })
	b.bumps.Add(1)
	return b.backend.bump(ctx, tags)
}

// TestFailureDuringRetryIsRetried: an invalidation that fails while a
// retry's bump is on its way may fail after that bump landed; the retry
// must bump again before hits are served, even for a tag it named.
func TestFailureDuringRetryIsRetried(t *testing.T) {
	_, c, _ := engineDB(t, nil)
	e := c.eng
	fb := &blockingBumps{backend: e.direct, entered: make(chan struct{}), release: make(chan struct{})}
	e.direct = fb
	e.markPending([]string{"kv"}) // a write's invalidation failed
	<-fb.entered                  // the retry's bump is on its way
	e.markPending([]string{"kv"}) // another write's failed after it landed
	close(fb.release)
	deadline := time.Now().Add(5 * time.Second)
	for e.unsure.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the retries never ended")
		}
		time.Sleep(time.Millisecond)
	}
	if n := fb.bumps.Load(); n < 2 {
		t.Fatalf("hits resumed after %d bump; the second failure needs its own", n)
	}
}

// TestFailedExplicitInvalidationIsACacheError: InvalidateTables and
// InvalidateAll report a cache that failed them as every other failure is
// reported: counted and handed to OnError.
func TestFailedExplicitInvalidationIsACacheError(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { dead.Close() })
	_, c, _ := engineDB(t, dead)
	if err := c.InvalidateTables(context.Background(), "kv"); err == nil {
		t.Fatal("an invalidation succeeded with Redis down")
	}
	if s := c.Stats(); s.CacheErrors != 1 || !s.Pending {
		t.Fatalf("cache errors %d, pending %v; want 1, true", s.CacheErrors, s.Pending)
	}
}

// TestInvalidateQueryWithPostgresDown: a Connector that has no connection
// yet learns the key's identity from Postgres (see probe.go); with
// Postgres down, the new stamps of the query's tables still void the
// entry, and InvalidateQuery succeeds. It used to fail.
func TestInvalidateQueryWithPostgresDown(t *testing.T) {
	c, err := NewConnector("host=127.0.0.1 port=1 dbname=test sslmode=disable connect_timeout=1", Options{Registry: NewRegistry()})
	must(t, err)
	defer c.Close()
	const q = `select v from kv where k = $1`
	must(t, c.opts.Registry.Register(q, Policy{TTL: time.Hour}))
	invalidations := c.Stats().Invalidations
	must(t, c.InvalidateQuery(context.Background(), q, 1))
	if c.Stats().Invalidations == invalidations {
		t.Fatalf("the query's tables were not invalidated: %+v", c.Stats())
	}
}
