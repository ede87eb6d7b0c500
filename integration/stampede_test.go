package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq"
)

// stampedeReaders is how many goroutines miss one cold key at once.
const stampedeReaders = 200

// stressStores runs test on the in-process store and on the test Redis.
func stressStores(t *testing.T, test func(t *testing.T, env *stressEnv)) {
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			var rdb redis.UniversalClient
			if store == "redis" {
				rdb = newRedis(t)
			}
			test(t, newStressEnv(t, rdb, 2*time.Second))
		})
	}
}

// readAll starts n readers of id behind one barrier and returns each
// reader's result and error, indexed by reader.
func readAll(env *stressEnv, n int, id int64, ctxOf func(i int) context.Context) ([]string, []error) {
	got, errs := make([]string, n), make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = readItem(ctxOf(i), env.db, id)
		})
	}
	close(start)
	wg.Wait()
	return got, errs
}

// TestStampedeRunsOneQuery: 200 goroutines miss one cold key at once and
// Postgres runs its query exactly once; all get the same, correct rows.
// The pool holds maxConns connections, so the readers beyond it wait in
// database/sql and arrive while the entry is being stored: they must not
// start a second load either.
func TestStampedeRunsOneQuery(t *testing.T) {
	stressStores(t, func(t *testing.T, env *stressEnv) {
		env.register(t, countedQuery, cachedpq.Policy{})
		got, errs := readAll(env, stampedeReaders, 7, func(int) context.Context { return context.Background() })
		for i := range got {
			if errs[i] != nil || got[i] != "7/item7/7;" {
				t.Fatalf("reader %d: %q %v", i, got[i], errs[i])
			}
		}
		s := env.stats()
		if n := env.calls(t); n != 1 {
			t.Fatalf("Postgres ran the query %d times, want 1; stats %+v", n, s.Counters)
		}
		if s.Misses != 1 || s.Coalesced == 0 || s.Hits+s.Coalesced != stampedeReaders-1 {
			t.Fatalf("misses %d, coalesced %d, hits %d", s.Misses, s.Coalesced, s.Hits)
		}
		t.Logf("%s: 1 query, %d coalesced, %d hits", t.Name(), s.Coalesced, s.Hits)
	})
}

// startLeader starts one reader of id under ctx and waits until its query
// has started in Postgres (held at the gate), so that it leads the load.
func startLeader(t *testing.T, env *stressEnv, ctx context.Context, id int64) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := readItem(ctx, env.db, id)
		done <- err
	}()
	waitFor(t, 10*time.Second, "the leader's query", func() bool { return env.calls(t) == 1 })
	return done
}

// startWaiters starts n readers of id and waits until each either coalesced
// onto the load in flight or queued for a pooled connection.
func startWaiters(t *testing.T, env *stressEnv, n int, id int64) (*sync.WaitGroup, []string, []error) {
	t.Helper()
	var wg sync.WaitGroup
	got, errs := make([]string, n), make([]error, n)
	for i := range n {
		wg.Go(func() { got[i], errs[i] = readItem(context.Background(), env.db, id) })
	}
	want := uint64(min(n, maxConns-1))
	waitFor(t, 10*time.Second, "waiters to coalesce", func() bool { return env.stats().Coalesced >= want })
	return &wg, got, errs
}

// TestStampedeLeaderCancelled: the leader's context ends while its query
// runs; the leader sees a context error, the others still get rows, and
// Postgres still runs the query once.
func TestStampedeLeaderCancelled(t *testing.T) {
	stressStores(t, func(t *testing.T, env *stressEnv) {
		env.register(t, countedQuery, cachedpq.Policy{})
		release := env.holdGate(t)
		ctx, cancel := context.WithCancel(context.Background())
		leader := startLeader(t, env, ctx, 9)
		wg, got, errs := startWaiters(t, env, stampedeReaders-1, 9)
		cancel()
		time.Sleep(20 * time.Millisecond) // let the cancellation reach the engine
		release()
		wg.Wait()
		if err := <-leader; !errors.Is(err, context.Canceled) {
			t.Fatalf("leader: %v, want context.Canceled", err)
		}
		for i := range got {
			if errs[i] != nil || got[i] != "9/item9/9;" {
				t.Fatalf("waiter %d: %q %v", i, got[i], errs[i])
			}
		}
		if n := env.calls(t); n != 1 {
			t.Fatalf("Postgres ran the query %d times, want 1", n)
		}
	})
}

