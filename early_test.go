package cachedpq

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/lib/pq"
)

const kvQuery = `select v from kv where k = $1`

// earlyKV returns onPathKV's client, counter, engine and reader, the
// engine judging that misses are likely, and knowing the stamps of kv
// (key 1 is read and stored): a read of another key sends an early query.
func earlyKV(t *testing.T) (*tripCounter, *sql.DB, *Connector, func(k int)) {
	t.Helper()
	_, trips, db, c, get := onPathKV(t)
	for range 4 * coldMin {
		c.eng.cold.note(false)
	}
	get(1)
	waitFor(t, func() bool { return c.Stats().Fills == 1 })
	c.eng.bg.Wait()
	if s := c.Stats(); s.EarlyQueries != 0 {
		t.Fatalf("the first read sent an early query, knowing no stamp: %+v", s.Counters)
	}
	return trips, db, c, get
}

// settled waits for c's background work and for its leases to go.
func settled(t *testing.T, c *Connector) {
	t.Helper()
	waitFor(t, func() bool { c.eng.bg.Wait(); return leasesHeld(c.eng) == 0 })
}

// TestEarlyQuery: while misses are likely, the read of a key not looked up
// lately sends its query at once: its caller waits for no round trip to
// the cache. Its lookup, in the background, takes the lease, and the entry
// is stored: the next read hits. A key read again waits for its lookup, as
// does every read with NoEarlyQueries.
func TestEarlyQuery(t *testing.T) {
	trips, _, c, get := earlyKV(t)
	before := trips.n.Load()
	get(2)
	if n := trips.n.Load() - before; n != 0 {
		t.Errorf("an early query's caller waited for %d round trips, want 0", n)
	}
	if s := c.Stats(); s.EarlyQueries != 1 || s.Misses != 2 || s.EarlyFound != 0 {
		t.Fatalf("after an early query: %+v", s.Counters)
	}
	settled(t, c)
	if s := c.Stats(); s.Fills != 2 {
		t.Fatalf("the early query's entry was not stored: %+v", s.Counters)
	}
	if leases := c.opts.Redis.Keys(context.Background(), c.opts.Prefix+"*:lease").Val(); len(leases) != 0 {
		t.Errorf("leases left behind: %v", leases)
	}
	get(2)
	if s := c.Stats(); s.Hits != 1 || s.Misses != 2 {
		t.Fatalf("the entry an early query stored was not hit: %+v", s.Counters)
	}

	// A key looked up lately (3: its lookup found nothing, and its entry
	// was then dropped) is read as usual: its lookup first.
	get(3)
	settled(t, c)
	must(t, c.InvalidateQuery(context.Background(), kvQuery, 3))
	before = trips.n.Load()
	get(3)
	if n, s := trips.n.Load()-before, c.Stats(); n != 1 || s.EarlyQueries != 2 {
		t.Errorf("a key read again: %d round trips before its rows, early queries %d; want 1, 2", n, s.EarlyQueries)
	}
	settled(t, c)

	c.eng.guess = nil // as NoEarlyQueries leaves it
	before = trips.n.Load()
	get(4)
	if n, s := trips.n.Load()-before, c.Stats(); n != 1 || s.EarlyQueries != 2 {
		t.Errorf("without early queries: %d round trips before the rows, early queries %d; want 1, 2", n, s.EarlyQueries)
	}
}

// TestNoEarlyQueries: the option leaves the engine no stamps to guess.
func TestNoEarlyQueries(t *testing.T) {
	for _, off := range []bool{false, true} {
		c, err := NewConnector(pqDSN(t), Options{Redis: testRedis(t), NoEarlyQueries: off, Registry: NewRegistry()})
		must(t, err)
		if (c.eng.guess == nil) != off {
			t.Errorf("NoEarlyQueries %v: guessing %v", off, c.eng.guess != nil)
		}
		c.Close()
	}
}

// TestEarlyQueryRacingWrite: an early query read the row before another
// process wrote it, and its lookup ran after the write. The entry must not
// be stored under the stamps that lookup read, which postdate the rows; it
// records those seen before the query, which the write voided.
func TestEarlyQueryRacingWrite(t *testing.T) {
	_, db, c, _ := earlyKV(t)
	other := otherProcess(t, c, testRedis(t), kvQuery)
	written := make(chan struct{})
	c.eng.beforeEarlyLookup = func(string) { <-written }
	if v := getV(t, db, 2); v != "v2" {
		t.Fatalf("read %q", v)
	}
	_, err := other.Exec(`update kv set v = 'new' where k = 2`)
	must(t, err)
	close(written)
	settled(t, c)
	if s := c.Stats(); s.EarlyQueries != 1 || s.Fills != 1 {
		t.Errorf("an early query that raced a write stored its entry: %+v", s.Counters)
	}
	if v := getV(t, db, 2); v != "new" {
		t.Errorf("read %q after the other process's write", v)
	}
}

