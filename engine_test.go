package cachedpq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
)

var engineSeq atomic.Int64

// engineDB opens a cached DB in a fresh schema holding table kv, on the
// in-process store (rdb nil) or Redis.
func engineDB(t testing.TB, rdb redis.UniversalClient) (*sql.DB, *Connector, *sql.DB) {
	t.Helper()
	dsn := pqDSN(t)
	admin, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := fmt.Sprintf("eng_%d_%d", os.Getpid(), engineSeq.Add(1))
	if _, err := admin.Exec("create schema " + schema + "; create table " + schema +
		".kv (k int primary key, v text); insert into " + schema + ".kv select g, 'v' || g from generate_series(1, 100) g"); err != nil {
		t.Fatal(err)
	}
	c, err := NewConnector(dsn+" search_path="+schema, Options{
		Redis: rdb, Prefix: schema, Registry: NewRegistry(), Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	raw, _ := sql.Open("postgres", dsn+" search_path="+schema)
	t.Cleanup(func() {
		db.Close()
		raw.Close()
		admin.Exec("drop schema " + schema + " cascade")
		admin.Close()
	})
	return db, c, raw
}

func getV(t testing.TB, db *sql.DB, k int) string {
	t.Helper()
	var v string
	if err := db.QueryRow(`select v from kv where k = $1`, k).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// eachStore runs test on the in-process store (rdb nil) and on Redis.
func eachStore(t *testing.T, test func(t *testing.T, rdb redis.UniversalClient)) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			var rdb redis.UniversalClient
			if store == "redis" {
				rdb = testRedis(t)
			}
			test(t, rdb)
		})
	}
}

