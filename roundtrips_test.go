package cachedpq

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// tripCounter is a go-redis hook that counts round trips: a command or a
// pipeline each make one. With onPath set it counts only those made under
// a context that callerPath marked: those a caller waits for, not the
// work the engine leaves to the background.
type tripCounter struct {
	n      atomic.Int64
	onPath bool
}

type callerPathKey struct{}

// callerPath marks ctx as a caller's, for tripCounter.
func callerPath(ctx context.Context) context.Context {
	return context.WithValue(ctx, callerPathKey{}, true)
}

func (h *tripCounter) count(ctx context.Context) {
	if !h.onPath || ctx.Value(callerPathKey{}) != nil {
		h.n.Add(1)
	}
}

func (h *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(ctx)
		return next(ctx, cmd)
	}
}

func (h *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.count(ctx)
		return next(ctx, cmds)
	}
}

// countedRedis returns a client of the test Redis whose round trips are
// counted, with the cache's scripts already loaded (a script's first run
// may cost a second trip, once per server) and a few connections already
// dialed (the store checks the server after a dial: see restarts.go).
func countedRedis(t *testing.T) (*redis.Client, *tripCounter) {
	c := redis.NewClient(&redis.Options{Addr: testRedis(t).Options().Addr})
	t.Cleanup(func() { c.Close() })
	for _, s := range []*redis.Script{lookupScript, acquireScript, releaseScript, serverCheckScript, bumpScript, markScript, unmarkScript} {
		must(t, s.Load(testCtx(t), c).Err())
	}
	var wg sync.WaitGroup
	for range 4 { // four connections at once: four dials
		wg.Go(func() { c.BLPop(testCtx(t), 20*time.Millisecond, "cachedpq-test-nothing") })
	}
	wg.Wait()
	h := &tripCounter{}
	c.AddHook(h)
	return c, h
}

// onPathKV returns a counted client of the test Redis that counts only
// the round trips a caller waits for, an engine over it with the point
// read of kv registered, and get, which reads kv's row k through it.
func onPathKV(t *testing.T) (*redis.Client, *tripCounter, *sql.DB, *Connector, func(k int)) {
	rdb, trips := countedRedis(t)
	trips.onPath = true
	db, c, _ := engineDB(t, rdb)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	ctx := callerPath(context.Background())
	get := func(k int) {
		t.Helper()
		var v string
		must(t, db.QueryRowContext(ctx, `select v from kv where k = $1`, k).Scan(&v))
	}
	return rdb, trips, db, c, get
}

// forgetHot makes every key not known hot.
func forgetHot(e *engine) {
	for i := range e.hot.slots {
		e.hot.slots[i].Store(0)
	}
}

