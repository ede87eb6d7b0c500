package cachedpq

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestHugeLifetimes: a TTL or StaleFor so long that "forever" is meant
// (math.MaxInt64 included, with the largest Jitter) is registered, and its
// entries are served: no panic, no failed fill, nothing pending.
func TestHugeLifetimes(t *testing.T) {
	forever := time.Duration(math.MaxInt64)
	policies := []Policy{
		{TTL: forever, Jitter: 1},
		{TTL: forever},
		{TTL: forever / 2, Jitter: 1},
		{TTL: 250 * 365 * 24 * time.Hour, Jitter: -1},
		{TTL: time.Hour, StaleFor: forever},
	}
	for i, p := range policies {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			eachStore(t, func(t *testing.T, rdb redis.UniversalClient) {
				db, c, _ := engineDB(t, rdb)
				if err := c.opts.Registry.Register(`select v from kv where k = $1`, p); err != nil {
					t.Fatal(err)
				}
				getV(t, db, 1)
				waitFor(t, func() bool { s := c.Stats(); return s.Fills+s.FillErrors == 1 })
				if got := getV(t, db, 1); got != "v1" {
					t.Fatalf("got %q", got)
				}
				if s := c.Stats(); s.Hits != 1 || s.CacheErrors != 0 || s.Pending {
					t.Fatalf("policy %+v: %+v, %d cache errors, pending %v", p, s.Counters, s.CacheErrors, s.Pending)
				}
			})
		})
	}
}
