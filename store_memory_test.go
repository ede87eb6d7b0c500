package cachedpq

import (
	"bytes"
	"context"
	"database/sql/driver"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// storeUnderTest is the stamp protocol as the shared suite drives it: both
// stores, values as bytes, plus a way to lose a stamp as an eviction would.
type storeUnderTest interface {
	lookup(ctx context.Context, key string, tags []string) ([]byte, []uint64, error)
	readStamps(ctx context.Context, tags []string) ([]uint64, error)
	fill(ctx context.Context, key string, val []byte, ttl time.Duration, tags []string) error
	bump(ctx context.Context, tags []string) error
	purge(ctx context.Context, tags []string) error
	remove(ctx context.Context, keys ...string) error
	acquireLease(ctx context.Context, key, tag string, ttl time.Duration) (uint64, bool, error)
	releaseLease(ctx context.Context, key string, token uint64) error
	dropStamp(ctx context.Context, tag string) error
}

// storeFactory makes an empty store for one test, and the entry key for a
// short name in it.
type storeFactory func(t *testing.T) (st storeUnderTest, key func(name string) string)

// memUnderTest adapts memStore to the suite: a value travels as the only
// cell of an entry's snapshot.
type memUnderTest struct{ *memStore }

func (m memUnderTest) lookup(ctx context.Context, key string, tags []string) ([]byte, []uint64, error) {
	e, stamps, err := m.memStore.lookup(ctx, key, tags, nil)
	if e == nil {
		return nil, stamps, err
	}
	return e.snap.rows[0][0].([]byte), stamps, err
}

func (m memUnderTest) fill(ctx context.Context, key string, val []byte, ttl time.Duration, tags []string) error {
	return m.memStore.fill(ctx, key, bytesEntry(val), ttl, tags)
}

func (m memUnderTest) dropStamp(_ context.Context, tag string) error {
	m.memStore.dropStamp(tag)
	return nil
}

// bytesEntry wraps val in an entry whose size is len(val).
func bytesEntry(val []byte) *entry {
	return &entry{snap: snapshot{rows: [][]driver.Value{{val}}}, size: len(val)}
}

// newMemUnderTest is the memStore factory of the suite.
func newMemUnderTest(t *testing.T) (storeUnderTest, func(string) string) {
	s := newMemStore(0)
	t.Cleanup(s.close)
	return memUnderTest{s}, func(name string) string { return "cachedpq:t:" + name }
}

// testCtx returns a context that ends with the test or after 30 s.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// must fails the test on err.
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// runStoreSuite runs the semantics both stores share.
func runStoreSuite(t *testing.T, newStore storeFactory) {
	tests := []struct {
		name string
		run  func(t *testing.T, st storeUnderTest, key func(string) string)
	}{
		{"miss on never seen tags reads zeros", suiteMiss},
		{"readStamps creates fresh non-zero stamps once", suiteReadStamps},
		{"hit returns the value and current stamps", suiteHit},
		{"bump replaces only the bumped stamps", suiteBump},
		{"a fill racing a bump is detectably stale", suiteStaleFill},
		{"a missing stamp reads 0 and is recreated different", suiteMissingStamp},
		{"fill expires after its ttl", suiteTTL},
		{"fill with a non-positive ttl fails", suiteBadTTL},
		{"purge removes indexed entries and only those", suitePurge},
		{"remove deletes keys", suiteRemove},
		{"lease is exclusive and released by its token", suiteLease},
		{"lease under other stamps is void", suiteLeaseStamps},
		{"lease expires", suiteLeaseExpiry},
		{"concurrent fills, lookups, bumps and purges", suiteConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, key := newStore(t)
			tt.run(t, st, key)
		})
	}
}

func suiteMiss(t *testing.T, st storeUnderTest, key func(string) string) {
	val, stamps, err := st.lookup(testCtx(t), key("nothing"), []string{"a", "b"})
	must(t, err)
	if val != nil || !slices.Equal(stamps, []uint64{0, 0}) {
		t.Fatalf("lookup = %q, %v; want nil, [0 0]", val, stamps)
	}
	_, stamps, err = st.lookup(testCtx(t), key("nothing"), nil)
	if err != nil || len(stamps) != 0 {
		t.Fatalf("lookup without tags = %v, %v", stamps, err)
	}
}