// TestEarlyQueryFound: when another process has stored the entry, the
// early query was not needed: its rows are served, counted in EarlyFound,
// and nothing is stored. The entry is hit next.
func TestEarlyQueryFound(t *testing.T) {
	_, _, c, get := earlyKV(t)
	other := otherProcess(t, c, testRedis(t), kvQuery)
	getV(t, other, 5)
	oc, err := ConnectorOf(other)
	must(t, err)
	settled(t, oc)
	get(5)
	settled(t, c)
	if s := c.Stats(); s.EarlyQueries != 1 || s.EarlyFound != 1 || s.Fills != 1 {
		t.Fatalf("an early query of a stored entry: %+v", s.Counters)
	}
	get(5)
	if s := c.Stats(); s.Hits != 1 {
		t.Errorf("the entry was not hit after an early query found it: %+v", s.Counters)
	}
}

// TestEarlyQueryLease: an early query's lookup takes the fill lease, so a
// reader in another process waits for its entry rather than query too.
func TestEarlyQueryLease(t *testing.T) {
	_, _, c, get := earlyKV(t)
	other := otherProcess(t, c, testRedis(t), kvQuery)
	oc, err := ConnectorOf(other)
	must(t, err)
	done := make(chan string, 1)
	c.eng.beforeFill = func(string) {
		go func() {
			var v string
			if err := other.QueryRow(kvQuery, 6).Scan(&v); err != nil {
				v = err.Error()
			}
			done <- v
		}()
		time.Sleep(50 * time.Millisecond) // the other reader meets the lease
	}
	get(6)
	settled(t, c)
	if v := <-done; v != "v6" {
		t.Fatalf("the other process read %q", v)
	}
	if s := c.Stats(); s.EarlyQueries != 1 || s.Fills != 2 {
		t.Fatalf("the early query: %+v", s.Counters)
	}
	if s := oc.Stats(); s.Misses != 0 || s.Hits != 1 {
		t.Errorf("the other process did not wait for the early query's entry: %+v", s.Counters)
	}
}

// lockKV holds an exclusive lock on kv, which makes the queries of kv
// wait, until the returned function rolls it back.
func lockKV(t *testing.T, c *Connector) func() {
	t.Helper()
	raw, err := sql.Open("postgres", pqDSN(t)+" search_path="+c.opts.Prefix)
	must(t, err)
	t.Cleanup(func() { raw.Close() })
	tx, err := raw.Begin()
	must(t, err)
	_, err = tx.Exec(`lock table kv in access exclusive mode`)
	must(t, err)
	return func() { tx.Rollback() }
}

// TestEarlyQuerySlowTakesLease: the lookup of a fast query waits until the
// query is answered (see earlyLookupWait), but that of a query not known
// to be fast takes the lease while the query runs, so that a reader in
// another process who comes meanwhile waits for its entry rather than
// query too.
func TestEarlyQuerySlowTakesLease(t *testing.T) {
	_, db, c, _ := earlyKV(t)
	const slowQuery = `select v from kv where k = $1 and k > 0` // never loaded here
	must(t, c.opts.Registry.Register(slowQuery, Policy{TTL: time.Hour}))
	other := otherProcess(t, c, testRedis(t), slowQuery)
	oc, err := ConnectorOf(other)
	must(t, err)
	unlock := lockKV(t, c)
	read := func(db *sql.DB) <-chan string {
		got := make(chan string, 1)
		go func() {
			var v string
			if err := db.QueryRow(slowQuery, 9).Scan(&v); err != nil {
				v = err.Error()
			}
			got <- v
		}()
		return got
	}
	first := read(db)
	time.Sleep(100 * time.Millisecond) // the early query waits for the lock
	second := read(other)
	time.Sleep(100 * time.Millisecond) // the other reader meets the lease
	unlock()
	if v1, v2 := <-first, <-second; v1 != "v9" || v2 != "v9" {
		t.Fatalf("read %q and %q", v1, v2)
	}
	settled(t, c)
	if s := c.Stats(); s.EarlyQueries != 1 || s.Fills != 2 {
		t.Fatalf("the early query: %+v", s.Counters)
	}
	if s := oc.Stats(); s.Misses != 0 || s.Hits != 1 {
		t.Errorf("the other process did not wait for the slow early query's entry: %+v", s.Counters)
	}
}

