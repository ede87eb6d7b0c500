package cachedpq

// The check of restarts.go on a Redis Cluster. A namespace spans the
// masters, and any of them may come back from a snapshot or be replaced by
// a replica that missed its last writes: each master gets its own record,
// <prefix>:server:{T}, under a hash tag T whose slot the master serves, so
// that the record lives (and is lost, or replicated) with the stamps on
// that master. A check reads every master's identity and record; if any
// differs or is missing it first bumps the epoch stamp (on whichever master
// owns its slot, perhaps the restarted one), and only then writes the new
// records: a bump that failed leaves them as they were, and the next check
// bumps again. The two steps are not one script as on a single node: a
// check that reads a record another process has just written skips a bump
// that process made already, and lookupChecked redoes the lookups either
// overlapped.
//
// A lookup is pipelined to the masters its keys live on, and its answer is
// taken as checked only if every command was answered by a node that the
// last check which met it found a master, with no connection dialed to it
// since that check read it: each node client has a hook (nodeHook) that
// adds the commands it answered to the lookup's tally, if it vouches for
// its node. go-redis makes a client per node, perhaps before
// the store began (and OnNewNode then never runs for it), and a replica may
// be missing from every state a check reads yet known to the client from
// an earlier one: a node whose client no check has hooked adds nothing, so
// its answers make the lookup check (which hooks the nodes of the state it
// reads) and look up again, as an answer from a node not known to be a
// master does. A replica promoted by a failover is reached through
// connections opened while it was a replica, with no dial to count.
//
// Resharding that moves the slot of a master's record to another master
// (or gives a master a new first slot), and a master added to the
// Cluster, cost one needless epoch bump: the record is missing where the
// check now looks for it. A record left behind on the new owner is never
// compared again.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/redis/go-redis/v9"
)

// clusterNodes is what a check needs of a Cluster client.
type clusterNodes interface {
	ForEachShard(ctx context.Context, fn func(ctx context.Context, c *redis.Client) error) error
}

var _ clusterNodes = (*redis.ClusterClient)(nil)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// keySlot returns the Cluster slot of key: the CRC16 (XMODEM) of its hash
// tag (the text between its first '{' and the next '}', if not empty) or of
// the whole key, modulo clusterSlots.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % clusterSlots)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the
// checksum of Redis Cluster's key slots.
func crc16(s string) uint16 {
	var crc uint16
	for i := range len(s) {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slotTags holds, for each slot, the least n whose base-36 text is a hash
// tag of that slot. Every process finds the same tags, and so the same
// record keys.
var slotTags = sync.OnceValue(func() *[clusterSlots]uint32 {
	var tags [clusterSlots]uint32
	var seen [clusterSlots]bool
	for n, left := uint32(0), clusterSlots; left > 0; n++ {
		if slot := keySlot(slotTag(n)); !seen[slot] {
			seen[slot], tags[slot] = true, n
			left--
		}
	}
	return &tags
})

// slotTag is the text of hash tag n.
func slotTag(n uint32) string { return strconv.FormatUint(uint64(n), 36) }

// recordTries bounds the slots tried for a master's record key. The first
// serves unless the prefix holds a '{' of its own: with a whole hash tag
// in the prefix, every key of the namespace is in one slot, and masters
// that do not serve it hold nothing to check; with an unclosed '{', keys
// land on slots the tag does not choose, and a master serving few slots may
// find none in recordTries and go unchecked.
const recordTries = 256

// recordKey returns the key of the record of the master that serves
// ranges, and false if no key of the namespace found lands on it.
func (s *redisStore) recordKey(ranges []redis.ClusterSlot) (string, bool) {
	tags, tries := slotTags(), 0
	for _, r := range ranges {
		for slot := r.Start; slot <= r.End && tries < recordTries; slot, tries = slot+1, tries+1 {
			k := s.serverKey() + ":{" + slotTag(tags[slot]) + "}"
			if inRanges(ranges, keySlot(k)) {
				return k, true
			}
		}
	}
	return "", false
}

// inRanges reports whether slot is in one of ranges.
func inRanges(ranges []redis.ClusterSlot, slot int) bool {
	for _, r := range ranges {
		if r.Start <= slot && slot <= r.End {
			return true
		}
	}
	return false
}

// master is what a check read on one master.
type master struct {
	c      *redis.Client
	hook   *nodeHook
	vouch  uint64 // what its hook is to hold (see nodeHook.vouch); 0: no read without a dial
	id     string // "run_id master_replid"
	key    string // its record's key; "" if it holds no key of the namespace
	record string // the record; "" if none
	found  bool   // whether a record was there
}

// checkCluster is checkServer on a Cluster: it checks every master against
// its own record, and voids the namespace if any differs or is missing.
// It answers as checkServer does, id naming the masters that changed, and
// trust telling the node hooks which nodes are masters.
func (s *redisStore) checkCluster(ctx context.Context) (id string, result int, trust func(), err error) {
	masters, replicas, err := s.readMasters(ctx)
	if err != nil {
		return "", 0, nil, err
	}
	trust = func() { markMasters(masters, replicas) }
	var changed []master
	result = 2
	for _, m := range masters {
		if m.key == "" || m.record == m.id {
			continue
		}
		changed = append(changed, m)
		if m.found {
			result = 1
		}
	}
	if len(changed) == 0 {
		return "", 0, trust, nil
	}
	// The bump first: a record written before a bump that failed would
	// hide the lost invalidations from every later check.
	if err := s.bump(ctx, []string{epochTag}); err != nil {
		return "", 0, nil, err
	}
	if err := writeRecords(ctx, changed); err != nil {
		return "", 0, nil, err
	}
	return serverIDs(changed), result, trust, nil
}

// markMasters tells the node hooks which nodes a check found masters, once
// it is complete and counted: their answers count in lookups' tallies
// until they dial again.
func markMasters(masters []master, replicas []*nodeHook) {
	for _, m := range masters {
		m.hook.vouch.Store(m.vouch)
	}
	for _, h := range replicas {
		h.vouch.Store(0)
	}
}

// readMasters reads the identity and the record of every master, and adds
// the dial hook to node clients made before the watch began. It visits the
// replicas too (go-redis made a client for each), to hook them: a replica
// promoted later is dialed by its old client. A node that is not a master
// is skipped, not refused as on a single node: cachedpq refuses Cluster
// clients that read from replicas, and a replica answers this one's
// lookups with a redirection to its master.
func (s *redisStore) readMasters(ctx context.Context) (masters []master, replicas []*nodeHook, err error) {
	var mu sync.Mutex // guards masters and replicas
	err = s.cluster.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
		hook := s.watch.nodes.add(c)
		m, ok, err := s.readNode(ctx, c, hook)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if !ok {
			replicas = append(replicas, hook)
			return nil
		}
		m.hook = hook
		masters = append(masters, m)
		return nil
	})
	return masters, replicas, err
}