// TestNoStaleSetAfterARacingWrite forces the race the cache-aside pattern
// is known for: a reader reads old rows, a writer commits and invalidates,
// then the reader fills the cache with the old rows. The entry must never
// be served.
func TestNoStaleSetAfterARacingWrite(t *testing.T) {
	eachStore(t, func(t *testing.T, rdb redis.UniversalClient) {
		db, c, _ := engineDB(t, rdb)
		if err := c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		reached, proceed := make(chan struct{}), make(chan struct{})
		var once sync.Once
		c.eng.beforeFill = func(string) {
			once.Do(func() {
				close(reached)
				<-proceed
			})
		}
		read := make(chan string)
		go func() { read <- getV(t, db, 1) }()
		<-reached // the reader has the old rows and is about to fill
		if _, err := db.Exec(`update kv set v = 'new' where k = 1`); err != nil {
			t.Fatal(err)
		}
		close(proceed)
		if got := <-read; got != "v1" {
			t.Fatalf("racing reader got %q", got)
		}
		waitFor(t, func() bool { return c.Stats().Fills == 1 })
		// The raced entry is rejected by its stamps (or already purged by
		// the write's invalidation): the next read is a miss, not a hit.
		before := c.Stats()
		if got := getV(t, db, 1); got != "new" {
			t.Fatalf("the stale set was served: %q", got)
		}
		if after := c.Stats(); after.Hits != before.Hits || after.Misses != before.Misses+1 {
			t.Fatalf("the read after the race was not a miss: %+v", after.Counters)
		}
		for range 3 {
			if got := getV(t, db, 1); got != "new" {
				t.Fatalf("the stale set was served: %q", got)
			}
		}
	})
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestReadThatStartedAfterAWriteNeverJoinsAnOlderLoad checks that flights
// are keyed by the stamps their readers saw.
func TestFlightsAreKeyedByStamps(t *testing.T) {
	if flightID("k", []uint64{1, 2}) == flightID("k", []uint64{1, 3}) {
		t.Fatal("readers that saw different stamps share a flight")
	}
	var g flightGroup
	f1, lead1, _ := g.join("a", "", context.Background())
	f2, lead2, _ := g.join("a", "", context.Background())
	if !lead1 || lead2 || f1 != f2 {
		t.Fatal("the second reader did not join the first's flight")
	}
	ent := &entry{}
	go f1.finish(ent)
	if got, err := f2.wait(context.Background()); err != nil || got != ent {
		t.Fatalf("waiter got %v %v", got, err)
	}
	g.forget("a", f1)
	if _, lead, _ := g.join("a", "", context.Background()); !lead {
		t.Fatal("a finished flight was joined")
	}
}

// TestFlightColdJoin: a reader that saw stamps the cold key's leader
// created joins the leader's flight before the leader has aliased it under
// them (two loads of a cold key ran in 1 of 40 runs of
// TestStampedeRunsOneQuery/memory before), and is told so, since it may
// use the result only if the leader read those stamps.
func TestFlightColdJoin(t *testing.T) {
	seen := []uint64{4, 5}
	cold := coldFlightID("k", seen)
	if cold != flightID("k", []uint64{0, 0}) || coldFlightID("k", []uint64{4, 0}) != "" {
		t.Fatalf("cold flight ids: %q", cold)
	}
	var g flightGroup
	f1, lead, _ := g.join(flightID("k", []uint64{0, 0}), "", context.Background())
	if !lead {
		t.Fatal("the first reader does not lead")
	}
	f2, lead, joinedCold := g.join(flightID("k", seen), cold, context.Background())
	if lead || f2 != f1 || !joinedCold {
		t.Fatalf("a reader that saw the created stamps led %v, joined the cold flight %v", lead, joinedCold)
	}
	if _, lead, _ := g.join(flightID("k", []uint64{4, 6}), "", context.Background()); !lead {
		t.Fatal("a reader with no cold flight to join did not lead its own")
	}
}

// TestFlightVoidKey: InvalidateQuery voids the flights of its key. A
// load that has stored its entry stays in the group until its goroutine
// forgets it, and a reader that came after InvalidateQuery removed the
// entry, seeing the same stamps (a query that reads no table), joined it
// and was served the removed rows: TestInvalidateQueryConvertsArgumentsAsQueries/redis
// failed so in one CI run. The flight of another key stays.
func TestFlightVoidKey(t *testing.T) {
	var g flightGroup
	stamps := []uint64{7}
	f, _, _ := g.join(flightID("p:q:aa", stamps), "", context.Background())
	other, _, _ := g.join(flightID("p:q:ab", stamps), "", context.Background())
	f.finish(&entry{})
	g.voidKey("p:q:aa")
	if !f.void.Load() || other.void.Load() {
		t.Fatalf("void: the key's flight %v, another's %v", f.void.Load(), other.void.Load())
	}
	if _, lead, _ := g.join(flightID("p:q:aa", stamps), "", context.Background()); !lead {
		t.Fatal("a reader after InvalidateQuery joined the load from before it")
	}
	if _, lead, _ := g.join(flightID("p:q:ab", stamps), "", context.Background()); lead {
		t.Fatal("another key's flight was voided")
	}
}

func TestFlightSurvivesItsLeadersContext(t *testing.T) {
	var g flightGroup
	lctx, cancel := context.WithCancel(context.Background())
	f, _, _ := g.join("k", "", lctx)
	stop := context.AfterFunc(lctx, f.leave)
	defer stop()
	g.join("k", "", context.Background()) // a waiter
	cancel()
	time.Sleep(10 * time.Millisecond)
	if f.ctx.Err() != nil {
		t.Fatal("the leader's cancellation cancelled the shared load while a waiter remained")
	}
	f.leave() // the waiter gives up too
	if f.ctx.Err() == nil {
		t.Fatal("the load goes on with nobody waiting")
	}
}

func TestJitterSpreadsExpiries(t *testing.T) {
	tests := []struct {
		jitter   float64
		min, max time.Duration
	}{
		{0, 100 * time.Second, 110 * time.Second}, // the 10% default
		{0.5, 100 * time.Second, 150 * time.Second},
		{-1, 100 * time.Second, 100 * time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.jitter), func(t *testing.T) {
			p, err := Policy{TTL: 100 * time.Second, Jitter: tt.jitter}.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			reg := &registration{policy: p}
			lo, hi := time.Duration(1<<62), time.Duration(0)
			seen := map[time.Duration]bool{}
			for range 2000 {
				d := reg.ttl(false)
				lo, hi = min(lo, d), max(hi, d)
				seen[d] = true
			}
			if lo < tt.min || hi > tt.max {
				t.Fatalf("ttl in [%v, %v], want within [%v, %v]", lo, hi, tt.min, tt.max)
			}
			if spread := tt.max - tt.min; spread > 0 && (hi-lo < spread*8/10 || len(seen) < 1000) {
				t.Fatalf("ttl barely spread: [%v, %v], %d distinct", lo, hi, len(seen))
			}
			if got := reg.ttl(true); got != p.NegativeTTL {
				t.Fatalf("empty result ttl = %v, want NegativeTTL %v", got, p.NegativeTTL)
			}
		})
	}
}