// TestEarlyQueryFailsAfterLookup: an early query that fails once its
// lookup has taken the lease gives the lease back, and leaves no load
// behind; one that fails before leaves no lookup.
func TestEarlyQueryFailsAfterLookup(t *testing.T) {
	_, db, c, _ := earlyKV(t)
	const q = `select v from kv where k = $1 and k > 0`
	must(t, c.opts.Registry.Register(q, Policy{TTL: time.Hour}))
	looked := make(chan string, 1)
	c.eng.beforeEarlyLookup = func(key string) { looked <- key }
	unlock := lockKV(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var v string
	err := db.QueryRowContext(ctx, q, 10).Scan(&v)
	unlock()
	if err == nil {
		t.Fatalf("a query cancelled while it waited for a lock read %q", v)
	}
	select {
	case <-looked:
	default:
		t.Fatal("the early query's lookup did not start while the query waited")
	}
	c.eng.beforeEarlyLookup = nil
	waitFor(t, func() bool { return flightsLeft(c.eng) == 0 })
	settled(t, c)
	if s := c.Stats(); s.EarlyQueries != 0 || s.Fills != 1 {
		t.Errorf("the failed early query: %+v", s.Counters)
	}
	if leases := c.opts.Redis.Keys(context.Background(), c.opts.Prefix+"*:lease").Val(); len(leases) != 0 {
		t.Errorf("leases left behind: %v", leases)
	}

	// A query that fails at once.
	const fails = `select v from kv where k = $1 and 1 / ($1 - 11) > 0`
	must(t, c.opts.Registry.Register(fails, Policy{TTL: time.Hour}))
	err = db.QueryRow(fails, 11).Scan(&v)
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) || pqErr.Code != "22012" {
		t.Fatalf("got %v, want division by zero", err)
	}
	settled(t, c)
	if n := flightsLeft(c.eng); n != 0 {
		t.Errorf("%d loads left behind", n)
	}
}

// TestEarlyQueryForeignValue: foreign bytes under the key of an early
// query are a miss, and its entry replaces them.
func TestEarlyQueryForeignValue(t *testing.T) {
	_, db, c, get := earlyKV(t)
	c.eng.beforeEarlyLookup = func(key string) {
		must(t, c.opts.Redis.Set(context.Background(), key, "\x00not an entry", time.Hour).Err())
	}
	get(7)
	settled(t, c)
	if s := c.Stats(); s.EarlyQueries != 1 || s.Foreign != 1 || s.Fills != 2 {
		t.Fatalf("an early query over a foreign value: %+v", s.Counters)
	}
	c.eng.beforeEarlyLookup = nil
	if v := getV(t, db, 7); v != "v7" {
		t.Fatalf("read %q", v)
	}
	if s := c.Stats(); s.Hits != 1 {
		t.Errorf("the entry that replaced the foreign value was not hit: %+v", s.Counters)
	}
}

// TestEarlyQueryCacheDown: when the cache fails an early query's lookup,
// the caller has its rows all the same, and nothing is stored.
func TestEarlyQueryCacheDown(t *testing.T) {
	_, _, c, get := earlyKV(t)
	c.opts.Redis.Close()
	get(8)
	// The failure leaves a retry running in the background: wait for the
	// load to end instead.
	waitFor(t, func() bool { return flightsLeft(c.eng) == 0 && c.Stats().CacheErrors > 0 })
	if s := c.Stats(); s.EarlyQueries != 1 || s.CacheErrors == 0 || s.Fills != 1 {
		t.Errorf("an early query whose lookup failed: %+v", s)
	}
}

func TestSeenKeys(t *testing.T) {
	var s seenKeys
	if !s.first(42) || s.first(42) {
		t.Fatal("first reported a key twice, or never")
	}
	s.mark(42 + hotSlots) // same slot: 42 is forgotten
	if !s.first(42) {
		t.Fatal("a key whose slot another took is still seen")
	}
	s.mark(7)
	if s.first(7) {
		t.Fatal("a marked key was first")
	}
}

func TestColdOutcomesLikelyMissed(t *testing.T) {
	var c coldOutcomes
	for range coldMin - 1 {
		c.note(false)
	}
	if c.likelyMissed() {
		t.Fatal("judged before coldMin lookups")
	}
	c.note(false)
	if !c.likelyMissed() {
		t.Fatal("all missed, not likely to miss")
	}
	for range coldMin/3 + 1 { // 22 found of 86: more than one in four
		c.note(true)
	}
	if c.likelyMissed() {
		t.Fatalf("likely to miss with %d found of %d", c.found.Load(), c.looked.Load())
	}
}

// flightsLeft counts e's loads in progress.
func flightsLeft(e *engine) int {
	e.flights.mu.Lock()
	defer e.flights.mu.Unlock()
	return len(e.flights.flights)
}
