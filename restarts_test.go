package cachedpq

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestServerCheckVoidsOnAnotherServer: a lookup after a dial that finds the
// namespace recorded under another server's run_id, as a restore from a
// snapshot or a failover leaves it, voids every entry before it answers.
func TestServerCheckVoidsOnAnotherServer(t *testing.T) {
	rdb := testRedis(t)
	db, c, _ := engineDB(t, rdb)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	getV(t, db, 1)
	waitFor(t, func() bool { return c.Stats().Fills == 1 })
	hits := c.Stats().Hits
	getV(t, db, 1)
	if c.Stats().Hits != hits+1 {
		t.Fatalf("not cached: %+v", c.Stats())
	}
	ctx := context.Background()
	rb := c.eng.direct.(*redisBackend)
	must(t, rdb.Set(ctx, rb.serverKey(), "another-server", 0).Err())
	rb.watch.dials.n.Add(1) // as a dial to the restored server would
	hits, bumps := c.Stats().Hits, c.Stats().EpochBumps
	getV(t, db, 1)
	if s := c.Stats(); s.Hits != hits || s.EpochBumps != bumps+1 {
		t.Fatalf("served from a server the namespace did not know: %+v", s)
	}
	if id := rdb.Get(ctx, rb.serverKey()).Val(); id == "another-server" || id == "" {
		t.Fatalf("the server's run_id was not recorded: %q", id)
	}
	// The same server again, after another dial: nothing is voided.
	waitFor(t, func() bool { return c.Stats().Fills == 2 })
	rb.watch.dials.n.Add(1)
	hits = c.Stats().Hits
	getV(t, db, 1)
	if s := c.Stats(); s.Hits != hits+1 || s.EpochBumps != bumps+1 {
		t.Fatalf("the known server was checked as another: %+v", s)
	}
}

// TestServerCheckWithoutInfo: a server that refuses INFO (an ACL, a
// renamed command, as managed services have) turns the check off, with a
// warning, rather than failing every lookup.
func TestServerCheckWithoutInfo(t *testing.T) {
	admin := testRedis(t)
	ctx := context.Background()
	user := fmt.Sprintf("cachedpq_noinfo_%d", os.Getpid())
	must(t, admin.Do(ctx, "ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "-info").Err())
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
	rdb := redis.NewClient(&redis.Options{Addr: admin.Options().Addr, Username: user, Password: "pw"})
	t.Cleanup(func() { rdb.Close() })
	db, c, _ := engineDB(t, rdb)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	getV(t, db, 1)
	waitFor(t, func() bool { return c.Stats().Fills == 1 })
	getV(t, db, 1)
	s := c.Stats()
	if s.Hits != 1 || s.CacheErrors != 0 || !c.eng.direct.(*redisBackend).watch.off.Load() {
		t.Fatalf("without INFO: %+v", s)
	}
}
