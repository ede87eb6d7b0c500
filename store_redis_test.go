package cachedpq

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachedpq/cachedpq/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// testRedis returns a client of the shared test Redis (CACHEDPQ_TEST_REDIS,
// default 127.0.0.1:6379), skipping the test when it is down, or failing it
// when CI=true.
func testRedis(t testing.TB) *redis.Client {
	t.Helper()
	addr := os.Getenv("CACHEDPQ_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(testCtx(t)).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis at %s: %v", addr, err)
		}
		t.Skipf("redis at %s: %v", addr, err)
	}
	return c
}

// testPrefix returns a key prefix no other test uses and, on a shared
// server, deletes its keys at cleanup (SCAN MATCH is fine in a test).
func testPrefix(t testing.TB, c redis.UniversalClient) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "cachedpqtest:" + hex.EncodeToString(b[:])
	t.Cleanup(func() { deletePrefix(c, prefix) })
	return prefix
}

// deletePrefix unlinks every key under prefix.
func deletePrefix(c redis.UniversalClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		c.Unlink(ctx, iter.Val())
	}
}

// redisUnderTest adapts redisStore to the suite.
type redisUnderTest struct{ *redisStore }

func (r redisUnderTest) lookup(ctx context.Context, key string, tags []string) ([]byte, []uint64, error) {
	return r.redisStore.lookup(ctx, key, tags, nil)
}

func (r redisUnderTest) dropStamp(ctx context.Context, tag string) error {
	return r.c.(redis.UniversalClient).Del(ctx, r.stampKey(tag)).Err()
}

// redisFactory returns a suite factory for stores over c, each under its
// own prefix.
func redisFactory(c redis.UniversalClient) storeFactory {
	return func(t *testing.T) (storeUnderTest, func(string) string) {
		prefix := testPrefix(t, c)
		return redisUnderTest{newRedisStore(c, prefix)}, func(name string) string { return prefix + ":e:" + name }
	}
}

func TestRedisStoreSuite(t *testing.T) {
	runStoreSuite(t, redisFactory(testRedis(t)))
}

func TestRedisStoreClusterSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	cluster := redistest.StartCluster(t, 3)
	runStoreSuite(t, redisFactory(cluster.Client()))
}

// TestRedisStoreForeignStamp plants values that are not stamps under a
// stamp key: each reads as 0 and readStamps replaces it with a fresh one.
func TestRedisStoreForeignStamp(t *testing.T) {
	c := testRedis(t)
	tests := []struct {
		name  string
		plant func(ctx context.Context, key string) error
	}{
		{"text", setString(c, "garbage")},
		{"empty", setString(c, "")},
		{"zero", setString(c, "0")},
		{"negative", setString(c, "-1")},
		{"overflow", setString(c, "18446744073709551616")},
		{"spaces", setString(c, " 42")},
		{"raw bytes", setString(c, "\x00\x01\x02\x03\x04\x05\x06\x07")},
		{"a list", func(ctx context.Context, key string) error { return c.RPush(ctx, key, "1").Err() }},
		{"a hash", func(ctx context.Context, key string) error { return c.HSet(ctx, key, "f", "1").Err() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := newRedisStore(c, testPrefix(t, c))
			must(t, tt.plant(ctx, s.stampKey("t")))
			_, seen, err := s.lookup(ctx, "absent", []string{"t"}, nil)
			must(t, err)
			if seen[0] != 0 {
				t.Fatalf("foreign stamp reads %d, want 0", seen[0])
			}
			fresh, err := s.readStamps(ctx, []string{"t"})
			must(t, err)
			stored, err := c.Get(ctx, s.stampKey("t")).Result()
			must(t, err)
			if fresh[0] == 0 || stored != strconv.FormatUint(fresh[0], 10) {
				t.Fatalf("readStamps = %d, stored %q", fresh[0], stored)
			}
		})
	}
}

// setString plants a string value.
func setString(c *redis.Client, v string) func(ctx context.Context, key string) error {
	return func(ctx context.Context, key string) error { return c.Set(ctx, key, v, 0).Err() }
}

