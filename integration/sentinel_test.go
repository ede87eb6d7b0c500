package integration

// Redis behind Sentinel: real redis-server processes in sentinel mode
// (internal/redistest), reached through go-redis's failover client, as an
// application would reach them.

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq"
	"github.com/cachedpq/cachedpq/internal/redistest"
)

// sentinelClient is a client of sn's master through its Sentinels (via, or
// all of them): it asks them where the master is when it dials, and drops
// its connections when they announce a failover.
func sentinelClient(t testing.TB, sn *redistest.Sentinel, via ...*redistest.Server) *redis.Client {
	addrs := sn.Addrs
	if len(via) > 0 {
		addrs = nil
		for _, s := range via {
			addrs = append(addrs, s.Addr)
		}
	}
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            sn.Name,
		SentinelAddrs:         addrs,
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// sameOn asserts db answers pointQuery for id as Postgres does now.
func sameOn(t *testing.T, env *stressEnv, db *sqlx.DB, id int) {
	t.Helper()
	got, want := rowsOf(t, db, pointQuery, id), rowsOf(t, env.raw, pointQuery, id)
	if !slices.Equal(got, want) {
		t.Fatalf("item %d: cachedpq %v, Postgres %v", id, got, want)
	}
}

// TestSentinelReadYourWrites: two Connectors sharing a prefix, each with a
// failover client of its own (two processes), share entries, and a write
// through either is read by both at once.
func TestSentinelReadYourWrites(t *testing.T) {
	sn := redistest.StartSentinel(t, 1)
	env := newStressEnv(t, sentinelClient(t, sn), time.Second)
	env.register(t, pointQuery, cachedpq.Policy{})
	db2, conn2 := env.open(t, sentinelClient(t, sn), time.Second)

	sameOn(t, env, env.db, 1)
	env.waitFills(t, 1)
	sameOn(t, env, env.db, 1)
	sameOn(t, env, db2, 1)
	if h1, h2 := env.stats().Hits, conn2.Stats().Hits; h1 != 1 || h2 != 1 {
		t.Fatalf("hits %d and %d after a fill, want 1 and 1", h1, h2)
	}
	for i, db := range []*sqlx.DB{env.db, db2, env.db} {
		mustExec(t, db, `update items set name = $1 where id = 1`, fmt.Sprint("new", i))
		sameOn(t, env, env.db, 1)
		sameOn(t, env, db2, 1)
	}
	// The entry filled after the writes is served in the second process.
	// Fills land after their readers have their rows, and the last write's
	// may not have landed yet: read until one hits, each read as Postgres
	// answers.
	waitFor(t, 5*time.Second, "a hit after the writes in the second process", func() bool {
		hits := conn2.Stats().Hits
		sameOn(t, env, db2, 1)
		return conn2.Stats().Hits > hits
	})
	for _, s := range []cachedpq.Stats{env.stats(), conn2.Stats()} {
		if s.CacheErrors != 0 || s.Pending {
			t.Fatalf("cache errors: %+v", s.Counters)
		}
	}
}

// onServer waits until c's commands reach srv.
func onServer(t *testing.T, c *redis.Client, srv *redistest.Server) {
	t.Helper()
	_, port, _ := net.SplitHostPort(srv.Addr)
	waitFor(t, 10*time.Second, "the client to reach "+srv.Addr, func() bool {
		info := c.Info(context.Background(), "server").Val()
		return strings.Contains(info, "tcp_port:"+port+"\r\n")
	})
}

// TestSentinelFailover runs the consistency checker's mix (consistency_test.go)
// through two Connectors sharing a prefix, each with a failover client of
// its own, while the Sentinels fail the master over (SENTINEL FAILOVER).
// The master stops feeding its replica first (CutReplication): the stamp
// bumps of the writes before the failover reach the old master only, and
// the promoted replica holds the old stamps and the entries those writes
// voided. The writes pause from the failover until a while after both
// clients reach the new master, so that reads meet those entries before a
// new write voids them. Every call must succeed, and no read may return a
// version older than a write that had returned before the read began.
func TestSentinelFailover(t *testing.T) {
	sn := redistest.StartSentinel(t, 3)
	ca, cb := sentinelClient(t, sn), sentinelClient(t, sn)
	env := newStressEnv(t, ca, time.Second)
	mustExec(t, env.raw, cellsDDL)
	for _, q := range []string{cellQuery, cellsQuery} {
		env.register(t, q, cachedpq.Policy{TTL: time.Minute})
	}
	db2, conn2 := env.open(t, cb, time.Second)
	dbs := []*sqlx.DB{env.db, db2}
	for _, db := range dbs {
		for id := 1; id <= cellCount; id++ {
			rowsOf(t, db, cellQuery, id)
		}
	}
	// Either process may fill a cell: under load, a lease whose load is
	// slow to claim it is given back (see leaseClaim), and the second
	// process's read of the cell fills it (once seen: 6 fills in the
	// first).
	waitFor(t, 5*time.Second, "the cells filled", func() bool {
		return env.stats().Fills+conn2.Stats().Fills >= cellCount
	})
	ctx := context.Background()
	if n, err := sn.Master.Client().Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT: %d %v", n, err)
	}
	sn.CutReplication()

	var (
		logs          [2]opLog
		reading, stop atomic.Bool // reads only; the end
		wg            sync.WaitGroup
	)
	for i, db := range dbs {
		wg.Go(func() { runFailoverMix(db, i, &reading, &stop, &logs[i]) })
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() })
	time.Sleep(500 * time.Millisecond) // writes reach the old master only
	reading.Store(true)
	stampOld := sn.Master.Client().Get(ctx, env.prefix+":stamp:cells").Val()
	stampReplica := sn.Replica.Client().Get(ctx, env.prefix+":stamp:cells").Val()
	start := time.Now()
	sn.Failover()
	onServer(t, ca, sn.Replica)
	onServer(t, cb, sn.Replica)
	t.Logf("failover done and both clients on the new master in %v", time.Since(start))
	time.Sleep(500 * time.Millisecond)
	reading.Store(false)
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()

	if stampOld == stampReplica {
		t.Fatalf("the writes before the failover did not bump the stamp of cells on the old master only")
	}
	all := append(slices.Clone(logs[0].ops), logs[1].ops...)
	stale, phantom := check(all)
	s1, s2 := env.stats(), conn2.Stats()
	t.Logf("%d operations; hits %d+%d, misses %d+%d, epoch bumps %d+%d, cache errors %d+%d",
		len(all), s1.Hits, s2.Hits, s1.Misses, s2.Misses, s1.EpochBumps, s2.EpochBumps, s1.CacheErrors, s2.CacheErrors)
	for i := range logs {
		if errs := logs[i].errs; len(errs) > 0 {
			t.Errorf("Connector %d: %d caller errors, first %v", i+1, len(errs), errs[:min(5, len(errs))])
		}
	}
	for i, v := range stale[:min(len(stale), 10)] {
		t.Errorf("stale read %d: Connector %d read cell %d version %d, started %v after Connector %d's write of version %d returned",
			i, v.read.Proc+1, v.read.ID, v.read.V, time.Duration(v.read.Start-v.write.End), v.write.Proc+1, v.write.V)
	}
	if len(stale) > 0 || len(phantom) > 0 {
		t.Fatalf("%d stale reads, %d phantom reads", len(stale), len(phantom))
	}
	if s1.EpochBumps+s2.EpochBumps == 0 {
		t.Fatal("neither Connector noticed the failover")
	}
}

