package cachedpq

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq/internal/redistest"
)

// cachedKV opens an engine over rdb with kv(1) cached: a miss, its fill,
// then a hit.
func cachedKV(t *testing.T, rdb redis.UniversalClient) (*sql.DB, *Connector) {
	t.Helper()
	db, c, _ := engineDB(t, rdb)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	getV(t, db, 1)
	waitFor(t, func() bool { return c.Stats().Fills == 1 })
	getV(t, db, 1)
	// That first hit took the lease, and gives it back in the background,
	// which may dial: the next hit checks the server if it did.
	c.eng.bg.Wait()
	getV(t, db, 1)
	if c.Stats().Hits != 2 {
		t.Fatalf("not cached: %+v", c.Stats())
	}
	return db, c
}

// TestServerCheckVoidsOnAnotherServer: a lookup after a dial that finds the
// namespace recorded under another server's run_id, as a restore from a
// snapshot or a failover leaves it, voids every entry before it answers.
func TestServerCheckVoidsOnAnotherServer(t *testing.T) {
	rdb := testRedis(t)
	db, c := cachedKV(t, rdb)
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

// TestServerRecheckedWithoutDial: a failover behind a DNS name or a proxy
// need not make anyone dial; a check holds serverRecheck at most.
func TestServerRecheckedWithoutDial(t *testing.T) {
	rdb := testRedis(t)
	db, c := cachedKV(t, rdb)
	rb := c.eng.direct.(*redisBackend)
	must(t, rdb.Set(context.Background(), rb.serverKey(), "another-server", 0).Err())
	hits, bumps := c.Stats().Hits, c.Stats().EpochBumps
	getV(t, db, 1) // within serverRecheck of the last check: not checked
	if s := c.Stats(); s.Hits != hits+1 || s.EpochBumps != bumps {
		t.Fatalf("checked again without a dial: %+v", s)
	}
	checkDue(c)
	getV(t, db, 1)
	if s := c.Stats(); s.Hits != hits+1 || s.EpochBumps != bumps+1 {
		t.Fatalf("a check older than serverRecheck held: %+v", s)
	}
}

// TestReplicaNotUsed: a server that is not a master (a replica, or a
// master a failover demoted, still reached through an old connection) is
// not used: its stamps may lag the writes that voided its entries.
func TestReplicaNotUsed(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	db, c := cachedKV(t, rdb)
	// A failover demotes it (to the replica of a master that does not
	// answer, so that it keeps its data); the connections stay open.
	must(t, rdb.Do(context.Background(), "REPLICAOF", "127.0.0.1", "1").Err())
	checkDue(c)
	getV(t, db, 1)
	if s := c.Stats(); s.Hits != 2 || s.CacheErrors == 0 {
		t.Fatalf("a replica was used: %+v", s)
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
	_, c := cachedKV(t, rdb)
	s := c.Stats()
	if s.Hits != 2 || s.CacheErrors != 0 || !c.eng.direct.(*redisBackend).watch.off.Load() {
		t.Fatalf("without INFO: %+v", s)
	}
}

// infoHook runs before, once, just before the client it is added to sends
// INFO (the start of a server check).
type infoHook struct {
	once   sync.Once
	armed  atomic.Bool
	before func()
}

func (h *infoHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *infoHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "info" && h.armed.Load() {
			h.once.Do(h.before)
		}
		return next(ctx, cmd)
	}
}
func (h *infoHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestServerCheckRaceAcrossProcesses: two processes (two Connectors on
// their own clients, one prefix) meet a Redis restored from a snapshot
// that lost a write's stamp bump. B's lookup answers the old entry; before
// B's check runs, A's check voids the namespace and records the new run_id.
// B's check then found the run_id it expected, and B served the row the
// write replaced (found by review E): a lookup that overlapped any check
// is now made again.
func TestServerCheckRaceAcrossProcesses(t *testing.T) {
	rdbA, rdbB := testRedis(t), testRedis(t)
	dbA, cA, raw := engineDB(t, rdbA)
	const q = `select v from kv where k = $1`
	must(t, cA.opts.Registry.Register(q, Policy{TTL: time.Hour}))
	schema := cA.opts.Prefix
	regB := NewRegistry()
	must(t, regB.Register(q, Policy{TTL: time.Hour}))
	cB, err := NewConnector(pqDSN(t)+" search_path="+schema, Options{
		Redis: rdbB, Prefix: schema, Registry: regB, Timeout: time.Second,
	})
	must(t, err)
	dbB := sql.OpenDB(cB)
	defer dbB.Close()

	// B caches key 1 and hits it; A has run its first check too.
	getV(t, dbB, 1)
	waitFor(t, func() bool { return cB.Stats().Fills == 1 })
	getV(t, dbB, 1)
	if cB.Stats().Hits != 1 {
		t.Fatalf("not cached: %+v", cB.Stats())
	}
	getV(t, dbA, 2)

	// Redis comes back from a snapshot taken before a write whose bump it
	// acknowledged: the row changed, the stamps did not, and the record
	// names the server before the restart.
	_, err = raw.Exec(`update kv set v = 'new' where k = 1`)
	must(t, err)
	rb := cB.eng.direct.(*redisBackend)
	must(t, rdbB.Set(context.Background(), rb.serverKey(), "run-id-before-the-restart", 0).Err())
	// Both processes' connections were cut: each dials again.
	cA.eng.direct.(*redisBackend).watch.dials.n.Add(1)
	rb.watch.dials.n.Add(1)

	// A's lookup (and check) lands between B's lookup and B's check.
	h := &infoHook{before: func() { getV(t, dbA, 3) }}
	rdbB.AddHook(h)
	h.armed.Store(true)
	got := getV(t, dbB, 1)
	if cA.Stats().EpochBumps != 1 {
		t.Fatalf("A's check did not void the namespace: %+v", cA.Stats())
	}
	if got != "new" {
		t.Fatalf("B served %q after Redis came back without the write's invalidation; Postgres has %q (B %+v)",
			got, "new", cB.Stats().Counters)
	}
}

// TestClosedConnectorsAreCollected: go-redis cannot remove a hook, and the
// dial hook each Connector added to the caller's client held its engine
// (its decode memo, its registry state): every Connector closed over a
// long-lived client stayed in memory (found by review E). A client now has
// one hook, holding its dial counter alone.
func TestClosedConnectorsAreCollected(t *testing.T) {
	rdb := testRedis(t)
	var engines []weak.Pointer[engine]
	for range 20 {
		c := Wrap(&fakeConnector{}, Options{Redis: rdb, Prefix: testPrefix(t, rdb), NoCatalog: true, Registry: NewRegistry()})
		engines = append(engines, weak.Make(c.eng))
		must(t, c.Close())
	}
	runtime.GC()
	runtime.GC()
	alive := 0
	for _, w := range engines {
		if w.Value() != nil {
			alive++
		}
	}
	if alive > 0 {
		t.Fatalf("%d of %d closed Connectors' engines are still reachable from the caller's Redis client", alive, len(engines))
	}
}

// noSyncDelay makes a master sync its replicas at once, not 5 s later.
var noSyncDelay = []string{"--repl-diskless-sync-delay", "0"}

// masterAndReplica starts a Redis and a replica of it, synced.
func masterAndReplica(t *testing.T) (master, replica *redistest.Server) {
	master = redistest.Start(t, noSyncDelay...)
	replica = redistest.Start(t, append([]string{"--replicaof", "127.0.0.1", port(master)}, noSyncDelay...)...)
	waitFor(t, linkUp(replica))
	return master, replica
}

// port is s's port.
func port(s *redistest.Server) string { return strings.Split(s.Addr, ":")[1] }

// linkUp reports whether replica s is in sync with its master.
func linkUp(s *redistest.Server) func() bool {
	return func() bool {
		return strings.Contains(s.Client().Info(context.Background(), "replication").Val(), "master_link_status:up")
	}
}

// checkDue makes c's last server check older than serverRecheck, as if a
// second had passed: the next lookup checks.
func checkDue(c *Connector) {
	c.eng.direct.(*redisBackend).watch.last.Store(time.Now().Add(-2 * serverRecheck).UnixNano())
}

// TestDemotedAndPromotedBack: a master demoted, synced from the new master
// and promoted back keeps its run_id; its replication ID history (the old
// ID as master_replid2) still voids the namespace.
func TestDemotedAndPromotedBack(t *testing.T) {
	ctx := context.Background()
	s1, s2 := masterAndReplica(t)
	rdb := s1.Client()
	db, c := cachedKV(t, rdb)
	must(t, s1.Client().Wait(ctx, 1, time.Second).Err())
	// A failover to s2 and back, with no lookup while s2 was the master.
	must(t, s2.Client().Do(ctx, "REPLICAOF", "NO", "ONE").Err())
	must(t, rdb.Do(ctx, "REPLICAOF", "127.0.0.1", port(s2)).Err())
	waitFor(t, linkUp(s1))
	must(t, s2.Client().Do(ctx, "REPLICAOF", "127.0.0.1", port(s1)).Err())
	must(t, rdb.Do(ctx, "REPLICAOF", "NO", "ONE").Err())
	checkDue(c)
	bumps := c.Stats().EpochBumps
	getV(t, db, 1)
	if s := c.Stats(); s.EpochBumps != bumps+1 {
		t.Fatalf("promoted back without a void: %+v", s)
	}
}

// TestClockStepBack: the periodic check measures time on the wall clock;
// after it is stepped back (NTP, a restored VM) the last check looked as
// if made in the future, and held until the clock caught up (found by
// review G). Here the last check is an hour ahead.
func TestClockStepBack(t *testing.T) {
	rdb := testRedis(t)
	db, c := cachedKV(t, rdb)
	rb := c.eng.direct.(*redisBackend)
	must(t, rdb.Set(context.Background(), rb.serverKey(), "another-server", 0).Err())
	rb.watch.last.Store(time.Now().Add(time.Hour).UnixNano())
	hits, bumps := c.Stats().Hits, c.Stats().EpochBumps
	getV(t, db, 1)
	if s := c.Stats(); s.Hits != hits || s.EpochBumps != bumps+1 {
		t.Fatalf("no check after the clock stepped back: %+v", s)
	}
}

// TestPromotedBackBacklogFreed: a master that failed over, lost an
// acknowledged invalidation by resyncing from the new master, and was
// promoted back keeps its run_id, and its master_replid2 is cleared when
// its backlog is freed (repl-backlog-ttl without replicas). A rule that
// took "the same run_id, no previous replication ID" for a backlog merely
// created or freed served the entry the lost invalidation had voided
// (found by review H); any new replication ID now voids the namespace.
func TestPromotedBackBacklogFreed(t *testing.T) {
	ctx := context.Background()
	s1, s2 := masterAndReplica(t)
	rdb := s1.Client()
	db, c := cachedKV(t, rdb) // k=1 cached as "v1", record "run1 replidAfterAttach"
	must(t, rdb.Wait(ctx, 1, time.Second).Err())
	// Failover: s2 promoted; s1 (partitioned) still acknowledges a write's
	// invalidation that s2 never gets.
	must(t, s2.Client().Do(ctx, "REPLICAOF", "NO", "ONE").Err())
	if _, err := db.Exec(`update kv set v = 'new' where k = 1`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the background purge of kv's entries is done (on s1 only)
	// s1 rejoins as a replica: its data becomes s2's (the old stamp, the old entry).
	must(t, rdb.Do(ctx, "REPLICAOF", "127.0.0.1", port(s2)).Err())
	waitFor(t, linkUp(s1))
	// Failback; s2 does not reattach (or leaves), and the backlog is freed.
	must(t, rdb.Do(ctx, "REPLICAOF", "NO", "ONE").Err())
	must(t, rdb.ConfigSet(ctx, "repl-backlog-ttl", "1").Err())
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(rdb.Info(ctx, "replication").Val(), "master_replid2:0000000000000000000000000000000000000000") {
		if time.Now().After(deadline) {
			t.Fatal("backlog not freed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkDue(c)
	if got := getV(t, db, 1); got != "new" {
		t.Fatalf("served %q after a failover lost the invalidation; Postgres has \"new\" (%+v)", got, c.Stats().Counters)
	}
}

// TestServerCheckVoidsWhenProcessMoved: a process whose last check found
// another server voids the namespace when it meets this one, although
// another process recorded it already: behind Sentinel, a process told of
// a failover late wrote to the old master after the others had moved, and
// the new master never got those stamp bumps (TestSentinelLateWriter in
// integration/). Its next lookup checks, and so does its next write, for a
// process that only writes.
func TestServerCheckVoidsWhenProcessMoved(t *testing.T) {
	for _, next := range []string{"read", "write"} {
		t.Run(next, func(t *testing.T) {
			db, c := cachedKV(t, testRedis(t))
			w := c.eng.direct.(*redisBackend).watch
			w.sem <- struct{}{}
			w.seen = "the-old-master " + w.seen
			<-w.sem
			w.dials.n.Add(1) // as the dial to the new master would
			hits, bumps := c.Stats().Hits, c.Stats().EpochBumps
			if next == "read" {
				getV(t, db, 1)
			} else if _, err := db.Exec(`update kv set v = v where k = 2`); err != nil {
				t.Fatal(err)
			}
			if s := c.Stats(); s.Hits != hits || s.EpochBumps != bumps+1 {
				t.Fatalf("the namespace was not voided: %+v", s)
			}
			// The same server again, after another dial: nothing is voided.
			w.dials.n.Add(1)
			getV(t, db, 1)
			if s := c.Stats(); s.EpochBumps != bumps+1 {
				t.Fatalf("the server met again was taken for another: %+v", s)
			}
		})
	}
}

// oldVersion rewrites the redis_version of every INFO answer, as a server
// older than 7.0 would give it.
type oldVersion struct{}

func (oldVersion) DialHook(next redis.DialHook) redis.DialHook { return next }
func (oldVersion) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if c, ok := cmd.(*redis.StringCmd); ok && cmd.Name() == "info" && err == nil {
			var b strings.Builder
			for line := range strings.Lines(c.Val()) {
				if strings.HasPrefix(line, "redis_version:") {
					line = "redis_version:6.2.14\r\n"
				}
				b.WriteString(line)
			}
			c.SetVal(b.String())
		}
		return err
	}
}
func (oldVersion) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestOldRedisNotUsed: a server older than Redis 7.0 would refuse the
// commands fills and leases use on every call. The server check refuses it
// with errOldRedis, a cache error: reads are answered by Postgres. (The
// namespace stays pending, its invalidation retried in the background,
// until the server is replaced.)
func TestOldRedisNotUsed(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	rdb.AddHook(oldVersion{})
	var logged atomic.Bool
	db, c, _ := engineDB(t, rdb)
	c.eng.opts.OnError = func(err error) {
		if errors.Is(err, errOldRedis) {
			logged.Store(true)
		}
	}
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	for range 3 {
		getV(t, db, 1)
	}
	if s := c.Stats(); s.Hits != 0 || s.CacheErrors == 0 || !logged.Load() {
		t.Fatalf("a Redis 6 was used, or not refused with errOldRedis: %+v", s)
	}
}

func TestServerID(t *testing.T) {
	info := func(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n" }
	for _, tc := range []struct {
		info string
		id   string
		err  error
	}{
		{info("# Server", "redis_version:7.0.15", "run_id:abc", "# Replication", "role:master", "master_replid:r1"), "abc r1", nil},
		{info("redis_version:8.2.1", "run_id:abc", "master_replid:r1"), "abc r1", nil},
		{info("redis_version:255.255.255", "run_id:abc", "master_replid:r1"), "abc r1", nil}, // a build from source
		{info("run_id:abc", "master_replid:r1"), "abc r1", nil},                              // no version: the commands tell
		{info("redis_version:6.2.14", "run_id:abc", "role:master", "master_replid:r1"), "", errOldRedis},
		{info("redis_version:5.0.7", "run_id:abc"), "", errOldRedis},
		{info("redis_version:7.0.15", "run_id:abc", "role:slave"), "", errNotMaster},
		{info("redis_version:7.0.15"), "", errNoRunID},
	} {
		id, err := serverID(tc.info)
		if id != tc.id || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("serverID(%q) = %q, %v; want %q, %v", tc.info, id, err, tc.id, tc.err)
		}
	}
}