// TestRedisRoundTrips holds the engine to its round trips, which are what
// a hit, a miss and a write cost beyond Postgres: a hit makes one, a miss
// one before its query (the fill comes after the caller has its rows), a
// write one before Exec returns (the purge comes later). Only the round
// trips a caller waits for are counted; the rest are checked for what
// they leave behind.
func TestRedisRoundTrips(t *testing.T) {
	rdb, trips, db, c, get := onPathKV(t)
	ctx := callerPath(context.Background())
	// The first lookup checks the server (connections were dialed before
	// the store began), and so does the next, after the fill dialed the
	// first connection of go-redis's pipeline pool.
	get(2)
	waitFor(t, func() bool { return c.Stats().Fills == 1 })
	get(2)
	c.eng.direct.(*redisBackend).watch.every.Store(0) // and no check for time's sake, in the counts below
	// trip runs f and returns the round trips made before it returned.
	trip := func(f func()) int64 {
		before := trips.n.Load()
		f()
		return trips.n.Load() - before
	}

	// missTrips runs a miss and returns the round trips made before its
	// rows came back (the fill comes after the caller reads to the end).
	missTrips := func() int64 {
		var rows *sql.Rows
		n := trip(func() {
			var err error
			rows, err = db.QueryContext(ctx, `select v from kv where k = $1`, 1)
			must(t, err)
		})
		must(t, rows.Close())
		return n
	}
	// noLeases waits for the background work, then checks that it left
	// no lease.
	noLeases := func(after string) {
		t.Helper()
		waitFor(t, func() bool { return leasesHeld(c.eng) == 0 })
		c.eng.bg.Wait()
		if leases := rdb.Keys(ctx, c.opts.Prefix+"*:lease").Val(); len(leases) != 0 {
			t.Errorf("leases left after %s: %v", after, leases)
		}
	}

	if n := missTrips(); n != 1 {
		t.Errorf("a miss made %d round trips before its rows came back, want 1", n)
	}
	waitFor(t, func() bool { return c.Stats().Fills == 2 })
	noLeases("the fill") // it released the lease it stored under

	for i := range 2 { // the first hit finds the key cold, the second hot
		if n := trip(func() { get(1) }); n != 1 {
			t.Errorf("hit %d made %d round trips, want 1", i, n)
		}
		// The cold hit's lookup took the lease beside the entry, and gave
		// it back.
		noLeases(fmt.Sprintf("hit %d", i))
	}
	if n := trip(func() {
		_, err := db.ExecContext(ctx, `update kv set v = 'w' where k = 2`)
		must(t, err)
	}); n != 1 {
		t.Errorf("a write made %d round trips before Exec returned, want 1", n)
	}
	// The write was this process's: the next lookup of a key read under
	// its table takes the lease, even a hot key's, so the miss costs one
	// round trip.
	if n := missTrips(); n != 1 {
		t.Errorf("the miss of a hot key after a local write made %d round trips before its rows came back, want 1", n)
	}
	// settle waits for the background work, refills what the write's
	// purge deleted (if it did) and hits the entry, so that the key is hot.
	settle := func() {
		t.Helper()
		waitFor(t, func() bool { return leasesHeld(c.eng) == 0 && !purging(c.eng) })
		c.eng.bg.Wait()
		get(1)
		waitFor(t, func() bool { return leasesHeld(c.eng) == 0 })
		c.eng.bg.Wait()
		hits := c.Stats().Hits
		get(1)
		if c.Stats().Hits != hits+1 {
			t.Fatalf("no entry to hit: %+v", c.Stats())
		}
		// The key was not known hot if the get before loaded it: its hit
		// then took the lease, and gives it back in the background.
		c.eng.bg.Wait()
	}
	settle()
	// Another process's write, which this process does not see.
	otherWrite := func() {
		must(t, rdb.Set(ctx, c.eng.direct.(*redisBackend).stampKey("kv"), formatStamp(newStamp()), 0).Err())
	}
	// A hot key is looked up without the lease, and its miss takes it in a
	// second round trip.
	otherWrite()
	if n := missTrips(); n != 2 {
		t.Errorf("the miss of a hot key after another process's write made %d round trips, want 2", n)
	}
	settle()
	// A key not known to be hot goes through the lease pipeline, which
	// names the stamps this process last saw: after another process's
	// write they are not current, and the lookup script takes the lease
	// in a second round trip.
	coldMiss := func(want int64, what string) {
		t.Helper()
		forgetHot(c.eng)
		stale := c.Stats().Stale
		if n := missTrips(); n != want {
			t.Errorf("the miss of a stale entry %s made %d round trips before its rows came back, want %d", what, n, want)
		}
		if c.Stats().Stale != stale+1 {
			t.Errorf("the lookup found no stale entry: %+v", c.Stats())
		}
	}
	otherWrite()
	coldMiss(2, "after another process's write")
	settle()
	// Once any lookup here has read the new stamps, one round trip does.
	otherWrite()
	get(2) // a miss: its lookup reads the stamps
	noLeases("another key's miss")
	coldMiss(1, "after another key's lookup read the new stamps")
}

// purging reports whether e has a purge pass pending or running.
func purging(e *engine) bool {
	e.purgeMu.Lock()
	defer e.purgeMu.Unlock()
	return e.purging
}

