package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq"
	"github.com/cachedpq/cachedpq/internal/redistest"
)

// faultTimeout is the cache timeout in the fault tests: the default, so a
// stalled Redis costs what it would cost in production.
const faultTimeout = 50 * time.Millisecond

// pointQuery is the registered read of the fault tests: one row by key.
const pointQuery = `select id, name, score from items where id = $1`

// loadRecorder runs readers and writers against env and records errors
// and latencies by phase, which the test switches as it injects faults.
type loadRecorder struct {
	env   *stressEnv
	phase atomic.Value // string

	mu     sync.Mutex // guards lat, errs, ops
	lat    map[string][]time.Duration
	errs   []string
	ops    int
	writes int
}

// startLoad runs workers goroutines that read pointQuery for random ids
// and write one in twenty operations, until stop is closed.
func startLoad(t *testing.T, env *stressEnv, workers int, stop chan struct{}) (*loadRecorder, *sync.WaitGroup) {
	lr := &loadRecorder{env: env, lat: map[string][]time.Duration{}}

	lr.phase.Store("warm")
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				lr.one()
			}
		})
	}
	t.Cleanup(func() { stopLoad(stop); wg.Wait() }) // a failed test stops its load too
	return lr, &wg
}

// stopLoad ends a load started by startLoad, once.
func stopLoad(stop chan struct{}) {
	select {
	case <-stop:
	default:
		close(stop)
	}
}

// one runs one operation and records it.
func (lr *loadRecorder) one() {
	id := rand.Int64N(50) + 1
	write := rand.IntN(20) == 0
	start := time.Now()
	var err error
	if write {
		_, err = lr.env.db.Exec(`update items set score = score + 1 where id = $1`, id)
	} else {
		var (
			gotID int64
			name  string
			score float64
		)
		err = lr.env.db.QueryRow(pointQuery, id).Scan(&gotID, &name, &score)
		if err == nil && gotID != id {
			err = fmt.Errorf("asked for %d, got %d", id, gotID)
		}
	}
	took := time.Since(start)
	phase := lr.phase.Load().(string)
	lr.mu.Lock()
	defer lr.mu.Unlock()
	lr.ops++
	if write {
		lr.writes++
	} else {
		lr.lat[phase] = append(lr.lat[phase], took)
	}
	if err != nil {
		lr.errs = append(lr.errs, fmt.Sprintf("%s: %v", phase, err))
	}
}

// report logs each phase's read latencies and fails on any caller error.
func (lr *loadRecorder) report(t *testing.T) {
	t.Helper()
	lr.mu.Lock()
	defer lr.mu.Unlock()
	for _, phase := range sortedKeys(lr.lat) {
		ds := lr.lat[phase]
		q := quantiles(ds, 0.5, 0.99, 1)
		t.Logf("phase %-10s reads %6d  p50 %-10v p99 %-10v max %v", phase, len(ds), q[0], q[1], q[2])
	}
	t.Logf("%d operations (%d writes), %d errors", lr.ops, lr.writes, len(lr.errs))
	if len(lr.errs) > 0 {
		t.Fatalf("callers saw errors: %v", lr.errs[:min(len(lr.errs), 10)])
	}
}

// rawLatency measures n raw lib/pq reads of pointQuery, for comparison.
func rawLatency(t *testing.T, env *stressEnv, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		var id int64
		var name string
		var score float64
		if err := env.raw.QueryRow(pointQuery, rand.Int64N(50)+1).Scan(&id, &name, &score); err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Since(start))
	}
	return out
}

