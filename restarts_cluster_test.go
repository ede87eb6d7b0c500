package cachedpq

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq/internal/redistest"
)

func TestCRC16(t *testing.T) {
	// The check value of CRC-16/XMODEM, and the examples of the Cluster spec.
	if got := crc16("123456789"); got != 0x31c3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	for key, want := range map[string]int{"foo": 12182, "bar": 5061, "{user1000}.following": 3443} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
}

// TestKeySlotMatchesRedis compares keySlot with CLUSTER KEYSLOT, hash tags
// and their corner cases included, and checks that every slot's tag lands
// on that slot.
func TestKeySlotMatchesRedis(t *testing.T) {
	node := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	ctx := context.Background()
	keys := []string{"", "a", "{", "}", "{}", "{}x", "x{}", "{{}}", "foo{}{bar}", "foo{{bar}}zap",
		"foo{bar}{zap}", "a{b", "a}b{c}", "{a}{b}", "cachedpq:server:{0}", "p{x}:server:{1}", "p{x:server:{2}"}
	for range 300 {
		b := make([]byte, rand.IntN(12))
		for i := range b {
			b[i] = "ab{}:\x00\xff"[rand.IntN(7)]
		}
		keys = append(keys, string(b))
	}
	tags := slotTags()
	for range 200 {
		slot := rand.IntN(clusterSlots)
		if got := keySlot(slotTag(tags[slot])); got != slot {
			t.Fatalf("the tag of slot %d, %q, is in slot %d", slot, slotTag(tags[slot]), got)
		}
		keys = append(keys, "cachedpq:server:{"+slotTag(tags[slot])+"}")
	}
	pipe := node.Client().Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.ClusterKeySlot(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if got, want := keySlot(k), int(cmds[i].Val()); got != want {
			t.Errorf("keySlot(%q) = %d, CLUSTER KEYSLOT says %d", k, got, want)
		}
	}
}

func TestRecordKey(t *testing.T) {
	ranges := func(rs ...[2]int) []redis.ClusterSlot {
		var out []redis.ClusterSlot
		for _, r := range rs {
			out = append(out, redis.ClusterSlot{Start: r[0], End: r[1]})
		}
		return out
	}
	tests := []struct {
		prefix string
		ranges []redis.ClusterSlot
		ok     bool
	}{
		{"cachedpq", ranges([2]int{0, 5460}), true},
		{"cachedpq", ranges([2]int{16383, 16383}), true},
		{"cachedpq", ranges([2]int{7, 7}, [2]int{9000, 9001}), true},
		// A hash tag in the prefix: the namespace is on the master of
		// its slot alone (keySlot("app") = 6805).
		{"{app}", ranges([2]int{6000, 7000}), true},
		{"{app}", ranges([2]int{0, 6000}, [2]int{7000, 16383}), false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.prefix, tt.ranges), func(t *testing.T) {
			s := &redisStore{prefix: tt.prefix}
			key, ok := s.recordKey(tt.ranges)
			if ok != tt.ok {
				t.Fatalf("recordKey = %q, %v; want ok %v", key, ok, tt.ok)
			}
			if ok && !inRanges(tt.ranges, keySlot(key)) {
				t.Fatalf("record key %q is in slot %d, not on the master", key, keySlot(key))
			}
		})
	}
}

// clusterKV is cachedKV on a three-master Cluster of its own.
func clusterKV(t *testing.T) (*redistest.Cluster, *redis.ClusterClient, *Connector, func() string) {
	t.Helper()
	cluster := redistest.StartCluster(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs})
	t.Cleanup(func() { cc.Close() })
	// Node clients made before the Connector: the check hooks them.
	must(t, cc.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
		return c.Ping(ctx).Err()
	}))
	db, c := cachedKV(t, cc)
	return cluster, cc, c, func() string { return getV(t, db, 1) }
}

// TestClusterCheckVoidsOnAnotherMaster: a master whose record names
// another server (a snapshot restored, a replica promoted) voids the
// namespace at the next check, and gets its own record back.
func TestClusterCheckVoidsOnAnotherMaster(t *testing.T) {
	cluster, _, c, read := clusterKV(t)
	rb := c.eng.direct.(*redisBackend)
	ctx := context.Background()
	var recorded int
	for _, srv := range cluster.Servers {
		keys := srv.Client().Keys(ctx, rb.serverKey()+":{*}").Val()
		if len(keys) != 1 {
			t.Fatalf("%s holds records %v, want one", srv.Addr, keys)
		}
		recorded++
		if recorded == 2 {
			must(t, srv.Client().Set(ctx, keys[0], "another-server", 0).Err())
		}
	}
	hits, bumps := c.Stats().Hits, c.Stats().EpochBumps
	read() // within serverRecheck, no dial: not checked
	if s := c.Stats(); s.Hits != hits+1 || s.EpochBumps != bumps {
		t.Fatalf("checked without a dial or a due recheck: %+v", s)
	}
	checkDue(c)
	read()
	if s := c.Stats(); s.Hits != hits+1 || s.EpochBumps != bumps+1 {
		t.Fatalf("served from a master the namespace did not know: %+v", s)
	}
	// Its record is back: the next check voids nothing.
	waitFor(t, func() bool { return c.Stats().Fills == 2 })
	checkDue(c)
	read()
	if s := c.Stats(); s.Hits != hits+2 || s.EpochBumps != bumps+1 {
		t.Fatalf("the known masters were checked as others: %+v", s)
	}
}