// TestStampedeWaiterDeadline: a waiter whose deadline passes while the
// load is held returns context.DeadlineExceeded at once, and neither
// cancels the load nor delays the others.
func TestStampedeWaiterDeadline(t *testing.T) {
	stressStores(t, func(t *testing.T, env *stressEnv) {
		env.register(t, countedQuery, cachedpq.Policy{})
		release := env.holdGate(t)
		leader := startLeader(t, env, context.Background(), 11)
		wg, got, errs := startWaiters(t, env, 20, 11)

		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := readItem(ctx, env.db, 11)
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("short waiter: %v, want context.DeadlineExceeded", err)
		}
		// Generous bound: the gate is still held, so only the waiter's own
		// deadline can have ended the call.
		if took > 2*time.Second {
			t.Fatalf("short waiter returned after %v", took)
		}
		release()
		wg.Wait()
		if err := <-leader; err != nil {
			t.Fatalf("leader: %v", err)
		}
		for i := range got {
			if errs[i] != nil || got[i] != "11/item11/11;" {
				t.Fatalf("waiter %d: %q %v", i, got[i], errs[i])
			}
		}
		if n := env.calls(t); n != 1 {
			t.Fatalf("Postgres ran the query %d times, want 1", n)
		}
		t.Logf("short waiter returned after %v", took)
	})
}

// Environment of a helper process started by TestStampedeTwoProcesses.
const (
	helperEnv       = "CACHEDPQ_STRESS_HELPER" // which helper to run
	helperDSN       = "CACHEDPQ_STRESS_DSN"
	helperRedis     = "CACHEDPQ_STRESS_REDIS"
	helperPrefix    = "CACHEDPQ_STRESS_PREFIX"
	helperReaders   = "CACHEDPQ_STRESS_READERS"
	helperOut       = "CACHEDPQ_STRESS_OUT"
	helperRunFor    = "CACHEDPQ_STRESS_RUNFOR"
	processReaders  = 20
	barrierDeadline = 20 * time.Second
)

// TestHelperProcess is not a test: it is the second process of the
// multi-process tests, run by re-executing the test binary.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "stampede":
		helperStampede(t)
	case "consistency":
		helperConsistency(t)
	default:
		t.Skip("only run as a helper process")
	}
}

// helperConnector opens the helper's cached DB from its environment.
func helperConnector(t *testing.T, timeout time.Duration) (*stressEnv, *redis.Client) {
	t.Helper()
	rdb := timedClient(t, os.Getenv(helperRedis))
	env := &stressEnv{cacheEnv: &cacheEnv{reg: cachedpq.NewRegistry(), rdb: rdb, prefix: os.Getenv(helperPrefix)}, dsn: os.Getenv(helperDSN)}
	env.db, env.conn = env.open(t, rdb, timeout)
	return env, rdb
}

// barrier makes both processes start together: each announces itself
// under key:ready and waits for key:go, which releaseBarrier pushes once
// both are ready, carrying the wall-clock instant at which to start.
func barrier(rdb *redis.Client, key string) error {
	ctx := context.Background()
	if err := rdb.RPush(ctx, key+":ready", os.Getpid()).Err(); err != nil {
		return err
	}
	v, err := rdb.BLPop(ctx, barrierDeadline, key+":go").Result()
	if err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	at, _ := strconv.ParseInt(v[1], 10, 64)
	time.Sleep(time.Until(time.Unix(0, at)))
	return nil
}

// releaseBarrier lets n parties through the barrier, 100ms from now.
func releaseBarrier(rdb *redis.Client, key string, n int) error {
	ctx := context.Background()
	for range n {
		if err := rdb.BLPop(ctx, barrierDeadline, key+":ready").Err(); err != nil {
			return fmt.Errorf("barrier: a party never came: %w", err)
		}
	}
	at := strconv.FormatInt(time.Now().Add(100*time.Millisecond).UnixNano(), 10)
	for range n {
		if err := rdb.RPush(ctx, key+":go", at).Err(); err != nil {
			return err
		}
	}
	return nil
}

// meetAt runs the parent's side of the barrier: it releases n parties,
// itself included, and returns once it is through.
func meetAt(t *testing.T, rdb *redis.Client, key string, n int) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- releaseBarrier(rdb, key, n) }()
	if err := barrier(rdb, key); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// helperStampede reads countedQuery from processReaders goroutines after
// the barrier and prints the results.
func helperStampede(t *testing.T) {
	env, rdb := helperConnector(t, 2*time.Second)
	env.register(t, countedQuery, cachedpq.Policy{})
	if err := barrier(rdb, env.prefix); err != nil {
		t.Fatal(err)
	}
	got, errs := readAll(env, processReaders, 5, func(int) context.Context { return context.Background() })
	for i := range got {
		if errs[i] != nil || got[i] != "5/item5/5;" {
			t.Fatalf("helper reader %d: %q %v", i, got[i], errs[i])
		}
	}
	s := env.stats()
	fmt.Printf("helper: misses=%d hits=%d coalesced=%d cache errors=%d epoch bumps=%d\n", s.Misses, s.Hits, s.Coalesced, s.CacheErrors, s.EpochBumps)
}