func TestPolicyValidation(t *testing.T) {
	r := NewRegistry()
	bad := []struct {
		query string
		p     Policy
	}{
		{`select v from kv`, Policy{}},                            // no TTL
		{`select v from kv`, Policy{TTL: time.Second, Jitter: 2}}, // jitter over 1
		{`select v from kv`, Policy{TTL: time.Second, Jitter: math.NaN()}},
		{`select v from kv`, Policy{TTL: time.Second, MaxRows: -1}}, // negative
		{`select v from kv`, Policy{TTL: time.Second, Name: "a b"}}, // name in keys
		{`select v from kv`, Policy{TTL: time.Second, Tags: []string{"a b"}}},
		{`select v from kv`, Policy{TTL: time.Second, Beta: -1}},
		{`update kv set v = 1`, Policy{TTL: time.Second}},         // a write
		{`select v from kv for update`, Policy{TTL: time.Second}}, // locking
		{`select now()`, Policy{TTL: time.Second}},                // non-deterministic
		{`select v from kv; select 1`, Policy{TTL: time.Second}},  // two statements
	}
	for _, b := range bad {
		if err := r.Register(b.query, b.p); err == nil {
			t.Errorf("Register(%q, %+v) succeeded", b.query, b.p)
		}
	}
	if err := r.Register(`select now()`, Policy{TTL: time.Second, AllowNondeterministic: true}); err != nil {
		t.Errorf("AllowNondeterministic: %v", err)
	}
	q := `select v from kv where k = $1`
	if err := r.Register(q, Policy{TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("SELECT v FROM kv WHERE k = $1 -- same", Policy{TTL: time.Second}); err != nil {
		t.Errorf("the same query and policy again: %v", err)
	}
	if err := r.Register(q, Policy{TTL: 2 * time.Second}); err == nil {
		t.Error("the same query with another policy was accepted")
	}
}

func TestRegisterIsSafeForConcurrentUse(t *testing.T) {
	r := NewRegistry()
	var wg sync.WaitGroup
	var errs atomic.Int64
	for i := range 50 {
		wg.Go(func() {
			q := fmt.Sprintf(`select v from kv where k = %d`, i%10)
			if err := r.Register(q, Policy{TTL: time.Second}); err != nil {
				errs.Add(1)
			}
			r.lookup(analyze(q))
		})
	}
	wg.Wait()
	if errs.Load() != 0 || len(r.snapshot()) != 10 {
		t.Fatalf("errors %d, registered %d", errs.Load(), len(r.snapshot()))
	}
}

func TestFoldTag(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"users", "users", true},
		{"public.Users", "users", true},
		{`"users"`, "users", true},
		{`"Users"`, "Users", true},
		{`app."Order Items"`, "Order Items", true},
		{"a b", "", false},
		{"", "", false},
		{"users.", "", false},
		{"1x", "", false},
	}
	for _, tt := range tests {
		got, ok := foldTag(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("foldTag(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSetLocalKeepsTheConnectionCacheable(t *testing.T) {
	db, c, _ := engineDB(t, nil)
	if err := c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`set local statement_timeout = '5s'`); err != nil {
		t.Fatal(err)
	}
	// A savepoint inside a BeginTx transaction is not a raw COMMIT: the
	// update's invalidation must wait for the real commit.
	if _, err := tx.Exec(`update kv set v = 'x' where k = 2; savepoint s1`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	getV(t, db, 1)
	getV(t, db, 1)
	if s := c.Stats(); s.Hits != 1 || s.Bypass["session_state"] != 0 {
		t.Fatalf("SET LOCAL disabled the cache on its connection: %+v", s.Counters)
	}
	if got := getV(t, db, 2); got != "x" {
		t.Fatalf("after commit: %q", got)
	}
}

// TestUnknownWritesCanBeNarrowed: a CALL that UnknownWrites narrows
// invalidates the tables it names, not the namespace, and the callback is
// asked once per statement (with Redis, the write's mark is computed before
// it runs and its invalidation after: both use one answer).
func TestUnknownWritesCanBeNarrowed(t *testing.T) {
	eachStore(t, func(t *testing.T, rdb redis.UniversalClient) {
		db, c, raw := engineDB(t, rdb)
		var asked atomic.Value
		var calls atomic.Int32
		c.eng.opts.UnknownWrites = func(stmt string) ([]string, bool) {
			asked.Store(stmt)
			calls.Add(1)
			return []string{"public.KV"}, true
		}
		if _, err := raw.Exec(`create table other (x int); insert into other values (1);
			create procedure touch_kv() language sql as $$ update kv set v = 'proc' where k = 1 $$`); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{`select v from kv where k = $1`, `select x from other where x = $1`} {
			if err := c.opts.Registry.Register(q, Policy{TTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
		var x int
		getV(t, db, 1)
		db.QueryRow(`select x from other where x = $1`, 1).Scan(&x)
		c.eng.bg.Wait() // both entries stored
		if _, err := db.Exec(`call touch_kv()`); err != nil {
			t.Fatal(err)
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("UnknownWrites was asked %d times for one statement", n)
		}
		if got := getV(t, db, 1); got != "proc" {
			t.Fatalf("the procedure's write was not invalidated: %q", got)
		}
		db.QueryRow(`select x from other where x = $1`, 1).Scan(&x)
		s := c.Stats()
		if s.EpochBumps != 0 || s.Hits != 1 || asked.Load() != "call touch_kv ( )" {
			t.Fatalf("narrowing: asked %q, %+v", asked.Load(), s)
		}
	})
}

// TestEarlyRefreshRunsInTheBackground: the reader whose hit draws an early
// refresh is served the entry; the reload runs behind it. A write behind
// the cache's back shows which: the reader sees the old value, and later
// readers the new one once the reload has landed.
func TestEarlyRefreshRunsInTheBackground(t *testing.T) {
	eachStore(t, func(t *testing.T, rdb redis.UniversalClient) {
		db, c, raw := engineDB(t, rdb)
		// β this large draws a refresh on every hit.
		must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour, Beta: 1e12}))
		if got := getV(t, db, 1); got != "v1" {
			t.Fatalf("miss: %q", got)
		}
		waitFor(t, func() bool { return c.Stats().Fills == 1 })
		if _, err := raw.Exec(`update kv set v = 'behind' where k = 1`); err != nil {
			t.Fatal(err)
		}
		if got := getV(t, db, 1); got != "v1" {
			t.Fatalf("the reader that drew the refresh got %q: it waited for the reload", got)
		}
		if s := c.Stats(); s.EarlyRefreshes == 0 || s.Hits != 1 {
			t.Fatalf("no early refresh drawn: %+v", s.Counters)
		}
		waitFor(t, func() bool { return getV(t, db, 1) == "behind" })
		if s := c.Stats(); s.Misses < 2 || s.Bypass[bypassNames[bypassCacheError]] != 0 {
			t.Fatalf("the reload was not a recorded load: %+v", s.Counters)
		}
	})
}

// TestReadsAfterCloseStartNothing: sql.DB.Close does not wait for a held
// sql.Conn, which may read on. Its hits draw early refreshes and its misses
// fills, but the Connector is closed: nothing may start in the background
// (the refresh pool is gone for good), and a skipped refresh gives up its
// claim. The reads are answered all the same.
func TestReadsAfterCloseStartNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, rdb redis.UniversalClient) {
		db, c, _ := engineDB(t, rdb)
		must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour, Beta: 1e12}))
		ctx := testCtx(t)
		sc, err := db.Conn(ctx)
		must(t, err)
		defer sc.Close()
		read := func(k int) string {
			t.Helper()
			var v string
			must(t, sc.QueryRowContext(ctx, `select v from kv where k = $1`, k).Scan(&v))
			return v
		}
		read(1)
		waitFor(t, func() bool { return c.Stats().Fills == 1 })
		must(t, db.Close())
		for range 2 {
			if got, miss := read(1), read(2); got != "v1" || miss != "v2" {
				t.Fatalf("after close: %q, %q", got, miss)
			}
		}
		fills := uint64(1) // a Redis fill runs in the background: none after close
		if rdb == nil {
			fills = 2 // the in-process store fills inline
		}
		if s := c.Stats(); s.Hits < 2 || s.Fills != fills {
			t.Fatalf("after close: %+v", s.Counters)
		}
		c.eng.refreshers.Range(func(key, _ any) bool {
			t.Fatalf("a skipped refresh kept its claim on %v", key)
			return false
		})
	})
}