// TestClusterUnhookedNodeChecked: the answers of a node client that no check
// has hooked make the lookup check. go-redis made the client before the
// Connector (so OnNewNode never ran for it), and no state a check read
// listed it: on a fresh replicated Cluster the state may omit a replica
// that an earlier one listed, and the client then reaches it once a
// failover promotes it. Here the watch is made to look checked, and the
// masters' clients are those a check never met. Before, their answers went
// uncounted and were served unchecked: TestFaultClusterFailoverLosesInvalidation
// read 4 to 10 of 30 rows stale in 5 of 45 runs.
func TestClusterUnhookedNodeChecked(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs})
	t.Cleanup(func() { cc.Close() })
	must(t, cc.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
		return c.Ping(ctx).Err()
	}))
	db, c, _ := engineDB(t, cc)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	w := c.eng.direct.(*redisBackend).watch
	w.checked.Store(w.dials.n.Load())
	w.last.Store(time.Now().UnixNano())
	getV(t, db, 1)
	if w.checks.Load() == 0 {
		t.Fatalf("a lookup answered by node clients no check met did not check (stats %+v)", c.Stats())
	}
}

// TestClusterCheckOwnDialsUncounted: the connections a check dials to read
// the nodes do not make the next lookup check again, and hits check nothing
// until a node dials or serverRecheck passes. go-redis dials on a goroutine
// of its own, under a context of its own, so the mark a check put on its
// context never reached the dial hook: its dials counted as any other.
// Before, this first lookup checked twice, and one that met a dial at each
// of its three tries gave up (errServerChanging), leaving the namespace
// pending: TestFaultClusterFailoverLosesInvalidation cached 5 to 17 of its
// 30 rows in half its runs.
func TestClusterCheckOwnDialsUncounted(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs})
	t.Cleanup(func() { cc.Close() })
	db, c, _ := engineDB(t, cc)
	must(t, c.opts.Registry.Register(`select v from kv where k = $1`, Policy{TTL: time.Hour}))
	w := c.eng.direct.(*redisBackend).watch
	getV(t, db, 1)
	if n := w.checks.Load(); n != 1 || c.Stats().CacheErrors != 0 {
		t.Fatalf("the first lookup checked %d times, want 1 (stats %+v)", n, c.Stats())
	}
	waitFor(t, func() bool { return c.Stats().Fills == 1 })
	w.every.Store(0) // no check for time's sake
	for range 20 {
		getV(t, db, 1)
	}
	if s := c.Stats(); w.checks.Load() != 1 || s.Hits != 20 {
		t.Fatalf("20 hits checked %d times (stats %+v)", w.checks.Load()-1, s)
	}
}

// TestClusterNodeDialsCounted: a dial on a node client makes the next
// lookup it answers check, whether the node client was made before the
// Connector (hooked at the first check) or after (hooked by OnNewNode);
// go-redis never runs a Cluster client's own dial hooks.
func TestClusterNodeDialsCounted(t *testing.T) {
	cluster, cc, c, read := clusterKV(t)
	w := c.eng.direct.(*redisBackend).watch
	ctx := context.Background()
	for _, srv := range cluster.Servers { // every connection is cut
		must(t, srv.Client().ClientKillByFilter(ctx, "TYPE", "normal").Err())
	}
	checks := w.checks.Load()
	read()
	if w.checks.Load() == checks {
		t.Fatal("a lookup answered through redialed connections did not check")
	}
	// Node clients made after the watch began: OnNewNode hooks them.
	cc2 := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs})
	defer cc2.Close()
	h := nodeHooksOf(cc2)
	if nodeHooksOf(cc2) != h || nodeHooksOf(cc) == h {
		t.Fatal("hooks are not one set per Cluster client")
	}
	nodes := make(chan *redis.Client, 3)
	must(t, cc2.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		nodes <- c
		return c.Ping(ctx).Err()
	}))
	node := <-nodes
	hook := h.add(node) // the hook OnNewNode added: hooked once however often a check meets it
	if h.add(node) != hook || hook.dials.Load() == 0 {
		t.Fatalf("the new node client's hook counted %d dials", hook.dials.Load())
	}
	must(t, node.ClientKillByFilter(ctx, "SKIPME", "no").Err()) // its own connection too
	before := hook.dials.Load()
	_ = node.Ping(ctx) // may meet the killed connection
	must(t, node.Ping(ctx).Err())
	if n := hook.dials.Load(); n != before+1 {
		t.Fatalf("one dial counted %d times", n-before)
	}
}