// startHelper re-executes the test binary as a helper process of kind.
func startHelper(t *testing.T, env *stressEnv, kind string, extra ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+kind, helperDSN+"="+env.dsn,
		helperRedis+"="+env.rdb.(*redis.Client).Options().Addr, helperPrefix+"="+env.prefix)
	cmd.Env = append(cmd.Env, extra...)
	out := new(strings.Builder)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, out
}

// TestStampedeTwoProcesses: two processes sharing a Redis prefix miss one
// key at the same moment; the fill lease lets only one of them run the
// query. The query sleeps 300ms, well within the lease wait (1s), so the
// process that lost the lease always finds the entry in time.
func TestStampedeTwoProcesses(t *testing.T) {
	env := newStressEnv(t, newRedis(t), 2*time.Second)
	env.register(t, countedQuery, cachedpq.Policy{})
	env.setSleep(t, 300*time.Millisecond)
	cmd, out := startHelper(t, env, "stampede")
	rdb := env.rdb.(*redis.Client)

	meetAt(t, rdb, env.prefix, 2)
	got, errs := readAll(env, processReaders, 5, func(int) context.Context { return context.Background() })
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	for i := range got {
		if errs[i] != nil || got[i] != "5/item5/5;" {
			t.Fatalf("reader %d: %q %v", i, got[i], errs[i])
		}
	}
	s := env.stats()
	if n := env.calls(t); n != 1 {
		t.Fatalf("Postgres ran the query %d times across two processes, want 1\nparent: %+v\n%s", n, s, out)
	}
	t.Logf("parent: misses=%d hits=%d coalesced=%d; %s", s.Misses, s.Hits, s.Coalesced,
		strings.TrimSpace(lineWith(out.String(), "helper:")))
}

// lineWith returns the first line of s that contains sub.
func lineWith(s, sub string) string {
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, sub) {
			return line
		}
	}
	return ""
}

// TestEarlyRefresh: a key with a 1s TTL under steady reads from several
// goroutines for 3s is reloaded in the background before it expires
// (XFetch, β = 1).
//
// What is asserted, and why it does not flake: the query takes δ ≥ 50ms
// (counted sleeps); XFetch refreshes on a hit at distance d before expiry
// with probability e^(−d/δ), and readers hit every few microseconds, so a
// refresh starts long before expiry (with hits every millisecond, the
// chance that none started by d = 2δ is below e^(−50·e^−2) ≈ 10^−3). So:
//   - EarlyRefreshes > 0;
//   - calls == Misses once the last refresh has ended: every Postgres
//     execution was a counted load;
//   - no read bypassed the cache or failed;
//   - Expired == 0 and Misses ≤ 1 + EarlyRefreshes (every load after the
//     first was an early refresh), provided no load took longer than
//     TTL − 2δ: a load that outlives the entry (a loaded machine stalled
//     one for seconds in our runs) lets it expire whatever the refresh
//     policy, so then these are reported, not asserted. The slowest load is read from
//     Stats.DBLatency.P99, the bucket of the maximum for fewer than 100
//     loads. A refresh also waits to be scheduled and to be stored, which
//     DBLatency does not count: with a 300ms TTL, a machine running two
//     test suites at once let one read in 80,000 meet an expired entry
//     while no load took 150ms, so the TTL leaves a refresh most of a
//     second.
func TestEarlyRefresh(t *testing.T) {
	stressStores(t, func(t *testing.T, env *stressEnv) {
		const ttl = time.Second
		env.register(t, countedQuery, cachedpq.Policy{TTL: ttl, Beta: 1, Jitter: -1})
		if _, err := readItem(context.Background(), env.db, 3); err != nil {
			t.Fatal(err)
		}
		env.waitFills(t, 1)
		var wg sync.WaitGroup
		stop := time.Now().Add(3 * ttl)
		var errs sync.Map
		for g := range 6 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					if got, err := readItem(context.Background(), env.db, 3); err != nil || got != "3/item3/3;" {
						errs.Store(g, fmt.Sprint(got, err))
					}
				}
			})
		}
		wg.Wait()
		errs.Range(func(k, v any) bool { t.Errorf("reader %v: %v", k, v); return true })
		// Refreshes run in the background: let the last one end (one drawn
		// just before the readers stopped may take a moment to start).
		waitFor(t, 10*time.Second, "the last background refresh", func() bool {
			calls, misses := env.calls(t), env.stats().Misses
			time.Sleep(300 * time.Millisecond)
			return uint64(calls) == misses && env.calls(t) == calls && env.stats().Misses == misses
		})
		s := env.stats()
		calls := env.calls(t)
		t.Logf("%s: hits %d, misses %d, early refreshes %d, expired %d, coalesced %d, Postgres calls %d, db latency %+v",
			t.Name(), s.Hits, s.Misses, s.EarlyRefreshes, s.Expired, s.Coalesced, calls, s.DBLatency)
		bypassed := uint64(0)
		for _, n := range s.Bypass {
			bypassed += n
		}
		if s.EarlyRefreshes == 0 || uint64(calls) != s.Misses || bypassed != 0 {
			t.Fatalf("early refreshes %d, Postgres calls %d, misses %d, bypassed %v", s.EarlyRefreshes, calls, s.Misses, s.Bypass)
		}
		if s.DBLatency.P99 >= ttl-100*time.Millisecond { // TTL − 2δ, δ = 50ms
			t.Logf("a load took up to %v, longer than TTL − 2δ: expiry not asserted", s.DBLatency.P99)
			return
		}
		if s.Expired != 0 || s.Misses > 1+s.EarlyRefreshes {
			t.Fatalf("%d reads met an expired entry; misses %d, early refreshes %d", s.Expired, s.Misses, s.EarlyRefreshes)
		}
	})
}