// TestForeignIndexIsAMiss: a value of another type under a table's index
// is foreign bytes in the cache, which cost a miss at most. It used to fail
// every fill and purge of the table, each failure invalidating the whole
// namespace.
func TestForeignIndexIsAMiss(t *testing.T) {
	rdb := testRedis(t)
	db, c, _ := engineDB(t, rdb)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	idx := c.opts.Prefix + ":idx:kv"
	must(t, rdb.Set(testCtx(t), idx, "foreign", 0).Err())
	for k := 1; k <= 3; k++ {
		getV(t, db, k)
	}
	waitFor(t, func() bool { s := c.Stats(); return s.Fills+s.FillErrors == 3 || s.Pending })
	if s := c.Stats(); s.Fills != 3 {
		t.Fatalf("fills over a foreign index: %+v", s)
	}
	must(t, rdb.Set(testCtx(t), idx, "foreign", 0).Err())
	if _, err := db.Exec(`update kv set v = 'new' where k = 1`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		s := c.Stats()
		return rdb.Exists(testCtx(t), idx).Val() == 0 || s.Pending || s.EpochBumps > 0
	})
	if s := c.Stats(); s.EpochBumps != 0 || s.Pending {
		t.Fatalf("a purge over a foreign index failed: %+v", s)
	}
	if got := getV(t, db, 1); got != "new" {
		t.Fatalf("after the write: %q", got)
	}
}

