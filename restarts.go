package cachedpq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"
)

// A Redis that restarts from a snapshot (RDB or AOF), or a replica that a
// failover promotes, may have lost stamp bumps it had acknowledged: the
// entries those writes voided are current again, for every process, and
// nothing failed that would make anyone invalidate them again. So the
// store checks the server before it answers a lookup made after its
// client dialed a connection, and at least every serverRecheck (a failover
// behind a DNS name or a proxy need not make anyone dial): the server's
// run_id and replication ID (master_replid) are recorded under
// <prefix>:server, and a different or missing record bumps the epoch,
// voiding every entry, in the script that records the new one. A restart
// changes the run_id, a promotion the replication ID, and so does the
// full resync of a demoted master. A server that is not a master (a
// replica, a demoted master still reached through an old connection) is
// not used at all: lookups fail, and the engine goes to Postgres.
//
// A process that finds a server other than the one its own last check
// found voids the namespace too, even if another process recorded that
// server already: behind Sentinel, a process told of a failover late
// writes to the old master, which still takes writes, after the others
// have moved and voided the namespace on the new one, and the stamp bumps
// the old master acknowledges are lost. Its next lookup or stamp bump on
// the new server checks it (a bump too: a process that only writes must
// not leave them lost), and voids what they voided.
//
// On a Cluster the namespace spans the masters: each has a record of its
// own (see restarts_cluster.go).

// serverRecheck is how long a check of the server holds without a dial.
const serverRecheck = time.Second

// serverKey is the key of the server the namespace was last checked on.
func (s *redisStore) serverKey() string { return s.prefix + ":server" }

// serverCheckScript records ARGV[1] as the identity of the namespace's server
// (KEYS[1]) and, if another or none was recorded, or if ARGV[3] is "1"
// (the caller moved here from another server), gives the epoch stamp
// (KEYS[2]) the fresh value ARGV[2]. It answers 0 if the server was the
// one recorded (and the caller did not move), 1 if it was another or the
// caller moved, 2 if none was recorded (a new namespace, or a record
// evicted or lost: void it all the same).
var serverCheckScript = redis.NewScript(`
local v = redis.pcall('GET', KEYS[1])
if v == ARGV[1] and ARGV[3] ~= '1' then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
if type(v) == 'string' then return 1 end
return 2`)

// serverWatch decides when a lookup's answer needs a check of the server.
type serverWatch struct {
	// dials is the client's dial counter, shared by every watch over the
	// client: the hook holds it alone, not the watch (nor its engine). On
	// a Cluster it is the watch's own, and stays at 1 (see nodes).
	dials   *dialCounter
	checked atomic.Uint64 // dials counted before the last check began
	voided  atomic.Uint64 // how many checks voided the namespace
	// checks counts completed checks. A lookup that overlapped one may
	// predate a void another watch or process made on that server (its
	// own check then finds the run_id recorded and answers 0): it is
	// looked up again.
	checks atomic.Uint64
	// last is when the last check succeeded (Unix ns), every how long a
	// check holds without a dial (0: until the next dial).
	last, every atomic.Int64
	// sem lets one check run at a time; those that wait for it give up
	// when their context ends.
	sem chan struct{}
	// onVoid, if set, runs after a check voided the namespace; changed is
	// false when no server had been recorded.
	onVoid func(runID string, changed bool)
	// off is set when the server cannot be checked (INFO refused or
	// without run_id, as some managed services have it): lookups are then
	// answered unchecked, and onOff, if set, runs once with the reason.
	off   atomic.Bool
	onOff func(err error)
	// nodes hooks the node clients of a Cluster client (nil elsewhere),
	// which count their dials and tally lookups: dials counts none.
	nodes *nodeHooks
	// seen is the identity the last check found ("" before the first);
	// guarded by sem.
	seen string
}

// newServerWatch returns a watch over c's dials. The first lookup checks:
// connections dialed before the watch began were never counted.
func newServerWatch(c *redis.Client) *serverWatch {
	w := &serverWatch{dials: dialsOf(c), sem: make(chan struct{}, 1)}
	w.every.Store(int64(serverRecheck))
	return w
}