func TestHotKeys(t *testing.T) {
	var hot hotKeys
	if hot.has(42) {
		t.Fatal("empty table holds 42")
	}
	hot.set(42, true)
	if !hot.has(42) || hot.has(42+hotSlots) {
		t.Fatal("42 not held alone")
	}
	hot.set(42+hotSlots, false) // another key of the slot does not clear 42
	if !hot.has(42) {
		t.Fatal("a colliding key cleared 42")
	}
	hot.set(42+hotSlots, true) // it takes the slot over
	if hot.has(42) || !hot.has(42+hotSlots) {
		t.Fatal("the slot was not taken over")
	}
	hot.set(42+hotSlots, false)
	if hot.has(42 + hotSlots) {
		t.Fatal("not cleared")
	}
}

// leasesHeld counts the fill leases e holds.
func leasesHeld(e *engine) int {
	n := 0
	e.leases.Range(func(any, any) bool { n++; return true })
	return n
}

func TestLocalBumps(t *testing.T) {
	var b localBumps
	at := b.now()
	if b.since([]string{"a", "b"}, at) {
		t.Fatal("no bump yet, but a tag was bumped")
	}
	b.record([]string{"b"})
	if !b.since([]string{"a", "b"}, at) || b.since([]string{"b"}, b.now()) {
		t.Fatal("b's bump not ordered against the sequence")
	}
}

// TestLeaseHeldHereIsClaimed: a load that finds its lease held by this
// process, taken by a lookup whose readers joined another flight (or whose
// grant the load's own lookup raced), claims it and loads at once. Waiting
// for it instead stalled every reader of the key until the lookup's unused
// lease was given back.
func TestLeaseHeldHereIsClaimed(t *testing.T) {
	_, c, _ := engineDB(t, testRedis(t))
	e := c.eng
	ctx := context.Background()
	key, tags := c.opts.Prefix+":kv:claim", []string{"public.kv", epochTag}

	_, stamps, holder, err := e.storeLookup(ctx, key, tags) // a miss: it takes the lease
	must(t, err)
	if holder == 0 || leasesHeld(e) != 1 {
		t.Fatalf("the lookup of a missing entry took no lease: holder %d, %d held", holder, leasesHeld(e))
	}
	r := &read{key: key, tags: tags}
	if ent := e.awaitLease(ctx, r, stamps, 0); ent != nil || r.held == nil || r.held.token != holder {
		t.Fatalf("the load did not claim the lease held here: entry %v, held %+v, holder %d", ent, r.held, holder)
	}
	if tm := r.held.unclaimed.Load(); tm == nil || tm.Stop() {
		t.Fatal("the claim left the timer that gives an unclaimed lease back running")
	}
	if e.claim(holder) != nil {
		t.Fatal("a claimed lease was claimed again")
	}
	e.releaseLease(r)
	if leasesHeld(e) != 0 || c.opts.Redis.Exists(ctx, leaseKey(key)).Val() != 0 {
		t.Fatal("the released lease is still held")
	}

	// A lease held by another process is not this process's to claim: the
	// load waits for that process's entry, here until its context ends.
	_, stamps, holder, err = e.storeLookup(ctx, key, tags)
	must(t, err)
	e.leases.Delete(holder) // as if another process held it
	wctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	r = &read{key: key, tags: tags}
	if ent := e.awaitLease(wctx, r, stamps, holder); ent != nil || r.held != nil {
		t.Fatalf("the load took a lease held elsewhere: entry %v, held %+v", ent, r.held)
	}
}

// slowScripts is a go-redis hook that, while on, delays the reply of every
// script run by delay after Redis ran it, or until the caller's context
// ends: the reply of a lookup that took a lease can so be lost.
type slowScripts struct {
	on    atomic.Bool
	delay time.Duration
	cut   atomic.Int32 // scripts whose context ended before their delay
}

func (h *slowScripts) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *slowScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); !h.on.Load() || name != "evalsha" && name != "eval" || stampScript(cmd) {
			return err
		}
		select {
		case <-time.After(h.delay):
			return err
		case <-ctx.Done():
			h.cut.Add(1)
			cmd.SetErr(ctx.Err())
			return ctx.Err()
		}
	}
}

// stampScript reports a script that writes stamps (an invalidation, a
// write's mark), which slowScripts leaves alone: it slows lookups.
func stampScript(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	switch args[1] {
	case bumpScript.Hash(), markScript.Hash(), unmarkScript.Hash():
		return true
	}
	return false
}