// runFailoverMix runs oneMixOp on db in two goroutines, as process proc,
// or only list reads while reading is set, until stop is.
func runFailoverMix(db *sqlx.DB, proc int, reading, stop *atomic.Bool, log *opLog) {
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				var err error
				if reading.Load() {
					err = listRead(db, proc, time.Now().UnixNano(), log)
				} else {
					err = oneMixOp(db, proc, log)
				}
				if err != nil {
					log.fail(err)
				}
			}
		})
	}
	wg.Wait()
}

// TestSentinelLateWriter: the Sentinel of one process (B) learns of a
// failover late (it is paused), and B writes through the old master, which
// still takes writes, after the other process (A) has reached the new one
// and voided the namespace there. The old master acknowledges the write's
// stamp bump, which the new one never gets. Once B has reached the new
// master and used the cache, with a read or with a write to another table,
// both must read the write. (Before that, A may read the row the write
// replaced: no process but B knows of the write.)
func TestSentinelLateWriter(t *testing.T) {
	for _, next := range []string{"read", "write"} {
		t.Run(next, func(t *testing.T) { testSentinelLateWriter(t, next) })
	}
}

func testSentinelLateWriter(t *testing.T, next string) {
	sn := redistest.StartSentinel(t, 3)
	early, late := sn.Sentinels[0], sn.Sentinels[2] // the first is the one Failover asks
	ca, cb := sentinelClient(t, sn, early), sentinelClient(t, sn, late)
	env := newStressEnv(t, ca, time.Second)
	env.register(t, pointQuery, cachedpq.Policy{})
	db2, conn2 := env.open(t, cb, time.Second)
	// B fills an entry: its client has connections to the old master for
	// commands and for pipelines, and need not dial while its Sentinel is
	// paused (it would wait for it).
	sameOn(t, env, db2, 1)
	waitFor(t, 5*time.Second, "B's fill", func() bool { return conn2.Stats().Fills == 1 })

	late.Pause()
	t.Cleanup(late.Resume)
	sn.Failover(sn.Sentinels[:2]...)
	onServer(t, ca, sn.Replica)
	sameOn(t, env, env.db, 2) // A checks the new master, voids the namespace there
	env.waitFills(t, 1)       // and fills the entry of item 2 there only
	onServer(t, cb, sn.Master)
	mustExec(t, db2, `update items set name = 'late' where id = 2`)
	time.Sleep(200 * time.Millisecond) // its purge of the old master's index is done
	if s := conn2.Stats(); s.Pending || s.CacheErrors != 0 {
		t.Fatalf("the old master did not take the write's invalidation: %+v", s)
	}
	late.Resume()
	onServer(t, cb, sn.Replica)
	if next == "read" {
		sameOn(t, env, db2, 2)
	} else {
		mustExec(t, db2, `update knob set sleep = sleep`)
	}
	sameOn(t, env, env.db, 2)
	sameOn(t, env, db2, 2)
	if s := conn2.Stats(); s.EpochBumps != 1 {
		t.Fatalf("B did not void the namespace once: %+v", s)
	}
}