func TestRedisStoreForeignEntryIsAMiss(t *testing.T) {
	c := testRedis(t)
	ctx := testCtx(t)
	s := newRedisStore(c, testPrefix(t, c))
	key := s.prefix + ":e:k"
	must(t, c.RPush(ctx, key, "not an entry").Err())
	val, _, err := s.lookup(ctx, key, nil, nil)
	if err != nil || val != nil {
		t.Fatalf("lookup of a list = %q, %v; want a miss", val, err)
	}
	must(t, s.fill(ctx, key, []byte("v"), time.Minute, nil))
	if val, _, _ := s.lookup(ctx, key, nil, nil); string(val) != "v" {
		t.Fatalf("fill over a foreign value: lookup = %q", val)
	}
}

// roundTrips counts the commands and pipelines a client sends.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !isSetUp(cmd) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !isSetUp(cmds[0]) {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// isSetUp reports the commands go-redis sends on a new connection.
func isSetUp(cmd redis.Cmder) bool {
	return cmd.Name() == "hello" || cmd.Name() == "client"
}

// TestRedisStoreRoundTrips checks the one-round-trip promise of each
// operation on the hot and write paths.
func TestRedisStoreRoundTrips(t *testing.T) {
	base := testRedis(t)
	c := redis.NewClient(base.Options())
	t.Cleanup(func() { c.Close() })
	must(t, c.Ping(testCtx(t)).Err()) // connect before counting
	hook := &roundTrips{}
	c.AddHook(hook)
	s := newRedisStore(c, testPrefix(t, c))
	tags := []string{"a", "b", "c"}
	key := s.prefix + ":e:k"
	tests := []struct {
		name string
		op   func(ctx context.Context) error
	}{
		{"readStamps", func(ctx context.Context) error { _, err := s.readStamps(ctx, tags); return err }},
		{"fill", func(ctx context.Context) error { return s.fill(ctx, key, []byte("v"), time.Minute, tags) }},
		{"lookup", func(ctx context.Context) error { _, _, err := s.lookup(ctx, key, tags, nil); return err }},
		{"bump", func(ctx context.Context) error { return s.bump(ctx, tags) }},
		{"remove", func(ctx context.Context) error { return s.remove(ctx, key, key+"2") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := hook.n.Load()
			must(t, tt.op(testCtx(t)))
			if n := hook.n.Load() - before; n != 1 {
				t.Fatalf("%s took %d round trips, want 1", tt.name, n)
			}
		})
	}
}

// TestRedisStoreIndex checks the tag index: its TTL outlives its entries,
// fills trim members of long-expired entries, and purge works in batches.
func TestRedisStoreIndex(t *testing.T) {
	c := testRedis(t)
	t.Run("ttl never below the entry's", func(t *testing.T) {
		ctx := testCtx(t)
		s := newRedisStore(c, testPrefix(t, c))
		idx := s.indexKey("t")
		for _, ttl := range []time.Duration{time.Hour, time.Minute, 2 * time.Hour} {
			must(t, s.fill(ctx, s.prefix+":e:"+ttl.String(), []byte("v"), ttl, []string{"t"}))
		}
		got, err := c.PTTL(ctx, idx).Result()
		must(t, err)
		if got < 2*time.Hour || got > 2*time.Hour+2*indexSlack {
			t.Fatalf("index ttl %v, want just over 2h", got)
		}
	})
	t.Run("fill trims long-expired members", func(t *testing.T) {
		ctx := testCtx(t)
		s := newRedisStore(c, testPrefix(t, c))
		idx := s.indexKey("t")
		dead := float64(time.Now().Add(-2 * indexSlack).UnixMilli())
		must(t, c.ZAdd(ctx, idx, redis.Z{Score: dead, Member: "gone"}).Err())
		must(t, s.fill(ctx, s.prefix+":e:k", []byte("v"), time.Minute, []string{"t"}))
		members, err := c.ZRange(ctx, idx, 0, -1).Result()
		must(t, err)
		if len(members) != 1 || members[0] != s.prefix+":e:k" {
			t.Fatalf("index members %v, want only the live entry", members)
		}
	})
	t.Run("purge in batches", func(t *testing.T) {
		ctx := testCtx(t)
		s := newRedisStore(c, testPrefix(t, c))
		n := 2*purgeBatch + 17
		pipe := c.Pipeline()
		for i := range n {
			key := s.prefix + ":e:" + strconv.Itoa(i)
			pipe.Set(ctx, key, "v", time.Minute)
			pipe.ZAdd(ctx, s.indexKey("t"), redis.Z{Score: 1e15, Member: key})
		}
		_, err := pipe.Exec(ctx)
		must(t, err)
		must(t, s.fill(ctx, s.prefix+":e:other", []byte("v"), time.Minute, []string{"u"}))
		must(t, s.purge(ctx, []string{"t"}))
		left, err := c.Exists(ctx, s.indexKey("t"), s.prefix+":e:0", s.prefix+":e:"+strconv.Itoa(n-1)).Result()
		must(t, err)
		if left != 0 {
			t.Fatalf("%d of the index and its entries survived the purge", left)
		}
		if v, _, _ := s.lookup(ctx, s.prefix+":e:other", nil, nil); v == nil {
			t.Fatal("purge removed an entry of another tag")
		}
	})
}