func suiteReadStamps(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	first, err := st.readStamps(ctx, []string{"a", "b"})
	must(t, err)
	if first[0] == 0 || first[1] == 0 || first[0] == first[1] {
		t.Fatalf("fresh stamps %v: want distinct and non-zero", first)
	}
	again, err := st.readStamps(ctx, []string{"b", "a"})
	must(t, err)
	if again[0] != first[1] || again[1] != first[0] {
		t.Fatalf("second read %v, want %v reversed", again, first)
	}
	_, seen, err := st.lookup(ctx, key("k"), []string{"a", "b"})
	must(t, err)
	if !slices.Equal(seen, first) {
		t.Fatalf("lookup stamps %v, want %v", seen, first)
	}
}

func suiteHit(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	tags := []string{"users", "orders"}
	stamps, err := st.readStamps(ctx, tags)
	must(t, err)
	must(t, st.fill(ctx, key("k"), []byte("value"), time.Minute, tags))
	val, got, err := st.lookup(ctx, key("k"), tags)
	must(t, err)
	if string(val) != "value" || !slices.Equal(got, stamps) {
		t.Fatalf("lookup = %q, %v; want value, %v", val, got, stamps)
	}
}

func suiteBump(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	before, err := st.readStamps(ctx, []string{"a", "b"})
	must(t, err)
	must(t, st.bump(ctx, []string{"a"}))
	_, after, err := st.lookup(ctx, key("k"), []string{"a", "b"})
	must(t, err)
	if after[0] == before[0] || after[0] == 0 || after[1] != before[1] {
		t.Fatalf("after bump of a: %v -> %v", before, after)
	}
	reread, err := st.readStamps(ctx, []string{"a"})
	must(t, err)
	if reread[0] != after[0] {
		t.Fatalf("readStamps after bump %v, lookup saw %v", reread, after)
	}
	must(t, st.bump(ctx, []string{"never-read"})) // bumping a new tag creates it
	_, fresh, err := st.lookup(ctx, key("k"), []string{"never-read"})
	if err != nil || fresh[0] == 0 {
		t.Fatalf("bumped new tag reads %v, %v", fresh, err)
	}
}

// suiteStaleFill plays the race the stamps exist for: a reader reads the
// stamps, a write commits and bumps, the reader fills its older result.
func suiteStaleFill(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	tags := []string{"t"}
	read, err := st.readStamps(ctx, tags)
	must(t, err)
	must(t, st.bump(ctx, tags))
	must(t, st.fill(ctx, key("k"), []byte("old rows"), time.Minute, tags))
	_, now, err := st.lookup(ctx, key("k"), tags)
	must(t, err)
	if slices.Equal(now, read) {
		t.Fatal("stamps unchanged after a bump: the stale fill would be served")
	}
}

func suiteMissingStamp(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	old, err := st.readStamps(ctx, []string{"a"})
	must(t, err)
	must(t, st.dropStamp(ctx, "a"))
	_, seen, err := st.lookup(ctx, key("k"), []string{"a"})
	must(t, err)
	if seen[0] != 0 {
		t.Fatalf("dropped stamp reads %d, want 0", seen[0])
	}
	fresh, err := st.readStamps(ctx, []string{"a"})
	must(t, err)
	if fresh[0] == 0 || fresh[0] == old[0] {
		t.Fatalf("recreated stamp %d (old %d): want fresh and non-zero", fresh[0], old[0])
	}
}

func suiteTTL(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	must(t, st.fill(ctx, key("short"), []byte("v"), 150*time.Millisecond, []string{"a"}))
	must(t, st.fill(ctx, key("long"), []byte("v"), time.Minute, []string{"a"}))
	if val, _, err := st.lookup(ctx, key("short"), nil); err != nil || val == nil {
		t.Fatalf("fresh entry missing: %v", err)
	}
	time.Sleep(400 * time.Millisecond)
	if val, _, err := st.lookup(ctx, key("short"), nil); err != nil || val != nil {
		t.Fatalf("expired entry still there: %q, %v", val, err)
	}
	if val, _, err := st.lookup(ctx, key("long"), nil); err != nil || val == nil {
		t.Fatalf("entry with a long ttl gone: %v", err)
	}
}

func suiteBadTTL(t *testing.T, st storeUnderTest, key func(string) string) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		if err := st.fill(testCtx(t), key("k"), []byte("v"), ttl, nil); err == nil {
			t.Fatalf("fill with ttl %v succeeded", ttl)
		}
		if _, _, err := st.acquireLease(testCtx(t), key("k"), "s1", ttl); err == nil {
			t.Fatalf("lease with ttl %v succeeded", ttl)
		}
	}
}

