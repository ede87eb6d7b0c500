package cachedpq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/redis/go-redis/v9"
)

// A Redis that restarts from a snapshot (RDB or AOF), or a replica that a
// failover promotes, may have lost stamp bumps it had acknowledged: the
// entries those writes voided are current again, for every process, and
// nothing failed that would make anyone invalidate them again. So the
// store counts the connections its client dials and, before it answers a
// lookup made after a dial, checks the server: the run_id of the server
// the namespace was last checked on is kept under <prefix>:server, and a
// different or missing one bumps the epoch, voiding every entry, in the
// script that records the new one. A server that keeps its run_id has
// lost nothing by a restart: it did not restart.
//
// Only where scripts run (a single node, Sentinel): on a Cluster the
// namespace spans the masters, each of which would need its own record.

// serverKey is the key of the run_id the namespace was last checked on.
func (s *redisStore) serverKey() string { return s.prefix + ":server" }

// serverCheckScript records ARGV[1] as the run_id of the namespace's server
// (KEYS[1]) and, if another or none was recorded, gives the epoch stamp
// (KEYS[2]) the fresh value ARGV[2]. It answers 0 if the server was the
// one recorded, 1 if it was another, 2 if none was recorded (a new
// namespace, or a record evicted or lost: void it all the same).
var serverCheckScript = redis.NewScript(`
local v = redis.pcall('GET', KEYS[1])
if v == ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
if type(v) == 'string' then return 1 end
return 2`)

// serverWatch decides when a lookup's answer needs a check of the server.
type serverWatch struct {
	// dials is the client's dial counter, shared by every watch over the
	// client: the hook holds it alone, not the watch (nor its engine).
	dials   *dialCounter
	checked atomic.Uint64 // dials counted before the last check began
	voided  atomic.Uint64 // how many checks voided the namespace
	// checks counts completed checks. A lookup that overlapped one may
	// predate a void another watch or process made on that server (its
	// own check then finds the run_id recorded and answers 0): it is
	// looked up again.
	checks atomic.Uint64
	mu     sync.Mutex // one check at a time
	// onVoid, if set, runs after a check voided the namespace; changed is
	// false when no server had been recorded.
	onVoid func(runID string, changed bool)
	// off is set when the server cannot be checked (INFO refused or
	// without run_id, as some managed services have it): lookups are then
	// answered unchecked, and onOff, if set, runs once with the reason.
	off   atomic.Bool
	onOff func(err error)
}

// newServerWatch returns a watch over c's dials. The first lookup checks:
// connections dialed before the watch began were never counted.
func newServerWatch(c *redis.Client) *serverWatch {
	return &serverWatch{dials: dialsOf(c)}
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
	dialMu.Lock()
	defer dialMu.Unlock()
	k := weak.Make(c)
	if d := dialCounters[k]; d != nil {
		return d
	}
	d := &dialCounter{}
	d.n.Store(1)
	c.AddHook(d)
	dialCounters[k] = d
	runtime.AddCleanup(c, func(k weak.Pointer[redis.Client]) {
		dialMu.Lock()
		delete(dialCounters, k)
		dialMu.Unlock()
	}, k)
	return d
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
// check gave it).
func lookupChecked[T any](ctx context.Context, s *redisStore, lookup func() (T, error)) (T, error) {
	w := s.watch
	if w == nil || w.off.Load() {
		return lookup()
	}
	for range 3 {
		checks := w.checks.Load()
		res, err := lookup()
		if err != nil {
			return res, err
		}
		if err := w.verify(ctx, s); err != nil {
			return res, err
		}
		if w.checks.Load() == checks {
			return res, nil
		}
	}
	var zero T
	return zero, errServerChanging
}

// verify checks the server if a connection was dialed since the last check
// began.
func (w *serverWatch) verify(ctx context.Context, s *redisStore) error {
	n := w.dials.n.Load()
	if w.checked.Load() >= n {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	n = w.dials.n.Load()
	if w.checked.Load() >= n {
		return nil
	}
	runID, result, err := s.checkServer(ctx)
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
	w.checked.Store(n)
	w.checks.Add(1)
	return nil
}

// checkServer records the server's run_id for the namespace, voiding the
// namespace if the record named another server or none (as
// serverCheckScript answers).
func (s *redisStore) checkServer(ctx context.Context) (runID string, result int, err error) {
	info, err := s.c.Info(ctx, "server").Result()
	if refusesInfo(err) {
		return "", 0, fmt.Errorf("%w: %w", errNoRunID, err)
	}
	if err != nil {
		return "", 0, err
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			runID = strings.TrimSpace(v)
		}
	}
	if runID == "" {
		return "", 0, errNoRunID
	}
	keys := []string{s.serverKey(), s.stampKey(epochTag)}
	result, err = serverCheckScript.Run(ctx, s.c, keys, runID, formatStamp(newStamp())).Int()
	return runID, result, err
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
