package integration

// A Redis that comes back with less than it acknowledged: restarted from a
// snapshot, or a replica promoted in a failover. The stamp bumps it lost
// must not bring old entries back (see restarts.go).

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq"
	"github.com/cachedpq/cachedpq/internal/redistest"
)

// TestFaultSnapshotLosesInvalidation: an entry is filled, Redis saves a
// snapshot, a write commits and its invalidation lands (nothing fails),
// then Redis crashes and comes back from the snapshot, with the old entry
// under its old stamps. Nobody had a failure to retry: before the store
// checked the server after a dial, every process served the old row until
// its TTL.
func TestFaultSnapshotLosesInvalidation(t *testing.T) {
	dir := t.TempDir()
	env, srv := faultEnv(t, "--dir", dir)
	env.same(t, pointQuery, 1)
	env.waitFills(t, 1)
	if err := srv.Client().Save(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, env.db, `update items set name = 'new' where id = 1`)
	if s := env.stats(); s.Pending || s.CacheErrors != 0 {
		t.Fatalf("the invalidation did not land: %+v", s)
	}
	want := rowsOf(t, env.raw, pointQuery, 1)
	// In production the crash comes well after the write: its background
	// purge of the entry has run (on the live server) by then.
	time.Sleep(200 * time.Millisecond)
	srv.Restart(false) // SIGKILL, then start from the snapshot in dir
	db2, _ := env.open(t, timedClient(t, srv.Addr), faultTimeout)
	deadline := time.Now().Add(2 * time.Second)
	var stale1, stale2, n int
	for time.Now().Before(deadline) {
		if got := rowsOf(t, env.db, pointQuery, 1); got[0] != want[0] {
			stale1++
		}
		if got := rowsOf(t, db2, pointQuery, 1); got[0] != want[0] {
			stale2++
		}
		n++
		time.Sleep(10 * time.Millisecond)
	}
	if stale1+stale2 > 0 {
		t.Fatalf("after Redis came back from a snapshot older than an acknowledged invalidation, "+
			"the writer served the old row %d/%d times and another Connector %d/%d times (stats %+v)",
			stale1, n, stale2, n, env.stats().Counters)
	}
}

// TestFaultIdleProcessAfterRestartWithData: a second process sharing the
// prefix fills an entry, then makes no cache call while Redis is down. A
// write commits meanwhile in the first process; its invalidation fails and
// is pending there. Redis comes back from a snapshot (a systemd restart
// saves one on SIGTERM). The second process, which saw no failure, served
// the old entry until the writer's retry landed (up to retryMax later).
func TestFaultIdleProcessAfterRestartWithData(t *testing.T) {
	dir := t.TempDir()
	env, srv := faultEnv(t, "--dir", dir)
	db2, conn2 := env.open(t, timedClient(t, srv.Addr), faultTimeout)
	rowsOf(t, db2, pointQuery, 1)
	waitFor(t, 5*time.Second, "the fill", func() bool { return conn2.Stats().Fills == 1 })
	rowsOf(t, db2, pointQuery, 1)
	if conn2.Stats().Hits != 1 {
		t.Fatalf("not cached: %+v", conn2.Stats().Counters)
	}
	if err := srv.Client().Save(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	// The outage lasts a few seconds: the writer's retries back off to 1s.
	mustExec(t, env.db, `update items set name = 'new' where id = 1`)
	if !env.stats().Pending {
		t.Fatal("the invalidation did not fail")
	}
	want := rowsOf(t, env.raw, pointQuery, 1)
	time.Sleep(3 * time.Second)
	srv.Restart(false) // from the snapshot in dir
	var stale, n int
	for range 20 {
		if got := rowsOf(t, db2, pointQuery, 1); got[0] != want[0] {
			stale++
		}
		n++
		time.Sleep(5 * time.Millisecond)
	}
	if stale > 0 {
		t.Fatalf("the second Connector served the row the write replaced %d of %d times after Redis came back", stale, n)
	}
}

// TestFaultFailoverLosesInvalidation: behind Sentinel (a *redis.Client
// whose dialer follows the master), a write's invalidation is a SET the
// master alone acknowledges. If the master dies before its replica has it
// and the replica is promoted, the new master holds the old stamps and the
// old entries: a process reading after the failover was served the rows
// the write replaced, although no cache operation failed for the writer.
// (The dialer stands in for Sentinel: it dials the master of the moment.)
func TestFaultFailoverLosesInvalidation(t *testing.T) {
	master := redistest.Start(t)
	_, port, _ := net.SplitHostPort(master.Addr)
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", port)
	ctx := context.Background()
	waitFor(t, 10*time.Second, "the replica to sync", func() bool {
		return strings.Contains(replica.Client().Info(ctx, "replication").Val(), "master_link_status:up")
	})
	var current atomic.Value
	current.Store(master.Addr)
	failover := func() *redis.Client {
		c := redis.NewClient(&redis.Options{
			Addr:                  master.Addr,
			ContextTimeoutEnabled: true,
			Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, current.Load().(string))
			},
		})
		t.Cleanup(func() { c.Close() })
		return c
	}
	env := newEnvWith(t, failover())
	mustExec(t, env.raw, usersDDL)
	point := `select id, name from users where id = $1`
	env.register(t, point, cachedpq.Policy{TTL: time.Minute})
	env.same(t, point, 1)
	env.waitFills(t, 1)
	// The entry and its stamps have reached the replica.
	if n, err := master.Client().Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT: %d %v", n, err)
	}

	// The replica is cut off from the master (a partition, or a link that
	// lags) and promoted; the old master still takes the write, as a master
	// does until it learns of the failover.
	if err := replica.Client().Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, env.db, `update users set name = 'new' where id = 1`)
	if s := env.stats(); s.Pending || s.CacheErrors != 0 {
		t.Fatalf("the write's invalidation failed: %+v", s)
	}
	env.conn.Close() // the writer's background work (its purge) is done
	master.Kill()
	current.Store(replica.Addr)

	// A process that starts after the failover.
	conn2, err := cachedpq.NewConnector(baseDSN()+" search_path="+env.schema, cachedpq.Options{
		Redis: failover(), Prefix: env.prefix, Registry: env.reg, Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	db2 := sqlx.NewDb(sql.OpenDB(conn2), "cachedpq")
	t.Cleanup(func() { db2.Close() })
	want := rowsOf(t, env.raw, point, 1)
	if got := rowsOf(t, db2, point, 1); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the failover: %v, Postgres has %v (stats %+v)", got, want, conn2.Stats().Counters)
	}
}

