package integration

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq"
	"github.com/cachedpq/cachedpq/internal/redistest"
)

// TestForeignEntryNoStampede: with foreign bytes under a key (an entry of
// another codec version, say), a second process waiting on the first one's
// fill lease gave up at its first poll, because the poll (leasedEntry) took
// the undecodable value for a cache failure, and ran the query too.
func TestForeignEntryNoStampede(t *testing.T) {
	for _, store := range []string{"redis", "cluster"} {
		t.Run(store, func(t *testing.T) {
			var rdb redis.UniversalClient
			if store == "redis" {
				rdb = newRedis(t)
			} else {
				rdb = redistest.StartCluster(t, 3).Client()
			}
			env := newStressEnv(t, rdb, 2*time.Second)
			env.register(t, countedQuery, cachedpq.Policy{TTL: time.Minute})
			db2, _ := env.open(t, rdb, 2*time.Second)
			ctx := context.Background()
			if _, err := readItem(ctx, env.db, 7); err != nil {
				t.Fatal(err)
			}
			env.waitFills(t, 1)
			key := entryKeyOf(t, rdb, env.prefix+":items:*")
			if err := rdb.Set(ctx, key, "foreign bytes", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			base := env.calls(t)
			release := env.holdGate(t)
			first := make(chan error, 1)
			go func() { _, err := readItem(ctx, env.db, 7); first <- err }()
			waitFor(t, 10*time.Second, "the first load", func() bool { return env.calls(t) == base+1 })
			second := make(chan error, 1)
			go func() { _, err := readItem(ctx, db2, 7); second <- err }()
			time.Sleep(300 * time.Millisecond) // the second process waits on the lease (up to 3 s)
			loads := env.calls(t) - base
			release()
			for _, c := range []chan error{first, second} {
				if err := <-c; err != nil {
					t.Fatal(err)
				}
			}
			if loads != 1 {
				t.Fatalf("two processes ran the query %d times while the first held the fill lease, want 1", loads)
			}
		})
	}
}

// entryKeyOf finds the one key matching pattern on a node or cluster.
func entryKeyOf(t *testing.T, rdb redis.UniversalClient, pattern string) string {
	t.Helper()
	ctx := context.Background()
	var keys []string
	scan := func(c *redis.Client) {
		for iter := c.Scan(ctx, 0, pattern, 100).Iterator(); iter.Next(ctx); {
			if !strings.HasSuffix(iter.Val(), ":lease") {
				keys = append(keys, iter.Val())
			}
		}
	}
	switch c := rdb.(type) {
	case *redis.Client:
		scan(c)
	case *redis.ClusterClient:
		var mu sync.Mutex
		c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			scan(n)
			return nil
		})
	}
	if len(keys) != 1 {
		t.Fatalf("keys matching %s: %v", pattern, keys)
	}
	return keys[0]
}