// TestRefreshOverABareDriver: an early refresh over a Wrap whose inner
// connections cannot run a query directly is skipped (the entry reloads
// when it expires); it panicked in its background goroutine.
func TestRefreshOverABareDriver(t *testing.T) {
	reg := NewRegistry()
	must(t, reg.Register(`select x from t`, Policy{TTL: time.Hour, Beta: 1e12}))
	c := Wrap(&fakeConnector{bare: true}, Options{NoCatalog: true, Registry: reg})
	db := sql.OpenDB(c)
	defer db.Close()
	for range 3 {
		var x int64
		must(t, db.QueryRow(`select x from t`).Scan(&x))
		c.eng.bg.Wait()
	}
	c.eng.refreshers.Range(func(k, _ any) bool {
		t.Fatalf("a skipped refresh kept its claim on %v", k)
		return false
	})
}

// TestStaleWindowReloadIsARefresh: the reader that reloads an expired
// entry while the others are served it within StaleFor counts as an early
// refresh, as the counter's documentation says.
func TestStaleWindowReloadIsARefresh(t *testing.T) {
	db, c, _ := engineDB(t, nil)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`,
		Policy{TTL: 50 * time.Millisecond, Jitter: -1, StaleFor: time.Hour}))
	getV(t, db, 1)
	time.Sleep(100 * time.Millisecond)
	getV(t, db, 1)
	if s := c.Stats(); s.EarlyRefreshes != 1 {
		t.Fatalf("early refreshes %d, want 1: %+v", s.EarlyRefreshes, s.Counters)
	}
}

// TestStaleWindowClaimEnds: the claim of the reader that reloads an
// expired entry within StaleFor is on the entry's key, and ends with the
// reload, so that the next expiry is reloaded too rather than served stale
// for ever. (A hit that serves the entry as it is keeps no string of its
// key: one that claims a reload must make it first.)
func TestStaleWindowClaimEnds(t *testing.T) {
	db, c, _ := engineDB(t, nil)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`,
		Policy{TTL: 50 * time.Millisecond, Jitter: -1, StaleFor: time.Hour}))
	getV(t, db, 1)
	for range 2 {
		time.Sleep(100 * time.Millisecond)
		getV(t, db, 1)
		c.eng.refreshers.Range(func(k, _ any) bool {
			t.Fatalf("a reload that ended kept its claim on %q", k)
			return false
		})
	}
	if s := c.Stats(); s.EarlyRefreshes != 2 || s.StaleServed != 0 {
		t.Fatalf("early refreshes %d, stale served %d, want 2, 0: %+v", s.EarlyRefreshes, s.StaleServed, s.Counters)
	}
}