func suitePurge(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	fills := map[string][]string{"k1": {"a"}, "k2": {"a", "b"}, "k3": {"b"}, "k4": {"c"}, "k5": nil}
	for name, tags := range fills {
		must(t, st.fill(ctx, key(name), []byte(name), time.Minute, tags))
	}
	steps := []struct {
		purge []string
		alive []string
	}{
		{[]string{"none"}, []string{"k1", "k2", "k3", "k4", "k5"}},
		{[]string{"a"}, []string{"k3", "k4", "k5"}},
		{[]string{"b", "c"}, []string{"k5"}},
		{[]string{"a", "b", "c"}, []string{"k5"}},
	}
	for _, step := range steps {
		must(t, st.purge(ctx, step.purge))
		for name := range fills {
			val, _, err := st.lookup(ctx, key(name), nil)
			must(t, err)
			if want := slices.Contains(step.alive, name); (val != nil) != want {
				t.Fatalf("after purge %v: %s present=%v, want %v", step.purge, name, val != nil, want)
			}
		}
	}
}

func suiteRemove(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	for _, name := range []string{"x", "y", "z"} {
		must(t, st.fill(ctx, key(name), []byte(name), time.Minute, []string{"a"}))
	}
	must(t, st.remove(ctx, key("x"), key("y"), key("absent")))
	must(t, st.remove(ctx))
	for name, want := range map[string]bool{"x": false, "y": false, "z": true} {
		val, _, err := st.lookup(ctx, key(name), nil)
		must(t, err)
		if (val != nil) != want {
			t.Fatalf("%s present=%v, want %v", name, val != nil, want)
		}
	}
}

func suiteLease(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	tok, ok, err := st.acquireLease(ctx, key("k"), "s1", time.Minute)
	must(t, err)
	if !ok || tok == 0 {
		t.Fatalf("first acquire = %d, %v", tok, ok)
	}
	if _, ok, err := st.acquireLease(ctx, key("k"), "s1", time.Minute); err != nil || ok {
		t.Fatalf("second acquire while held = %v, %v", ok, err)
	}
	if _, ok, err := st.acquireLease(ctx, key("other"), "s1", time.Minute); err != nil || !ok {
		t.Fatalf("lease on another key = %v, %v", ok, err)
	}
	must(t, st.releaseLease(ctx, key("k"), tok+1)) // a stranger's token
	if _, ok, _ := st.acquireLease(ctx, key("k"), "s1", time.Minute); ok {
		t.Fatal("a wrong token released the lease")
	}
	must(t, st.releaseLease(ctx, key("k"), tok))
	tok2, ok, err := st.acquireLease(ctx, key("k"), "s1", time.Minute)
	if err != nil || !ok || tok2 == tok {
		t.Fatalf("acquire after release = %d, %v, %v (old token %d)", tok2, ok, err, tok)
	}
}

func suiteLeaseStamps(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	old, ok, err := st.acquireLease(ctx, key("k"), "1,2", time.Minute)
	must(t, err)
	if !ok {
		t.Fatal("acquire failed")
	}
	// A write gave the tables new stamps: the old load cannot fill an entry
	// anyone may use, so its lease does not hold up loads under the new ones.
	tok, ok, err := st.acquireLease(ctx, key("k"), "1,3", time.Minute)
	if err != nil || !ok {
		t.Fatalf("acquire under new stamps = %v, %v", ok, err)
	}
	must(t, st.releaseLease(ctx, key("k"), old)) // the old holder must not free it
	if _, ok, _ := st.acquireLease(ctx, key("k"), "1,3", time.Minute); ok {
		t.Fatalf("old holder's release freed lease %d", tok)
	}
}

func suiteLeaseExpiry(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	old, ok, err := st.acquireLease(ctx, key("k"), "s1", 100*time.Millisecond)
	must(t, err)
	if !ok {
		t.Fatal("acquire failed")
	}
	time.Sleep(250 * time.Millisecond)
	tok, ok, err := st.acquireLease(ctx, key("k"), "s1", time.Minute)
	if err != nil || !ok {
		t.Fatalf("acquire after expiry = %v, %v", ok, err)
	}
	must(t, st.releaseLease(ctx, key("k"), old)) // the late holder must not free its successor's lease
	if _, ok, _ := st.acquireLease(ctx, key("k"), "s1", time.Minute); ok {
		t.Fatalf("expired holder's release freed lease %d", tok)
	}
}

