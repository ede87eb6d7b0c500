package cachedpq

import (
	"context"
	"database/sql"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachedpq/cachedpq/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestMarkScripts follows a stamp through marks, invalidations and their
// taking back, on the test Redis.
func TestMarkScripts(t *testing.T) {
	ctx := testCtx(t)
	rdb := testRedis(t)
	s := newRedisStore(rdb, testPrefix(t, rdb))
	key := s.stampKey("t")
	get := func() string {
		t.Helper()
		v, err := rdb.Get(ctx, key).Result()
		if err == redis.Nil {
			return "<missing>"
		}
		must(t, err)
		return v
	}
	tags := []string{"t"}
	stamps, err := s.readStamps(ctx, tags)
	must(t, err)
	old := formatStamp(stamps[0])

	steps := []struct {
		name string
		do   func() error
		want string // "<fresh>": a new stamp
	}{
		{"mark", func() error { return s.mark(ctx, tags) }, "m1:0:" + old},
		{"second write", func() error { return s.mark(ctx, tags) }, "m2:0:" + old},
		{"one fails", func() error { return s.unmark(ctx, tags, false) }, "m1:0:" + old},
		{"the other fails: nothing was written", func() error { return s.unmark(ctx, tags, false) }, old},
		{"mark", func() error { return s.mark(ctx, tags) }, "m1:0:" + old},
		{"an invalidation meanwhile", func() error { return s.bump(ctx, tags) }, "m1:1:" + old},
		{"the write fails, the invalidation stands", func() error { return s.unmark(ctx, tags, false) }, "<fresh>"},
	}
	for _, st := range steps {
		before := get()
		must(t, st.do())
		got := get()
		switch {
		case st.want == "<fresh>" && (parseStamp(got) == 0 || got == before || got == old):
			t.Fatalf("%s: %q, want a fresh stamp", st.name, got)
		case st.want != "<fresh>" && got != st.want:
			t.Fatalf("%s: %q, want %q", st.name, got, st.want)
		}
		if readStamp(got) == markedStamp {
			if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > markTTL {
				t.Fatalf("%s: a mark with TTL %v", st.name, ttl)
			}
		} else if ttl := rdb.PTTL(ctx, key).Val(); ttl != -1 {
			t.Fatalf("%s: a stamp with TTL %v", st.name, ttl)
		}
	}

	// A write that wrote gives a fresh stamp even if another failed.
	fresh := get()
	must(t, s.mark(ctx, tags))
	must(t, s.mark(ctx, tags))
	must(t, s.unmark(ctx, tags, true))
	if got := get(); got != "m1:1:"+fresh {
		t.Fatalf("after one write of two: %q", got)
	}
	must(t, s.unmark(ctx, tags, false))
	if got := get(); parseStamp(got) == 0 || got == fresh {
		t.Fatalf("after both: %q, want a fresh stamp", got)
	}

	// A mark on a missing stamp that nothing wrote under leaves it missing.
	must(t, rdb.Del(ctx, key).Err())
	must(t, s.mark(ctx, tags))
	if got := get(); got != "m1:0:" {
		t.Fatalf("mark of a missing stamp: %q", got)
	}
	must(t, s.unmark(ctx, tags, false))
	if got := get(); got != "<missing>" {
		t.Fatalf("failed write on a missing stamp: %q", got)
	}

	// A mark that lapsed is replaced all the same.
	must(t, s.unmark(ctx, tags, false))
	if got := get(); parseStamp(got) == 0 {
		t.Fatalf("unmark of a lapsed mark: %q", got)
	}

	// Lookups read a mark as marked, and the lookup script takes no lease
	// and creates nothing beside it.
	must(t, s.mark(ctx, tags))
	_, got, err := s.lookup(ctx, "k", tags, nil)
	must(t, err)
	if got[0] != markedStamp {
		t.Fatalf("lookup read %d", got[0])
	}
	_, got, holder, err := s.lookupLease(ctx, "k", []string{"t", "u"}, time.Second, false, 7)
	must(t, err)
	if got[0] != markedStamp || holder != 0 {
		t.Fatalf("lookupLease read %v, lease holder %d", got, holder)
	}
	if n := rdb.Exists(ctx, leaseKey("k"), s.stampKey("u")).Val(); n != 0 {
		t.Fatalf("lookupLease beside a mark made %d keys", n)
	}
}

// TestReadStamp: a mark reads as markedStamp, and what is neither a stamp
// nor a mark as missing.
func TestReadStamp(t *testing.T) {
	for v, want := range map[string]uint64{
		"m1:0:123": markedStamp, "m12:1:": markedStamp, "m1": 0, "m1:2:": 0, "m:0:": 0,
		"m1:0:1x": 0, "123": 123, "m": 0, "m1x": 0, "": 0, "0123": 0, "x1": 0,
	} {
		if got := readStamp(v); got != want {
			t.Errorf("readStamp(%q) = %d, want %d", v, got, want)
		}
	}
}

// markEnv is two processes sharing a Redis namespace: a writes through w,
// b reads through its own Connector; raw is lib/pq, outside both.
type markEnv struct {
	a, b   *sql.DB
	ca, cb *Connector
	raw    *sql.DB
	rdb    *redis.Client
}

func newMarkEnv(t *testing.T) *markEnv {
	rdb := testRedis(t)
	a, ca, raw := engineDB(t, rdb)
	must(t, ca.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	var schema string
	must(t, raw.QueryRow(`select current_schema()`).Scan(&schema))
	cb, err := NewConnector(pqDSN(t)+" search_path="+schema, Options{
		Redis: rdb, Prefix: ca.opts.Prefix, Registry: NewRegistry(), Timeout: time.Second,
	})
	must(t, err)
	must(t, cb.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	b := sql.OpenDB(cb)
	t.Cleanup(func() { b.Close() })
	return &markEnv{a: a, b: b, ca: ca, cb: cb, raw: raw, rdb: rdb}
}

// blockRow locks kv's row k on a raw connection until the returned
// function is called: a write to it waits.
func (env *markEnv) blockRow(t *testing.T, k int) (release func()) {
	tx, err := env.raw.Begin()
	must(t, err)
	if _, err := tx.Exec(`select 1 from kv where k = $1 for update`, k); err != nil {
		t.Fatal(err)
	}
	var once atomic.Bool
	release = func() {
		if once.CompareAndSwap(false, true) {
			must(t, tx.Rollback())
		}
	}
	t.Cleanup(release)
	return release
}

// blockedWrite starts a's update of kv's row 1 while the row is locked,
// and returns once the update waits for the lock, its mark in Redis:
// release lets it run; wrote tells how it ended.
func (env *markEnv) blockedWrite(t *testing.T) (release func(), wrote <-chan error) {
	return env.blockedWriteBy(t, func() error {
		_, err := env.a.Exec(`update kv set v = 'new' where k = 1`)
		return err
	})
}

// blockedWriteBy is blockedWrite with a's update of kv's row 1 run by
// write.
func (env *markEnv) blockedWriteBy(t *testing.T, write func() error) (release func(), wrote <-chan error) {
	release = env.blockRow(t, 1)
	done := make(chan error, 1)
	go func() { done <- write() }()
	waitFor(t, func() bool {
		var n int
		must(t, env.raw.QueryRow(`select count(*) from pg_stat_activity
			where wait_event_type = 'Lock' and datname = current_database()`).Scan(&n))
		return n > 0
	})
	waitFor(t, func() bool { return env.stamp(t) == markedStamp })
	return release, done
}

// TestWriteMarksItsTablesWhileItRuns: while a write runs, every process
// reads its tables from Postgres and stores nothing; once its Exec has
// returned, no process serves what it overwrote, even before its mark is
// taken back; then they cache again.
func TestWriteMarksItsTablesWhileItRuns(t *testing.T) {
	env := newMarkEnv(t)
	getV(t, env.b, 1)
	waitFor(t, func() bool { return env.cb.Stats().Fills == 1 })
	if got := getV(t, env.b, 1); got != "v1" || env.cb.Stats().Hits != 1 {
		t.Fatalf("not cached in b: %q, %+v", got, env.cb.Stats().Counters)
	}

	unmark := make(chan struct{})
	env.ca.eng.beforeUnmark = func([]string) { <-unmark }
	release, wrote := env.blockedWrite(t)
	before := env.cb.Stats()
	for _, db := range []*sql.DB{env.b, env.a} {
		if got := getV(t, db, 1); got != "v1" { // not committed yet
			t.Fatal(got)
		}
	}
	if s := env.cb.Stats(); s.Bypass["writing"] != 1 || s.Hits != before.Hits || s.Fills != before.Fills {
		t.Fatalf("b used the cache during the write: %+v", s.Counters)
	}
	if s := env.ca.Stats(); s.Bypass["writing"] != 1 || s.Fills != 0 {
		t.Fatalf("a used the cache during its write: %+v", s.Counters)
	}

	release()
	must(t, <-wrote)
	// The mark is not taken back yet: b reads from Postgres.
	if env.stamp(t) != markedStamp {
		t.Fatal("the mark is gone before it was taken back")
	}
	if got := getV(t, env.b, 1); got != "new" {
		t.Fatalf("b read %q after the write returned", got)
	}
	close(unmark)
	waitFor(t, func() bool { s := env.stamp(t); return s != markedStamp && s != 0 })
	// The purge of kv's entries that the write asked for would delete an
	// entry b stores before it runs.
	env.ca.eng.bg.Wait()
	for _, db := range []*sql.DB{env.b, env.a} {
		if got := getV(t, db, 1); got != "new" {
			t.Fatal(got)
		}
	}
	waitFor(t, func() bool { return env.cb.Stats().Fills == before.Fills+1 })
	if got := getV(t, env.b, 1); got != "new" || env.cb.Stats().Hits != before.Hits+1 {
		t.Fatalf("b does not cache again: %q, %+v", got, env.cb.Stats().Counters)
	}
}

// TestReturningWriteMarksItsTables: a write run through Query (RETURNING)
// marks its tables while it runs, as one through Exec does, and its
// invalidation after its rows' Close takes the mark back.
func TestReturningWriteMarksItsTables(t *testing.T) {
	env := newMarkEnv(t)
	getV(t, env.b, 1)
	waitFor(t, func() bool { return env.cb.Stats().Fills == 1 })
	unmark := make(chan struct{})
	env.ca.eng.beforeUnmark = func([]string) { <-unmark }
	var returned string
	release, wrote := env.blockedWriteBy(t, func() error {
		return env.a.QueryRow(`update kv set v = 'new' where k = 1 returning v`).Scan(&returned)
	})
	if got := getV(t, env.b, 1); got != "v1" || env.cb.Stats().Bypass["writing"] != 1 {
		t.Fatalf("b during the write: %q, %+v", got, env.cb.Stats().Counters)
	}
	release()
	must(t, <-wrote)
	if returned != "new" {
		t.Fatalf("RETURNING gave %q", returned)
	}
	// Close has returned: the mark stands until it is taken back, and b
	// reads the write from Postgres.
	if env.stamp(t) != markedStamp || env.ca.Stats().Invalidations != 1 {
		t.Fatalf("after Close: stamp %d, %+v", env.stamp(t), env.ca.Stats())
	}
	if got := getV(t, env.b, 1); got != "new" {
		t.Fatalf("b read %q after the write's Close", got)
	}
	close(unmark)
	waitFor(t, func() bool { s := env.stamp(t); return s != markedStamp && s != 0 })
	env.ca.eng.bg.Wait() // the purge the write asked for
	fills := env.cb.Stats().Fills
	getV(t, env.b, 1)
	waitFor(t, func() bool { return env.cb.Stats().Fills == fills+1 })
	if got := getV(t, env.b, 1); got != "new" || env.ca.Stats().Invalidations != 1 {
		t.Fatalf("b after the mark was taken back: %q, %+v", got, env.ca.Stats())
	}
}

// stamp reads the stamp of kv in Redis.
func (env *markEnv) stamp(t *testing.T) uint64 {
	v, err := env.rdb.Get(testCtx(t), env.stampKey(t)).Result()
	if err == redis.Nil {
		return 0
	}
	must(t, err)
	return readStamp(v)
}

// stampKey is the key of kv's stamp.
func (env *markEnv) stampKey(t *testing.T) string {
	reg := env.ca.eng.reg.lookup(analyze(`select v from kv where k = $1`))
	if reg == nil || len(reg.tags) == 0 {
		t.Fatal("no tags for kv")
	}
	return env.ca.eng.direct.(*redisBackend).stampKey(reg.tags[0])
}

// TestOwnWriteIsReadWhenItsMarkIsLost: a mark evicted while its write
// runs lets another process store the old rows under a new stamp. The
// writing process still reads its write as soon as its Exec returns: its
// read waits for the mark's taking back, which replaces that stamp.
func TestOwnWriteIsReadWhenItsMarkIsLost(t *testing.T) {
	env := newMarkEnv(t)
	unmark := make(chan struct{})
	env.ca.eng.beforeUnmark = func([]string) { <-unmark }
	release, wrote := env.blockedWrite(t)
	must(t, env.rdb.Del(testCtx(t), env.stampKey(t)).Err()) // evicted
	getV(t, env.b, 1)
	waitFor(t, func() bool { return env.cb.Stats().Fills == 1 }) // the old rows, under a new stamp
	release()
	must(t, <-wrote)
	time.AfterFunc(100*time.Millisecond, func() { close(unmark) })
	if got := getV(t, env.a, 1); got != "new" {
		t.Fatalf("the writing process read %q after its write", got)
	}
}

// TestFailedMarkInvalidatesAfterTheWrite: a mark that fails does not fail
// the write, which invalidates in its own round trip after it, as without
// marks; the failure is a cache error.
func TestFailedMarkInvalidatesAfterTheWrite(t *testing.T) {
	rdb := testRedis(t)
	failing := &failMarks{}
	rdb.AddHook(failing)
	db, c, _ := engineDB(t, rdb)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	getV(t, db, 1)
	waitFor(t, func() bool { return c.Stats().Fills == 1 })
	failing.on.Store(true)
	if _, err := db.Exec(`update kv set v = 'new' where k = 1`); err != nil {
		t.Fatal(err)
	}
	failing.on.Store(false)
	if failing.failed.Load() == 0 {
		t.Fatal("no mark was sent")
	}
	s := c.Stats()
	if s.CacheErrors == 0 || s.Invalidations == 0 {
		t.Fatalf("after a failed mark: %+v", s)
	}
	// The failure makes this process skip the cache until the namespace is
	// invalidated (see engine.fail); once it is, the write is read.
	waitFor(t, func() bool { return !c.Stats().Pending })
	if got := getV(t, db, 1); got != "new" {
		t.Fatalf("read %q after the write", got)
	}
}

// failMarks fails mark scripts while on.
type failMarks struct {
	on     atomic.Bool
	failed atomic.Int32
}

func (h *failMarks) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failMarks) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.on.Load() && isMarkScript(cmd) {
			h.failed.Add(1)
			err := errors.New("mark refused by the test")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (h *failMarks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func isMarkScript(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	v, _ := args[1].(string)
	return v == markScript.Hash() || strings.Contains(v, "'m' .. (n + 1)")
}

// TestReadAfterOwnWriteUsesTheCache: a read that follows a write of its
// process waits for the write's mark to be taken back, then is a miss that
// stores, rather than a read that skips the cache.
func TestReadAfterOwnWriteUsesTheCache(t *testing.T) {
	env := newMarkEnv(t)
	for i := range 20 {
		if _, err := env.a.Exec(`update kv set v = $1 where k = 1`, i); err != nil {
			t.Fatal(err)
		}
		before := env.ca.Stats()
		if got := getV(t, env.a, 1); got != strconv.Itoa(i) {
			t.Fatalf("read %q after writing %d", got, i)
		}
		s := env.ca.Stats()
		if s.Bypass["writing"] != 0 || s.Misses != before.Misses+1 {
			t.Fatalf("the read after write %d: %+v", i, s.Counters)
		}
	}
}

// TestLongWriteInvalidatesAfterIt: a statement that outlasts markTrust
// cannot count on its mark (it may have lapsed, and a reader stored under
// a new stamp): it invalidates after it, which notes the invalidation in
// the mark, and leaves the mark to lapse. Then the tables cache again.
func TestLongWriteInvalidatesAfterIt(t *testing.T) {
	env := newMarkEnv(t)
	unmarks := 0
	env.ca.eng.beforeUnmark = func([]string) { unmarks++ }
	release, wrote := env.blockedWrite(t)
	time.Sleep(markTrust + 50*time.Millisecond)
	release()
	must(t, <-wrote)
	v, err := env.rdb.Get(testCtx(t), env.stampKey(t)).Result()
	must(t, err)
	if !strings.HasPrefix(v, "m1:1:") {
		t.Fatalf("after a long write the stamp is %q, want the mark, noted", v)
	}
	if s := env.ca.Stats(); s.Invalidations != 1 || unmarks != 0 {
		t.Fatalf("a long write: %d unmarks, %+v", unmarks, s)
	}
	if got := getV(t, env.b, 1); got != "new" {
		t.Fatalf("read %q after the write", got)
	}
	waitFor(t, func() bool { return env.stamp(t) != markedStamp }) // lapsed
	getV(t, env.b, 1)
	waitFor(t, func() bool { return env.cb.Stats().Fills == 1 })
	if got := getV(t, env.b, 1); got != "new" || env.cb.Stats().Hits != 1 {
		t.Fatalf("not cached again: %q, %+v", got, env.cb.Stats().Counters)
	}
}

// TestStampScriptsAfterScriptFlush: marks and invalidations of several
// tables go in one pipeline of EVALSHA; a server that lost its scripts
// gets them in full, on a single node and across a Cluster's masters.
func TestStampScriptsAfterScriptFlush(t *testing.T) {
	ctx := testCtx(t)
	tags := []string{"a", "b", "c", "d", "e", "f"}
	check := func(t *testing.T, c redis.UniversalClient, flush func()) {
		s := newRedisStore(c, "flush")
		for _, step := range []struct {
			name string
			do   func() error
			want func(string) bool
		}{
			{"bump", func() error { return s.bump(ctx, tags) }, func(v string) bool { return parseStamp(v) != 0 }},
			{"mark", func() error { return s.mark(ctx, tags) }, func(v string) bool { return strings.HasPrefix(v, "m1:0:") }},
			{"unmark", func() error { return s.unmark(ctx, tags, true) }, func(v string) bool { return parseStamp(v) != 0 }},
		} {
			flush()
			must(t, step.do())
			for _, tag := range tags {
				if v := c.Get(ctx, s.stampKey(tag)).Val(); !step.want(v) {
					t.Fatalf("%s: %s is %q", step.name, tag, v)
				}
			}
		}
	}
	t.Run("node", func(t *testing.T) {
		c := redistest.Start(t).Client()
		check(t, c, func() { must(t, c.ScriptFlush(ctx).Err()) })
	})
	t.Run("cluster", func(t *testing.T) {
		cluster := redistest.StartCluster(t, 3)
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs})
		t.Cleanup(func() { cc.Close() })
		check(t, cc, func() {
			must(t, cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
				return c.ScriptFlush(ctx).Err()
			}))
		})
	})
}