// TestRedisStoreForeignIndex plants values of other types under tag
// indexes: a fill still stores its entry and replaces them with indexes of
// it, and a purge reads them as empty indexes and unlinks them. Neither
// fails, which would cost the engine an invalidation of everything.
func TestRedisStoreForeignIndex(t *testing.T) {
	c := testRedis(t)
	plant := func(ctx context.Context, s *redisStore) {
		must(t, c.Set(ctx, s.indexKey("a"), "foreign", 0).Err())
		must(t, c.HSet(ctx, s.indexKey("b"), "f", "1").Err())
	}
	t.Run("fill", func(t *testing.T) {
		ctx := testCtx(t)
		s := newRedisStore(c, testPrefix(t, c))
		plant(ctx, s)
		key := s.prefix + ":e:k"
		must(t, s.fillReleasing(ctx, key, []byte("v"), time.Minute, []string{"a", "b", "c"}, 0))
		if v, _, _ := s.lookup(ctx, key, nil, nil); string(v) != "v" {
			t.Fatalf("entry = %q", v)
		}
		for _, tag := range []string{"a", "b", "c"} {
			if members, err := c.ZRange(ctx, s.indexKey(tag), 0, -1).Result(); err != nil || len(members) != 1 || members[0] != key {
				t.Fatalf("index of %s = %v, %v", tag, members, err)
			}
		}
	})
	t.Run("purge", func(t *testing.T) {
		ctx := testCtx(t)
		s := newRedisStore(c, testPrefix(t, c))
		key := s.prefix + ":e:k"
		must(t, s.fill(ctx, key, []byte("v"), time.Minute, []string{"c"}))
		plant(ctx, s)
		must(t, s.purge(ctx, []string{"a", "b", "c"}))
		if left, err := c.Exists(ctx, s.indexKey("a"), s.indexKey("b"), s.indexKey("c"), key).Result(); err != nil || left != 0 {
			t.Fatalf("%d of the indexes and the entry survived the purge (%v)", left, err)
		}
	})
}