// dialCounters holds the dial counter of each client a watch was made
// over, so that a client gets one hook however many Connectors use it.
var (
	dialMu       sync.Mutex
	dialCounters = map[weak.Pointer[redis.Client]]*dialCounter{}
)

// dialsOf returns c's dial counter, adding its hook at first use. The
// counter starts at 1: a new watch (checked 0) checks at its first lookup.
func dialsOf(c *redis.Client) *dialCounter {
	return weakEntry(&dialMu, dialCounters, c, func() *dialCounter {
		d := &dialCounter{}
		d.n.Store(1)
		c.AddHook(d)
		return d
	})
}

// weakEntry returns m's value for p, made by create at first use (under
// mu, which guards m); the entry goes once p is collected, so that
// holding it keeps nothing alive.
func weakEntry[K, V any](mu *sync.Mutex, m map[weak.Pointer[K]]V, p *K, create func() V) V {
	mu.Lock()
	defer mu.Unlock()
	k := weak.Make(p)
	if v, ok := m[k]; ok {
		return v
	}
	v := create()
	m[k] = v
	runtime.AddCleanup(p, func(k weak.Pointer[K]) {
		mu.Lock()
		delete(m, k)
		mu.Unlock()
	}, k)
	return v
}

// errNoRunID reports a server whose INFO names no run_id.
var errNoRunID = errors.New("cachedpq: Redis INFO names no run_id")

// refusesInfo reports a server that does not let this client run INFO: it
// renamed or disabled the command, or the ACL user may not run it.
func refusesInfo(err error) bool {
	return err != nil && (redis.HasErrorPrefix(err, "NOPERM") ||
		redis.HasErrorPrefix(err, "ERR") && strings.Contains(err.Error(), "unknown command"))
}

// errServerChanging reports lookups that kept meeting new servers.
var errServerChanging = errors.New("cachedpq: the Redis server kept changing during a lookup")

// lookupChecked runs lookup, and again if a check of the server found it
// had lost invalidations meanwhile (the answer may predate the epoch the
// check gave it). On a Cluster, lookup's context tallies the answers of
// nodes a check vouches for (see lookupTally).
func lookupChecked[T any](ctx context.Context, s *redisStore, lookup func(context.Context) (T, error)) (T, error) {
	w := s.watch
	if w == nil || w.off.Load() {
		return lookup(ctx)
	}
	for range 3 {
		checks := w.checks.Load()
		tally := w.tally(ctx)
		res, err := lookup(tally.context(ctx))
		if err != nil {
			return res, err
		}
		if err := w.verify(ctx, s, tally.vouched(), checks); err != nil {
			return res, err
		}
		if w.checks.Load() == checks {
			return res, nil
		}
	}
	var zero T
	return zero, errServerChanging
}

// verify checks the server if a lookup that began with checks counted met a
// server no check vouches for (vouched false: on a Cluster, a node no check
// found a master answered it), a connection was dialed since the last
// check began, or the last check is older than w.every. It returns at once
// if another check completed meanwhile: the caller looks up again.
func (w *serverWatch) verify(ctx context.Context, s *redisStore, vouched bool, checks uint64) error {
	if vouched && w.current(w.dials.n.Load()) {
		return nil
	}
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-w.sem }()
	if w.checks.Load() != checks {
		return nil
	}
	n := w.dials.n.Load()
	runID, result, trust, err := s.checkServer(ctx, w.seen)
	switch {
	case errors.Is(err, errNoRunID):
		w.off.Store(true)
		if w.onOff != nil {
			w.onOff(err)
		}
		return nil
	case err != nil:
		return err
	}
	if result != 0 {
		w.voided.Add(1)
		if w.onVoid != nil {
			w.onVoid(runID, result == 1)
		}
	}
	w.seen = runID
	// First: a lookup that sees this check current, or the nodes it
	// vouches for trusted, must see it counted.
	w.checks.Add(1)
	if trust != nil {
		trust()
	}
	w.checked.Store(n)
	w.last.Store(time.Now().UnixNano())
	return nil
}

// current reports whether the last check still holds, n dials counted.
func (w *serverWatch) current(n uint64) bool {
	if w.checked.Load() < n {
		return false
	}
	every := w.every.Load()
	if every <= 0 {
		return true
	}
	// UnixNano has no monotonic reading: a clock stepped back makes the
	// age negative, which must not hold the check until it catches up.
	age := time.Now().UnixNano() - w.last.Load()
	return age >= 0 && age < every
}