// FuzzReadStamp: readStamp reads a mark where the scripts' pattern
// ^m%d+:[01]:%d*$ matches, and a stamp as parseStamp does otherwise.
func FuzzReadStamp(f *testing.F) {
	for _, s := range []string{"m1:0:123", "m", "m1", "123", "m1\n", "m:", "0", "18446744073709551615", "m1:1:"} {
		f.Add(s)
	}
	markPattern := regexp.MustCompile(`^m[0-9]+:[01]:[0-9]*$`)
	f.Fuzz(func(t *testing.T, s string) {
		mark := markPattern.MatchString(s)
		got := readStamp(s)
		switch {
		case mark && got != markedStamp:
			t.Fatalf("readStamp(%q) = %d, want a mark", s, got)
		case !mark && got != parseStamp(s):
			t.Fatalf("readStamp(%q) = %d, parseStamp %d", s, got, parseStamp(s))
		case got != markedStamp && got >= stampLimit:
			t.Fatalf("readStamp(%q) = %d, no stamp", s, got)
		}
	})
}

// TestCommitMarksItsTables: a transaction's tables are marked beside its
// COMMIT; once Commit has returned, no process serves what it overwrote.
// A COMMIT that fails (a deferred constraint) invalidates nothing: the
// stamps it marked are put back.
func TestCommitMarksItsTables(t *testing.T) {
	env := newMarkEnv(t)
	_, err := env.raw.Exec(`alter table kv add constraint kv_v unique (v) deferrable initially deferred`)
	must(t, err)
	getV(t, env.b, 1)
	waitFor(t, func() bool { return env.cb.Stats().Fills == 1 })
	old := env.stamp(t)

	tx, err := env.a.Begin()
	must(t, err)
	_, err = tx.Exec(`update kv set v = 'v2' where k = 1`) // v2 is k 2's: refused at COMMIT
	must(t, err)
	if err := tx.Commit(); err == nil {
		t.Fatal("the deferred constraint let the commit through")
	}
	waitFor(t, func() bool { return env.stamp(t) != markedStamp })
	if s := env.stamp(t); s != old || env.ca.Stats().Invalidations != 0 {
		t.Fatalf("a failed COMMIT: stamp %d (was %d), %+v", s, old, env.ca.Stats())
	}
	if got := getV(t, env.b, 1); got != "v1" || env.cb.Stats().Hits != 1 {
		t.Fatalf("after a failed COMMIT b read %q: %+v", got, env.cb.Stats().Counters)
	}

	unmark := make(chan struct{})
	env.ca.eng.beforeUnmark = func([]string) { <-unmark }
	tx, err = env.a.Begin()
	must(t, err)
	_, err = tx.Exec(`update kv set v = 'new' where k = 1`)
	must(t, err)
	must(t, tx.Commit())
	if env.stamp(t) != markedStamp || env.ca.Stats().Invalidations != 1 {
		t.Fatalf("after COMMIT: stamp %d, %+v", env.stamp(t), env.ca.Stats())
	}
	if got := getV(t, env.b, 1); got != "new" || env.cb.Stats().Bypass["writing"] != 1 {
		t.Fatalf("b read %q after the COMMIT: %+v", got, env.cb.Stats().Counters)
	}
	close(unmark)
	waitFor(t, func() bool { return env.stamp(t) != markedStamp })
	if s := env.stamp(t); s == old || s == 0 {
		t.Fatalf("the mark taken back left %d", s)
	}
}