// TestRedisStoreDown checks that every operation reports an error, and
// neither hangs nor panics, when Redis is gone.
func TestRedisStoreDown(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	s := newRedisStore(c, "down")
	must(t, s.ping(testCtx(t)))
	srv.Kill()
	tags := []string{"t"}
	ops := map[string]func(ctx context.Context) error{
		"ping":       s.ping,
		"lookup":     func(ctx context.Context) error { _, _, err := s.lookup(ctx, "k", tags, nil); return err },
		"readStamps": func(ctx context.Context) error { _, err := s.readStamps(ctx, tags); return err },
		"fill":       func(ctx context.Context) error { return s.fill(ctx, "k", []byte("v"), time.Minute, tags) },
		"bump":       func(ctx context.Context) error { return s.bump(ctx, tags) },
		"purge":      func(ctx context.Context) error { return s.purge(ctx, tags) },
		"remove":     func(ctx context.Context) error { return s.remove(ctx, "k") },
		"lease":      func(ctx context.Context) error { _, _, err := s.acquireLease(ctx, "k", "s1", time.Second); return err },
		"release":    func(ctx context.Context) error { return s.releaseLease(ctx, "k", 1) },
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			if err := op(testCtx(t)); err == nil {
				t.Fatalf("%s succeeded with Redis down", name)
			}
		})
	}
}

// stampTexts are values found under stamp keys: stamps as formatStamp
// writes them, and foreign ones close to them.
var stampTexts = []string{
	"1", "7", "9999999999999999999", "4242424242424242424",
	"0", "", "007", "-1", "+1", "-0", "1.5", "1e5", "0x10", " 1", "1 ", "abc",
	"10000000000000000000", "18446744073709551615", "18446744073709551616",
}

func TestParseStamp(t *testing.T) {
	tests := map[string]uint64{
		"1": 1, "7": 7, "9999999999999999999": stampLimit - 1, "4242424242424242424": 4242424242424242424,
	}
	for _, in := range stampTexts {
		if got, want := parseStamp(in), tests[in]; got != want {
			t.Errorf("parseStamp(%q) = %d, want %d", in, got, want)
		}
	}
	for range 1000 {
		if v := newStamp(); v == 0 || v >= stampLimit || parseStamp(formatStamp(v)) != v {
			t.Fatalf("newStamp() = %d: not a stamp parseStamp reads back", v)
		}
	}
}

// TestStampScriptAgrees checks that lookupScript judges each value under a
// stamp key as parseStamp does: it keeps the stamps parseStamp reads, and
// replaces the others. Were they to differ, the script's lease and Go's
// reading of the same stamp would disagree.
func TestStampScriptAgrees(t *testing.T) {
	c := testRedis(t)
	ctx := testCtx(t)
	s := newRedisStore(c, testPrefix(t, c))
	for i, text := range stampTexts {
		key := fmt.Sprintf("%s:e:%d", s.prefix, i)
		must(t, c.Set(ctx, s.stampKey("a"), text, 0).Err())
		_, stamps, _, err := lookupLeaseAs(ctx, s, key, []string{"a"}, time.Minute, false)
		must(t, err)
		stored := c.Get(ctx, s.stampKey("a")).Val()
		if want := parseStamp(text); want != 0 && (stamps[0] != want || stored != text) {
			t.Errorf("stamp %q: the script read %d and left %q; parseStamp reads %d", text, stamps[0], stored, want)
		}
		if parseStamp(text) == 0 && (stamps[0] == 0 || stored != formatStamp(stamps[0])) {
			t.Errorf("foreign stamp %q: the script read %d and left %q; it should replace it", text, stamps[0], stored)
		}
	}
}

// FuzzParseStamp checks that whatever is stored under a stamp key, a
// non-zero reading is exactly the text formatStamp writes for it, so no
// foreign value can pass for a stamp: two texts never read as one stamp.
func FuzzParseStamp(f *testing.F) {
	for _, s := range stampTexts {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := parseStamp(s)
		if v != 0 && (formatStamp(v) != s || v >= stampLimit) {
			t.Fatalf("%q reads as %d, which is written %q", s, v, formatStamp(v))
		}
	})
}

// lookupLeaseAs is s.lookupLease under a fresh token; tok is that token if
// the lookup took the lease, 0 if not.
func lookupLeaseAs(ctx context.Context, s *redisStore, key string, tags []string, ttl time.Duration, always bool) (val []byte, stamps []uint64, tok uint64, err error) {
	token := newStamp()
	val, stamps, holder, err := s.lookupLease(ctx, key, tags, ttl, always, token)
	if holder != token {
		token = 0
	}
	return val, stamps, token, err
}