// suiteConcurrent mixes every operation from several goroutines over a few
// keys and tags (run it with -race), then checks that a final purge leaves
// nothing behind and that stamps were never 0.
func suiteConcurrent(t *testing.T, st storeUnderTest, key func(string) string) {
	ctx := testCtx(t)
	tags := []string{"a", "b", "c"}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- concurrentWorker(ctx, st, key, tags, g)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	must(t, st.purge(ctx, tags))
	for i := range 10 {
		if val, _, err := st.lookup(ctx, key(fmt.Sprint("k", i)), nil); err != nil || val != nil {
			t.Fatalf("k%d survived the final purge: %q, %v", i, val, err)
		}
	}
}

// concurrentWorker runs one goroutine's share of suiteConcurrent.
func concurrentWorker(ctx context.Context, st storeUnderTest, key func(string) string, tags []string, g int) error {
	for i := range 150 {
		k := key(fmt.Sprint("k", (g+i)%10))
		sub := tags[i%2 : i%2+1+g%2] // one or two tags, overlapping across goroutines
		var err error
		switch i % 5 {
		case 0, 1:
			err = st.fill(ctx, k, []byte(k), time.Minute, sub)
		case 2:
			var val []byte
			if val, _, err = st.lookup(ctx, k, sub); err == nil && val != nil && !bytes.Equal(val, []byte(k)) {
				err = fmt.Errorf("%s holds %q", k, val)
			}
		case 3:
			err = st.purge(ctx, sub)
		case 4:
			err = bumpAndRead(ctx, st, sub)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// bumpAndRead bumps tags and checks that reading them yields no zero.
func bumpAndRead(ctx context.Context, st storeUnderTest, tags []string) error {
	if err := st.bump(ctx, tags); err != nil {
		return err
	}
	stamps, err := st.readStamps(ctx, tags)
	if err == nil && slices.Contains(stamps, 0) {
		err = fmt.Errorf("readStamps returned a zero: %v", stamps)
	}
	return err
}

func TestMemStoreSuite(t *testing.T) {
	runStoreSuite(t, newMemUnderTest)
}

func TestMemStoreDefaultBound(t *testing.T) {
	for _, max := range []int64{0, -1} {
		if got := newMemStore(max).cache.GetMaximum(); got != defaultMemBytes {
			t.Fatalf("newMemStore(%d) bound = %d, want %d", max, got, defaultMemBytes)
		}
	}
}

func TestMemStoreSharesEntry(t *testing.T) {
	s := newMemStore(0)
	e := bytesEntry([]byte("v"))
	must(t, s.fill(testCtx(t), "k", e, time.Minute, nil))
	got, _, err := s.lookup(testCtx(t), "k", nil, nil)
	if err != nil || got != e {
		t.Fatalf("lookup returned %p, want the filled %p", got, e)
	}
}

func TestMemStoreWeight(t *testing.T) {
	tests := []struct {
		name string
		key  string
		size int
		want uint32
	}{
		{"size counts", "k", 1000, 1000 + 1 + memEntryOverhead},
		{"zero size has a floor", "key", 0, memMinEntrySize + 3 + memEntryOverhead},
		{"huge size saturates", "", 1 << 40, 1<<32 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := memWeight(tt.key, &memItem{e: &entry{size: tt.size}}); got != tt.want {
				t.Fatalf("memWeight = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestMemStoreByteBound fills far more than the bound and checks that the
// weight stays under it and that the tag index follows the evictions.
func TestMemStoreByteBound(t *testing.T) {
	const maxBytes = 256 << 10
	s := newMemStore(maxBytes)
	ctx := testCtx(t)
	for i := range 5000 { // about 5 MB of entries
		tags := []string{"all", fmt.Sprint("t", i%7)}
		must(t, s.fill(ctx, fmt.Sprint("k", i), &entry{size: 1000}, time.Minute, tags))
	}
	s.cache.CleanUp()
	if w := s.cache.WeightedSize(); w > maxBytes {
		t.Fatalf("weighted size %d over the bound %d", w, maxBytes)
	}
	waitIndexMatchesCache(t, s)
}

// waitIndexMatchesCache waits until every indexed key is live and every
// live key is indexed under its tags: the deletion listener is asynchronous.
func waitIndexMatchesCache(t *testing.T, s *memStore) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.cache.CleanUp()
		diff := indexDiff(s)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("index does not match the cache: %s", diff)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// indexDiff describes how the index and the cache disagree, or is "".
func indexDiff(s *memStore) string {
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	indexed := 0
	for tag, keys := range s.index {
		for k := range keys {
			indexed++
			if it, ok := s.cache.GetEntryQuietly(k); !ok || !it.Value.hasTag(tag) {
				return fmt.Sprintf("%s indexed under %s but not live there", k, tag)
			}
		}
	}
	want := 0
	for _, it := range s.cache.All() {
		want += len(it.tags)
	}
	if indexed != want {
		return fmt.Sprintf("%d index members for %d live tag memberships", indexed, want)
	}
	return ""
}

func TestMemStoreIndexFollowsReplacementsAndExpiry(t *testing.T) {
	s := newMemStore(0)
	ctx := testCtx(t)
	must(t, s.fill(ctx, "same", bytesEntry([]byte("1")), time.Minute, []string{"a"}))
	must(t, s.fill(ctx, "same", bytesEntry([]byte("2")), time.Minute, []string{"a"}))
	must(t, s.fill(ctx, "moved", bytesEntry([]byte("1")), time.Minute, []string{"a"}))
	must(t, s.fill(ctx, "moved", bytesEntry([]byte("2")), time.Minute, []string{"b"}))
	must(t, s.fill(ctx, "dies", bytesEntry([]byte("1")), 50*time.Millisecond, []string{"a"}))
	time.Sleep(100 * time.Millisecond)
	waitIndexMatchesCache(t, s)
	must(t, s.purge(ctx, []string{"a"}))
	if e, _, _ := s.lookup(ctx, "same", nil, nil); e != nil {
		t.Fatal("replaced entry escaped the purge of its tag")
	}
	if e, _, _ := s.lookup(ctx, "moved", nil, nil); e == nil {
		t.Fatal("purge of a tag the entry left removed it")
	}
}

func TestMemStoreLeasesDoNotPileUp(t *testing.T) {
	s := newMemStore(0)
	ctx := testCtx(t)
	for i := range 1000 { // never released, as by a holder that died
		if _, ok, err := s.acquireLease(ctx, fmt.Sprint("k", i), "s1", time.Millisecond); err != nil || !ok {
			t.Fatalf("acquire k%d = %v, %v", i, ok, err)
		}
	}
	time.Sleep(5 * time.Millisecond)
	for i := range 1000 {
		if _, _, err := s.acquireLease(ctx, fmt.Sprint("n", i), "s1", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	s.leaseMu.Lock()
	n := len(s.leases)
	s.leaseMu.Unlock()
	if n > 1100 {
		t.Fatalf("%d leases held, want the expired ones swept", n)
	}
}

func TestMemStoreHitAllocatesNothing(t *testing.T) {
	s := newMemStore(0)
	ctx := testCtx(t)
	tags := []string{"users", "orders"}
	_, err := s.readStamps(ctx, tags)
	must(t, err)
	must(t, s.fill(ctx, "k", bytesEntry([]byte("v")), time.Minute, tags))
	buf := make([]uint64, 0, len(tags))
	allocs := testing.AllocsPerRun(1000, func() {
		if e, _, _ := s.lookup(ctx, "k", tags, buf); e == nil {
			t.Fatal("miss")
		}
	})
	if allocs != 0 {
		t.Fatalf("hit lookup allocates %.1f times", allocs)
	}
}

// TestMemStoreIndexUnderConcurrency races fills, purges, removals and
// evictions on a tiny store, then checks that the index settles to exactly
// the live entries: nothing leaked, nothing live left unindexed.
func TestMemStoreIndexUnderConcurrency(t *testing.T) {
	s := newMemStore(32 << 10)
	t.Cleanup(s.close)
	ctx := testCtx(t)
	tags := []string{"a", "b", "c"}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				key := fmt.Sprint("k", (i*7+g)%300)
				switch i % 10 {
				case 0:
					_ = s.purge(ctx, tags[i%3:i%3+1])
				case 1:
					_ = s.remove(ctx, key)
				default:
					_ = s.fill(ctx, key, &entry{size: 200}, time.Minute, tags[g%2:g%2+2])
				}
			}
		})
	}
	wg.Wait()
	waitIndexMatchesCache(t, s)
}