// nodeReads bounds the reads of one node in a check.
const nodeReads = 3

// readNode is readMaster bracketed by the dials of the node's hook h. A read
// with no dial between speaks for every connection the node client dialed
// before it: those reach the server that answered it, or one that is gone.
// A dial between (the check's own first connections, or a lookup's) may
// reach a server that came after: the node is read again, up to nodeReads
// times, else it is left for the next check to vouch for. go-redis dials
// on a goroutine of its own, under a context of its own: a check cannot
// mark its dials to leave them uncounted.
func (s *redisStore) readNode(ctx context.Context, c *redis.Client, h *nodeHook) (m master, ok bool, err error) {
	for range nodeReads {
		dials := h.dials.Load()
		if m, ok, err = s.readMaster(ctx, c); err != nil || !ok {
			return m, ok, err
		}
		if h.dials.Load() == dials {
			m.vouch = dials + 1
			return m, true, nil
		}
	}
	return m, true, nil
}

// readMaster reads one master's identity, the slots it serves and its
// record. ok is false for a node that is not a master. A master that holds
// no key of the namespace has no record (key ""): it is not compared.
func (s *redisStore) readMaster(ctx context.Context, c *redis.Client) (m master, ok bool, err error) {
	pipe := c.Pipeline()
	info := pipe.Info(ctx)
	myID := pipe.ClusterMyID(ctx)
	slots := pipe.ClusterSlots(ctx)
	_, _ = pipe.Exec(ctx) // errors are read per command below
	if refusesInfo(info.Err()) {
		return m, false, fmt.Errorf("%w: %w", errNoRunID, info.Err())
	}
	for _, cmd := range []redis.Cmder{info, myID, slots} {
		if err := cmd.Err(); err != nil {
			return m, false, err
		}
	}
	m.id, err = serverID(info.Val())
	switch {
	case errors.Is(err, errNotMaster):
		return m, false, nil
	case err != nil:
		return m, false, err
	}
	m.c = c
	key, hasKey := s.recordKey(servedBy(slots.Val(), myID.Val()))
	if !hasKey {
		return m, true, nil
	}
	m.key = key
	m.record, err = c.Get(ctx, m.key).Result()
	switch {
	case err == redis.Nil || isWrongType(err): // none, or foreign: replaced
		return m, true, nil
	case err != nil:
		return m, false, err
	}
	m.found = true
	return m, true, nil
}

// servedBy returns the slot ranges whose master is the node nodeID.
func servedBy(slots []redis.ClusterSlot, nodeID string) []redis.ClusterSlot {
	var own []redis.ClusterSlot
	for _, r := range slots {
		if len(r.Nodes) > 0 && r.Nodes[0].ID == nodeID {
			own = append(own, r)
		}
	}
	return own
}

// writeRecords records each master's identity on that master. A slot that
// moved meanwhile refuses the write (MOVED): the check fails, and the next
// one starts again.
func writeRecords(ctx context.Context, masters []master) error {
	for _, m := range masters {
		if err := m.c.Set(ctx, m.key, m.id, 0).Err(); err != nil {
			return err
		}
	}
	return nil
}

// serverIDs names the masters in a log line.
func serverIDs(masters []master) string {
	ids := make([]string, len(masters))
	for i, m := range masters {
		ids[i] = m.c.Options().Addr + " " + m.id
	}
	return strings.Join(ids, ", ")
}