// TestLoadTimeIsTheQuerys: XFetch's δ and the load-duration metric are the
// time to the last row, not the time the caller spends between rows.
func TestLoadTimeIsTheQuerys(t *testing.T) {
	db, c, _ := engineDB(t, nil)
	must(t, c.opts.Registry.Register(`select v from kv where k <= $1 order by k`, Policy{TTL: time.Hour}))
	rows, err := db.Query(`select v from kv where k <= $1 order by k`, 3)
	must(t, err)
	for rows.Next() {
		time.Sleep(50 * time.Millisecond) // the application's own work
	}
	must(t, rows.Err())
	must(t, rows.Close())
	if p99 := c.Stats().DBLatency.P99; p99 >= 100*time.Millisecond {
		t.Fatalf("load time %v counts the caller's 150 ms between rows", p99)
	}
}

// joiningConnector hands out connections whose Begin sends BEGIN as
// text, as many drivers do: inside a transaction opened by text it joins
// that transaction (Postgres only warns), where lib/pq would refuse.
type joiningConnector struct{ driver.Connector }

func (c joiningConnector) Connect(ctx context.Context) (driver.Conn, error) {
	inner, err := c.Connector.Connect(ctx)
	return joiningConn{inner}, err
}

type joiningConn struct{ inner driver.Conn }

func (c joiningConn) Prepare(q string) (driver.Stmt, error) { return c.inner.Prepare(q) }
func (c joiningConn) Close() error                          { return c.inner.Close() }
func (c joiningConn) Begin() (driver.Tx, error)             { return joiningTx{c}, c.exec("begin") }
func (c joiningConn) exec(q string) error {
	_, err := c.ExecContext(context.Background(), q, nil)
	return err
}
func (c joiningConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	return c.inner.(driver.ExecerContext).ExecContext(ctx, q, args)
}
func (c joiningConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	return c.inner.(driver.QueryerContext).QueryContext(ctx, q, args)
}

type joiningTx struct{ c joiningConn }