// errNotMaster reports a server that is not a master: its data may lag.
var errNotMaster = errors.New("cachedpq: the Redis server is not a master (a replica, or a master demoted by a failover): not used")

// checkServer records the server's identity (run_id and replication ID) for
// the namespace, voiding the namespace if the record named another server
// or none, or if the caller's last check found another server, seen ("" if
// none), as serverCheckScript answers. trust, if not nil, is to run once
// the check is counted: on a Cluster it tells the node hooks which nodes
// the check found masters.
func (s *redisStore) checkServer(ctx context.Context, seen string) (id string, result int, trust func(), err error) {
	if s.cluster != nil {
		return s.checkCluster(ctx)
	}
	info, err := s.c.Info(ctx).Result() // server and replication: one section each before Redis 7
	if refusesInfo(err) {
		return "", 0, nil, fmt.Errorf("%w: %w", errNoRunID, err)
	}
	if err != nil {
		return "", 0, nil, err
	}
	if id, err = serverID(info); err != nil {
		return "", 0, nil, err
	}
	keys := []string{s.serverKey(), s.stampKey(epochTag)}
	// A master also takes a new replication ID when it creates its backlog
	// (a replica attaches: the first, or any after repl-backlog-ttl with
	// none) and when it frees it: that voids the namespace once, needlessly.
	// It cannot be told from a master promoted back after a failover that
	// lost writes, whose previous ID (master_replid2) is cleared just so.
	// A process whose last check found another server voids it even if the
	// record names this one (see the file comment): a restart or a failover
	// voids it once in every process.
	moved := boolArg(seen != "" && seen != id)
	epoch := newStamp()
	result, err = serverCheckScript.Run(ctx, s.c, keys, id, formatStamp(epoch), moved).Int()
	if err == nil && result != 0 {
		s.saw([]string{epochTag}, []uint64{epoch})
	}
	return id, result, nil, err
}

// verifyBump checks the server after a stamp bump, as lookupChecked does
// after a lookup, so that a process that only writes also voids the
// namespace once it has moved to another server. Not on a Cluster, whose
// check does not compare a process's servers.
func (s *redisStore) verifyBump(ctx context.Context) error {
	w := s.watch
	if w == nil || w.off.Load() || s.cluster != nil {
		return nil
	}
	return w.verify(ctx, s, true, w.checks.Load())
}

// errOldRedis reports a server older than Redis 7.0: fills and leases use
// SET ... NX GET and EXPIRE ... NX/GT, which it would refuse on every call.
var errOldRedis = errors.New("cachedpq: Redis 7.0 or later is required (SET ... NX GET, EXPIRE ... NX/GT): not used")

// serverID reads a server's identity, "run_id master_replid", from its
// INFO: errNoRunID if it names no run_id, errNotMaster if the server is
// not a master, errOldRedis if its redis_version is below 7.
func serverID(info string) (string, error) {
	var runID, replID, role, version string
	for line := range strings.Lines(info) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		switch k {
		case "run_id":
			runID = v
		case "master_replid":
			replID = v
		case "role":
			role = v
		case "redis_version":
			version = v
		}
	}
	switch {
	case runID == "":
		return "", errNoRunID
	case role != "" && role != "master":
		return "", errNotMaster
	case version != "" && !atLeast7(version):
		return "", fmt.Errorf("%w (the server runs %s)", errOldRedis, version)
	}
	return runID + " " + replID, nil
}

// atLeast7 reports whether a redis_version such as "7.0.15" is 7.0 or
// later. A version that does not start with a number is given the benefit
// of the doubt: the commands themselves then tell.
func atLeast7(version string) bool {
	major, _, _ := strings.Cut(version, ".")
	n, err := strconv.Atoi(major)
	return err != nil || n >= 7
}

// dialCounter is a go-redis hook that counts the connections its client
// dials.
type dialCounter struct{ n atomic.Uint64 }

func (d *dialCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err == nil {
			d.n.Add(1)
		}
		return c, err
	}
}

func (d *dialCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (d *dialCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