// TestRedisStoreLookupLease checks the one-round-trip miss: a lookup that
// finds no entry creates the missing stamps and takes the fill lease for
// them, once; a write's new stamps void the lease; a present entry takes
// no lease unless asked to.
func TestRedisStoreLookupLease(t *testing.T) {
	c := testRedis(t)
	ctx := testCtx(t)
	s := newRedisStore(c, testPrefix(t, c))
	if !s.scripts {
		t.Fatal("a single-node client runs no scripts")
	}
	key, tags := s.prefix+":e:k", []string{"a", "b"}
	val, stamps, tok, err := lookupLeaseAs(ctx, s, key, tags, time.Minute, false)
	must(t, err)
	if val != nil || tok == 0 || stamps[0] == 0 || stamps[1] == 0 {
		t.Fatalf("first miss = %q, %v, token %d", val, stamps, tok)
	}
	if now, err := s.readStamps(ctx, tags); err != nil || now[0] != stamps[0] || now[1] != stamps[1] {
		t.Fatalf("stamps created %v, read back %v, %v", stamps, now, err)
	}
	if stored := c.Get(ctx, leaseKey(key)).Val(); stored != formatStamp(tok)+"|"+stampTag(stamps) {
		t.Fatalf("lease stored as %q", stored)
	}
	if _, again, holder, err := s.lookupLease(ctx, key, tags, time.Minute, false, newStamp()); err != nil || holder != tok || again[0] != stamps[0] {
		t.Fatalf("second miss under the same stamps = %v, holder %d (want %d), %v", again, holder, tok, err)
	}
	must(t, s.bump(ctx, tags[1:]))
	_, fresh, tok3, err := lookupLeaseAs(ctx, s, key, tags, time.Minute, false)
	must(t, err)
	if tok3 == 0 || fresh[1] == stamps[1] {
		t.Fatalf("miss after a write = %v, token %d: the old lease still holds", fresh, tok3)
	}
	must(t, s.releaseLease(ctx, key, tok)) // the voided holder lets go of nothing
	if c.Exists(ctx, leaseKey(key)).Val() != 1 {
		t.Fatal("the voided holder released its successor's lease")
	}
	must(t, s.releaseLease(ctx, key, tok3))
	// A value is current while the stamps it begins with are.
	cur := stampTag(fresh) + "|entry"
	must(t, s.fill(ctx, key, []byte(cur), time.Minute, tags))
	val, _, tok4, err := lookupLeaseAs(ctx, s, key, tags, time.Minute, false)
	if err != nil || string(val) != cur || tok4 != 0 {
		t.Fatalf("hit = %q, token %d, %v", val, tok4, err)
	}
	val, _, tok5, err := lookupLeaseAs(ctx, s, key, tags, time.Minute, true)
	if err != nil || string(val) != cur || tok5 == 0 {
		t.Fatalf("hit asking for the lease = %q, token %d, %v", val, tok5, err)
	}
	must(t, s.releaseLease(ctx, key, tok5))
	// After a write the value is stale: it comes back with the lease taken,
	// so that its miss costs no second round trip.
	must(t, s.bump(ctx, tags[:1]))
	val, _, tok6, err := lookupLeaseAs(ctx, s, key, tags, time.Minute, false)
	if err != nil || string(val) != cur || tok6 == 0 {
		t.Fatalf("stale entry = %q, token %d, %v", val, tok6, err)
	}
	// So does a value without stamps, as older versions stored.
	must(t, s.releaseLease(ctx, key, tok6))
	must(t, s.fill(ctx, key, []byte("entry"), time.Minute, tags))
	if val, _, tok7, err := lookupLeaseAs(ctx, s, key, tags, time.Minute, false); err != nil || string(val) != "entry" || tok7 == 0 {
		t.Fatalf("unstamped entry = %q, token %d, %v", val, tok7, err)
	}
}