func (t joiningTx) Commit() error   { return t.c.exec("commit") }
func (t joiningTx) Rollback() error { return t.c.exec("rollback") }

// TestBeginTxJoiningATextTransaction: over a driver whose BeginTx joins a
// transaction opened by text, the text transaction's writes are
// invalidated at the Commit that commits them, not only before it.
func TestBeginTxJoiningATextTransaction(t *testing.T) {
	_, c0, _ := engineDB(t, nil)
	pc, err := pq.NewConnector(pqDSN(t) + " search_path=" + c0.opts.Prefix)
	must(t, err)
	reg := NewRegistry()
	must(t, reg.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	db := sql.OpenDB(Wrap(joiningConnector{pc}, Options{Registry: reg}))
	defer db.Close()
	ctx := context.Background()
	sc, err := db.Conn(ctx)
	must(t, err)
	defer sc.Close()
	for _, q := range []string{`begin`, `update kv set v = 'joined' where k = 1`} {
		_, err := sc.ExecContext(ctx, q)
		must(t, err)
	}
	tx, err := sc.BeginTx(ctx, nil)
	must(t, err)
	if got := getV(t, db, 1); got != "v1" { // another connection caches the committed row
		t.Fatalf("before commit: %q", got)
	}
	must(t, tx.Commit())
	if got := getV(t, db, 1); got != "joined" {
		t.Fatalf("after the commit: %q", got)
	}
}

// TestMissAfterFillRunsNoQuery: a reader whose lookup missed joins the
// loads of its key only after another load has stored the entry and left
// the flight group; it must not run the query again. On the in-process
// store it did: TestStampedeLeaderCancelled/memory ran the query twice in
// about 1 of 100 runs on a loaded machine, where a reader was preempted
// between its lookup and its join.
func TestMissAfterFillRunsNoQuery(t *testing.T) {
	eachStore(t, func(t *testing.T, rdb redis.UniversalClient) {
		db, c, _ := engineDB(t, rdb)
		if err := c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		reached, proceed := make(chan struct{}), make(chan struct{})
		var first atomic.Bool
		c.eng.beforeJoin = func(string) {
			if first.CompareAndSwap(false, true) { // not sync.Once: the other reader would wait in Do
				close(reached)
				<-proceed
			}
		}
		late := make(chan string)
		go func() { late <- getV(t, db, 1) }()
		<-reached // the late reader missed, and has not joined yet
		if got := getV(t, db, 1); got != "v1" {
			t.Fatalf("the other reader got %q", got)
		}
		waitFor(t, func() bool { return c.Stats().Fills == 1 })
		close(proceed)
		if got := <-late; got != "v1" {
			t.Fatalf("the late reader got %q", got)
		}
		if s := c.Stats(); s.Misses != 1 || s.Hits != 1 {
			t.Fatalf("want one load and one hit: %+v", s.Counters)
		}
	})
}

// TestInvalidateQueryDuringFill: InvalidateQuery comes while a load of its
// key is being stored, its removal before the fill lands. For a query
// that reads no table no stamp tells the entry is old: the fill must be
// removed again (it was served until its TTL).
func TestInvalidateQueryDuringFill(t *testing.T) {
	eachStore(t, func(t *testing.T, rdb redis.UniversalClient) {
		db, c, _ := engineDB(t, rdb)
		const q = `select random()::text where $1::int > 0`
		if err := c.opts.Registry.Register(q, Policy{TTL: time.Hour, AllowNondeterministic: true}); err != nil {
			t.Fatal(err)
		}
		var first atomic.Bool
		c.eng.beforeFill = func(string) {
			if first.CompareAndSwap(false, true) {
				if err := c.InvalidateQuery(context.Background(), q, 1); err != nil {
					t.Error(err)
				}
			}
		}
		read := func() string {
			var v string
			if err := db.QueryRow(q, 1).Scan(&v); err != nil {
				t.Fatal(err)
			}
			c.eng.bg.Wait()
			return v
		}
		before := read()
		if after := read(); after == before {
			t.Fatalf("the entry filled during InvalidateQuery was served: %q (stats %+v)", after, c.Stats().Counters)
		}
	})
}

// TestStaleWindowClaimEndsOnAFillMeanwhile: the reader that claims the
// reload of an expired entry (StaleFor) may find, once it joins the loads
// of its key, that another load has stored a current entry since its
// lookup: it is served that entry, and its claim must end with it. Its
// claim came after that load's, which ends the key's claim when it
// stores, had ended. Kept, the claim made every reader of the next expiry
// be served the old entry for all of StaleFor, with nobody reloading it.
func TestStaleWindowClaimEndsOnAFillMeanwhile(t *testing.T) {
	db, c, _ := engineDB(t, nil)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`,
		Policy{TTL: 50 * time.Millisecond, Jitter: -1, StaleFor: time.Hour}))
	getV(t, db, 1)
	time.Sleep(100 * time.Millisecond) // expired, within StaleFor
	var first atomic.Bool
	c.eng.beforeJoin = func(key string) {
		if !first.CompareAndSwap(false, true) {
			return
		}
		// Another load stores a current entry, and ends the key's claim...
		must(t, c.eng.store.remove(context.Background(), key))
		getV(t, db, 1)
		// ...before this reader's claim, made after its lookup.
		if !c.eng.claimRefresh(key) {
			t.Error("the other load left its claim")
		}
	}
	getV(t, db, 1)
	c.eng.refreshers.Range(func(k, _ any) bool {
		t.Fatalf("the reader served a fill made meanwhile kept its claim on %q", k)
		return false
	})
}

// TestRegisterAfterUse checks that a connection which ran a query before it
// was registered caches it once it is: the connection's memo of the last
// query's registration must follow the registry.
func TestRegisterAfterUse(t *testing.T) {
	db, c, _ := engineDB(t, nil)
	db.SetMaxOpenConns(1)
	if err := c.opts.Registry.Register(`select k from kv where v = $1`, Policy{TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	getV(t, db, 1)
	if err := c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	getV(t, db, 1)
	getV(t, db, 1)
	if s := c.Stats(); s.Misses != 1 || s.Hits != 1 {
		t.Fatalf("after registering: %d misses, %d hits; want 1 and 1", s.Misses, s.Hits)
	}
}

// TestInProcessHitAllocations pins the allocations of an in-process hit on
// the driver itself, without database/sql: one, the column names, which
// are the caller's to keep. The read's state stays on the caller's stack;
// a path that lets it escape (an early query's copy, say, taken as r
// itself) costs every hit an allocation of its own.
func TestInProcessHitAllocations(t *testing.T) {
	db, c, _ := engineDB(t, nil)
	q := `select k, v from kv where k = $1`
	must(t, c.opts.Registry.Register(q, Policy{TTL: time.Hour}))
	getV(t, db, 7)
	ctx := testCtx(t)
	sc, err := db.Conn(ctx)
	must(t, err)
	defer sc.Close()
	args := []driver.NamedValue{{Ordinal: 1, Value: int64(7)}}
	hits := c.Stats().Hits
	var allocs float64
	err = sc.Raw(func(dc any) error {
		qc := dc.(driver.QueryerContext)
		dest := make([]driver.Value, 2)
		var err error
		allocs = testing.AllocsPerRun(200, func() {
			var rows driver.Rows
			if rows, err = qc.QueryContext(ctx, q, args); err != nil {
				return
			}
			rows.Columns()
			for rows.Next(dest) == nil {
			}
			err = rows.Close()
		})
		return err
	})
	must(t, err)
	if got := c.Stats().Hits - hits; got < 200 {
		t.Fatalf("%d hits in 201 reads", got)
	}
	if allocs > 1 {
		t.Fatalf("an in-process hit allocates %.1f times, want 1", allocs)
	}
}