// TestFaultCloseOnStalledRedis: closing the DB while Redis is stalled
// waited for the background purge of the last write's tables, whose single
// deadline was purgeTimeout (10 s); each of its commands now has
// cache_timeout.
func TestFaultCloseOnStalledRedis(t *testing.T) {
	env, srv := faultEnv(t)
	for id := 1; id <= 5; id++ {
		env.same(t, pointQuery, id)
	}
	env.waitFills(t, 5)
	mustExec(t, env.db, `update items set name = 'x' where id = 2`) // its purge starts 10ms later
	srv.Pause()
	defer srv.Resume()
	start := time.Now()
	env.db.Close()
	took := time.Since(start)
	t.Logf("Close took %v", took)
	if took > time.Second {
		t.Fatalf("db.Close took %v on a stalled Redis (cache_timeout %v)", took, faultTimeout)
	}
}

// TestFaultClusterSnapshotLosesInvalidation is TestFaultSnapshotLosesInvalidation
// on a three-master Cluster: the master M holding the stamp of users (and
// some of its entries) saves a snapshot, a write's bump lands on M, and M
// crashes and comes back from the snapshot, with the old stamp and the old
// entries. The other masters kept the epoch stamp: nothing looked voided,
// and the old rows were served until their TTL.
func TestFaultClusterSnapshotLosesInvalidation(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	rdb := cluster.Client()
	env, point, n := cachedPoints(t, rdb)
	ctx := context.Background()
	m := masterOf(t, cluster, env.prefix+":stamp:users")
	if entries := entriesOn(t, m.Client(), env.prefix); entries == 0 {
		t.Fatalf("none of the %d entries is on %s, the master of the stamp", n, m.Addr)
	}
	if err := m.Client().Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, env.db, `update users set name = 'new' || id`)
	if s := env.stats(); s.Pending || s.CacheErrors != 0 {
		t.Fatalf("the invalidation did not land: %+v", s)
	}
	time.Sleep(200 * time.Millisecond) // the write's purge is done
	m.Revert()
	cluster.WaitHealthy()
	t.Logf("before the reads: %+v", env.stats())
	noStaleReads(t, env, point, n, fmt.Sprintf("master %s came back from a snapshot older than an acknowledged invalidation", m.Addr))
}

// noStaleReads reads the n points through env after a Cluster lost an
// acknowledged invalidation (what says how), and fails the test if one is
// stale. Then it waits for the namespace to be voided, as the check does,
// or as a process does once a lookup met the lost node and it went
// pending (under load the Cluster may still be settling), and reads the
// points again.
func noStaleReads(t *testing.T, env *cacheEnv, point string, n int, what string) {
	t.Helper()
	reads := func(when string) {
		t.Helper()
		stale := 0
		for id := 1; id <= n; id++ {
			want := rowsOf(t, env.raw, point, id)
			if got := rowsOf(t, env.db, point, id); fmt.Sprint(got) != fmt.Sprint(want) {
				stale++
			}
		}
		if stale > 0 {
			t.Fatalf("%s %s, %d of %d reads served the old row (stats %+v)", when, what, stale, n, env.stats().Counters)
		}
	}
	reads("after")
	waitFor(t, 10*time.Second, "the namespace to be voided", func() bool {
		s := env.stats()
		return s.EpochBumps > 0 && !s.Pending
	})
	reads("once the namespace was voided after")
}