// TestRedisStoreLookupLeaseForeign plants foreign values under the entry,
// a stamp and the lease: the entry reads as absent, the stamp is replaced
// and the lease taken over, as without the script.
func TestRedisStoreLookupLeaseForeign(t *testing.T) {
	c := testRedis(t)
	ctx := testCtx(t)
	s := newRedisStore(c, testPrefix(t, c))
	key := s.prefix + ":e:k"
	must(t, c.HSet(ctx, key, "f", "1").Err())
	must(t, c.Set(ctx, s.stampKey("a"), "007", 0).Err())
	must(t, c.RPush(ctx, s.stampKey("b"), "1").Err())
	must(t, c.Set(ctx, leaseKey(key), "no bar here", 0).Err())
	val, stamps, tok, err := lookupLeaseAs(ctx, s, key, []string{"a", "b"}, time.Minute, false)
	must(t, err)
	if val != nil || tok == 0 || stamps[0] == 0 || stamps[0] == 7 || stamps[1] == 0 {
		t.Fatalf("lookup over foreign values = %q, %v, token %d", val, stamps, tok)
	}
	if got := c.Get(ctx, s.stampKey("a")).Val(); got != formatStamp(stamps[0]) {
		t.Fatalf("stamp stored as %q, read %d", got, stamps[0])
	}
	must(t, c.Set(ctx, key, "", 0).Err())
	if val, _, _, err := lookupLeaseAs(ctx, s, key, []string{"a", "b"}, time.Minute, false); err != nil || val == nil {
		t.Fatalf("an empty value reads as %v, %v: absent, not foreign", val, err)
	}
}

func TestRedisStoreClusterRunsNoScripts(t *testing.T) {
	if s := newRedisStore(redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}}), "p"); s.scripts {
		t.Fatal("a cluster client would run a script over keys on several nodes")
	}
}

// TestLeaseByGuess checks the lease pipeline against the script it stands
// in for: it settles a lookup only when the stamps it guessed are the
// current ones and the lease is free, or held under them; otherwise
// lookupLease runs the script, whose answer names the current stamps. A
// lease taken beside a current entry is given back.
func TestLeaseByGuess(t *testing.T) {
	c := testRedis(t)
	ctx := testCtx(t)
	s := newRedisStore(c, testPrefix(t, c))
	key, tags := s.prefix+":e:g", []string{"a", "b"}
	if _, ok := s.guess(tags); ok {
		t.Fatal("a guess before any stamp was seen")
	}
	stamps, err := s.readStamps(ctx, tags)
	must(t, err)
	guess, ok := s.guess(tags)
	if !ok || string(guess) != stampTag(stamps) {
		t.Fatalf("guess %q after reading %v", guess, stamps)
	}
	leaseOf := func() string { return c.Get(ctx, leaseKey(key)).Val() }

	// A right guess: the pipeline takes the lease, or names its holder.
	tok := newStamp()
	_, got, holder, upkeep, done, err := s.leaseByGuess(ctx, key, tags, time.Minute, false, tok, guess)
	must(t, err)
	if !done || holder != tok || upkeep != nil || !slices.Equal(got, stamps) {
		t.Fatalf("right guess = %v, holder %d, done %v", got, holder, done)
	}
	if leaseOf() != formatStamp(tok)+"|"+stampTag(stamps) {
		t.Fatalf("lease stored as %q", leaseOf())
	}
	if _, _, h, _, done, _ := s.leaseByGuess(ctx, key, tags, time.Minute, false, newStamp(), guess); !done || h != tok {
		t.Fatalf("a second lookup: holder %d (want %d), done %v", h, tok, done)
	}

	// Another process writes: the guess is stale. The pipeline does not
	// settle, the script replaces the lease held under the old stamps.
	must(t, c.Set(ctx, s.stampKey("b"), formatStamp(newStamp()), 0).Err())
	tok2 := newStamp()
	if _, _, _, _, done, err := s.leaseByGuess(ctx, key, tags, time.Minute, false, tok2, guess); err != nil || done {
		t.Fatalf("a stale guess settled the lookup: %v", err)
	}
	must(t, c.Set(ctx, s.stampKey("a"), formatStamp(newStamp()), 0).Err())
	_, now, holder, err := s.lookupLease(ctx, key, tags, time.Minute, false, tok2)
	must(t, err)
	if holder != tok2 || leaseOf() != formatStamp(tok2)+"|"+stampTag(now) {
		t.Fatalf("after another's write: holder %d (want %d), lease %q, stamps %v", holder, tok2, leaseOf(), now)
	}
	if g, _ := s.guess(tags); string(g) != stampTag(now) {
		t.Fatalf("the guess %q did not learn the stamps %v", g, now)
	}

	// A current entry: the lease the pipeline took is given back.
	must(t, s.releaseLease(ctx, key, tok2))
	cur := stampTag(now) + "|entry"
	must(t, s.fill(ctx, key, []byte(cur), time.Minute, tags))
	val, _, holder, err := s.lookupLease(ctx, key, tags, time.Minute, false, newStamp())
	if err != nil || string(val) != cur || holder != 0 {
		t.Fatalf("hit = %q, holder %d, %v", val, holder, err)
	}
	if n := c.Exists(ctx, leaseKey(key)).Val(); n != 0 {
		t.Fatalf("the hit left the lease it took: %q", leaseOf())
	}

	// A stamp gone (evicted): the script creates it.
	must(t, c.Del(ctx, s.stampKey("a")).Err())
	tok3 := newStamp()
	if _, _, _, _, done, _ := s.leaseByGuess(ctx, key, tags, time.Minute, false, tok3, guess); done {
		t.Fatal("a missing stamp settled the lookup")
	}
	_, fresh, holder, err := s.lookupLease(ctx, key, tags, time.Minute, false, tok3)
	must(t, err)
	if fresh[0] == 0 || fresh[0] == now[0] || holder != tok3 {
		t.Fatalf("after eviction: stamps %v (before %v), holder %d", fresh, now, holder)
	}
}