// TestStaleWhileRevalidate: an expired entry within StaleFor is served to
// every reader but one, who reloads it; the refresh is held at the gate
// the whole time, so the stale answers cannot have waited for it.
func TestStaleWhileRevalidate(t *testing.T) {
	stressStores(t, func(t *testing.T, env *stressEnv) {
		env.register(t, countedQuery, cachedpq.Policy{TTL: 500 * time.Millisecond, StaleFor: time.Minute, Jitter: -1})
		if got, err := readItem(context.Background(), env.db, 4); err != nil || got != "4/item4/4;" {
			t.Fatal(got, err)
		}
		env.waitFills(t, 1)
		// Behind the cache's back, so that only a reload can show it.
		mustExec(t, env.raw, `update items set name = 'renamed' where id = 4`)
		time.Sleep(550 * time.Millisecond)

		release := env.holdGate(t)
		refresher := make(chan string, 1)
		go func() {
			got, err := readItem(context.Background(), env.db, 4)
			refresher <- fmt.Sprint(got, err)
		}()
		waitFor(t, 10*time.Second, "the refresh to start", func() bool { return env.calls(t) == 2 })
		const readers = 20
		got, errs := readAll(env, readers, 4, func(int) context.Context { return context.Background() })
		for i := range got {
			if errs[i] != nil || got[i] != "4/item4/4;" {
				t.Fatalf("reader %d during the refresh: %q %v", i, got[i], errs[i])
			}
		}
		release()
		if r := <-refresher; r != "4/renamed/4;<nil>" {
			t.Fatalf("refresher: %s", r)
		}
		s := env.stats()
		if s.StaleServed != readers || env.calls(t) != 2 || s.Expired != 1 || s.Hits != 0 {
			t.Fatalf("stale served %d, calls %d, stats %+v", s.StaleServed, env.calls(t), s.Counters)
		}
		env.waitFills(t, 2)
		// The refresh's entry, or (if the gate outlasted its TTL) a reload.
		if got, err := readItem(context.Background(), env.db, 4); err != nil || got != "4/renamed/4;" {
			t.Fatalf("after the refresh: %q %v", got, err)
		}
	})
}

// TestLeaseWaiterDeadline: a process whose deadline passes while it waits
// for another process's fill lease returns context.DeadlineExceeded by its
// deadline, without running the query, and keeps its connection. Before,
// it ran the query on its ended context once the wait gave up: lib/pq's
// cancel request, sent before the query reached Postgres, was lost, and the
// call hung until the query ended (here, until the gate opened), or Postgres
// cancelled it (57014) and lib/pq closed the connection; either way Postgres
// ran the query twice.
func TestLeaseWaiterDeadline(t *testing.T) {
	rdb := newRedis(t)
	env := newStressEnv(t, rdb, 2*time.Second)
	env.register(t, countedQuery, cachedpq.Policy{})
	other, _ := env.open(t, rdb, 2*time.Second) // the second process
	release := sync.OnceFunc(env.holdGate(t))
	leader := startLeader(t, env, context.Background(), 5) // holds the lease, held at the gate
	// Lets a hung read end, so that it fails rather than the run.
	defer time.AfterFunc(10*time.Second, release).Stop()

	// The other process misses too, and waits for the leader's lease.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := readItem(ctx, other, 5)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || took > 2*time.Second {
		t.Fatalf("reader past its deadline: %v after %v, want context.DeadlineExceeded at once", err, took)
	}
	if n := env.calls(t); n != 1 {
		t.Fatalf("Postgres ran the query %d times, want 1: the reader whose deadline passed ran it", n)
	}
	if n := other.Stats().OpenConnections; n != 1 {
		t.Fatalf("the reader's process has %d connections open, want 1 (not cancelled)", n)
	}
	release()
	if err := <-leader; err != nil {
		t.Fatalf("leader: %v", err)
	}
}