// masterOf is the server of cluster that holds key.
func masterOf(t *testing.T, cluster *redistest.Cluster, key string) *redistest.Server {
	t.Helper()
	node, err := cluster.Client().MasterForKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cluster.Servers {
		if s.Addr == node.Options().Addr {
			return s
		}
	}
	t.Fatalf("no server of the cluster at %s", node.Options().Addr)
	return nil
}

// entriesOn counts the cache entries under prefix that c holds.
func entriesOn(t *testing.T, c *redis.Client, prefix string) int {
	t.Helper()
	keys, err := c.Keys(context.Background(), prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range keys {
		if !strings.Contains(k, ":stamp:") && !strings.Contains(k, ":idx:") && !strings.Contains(k, ":server") {
			n++
		}
	}
	return n
}

// TestFaultClusterFailoverLosesInvalidation: on a Cluster with a replica
// per master, the master M holding the stamp of users acknowledges a
// write's bump that never reaches its replica (the link is down, the
// replica stalled), dies, and the replica takes over with the old stamp and
// the old entries. Its replication ID is new: its record, replicated from
// M, names M. It failed before the Cluster check (12 of 30 reads stale),
// then in about half its runs: some reads were stale when the replica's
// node client, made before the Connector, was missing from every state a
// check read, so that no check had hooked it (TestClusterUnhookedNodeChecked),
// or nothing was cached because the checks' own dials counted and the first
// lookups gave up (TestClusterCheckOwnDialsUncounted).
func TestFaultClusterFailoverLosesInvalidation(t *testing.T) {
	cluster := redistest.StartReplicatedCluster(t, 3)
	rdb := cluster.Client()
	ctx := context.Background()
	// The application used its client first: every node client, replicas
	// included, predates the Connector.
	must(t, rdb.Ping(ctx).Err())
	env, point, n := cachedPoints(t, rdb)
	m := masterOf(t, cluster, env.prefix+":stamp:users")
	r := cluster.ReplicaOf(m)
	if got, err := m.Client().Wait(ctx, 1, 5*time.Second).Result(); err != nil || got != 1 {
		t.Fatalf("WAIT: %d %v", got, err)
	}
	if entriesOn(t, r.Client(), env.prefix) == 0 {
		t.Fatalf("none of the %d entries is on %s, the master of the stamp", n, m.Addr)
	}
	// The replica stalls and M drops its link: the bump stays on M.
	r.Pause()
	must(t, m.Client().ClientKillByFilter(ctx, "TYPE", "replica").Err())
	mustExec(t, env.db, `update users set name = 'new' || id`)
	if s := env.stats(); s.Pending || s.CacheErrors != 0 {
		t.Fatalf("the invalidation did not land: %+v", s)
	}
	time.Sleep(200 * time.Millisecond) // the write's purge is done
	m.Kill()
	r.Resume()
	waitFor(t, 10*time.Second, "the replica to take over", func() bool {
		_ = r.Client().Do(ctx, "CLUSTER", "FAILOVER", "TAKEOVER").Err()
		return strings.Contains(r.Client().Info(ctx, "replication").Val(), "role:master")
	})
	// The Cluster and the Connector's client learn of it (a fresh client
	// asks, not the Connector's: its dials would count).
	fresh := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{r.Addr}})
	defer fresh.Close()
	waitFor(t, 10*time.Second, "the Cluster to route to the replica", func() bool {
		c, err := fresh.MasterForKey(ctx, env.prefix+":stamp:users")
		fresh.ReloadState(ctx)
		return err == nil && c.Options().Addr == r.Addr && fresh.Get(ctx, env.prefix+":stamp:users").Err() == nil
	})
	rdb.ReloadState(ctx)
	time.Sleep(100 * time.Millisecond) // the reload is lazy
	t.Logf("before the reads: %+v", env.stats().Counters)
	noStaleReads(t, env, point, n, fmt.Sprintf("replica %s took over from %s without the write's invalidation", r.Addr, m.Addr))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// cachedPoints opens an env on rdb and caches the point reads of 30 users,
// waiting for their fills: the start of the Cluster restart tests.
func cachedPoints(t *testing.T, rdb redis.UniversalClient) (env *cacheEnv, point string, n int) {
	t.Helper()
	env = newEnvWith(t, rdb)
	mustExec(t, env.raw, usersDDL)
	point, n = `select id, name from users where id = $1`, 30
	env.register(t, point, cachedpq.Policy{TTL: time.Minute})
	for id := 1; id <= n; id++ {
		env.same(t, point, id)
	}
	env.waitFills(t, uint64(n))
	return env, point, n
}