// TestInvalidationReachesAFullRedis: a Redis over its maxmemory under the
// default policy, noeviction, refuses every command that may grow it (SET
// included) but still answers reads and deletions. A write's invalidation
// must still void the entries other processes serve: another Connector
// sharing the prefix, whose key is hot (a plain MGET, no lease), must not
// go on serving the old row.
func TestInvalidationReachesAFullRedis(t *testing.T) {
	srv := redistest.Start(t, "--maxmemory-policy", "noeviction")
	rdb := srv.Client()
	reader, c := cachedKV(t, rdb)
	writerConn, err := NewConnector(pqDSN(t)+" search_path="+c.opts.Prefix, Options{
		Redis: srv.Client(), Prefix: c.opts.Prefix, Registry: c.opts.Registry, Timeout: time.Second,
	})
	must(t, err)
	writer := sql.OpenDB(writerConn)
	t.Cleanup(func() { writer.Close() })
	must(t, writer.Ping())

	ctx := context.Background()
	store := c.eng.direct.(*redisBackend).redisStore
	tags := []string{"a", "b"}
	stamps, err := store.readStamps(ctx, tags)
	must(t, err)
	must(t, rdb.ConfigSet(ctx, "maxmemory", "1").Err()) // full from now on
	if err := rdb.Set(ctx, "probe", "x", 0).Err(); err == nil {
		t.Fatal("a full Redis took a SET")
	}
	if _, err := writer.Exec(`update kv set v = 'new' where k = 1`); err != nil {
		t.Fatal(err)
	}
	if got := getV(t, reader, 1); got != "new" {
		t.Fatalf("the other process served %q after a write to a full Redis", got)
	}
	// A write of several tables bumps them in a pipeline.
	if err := store.bump(ctx, tags); err != nil {
		t.Fatalf("bump on a full Redis: %v", err)
	}
	if _, now, _ := store.lookup(ctx, "k", tags, nil); now[0] == stamps[0] || now[1] == stamps[1] {
		t.Fatalf("stamps %v before the bump, %v after", stamps, now)
	}
}