// watchBreaker polls the breaker state until stop, recording each state seen.
func watchBreaker(conn *cachedpq.Connector, stop <-chan struct{}) func() map[string]bool {
	var mu sync.Mutex
	seen := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			mu.Lock()
			seen[conn.Stats().Breaker] = true
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return func() map[string]bool {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

// timedClient is a client of addr that honours context deadlines. go-redis
// ignores them by default (ContextTimeoutEnabled false): a command to a
// stalled server then waits for ReadTimeout (3s; we measured 5s) whatever
// the cache timeout, and the breaker needs five such calls to open.
func timedClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// checkAll asserts every id reads through the cache as Postgres has it.
func checkAll(t *testing.T, env *stressEnv) {
	t.Helper()
	for id := 1; id <= 50; id++ {
		env.same(t, pointQuery, id)
	}
}

// waitHit reads until a read hits. The load's writes to items (one in
// twenty operations, from eight workers) keep its stamp marked most of the
// time (see marks.go), and its reads then go to Postgres: hits are looked
// for once the load has stopped.
func waitHit(t *testing.T, env *stressEnv, what string) {
	t.Helper()
	hits := env.stats().Hits
	waitFor(t, 10*time.Second, what, func() bool {
		env.same(t, pointQuery, 1)
		return env.stats().Hits > hits
	})
}

// faultEnv starts a private Redis and a stress environment on it.
func faultEnv(t *testing.T, args ...string) (*stressEnv, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t, args...)
	env := newStressEnv(t, timedClient(t, srv.Addr), faultTimeout)
	env.register(t, pointQuery, cachedpq.Policy{})
	return env, srv
}

// TestFaultRedisKilledMidLoad: Redis dies under load and comes back empty.
// Callers see no error, the breaker opens while it is down and closes once
// it is back, reads while it is open cost about a raw Postgres read (logged,
// not asserted: speed targets live in the benchmarks), and afterwards every
// read answers as Postgres does.
func TestFaultRedisKilledMidLoad(t *testing.T) {
	env, srv := faultEnv(t)
	stop := make(chan struct{})
	lr, wg := startLoad(t, env, 8, stop)
	seen := watchBreaker(env.conn, stop)
	time.Sleep(500 * time.Millisecond)
	lr.phase.Store("down")
	srv.Kill()
	waitFor(t, 5*time.Second, "the breaker to open", func() bool { return env.stats().Breaker == "open" })
	lr.phase.Store("open")
	time.Sleep(1500 * time.Millisecond)
	lr.phase.Store("recovery")
	srv.Restart(false)
	waitFor(t, 10*time.Second, "the breaker to close", func() bool { return env.stats().Breaker == "closed" })
	lr.phase.Store("recovered")
	time.Sleep(500 * time.Millisecond)
	stopLoad(stop)
	wg.Wait()
	waitHit(t, env, "hits after the restart")
	states := seen()
	lr.report(t)
	raw := quantiles(rawLatency(t, env, 200), 0.5, 0.99)
	t.Logf("raw lib/pq reads: p50 %v p99 %v; breaker states seen %v; stats %+v", raw[0], raw[1], states, env.stats().Bypass)
	if !states["open"] || !states["closed"] {
		t.Fatalf("breaker states seen: %v", states)
	}
	checkAll(t, env)
}

// TestFaultRedisPaused: Redis stalls (SIGSTOP) under load: every cache call
// ends at the cache timeout, the breaker opens, callers see no error; after
// SIGCONT the cache is used again and answers are right.
func TestFaultRedisPaused(t *testing.T) {
	env, srv := faultEnv(t)
	stop := make(chan struct{})
	lr, wg := startLoad(t, env, 8, stop)
	seen := watchBreaker(env.conn, stop)
	time.Sleep(500 * time.Millisecond)
	lr.phase.Store("paused")
	srv.Pause()
	waitFor(t, 5*time.Second, "the breaker to open", func() bool { return env.stats().Breaker == "open" })
	time.Sleep(1500 * time.Millisecond)
	lr.phase.Store("resumed")
	srv.Resume()
	waitFor(t, 10*time.Second, "the breaker to close", func() bool { return env.stats().Breaker == "closed" })
	stopLoad(stop)
	wg.Wait()
	waitHit(t, env, "hits after the stall")
	lr.report(t)
	if states := seen(); !states["open"] {
		t.Fatalf("breaker never opened: %v", states)
	}
	checkAll(t, env)
}

// TestFaultRedisRestartedEmpty: entries and stamps vanish with a restart;
// reads refill and answer as Postgres does.
func TestFaultRedisRestartedEmpty(t *testing.T) {
	env, srv := faultEnv(t)
	checkAll(t, env)
	env.waitFills(t, 50)
	mustExec(t, env.db, `update items set name = 'after' where id = 1`)
	srv.Restart(false)
	waitFor(t, 10*time.Second, "the breaker to close", func() bool {
		env.same(t, pointQuery, 1)
		return env.stats().Breaker == "closed"
	})
	checkAll(t, env)
	fills := env.stats().Fills
	checkAll(t, env)
	if env.stats().Fills <= fills && env.stats().Hits == 0 {
		t.Fatalf("the cache was not used after the restart: %+v", env.stats().Counters)
	}
}

// TestFaultRedisRestartedWithOldData: a write commits while Redis is down,
// so its invalidation fails and is pending; Redis then comes back with a
// snapshot taken before the write, holding the old entry and its old
// stamps. The old entry must never be served again: this process serves no
// hit until its retry has replaced the pending stamps and the epoch, and a
// second Connector sharing the prefix reads after that retry.
func TestFaultRedisRestartedWithOldData(t *testing.T) {
	dir := t.TempDir()
	// A later --dir overrides redistest's own, so the snapshot saved here
	// survives its restarts.
	env, srv := faultEnv(t, "--dir", dir)
	old := env.same(t, pointQuery, 1)
	env.waitFills(t, 1)
	ctx := context.Background()
	if err := srv.Client().Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	mustExec(t, env.db, `update items set name = 'new' where id = 1`)
	want := rowsOf(t, env.raw, pointQuery, 1)[0]
	if env.stats().Bypass["invalidation_pending"] != 0 {
		t.Fatal("bypass counted before any read")
	}
	env.same(t, pointQuery, 1) // served from Postgres: the invalidation is pending
	if s := env.stats(); !s.Pending || s.Bypass["invalidation_pending"] == 0 {
		t.Fatalf("an invalidation has not landed, but Stats says pending %v, bypass %v", s.Pending, s.Bypass)
	}
	srv.Restart(false) // loads the snapshot with the old entry
	back := time.Now()
	db2, conn2 := env.open(t, timedClient(t, srv.Addr), faultTimeout)
	var staleBefore int
	for env.stats().EpochBumps == 0 {
		if time.Since(back) > 10*time.Second {
			t.Fatal("the pending invalidation was never retried")
		}
		env.same(t, pointQuery, 1)
		if got := rowsOf(t, db2, pointQuery, 1)[0]; got == old[0] {
			staleBefore++
		} else if got != want {
			t.Fatalf("second Connector: %v", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("retry confirmed %v after Redis came back; the second Connector read the old entry %d times before it",
		time.Since(back), staleBefore)
	for range 50 {
		env.same(t, pointQuery, 1)
		if got := rowsOf(t, db2, pointQuery, 1); got[0] != want {
			t.Fatalf("second Connector served the old entry after the retry: %v", got)
		}
	}
	if env.stats().Hits == 0 || conn2.Stats().Hits == 0 {
		t.Fatalf("the cache was not used after recovery: %+v / %+v", env.stats().Counters, conn2.Stats().Counters)
	}
	if env.stats().Pending {
		t.Fatal("Stats still says an invalidation is pending after its retry landed")
	}
}