func (h *slowScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// slowRedis returns a client of the test Redis whose replies to lookup and
// lease scripts are delayed while its hook is on, with the cache's scripts
// already loaded.
func slowRedis(t *testing.T, delay time.Duration) (*redis.Client, *slowScripts) {
	c, _ := countedRedis(t)
	h := &slowScripts{delay: delay}
	c.AddHook(h)
	return c, h
}

// TestColdOutcomes: the tally judges only after coldMin lookups, needs
// three in four found, and forgets old lookups by halving.
func TestColdOutcomes(t *testing.T) {
	var c coldOutcomes
	for range coldMin - 1 {
		c.note(true)
	}
	if c.likelyFound() {
		t.Fatal("judged before coldMin lookups")
	}
	c.note(true)
	if !c.likelyFound() {
		t.Fatal("all found, not judged likely")
	}
	for range coldMin / 2 { // 64 of 96
		c.note(false)
	}
	if c.likelyFound() {
		t.Fatalf("%d found of %d judged likely", c.found.Load(), c.looked.Load())
	}
	for range 4 * coldWindow {
		c.note(true)
	}
	if n := c.looked.Load(); n >= coldWindow || !c.likelyFound() {
		t.Fatalf("after halving: %d found of %d", c.found.Load(), n)
	}
}

// TestColdHitsSkipTheLease: while most lookups of keys not known hot find
// their entry, such a lookup is a plain MGET: a hit costs one round trip in
// all, and takes no lease; a miss takes its lease in a second round trip.
// Once most miss, they take the lease again, as the lookup's pipeline, and
// a key not looked up before sends its query while its lookup is on its way
// (see early).
func TestColdHitsSkipTheLease(t *testing.T) {
	rdb, trips, _, c, get := onPathKV(t)
	all := &tripCounter{}
	rdb.AddHook(all)
	ctx := callerPath(context.Background())
	for k := 1; k <= 3; k++ {
		get(k)
		waitFor(t, func() bool { return c.Stats().Fills == uint64(k) })
	}
	c.eng.bg.Wait()
	c.eng.direct.(*redisBackend).watch.every.Store(0) // no check for time's sake
	cold := func() { forgetHot(c.eng) }
	// count runs f and returns the round trips its caller waited for, and
	// all of them once the background work is done.
	count := func(f func()) (onPath, total int64) {
		c.eng.bg.Wait()
		p, a := trips.n.Load(), all.n.Load()
		f()
		waitFor(t, func() bool { return leasesHeld(c.eng) == 0 })
		c.eng.bg.Wait()
		return trips.n.Load() - p, all.n.Load() - a
	}

	for range coldMin {
		c.eng.cold.note(true)
	}
	cold()
	if p, a := count(func() { get(1) }); p != 1 || a != 1 {
		t.Errorf("a cold hit among hits made %d round trips (%d in all), want 1 (1)", p, a)
	}
	if leases := rdb.Keys(ctx, c.opts.Prefix+"*:lease").Val(); len(leases) != 0 {
		t.Errorf("a cold hit among hits left leases: %v", leases)
	}
	cold()
	misses := c.Stats().Misses
	if p, _ := count(func() { get(4) }); p != 2 || c.Stats().Misses != misses+1 {
		t.Errorf("a cold miss among hits made %d round trips before its rows came back, want 2", p)
	}

	for range 4 * coldMin {
		c.eng.cold.note(false)
	}
	cold()
	if p, a := count(func() { get(2) }); p != 1 || a != 2 {
		t.Errorf("a cold hit among misses made %d round trips (%d in all), want 1 (2: the lease given back)", p, a)
	}
	cold()
	misses = c.Stats().Misses
	if p, _ := count(func() { get(5) }); p != 0 || c.Stats().Misses != misses+1 {
		t.Errorf("a cold miss among misses, of a key not looked up before, made %d round trips before its rows came back, want 0 (an early query)", p)
	}
	cold()
	c.eng.guess = nil // as with NoEarlyQueries
	misses = c.Stats().Misses
	if p, _ := count(func() { get(6) }); p != 1 || c.Stats().Misses != misses+1 {
		t.Errorf("a cold miss among misses made %d round trips before its rows came back, want 1", p)
	}
}