// nodeHooks adds a nodeHook to the node clients of a Cluster client, each
// once: the Cluster client's own hooks never see its nodes' dials (go-redis
// gives each node a *redis.Client of its own).
type nodeHooks struct {
	mu    sync.Mutex                               // guards nodes
	nodes map[weak.Pointer[redis.Client]]*nodeHook // the node clients hooked
}

// add adds a nodeHook to node client c, unless it has one, and returns it.
func (h *nodeHooks) add(c *redis.Client) *nodeHook {
	return weakEntry(&h.mu, h.nodes, c, func() *nodeHook {
		nh := &nodeHook{}
		c.AddHook(nh)
		return nh
	})
}

// nodeHook counts the dials of a node client, and adds the lookup commands
// it answered to their lookup's tally while it vouches for its node: the
// last check that met the node found it a master, and no connection was
// dialed since that check read it.
type nodeHook struct {
	dials atomic.Uint64 // the connections the node client dialed
	// vouch is dials+1 as counted when the last check that met the node
	// read it, if it found a master and no dial came during the read; 0
	// otherwise. The hook vouches for its node while vouch is dials+1.
	vouch atomic.Uint64
}

// vouches reports whether h vouches for its node.
func (h *nodeHook) vouches() bool {
	v := h.vouch.Load()
	return v != 0 && v == h.dials.Load()+1
}

func (h *nodeHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err == nil {
			h.dials.Add(1)
		}
		return c, err
	}
}

func (h *nodeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

// ProcessPipelineHook tallies the answers of a lookup, once they are in: the
// hook must vouch for its node when they are (a connection they came by,
// dialed meanwhile, is counted by then), not only when they were asked.
func (h *nodeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if t, ok := ctx.Value(tallyKey{}).(*lookupTally); ok && h.vouches() && answered(cmds) {
			t.answered.Add(int64(len(cmds)))
		}
		return err
	}
}

// answered reports whether every command of a node's batch has its answer:
// a value, none or a value of another type (as lookups read them). go-redis
// sends again elsewhere only commands of a batch with other errors (MOVED,
// ASK, a broken connection, a node loading): none of those is tallied, so
// each command of a lookup is tallied at most once, by the node whose
// answer it keeps.
func answered(cmds []redis.Cmder) bool {
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil && err != redis.Nil && !isWrongType(err) {
			return false
		}
	}
	return true
}

// lookupTally is the context of a lookup on a Cluster: the hooks of the
// nodes it reaches add the commands they answered while vouched for.
// Embedding the caller's context costs one allocation per lookup.
type lookupTally struct {
	context.Context
	want     int64 // the lookup's commands, set before they are sent
	answered atomic.Int64
}

// tallyKey is the context key under which a lookupTally finds itself.
type tallyKey struct{}

func (t *lookupTally) Value(key any) any {
	if key == (tallyKey{}) {
		return t
	}
	return t.Context.Value(key)
}

// tally returns a tally for a lookup under ctx, or nil where lookups are not
// tallied (a single node).
func (w *serverWatch) tally(ctx context.Context) *lookupTally {
	if w.nodes == nil {
		return nil
	}
	return &lookupTally{Context: ctx}
}

// context returns the context of the tallied lookup: ctx if t is nil.
func (t *lookupTally) context(ctx context.Context) context.Context {
	if t == nil {
		return ctx
	}
	return t
}

// vouched reports whether every command of the lookup was answered by a
// node a check found a master (always, if t is nil).
func (t *lookupTally) vouched() bool {
	return t == nil || t.want > 0 && t.answered.Load() == t.want
}

// expectAnswers tells the tally of ctx, if any, how many commands its
// lookup sends.
func expectAnswers(ctx context.Context, n int) {
	if t, ok := ctx.Value(tallyKey{}).(*lookupTally); ok {
		t.want = int64(n)
	}
}

// clusterHooks holds the node hooks of each Cluster client a watch was
// made over, guarded by dialMu.
var clusterHooks = map[weak.Pointer[redis.ClusterClient]]*nodeHooks{}

// nodeHooksOf returns cc's node hooks, which hook every node client cc
// makes from then on; the check hooks those made before.
func nodeHooksOf(cc *redis.ClusterClient) *nodeHooks {
	return weakEntry(&dialMu, clusterHooks, cc, func() *nodeHooks {
		h := &nodeHooks{nodes: map[weak.Pointer[redis.Client]]*nodeHook{}}
		cc.OnNewNode(func(c *redis.Client) { h.add(c) })
		return h
	})
}

// newClusterWatch returns a watch over cc's nodes. Its own dial counter
// stays at 1, so that the first lookup checks: the node hooks count the
// dials of their nodes, and a lookup answered by a node dialed since its
// last check checks (see lookupTally).
func newClusterWatch(cc *redis.ClusterClient) *serverWatch {
	w := &serverWatch{dials: &dialCounter{}, nodes: nodeHooksOf(cc), sem: make(chan struct{}, 1)}
	w.dials.n.Store(1)
	w.every.Store(int64(serverRecheck))
	return w
}
