package cachedpq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/lib/pq"
	"github.com/sony/gobreaker/v2"
)

// epochTag is the tag every entry depends on: bumping it invalidates the
// whole namespace. A table really named "*" would share it, which only
// invalidates more.
const epochTag = "*"

// Load coordination across processes sharing Redis.
const (
	leaseTTL      = 3 * time.Second       // how long one process may hold a fill lease
	leaseWait     = leaseTTL              // others wait while it is held, taking over when it is let go
	leasePollMin  = time.Millisecond      // how soon they first look
	leasePoll     = 10 * time.Millisecond // how often they look at most
	retryMin      = 10 * time.Millisecond // first retry of a failed invalidation
	retryMax      = time.Second           // longest wait between retries
	bumpAttempts  = 3                     // tries of an invalidation before the write returns
	fillTimeout   = 2 * time.Second       // bound for a background fill
	purgeTimeout  = 10 * time.Second      // bound for a background purge
	purgeDelay    = 10 * time.Millisecond // how long a purge waits for more tags
	maxDecodeSize = 64 << 20              // the largest entry a lookup decodes
	stampBufCap   = 8                     // tags a lookup can read without allocating
)

// engine applies the cache-aside pattern for one Connector. It is safe for
// concurrent use.
type engine struct {
	opts   Options
	reg    *Registry
	id     atomic.Pointer[identity] // the Connector's, or more (see Connector.settle)
	store  backend
	direct backend  // the store without the breaker, for invalidations
	marks  marker   // direct, where writes can mark stamps (see marks.go); nil elsewhere
	breakr *guarded // nil for the in-process store, which cannot fail
	shared bool     // the store is shared with other processes
	// leasing is true when the store is a leaser: a lookup may take the
	// fill lease.
	leasing bool
	// guess returns the stamps last seen under tags (see
	// redisStore.guessStamps), for early queries; nil when there are none.
	guess func(tags []string, buf []uint64) ([]uint64, bool)

	flights    flightGroup
	lookups    lookupGroup
	refreshers sync.Map // key -> struct{}: the one reader reloading an entry early or while serving it stale
	leases     sync.Map // token -> *heldLease: the fill leases this process holds or is asking for
	hot        hotKeys  // keys likely to hit, whose lookups take no lease
	cold       coldOutcomes
	seen       seenKeys   // keys looked up lately: their reads send no early query
	bumps      localBumps // when this process last invalidated each tag
	regs       sync.Map   // *registration -> *regState
	stats      stats
	cat        catalogCache

	pendingMu  sync.Mutex          // guards pending, pendingGen and retrying
	pending    map[string]struct{} // tags whose invalidation is not yet confirmed
	pendingGen uint64              // counts failures marked pending
	retrying   bool
	unsure     atomic.Bool // some invalidation is unconfirmed: serve no hit

	purgeMu   sync.Mutex // guards purgeTags and purging
	purgeTags []string   // tags invalidated since the last purge pass
	purging   bool       // a purgePasses goroutine runs

	inner driver.Connector // lib/pq's, for background reloads
	// probe answers whether a new background connection reached a standby
	// or started with other settings (see Connector.probe): a reload there
	// would store rows the keys do not stand for.
	probe  func(context.Context, driver.Conn) (probeAnswer, error)
	bgOnce sync.Once // opens bgDB
	bgDB   *sql.DB   // background reloads' connections; see background

	bg      sync.WaitGroup // background fills, purges, reloads and retries
	bgMu    sync.RWMutex   // guards starting work on bg against closing: close waits for all it started
	closing chan struct{}  // closed by close; no background work starts after it

	// beforeFill, if set by a test, runs between the Postgres read and the
	// cache fill of a miss.
	beforeFill func(key string)
	// beforeJoin, if set by a test, runs when a miss is about to join or
	// lead a load of key.
	beforeJoin func(key string)
	// beforeUnmark, if set by a test, runs before a write's mark is taken
	// back (see marks.go).
	beforeUnmark func(tags []string)
	// beforeEarlyLookup, if set by a test, runs before the lookup of an
	// early query (see early).
	beforeEarlyLookup func(key string)
}

func newEngine(c *Connector) *engine {
	e := &engine{
		opts:    c.opts,
		reg:     c.opts.Registry,
		inner:   c.inner,
		probe:   c.probe,
		closing: make(chan struct{}),
		pending: make(map[string]struct{}),
	}
	e.id.Store(&c.id)
	if c.opts.Redis != nil {
		rb := &redisBackend{
			redisStore: newRedisStore(c.opts.Redis, c.opts.Prefix),
			maxBytes:   maxDecodeSize,
			memo:       newDecodeMemo(c.opts.MaxMemory / 4),
		}
		e.breakr = newGuarded(rb, e.breakerChanged)
		e.store, e.direct, e.marks, e.shared = e.breakr, rb, rb, true
		e.lookups.fn, e.lookups.timeout = e.lookupOnce, c.opts.Timeout
		e.leasing = rb.leasing()
		if e.leasing && !c.opts.NoEarlyQueries {
			e.guess = rb.guessStamps
		}
		rb.step = c.opts.Timeout
		rb.background = e.goBackground
		rb.unclaimed = func(token uint64) bool {
			v, ok := e.leases.Load(token)
			return !ok || e.withdraw(v.(*heldLease))
		}
		if w := rb.watch; w != nil {
			w.onVoid = e.serverChanged
			w.onOff = func(err error) {
				e.opts.Logger.Warn("cachedpq: cannot tell a restarted Redis from the one before (INFO run_id): "+
					"invalidations a restart from a snapshot loses will not be noticed", "err", err)
			}
		}
	} else {
		e.store = newMemStore(c.opts.MaxMemory)
		e.direct = e.store
	}
	return e
}

// close stops background work and waits for it.
func (e *engine) close() {
	e.bgMu.Lock()
	if !e.closed() {
		close(e.closing)
	}
	e.bgMu.Unlock()
	e.bg.Wait()
	e.bgOnce.Do(func() {}) // no pool opens after this
	if e.bgDB != nil {
		e.bgDB.Close()
	}
	if ms, ok := e.store.(*memStore); ok {
		ms.close()
	}
}

// closed reports whether close has begun.
func (e *engine) closed() bool {
	select {
	case <-e.closing:
		return true
	default:
		return false
	}
}

// goBackground runs fn on bg unless close has begun, and reports whether
// it does. A connection database/sql has not closed yet (a held sql.Conn, a
// query in flight) can still read after close: work it started then would
// outlive close's wait, on resources close releases.
func (e *engine) goBackground(fn func()) bool {
	e.bgMu.RLock()
	defer e.bgMu.RUnlock()
	if e.closed() {
		return false
	}
	e.bg.Go(fn)
	return true
}

// serverChanged notes that a check of the Redis server voided the
// namespace: the server was not the one it was last checked on.
func (e *engine) serverChanged(server string, changed bool) {
	if !changed {
		return // a new namespace, or its record lost: nothing to report
	}
	e.stats.epochBumps.Add(1)
	e.opts.Logger.Warn("cachedpq: the Redis server changed (a restart or a failover), and may have lost invalidations: all entries are void", "server", server)
}

func (e *engine) breakerChanged(from, to gobreaker.State) {
	e.opts.Logger.Warn("cachedpq: cache circuit breaker", "from", from.String(), "to", to.String())
}

// fail records a cache failure: counted, logged, handed to the hook. The
// SQL caller never sees it. ctx is the context op ran under.
func (e *engine) fail(ctx context.Context, op string, err error) {
	if errors.Is(err, errBreakerOpen) {
		return
	}
	e.stats.cacheErrors.Add(1)
	e.opts.Logger.Debug("cachedpq: cache operation failed", "op", op, "err", err)
	if e.opts.OnError != nil {
		e.opts.OnError(err)
	}
	if !errors.Is(err, context.Canceled) && !callerGone(ctx) {
		// While the cache failed for us it may have failed for a writer in
		// another process, whose invalidation is then late or lost: serve
		// no hit until the whole namespace has been invalidated.
		e.markPending(nil)
	}
}

// callerGone reports whether ctx, which a cache operation ran under, ended
// for its caller's reasons (a client that went away, a request's deadline)
// rather than by the cache's own timeout. An operation so cut short says
// nothing about the cache: counted as a failure, it would make every
// process invalidate the whole namespace, and open the breaker.
func callerGone(ctx context.Context) bool {
	return ctx.Err() != nil && !errors.Is(context.Cause(ctx), errCacheTimeout)
}

// cacheCtx bounds one cache operation by the configured timeout. The
// in-process store never waits, so it needs no timer.
func (e *engine) cacheCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if !e.shared {
		return ctx, func() {}
	}
	return withCacheTimeout(ctx, e.opts.Timeout)
}

// lookup reads an entry under key, the key's bytes, and the stamps of its
// tags, and the token of the fill lease held under them if the lookup
// learnt it. The in-process store is called directly, with a view of key
// that it does not keep, so that the key and the stamp buffer stay on the
// caller's stack: a hit needs no string of the key. It judges expiry at
// now, the wall-clock time (Unix nanoseconds) as it began. The shared
// store's lookups are shared among readers, and keep theirs: r.key is set
// first.
func (e *engine) lookup(ctx context.Context, r *read, key []byte, buf []uint64, now int64) (*entry, []uint64, uint64, error) {
	if ms, ok := e.store.(*memStore); ok {
		ent, stamps := ms.lookupAt(unsafe.String(unsafe.SliceData(key), len(key)), r.tags, buf, now)
		return ent, stamps, 0, nil
	}
	r.keep(key)
	return e.lookups.do(ctx, r.key, r.tags)
}

// keep sets r.key to a string of key, its bytes, unless it is set, and
// returns it. Only a hit that serves the entry as it is leaves it unset.
func (r *read) keep(key []byte) string {
	if r.key == "" {
		r.key = string(key)
	}
	return r.key
}

// query runs a read through the cache when it is registered and the
// connection may use the cache; otherwise it runs on Postgres, and a write
// made through Query invalidates before its rows' Close returns.
func (e *engine) query(ctx context.Context, c *conn, src inner, query string, args []driver.NamedValue) (driver.Rows, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	a := c.analyze(query)
	if reg, rs := e.registered(c, a); reg != nil {
		if why, ok := c.refuses(); ok {
			e.bypassed(rs, why)
			return e.uncached(ctx, c, src, a, query, args)
		}
		return e.cached(ctx, c, &read{reg: reg, rs: rs, src: src, query: query, args: args})
	}
	return e.uncached(ctx, c, src, a, query, args)
}

// registered returns a's registration and its state, or nil if a is not
// registered: the connection's last answer while the registry is unchanged.
func (e *engine) registered(c *conn, a *analysis) (*registration, *regState) {
	m := e.reg.byFP.Load()
	if m == nil {
		return nil, nil
	}
	if k := &c.lastReg; k.a == a && k.in == m {
		return k.reg, k.rs
	}
	k := regMemo{a: a, in: m, reg: (*m)[a.fingerprint]}
	if k.reg != nil {
		k.rs = e.state(k.reg)
	}
	c.lastReg = k
	return k.reg, k.rs
}

// uncached runs a query on Postgres. One that may write (a writable CTE, a
// volatile function, even in a registered read the cache let pass) has
// what it did noted before its rows' Close returns, with the first error
// they met: an error after a COMMIT in a string of statements is no
// success.
func (e *engine) uncached(ctx context.Context, c *conn, src inner, a *analysis, query string, args []driver.NamedValue) (driver.Rows, error) {
	if !mayWrite(a) && !e.readsWrite(ctx, c, a) {
		return src.innerQuery(ctx, query, args)
	}
	before := e.catalogBefore(ctx, c, a)
	pm := e.markWrite(ctx, c, a, before)
	inner, err := src.innerQuery(ctx, query, args)
	if err != nil {
		e.endStatement(ctx, c, a, before, pm, err)
		return nil, err
	}
	r := newRows(inner, nil)
	rowsOpen(c, a)
	r.onClose = func() { e.endStatement(ctx, c, a, before, pm, r.err) }
	return r, nil
}

// endStatement follows a statement that may have written (mayWrite or
// readsWrite), run through Exec, or through Query once its rows are
// closed; err is its first error. pm is its mark, if markWrite sent one:
// the invalidation takes it back if it landed in time, else the statement
// invalidates as an unmarked one does.
func (e *engine) endStatement(ctx context.Context, c *conn, a *analysis, before *catalog, pm *pendingMark, err error) {
	e.holdMark(c, pm, err == nil || reportedByServer(err))
	e.afterStatement(ctx, c, a, before, err)
	c.wrote = nil
	e.endMark(c, pm)
}

// rowsOpen notes what a statement run through Query may have done already
// while its rows are open: lib/pq has run it when Query returns (all of a
// statement without rows, the statements of a string before the one whose
// rows these are), and the connection's next statements may run before
// the rows' Close (on a sql.Conn or a Tx). A lasting session change counts
// at once; transaction control leaves the connection unsure whether a
// transaction is open until Close tells.
func rowsOpen(c *conn, a *analysis) {
	if a.sessionLasting {
		c.dirty = true
	}
	ends := a.txCommits || a.txRollsBack || a.commitPrepared
	switch {
	case c.tx != nil && ends: // see txStatementInTx
		c.tx.unsure = true
	case c.tx == nil && (ends || a.txEnd != txKept):
		c.rawTx, c.txUnsure = false, true
	}
}

// exec runs a statement and, once it succeeded, invalidates what it wrote:
// now outside a transaction, at commit inside one.
func (e *engine) exec(ctx context.Context, c *conn, src inner, query string, args []driver.NamedValue) (driver.Result, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	a := c.analyze(query)
	before := e.catalogBefore(ctx, c, a)
	pm := e.markWrite(ctx, c, a, before)
	res, err := src.innerExec(ctx, query, args)
	if mayWrite(a) || e.readsWrite(ctx, c, a) { // as markWrite, which sends a mark only if mayWrite
		e.endStatement(ctx, c, a, before, pm, err)
	}
	if err == nil && a.discardAll && !a.multi {
		e.discarded(ctx, c)
	}
	return res, err
}

// discarded follows a DISCARD ALL, which leaves the session as a new
// connection's: its settings, its role, no temporary relations. The
// connection uses the cache again if it answers the probe as a new one
// would (its role's settings may have changed since it opened).
func (e *engine) discarded(ctx context.Context, c *conn) {
	if c.inTx() || c.broken != nil {
		return
	}
	p, err := c.c.probe(ctx, c.inner)
	switch {
	case errors.Is(err, errSCSOff):
		c.broken = errSCSTurnedOff
	case err == nil:
		c.dirty, c.standby, c.otherSettings = false, p.standby, p.otherSettings
	}
}

// reportedByServer reports an error Postgres answered with: the statement
// failed and, outside a transaction, wrote nothing.
func reportedByServer(err error) bool {
	var pqErr *pq.Error
	// A FATAL error ends the session: a COMMIT it cut short (a backend
	// terminated while waiting for a synchronous replica) may have
	// committed locally, so its outcome is unknown.
	return errors.As(err, &pqErr) && !pqErr.Fatal()
}

// refuses reports why reads on c must not use the cache, if they must not.
func (c *conn) refuses() (bypassReason, bool) {
	switch {
	case c.inTx():
		return bypassTransaction, true
	case c.dirty:
		return bypassSession, true
	case c.standby:
		return bypassStandby, true
	case c.otherSettings:
		return bypassSettings, true
	}
	return 0, false
}

// inner runs statements on the inner driver: a connection, with the
// statement's text, or a prepared statement. (An interface satisfied by
// the wrappers themselves, so that a query allocates no closure.)
type inner interface {
	innerQuery(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error)
	innerExec(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error)
	// loadQuery runs a registered read's query for a load: as innerQuery,
	// or as a statement the connection prepared (see Options.Prepare).
	loadQuery(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error)
}

// run runs the read's query on Postgres, unless ctx has ended (in a cache
// lookup or wait): the caller gets its context's error, as database/sql
// gives one whose context ended before the query, rather than a query
// sent with an ended context, which lib/pq may fail to cancel.
func (r *read) run(ctx context.Context) (driver.Rows, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return r.src.loadQuery(ctx, r.query, r.args)
}

// read is one registered read on its way through the cache.
type read struct {
	reg   *registration
	rs    *regState
	key   string
	check [16]byte
	tags  []string // the entry's tags, the epoch last
	src   inner    // where the query runs on Postgres
	query string
	args  []driver.NamedValue
	held  *heldLease // the fill lease this load holds, if any
	// replaces is the creation time of the valid entry an early refresh
	// reloads (0 for a miss): an entry no newer does not end the refresh.
	replaces int64
}

// cached serves a registered read: a hit replays the entry, a miss loads it.
func (e *engine) cached(ctx context.Context, c *conn, r *read) (driver.Rows, error) {
	if why, ok := e.skip(ctx, c, r); ok {
		e.bypassed(r.rs, why)
		return e.uncached(ctx, c, r.src, r.reg.a, r.query, r.args)
	}
	var kb [128]byte
	kbytes, check, ok := appendKey(kb[:0], e.opts.Prefix, r.reg.name, e.id.Load(), r.reg.a, r.args)
	if !ok {
		e.bypassed(r.rs, bypassArguments)
		return r.run(ctx)
	}
	r.check = check
	if e.marks != nil {
		e.marks.awaitUnmarked(ctx, r.tags)
	}
	if rows, ok, err := e.early(ctx, r, kbytes); ok {
		return rows, err
	}
	var sb [stampBufCap]uint64
	// An in-process lookup takes well under a microsecond: the time it
	// began serves as the time it returned, and one clock reading as two.
	start := monoNow()
	now := wallNow.at(start)
	ent, stamps, holder, err := e.lookup(ctx, r, kbytes, sb[:0], now)
	if e.shared {
		mono := monoNow() // one reading serves the histogram and the expiry
		e.stats.cacheLat.observe(mono - start)
		now = wallNow.at(mono)
	}
	if err != nil {
		r.keep(kbytes)
		return e.lookupFailed(ctx, r, stamps, holder, err)
	}
	if hasMark(stamps) {
		e.bypassed(r.rs, bypassWriting)
		return r.run(ctx)
	}
	if rows, ok := e.serve(r, kbytes, ent, stamps, now); ok {
		return rows, nil
	}
	r.keep(kbytes)
	return e.miss(ctx, r, stamps, holder)
}

// skip reports whether the cache must be skipped for r, and why; otherwise
// it resolves r's tags.
func (e *engine) skip(ctx context.Context, c *conn, r *read) (bypassReason, bool) {
	switch {
	case e.unsure.Load():
		return bypassPending, true
	case e.breakr != nil && e.breakr.open():
		return bypassBreakerOpen, true
	}
	tags, why, ok := e.tagsFor(ctx, c, r.reg, r.rs)
	if !ok {
		return why, true
	}
	r.tags = tags
	return 0, false
}

// lookupFailed handles a lookup error: a foreign or corrupt value is a
// miss; any other failure sends the read to Postgres.
func (e *engine) lookupFailed(ctx context.Context, r *read, stamps []uint64, holder uint64, err error) (driver.Rows, error) {
	var corrupt errCorruptEntry
	if errors.As(err, &corrupt) && len(stamps) == len(r.tags) {
		e.note(r.rs, foreignF)
		e.opts.Logger.Warn("cachedpq: undecodable cache entry treated as a miss", "key", r.key, "err", err)
		return e.miss(ctx, r, stamps, holder)
	}
	if !e.shared { // a shared lookup's failure was recorded once, by lookupOnce
		e.fail(ctx, "lookup", err)
	}
	why := bypassCacheError
	if errors.Is(err, errBreakerOpen) { // half-open, and the probes are out
		why = bypassBreakerOpen
	}
	e.bypassed(r.rs, why)
	return r.run(ctx)
}

// lookupOnce is storeLookup for the lookup group, which shares one
// lookup among concurrent readers: its failure is recorded here, once,
// not once per reader.
func (e *engine) lookupOnce(ctx context.Context, key string, tags []string) (*entry, []uint64, uint64, error) {
	ent, stamps, holder, err := e.storeLookup(ctx, key, tags)
	if err != nil && !errors.As(err, new(errCorruptEntry)) {
		e.fail(ctx, "lookup", err)
	}
	return ent, stamps, holder, err
}

// serve answers from ent if it is valid: it answers this query, its stamps
// are current and it has not expired. Near expiry one reader refreshes it
// early (XFetch) while the others keep hitting; past expiry, within
// StaleFor, the others are served the old entry while one reloads it. now
// is the time the lookup returned, in Unix nanoseconds; key is the key's
// bytes, kept in r.key only when a reader claims a refresh.
func (e *engine) serve(r *read, key []byte, ent *entry, stamps []uint64, now int64) (driver.Rows, bool) {
	switch {
	case ent == nil:
		return nil, false
	case ent.check != r.check:
		e.note(r.rs, foreignF)
		return nil, false
	case !sameStamps(ent.stamps, stamps):
		e.note(r.rs, staleF)
		return nil, false
	}
	if now >= ent.expires {
		if now < ent.expires+int64(r.reg.policy.StaleFor) {
			if !e.claimRefresh(r.keep(key)) {
				e.note(r.rs, staleServedF)
				return newReplayRows(&ent.snap), true
			}
			e.note(r.rs, earlyRefreshesF) // this reader reloads while the others are served
		}
		e.note(r.rs, expiredF)
		return nil, false
	}
	if refreshEarly(r.reg, ent, now) && e.claimRefresh(r.keep(key)) {
		r.replaces = ent.created
		e.note(r.rs, earlyRefreshesF)
		e.refreshLater(r, stamps)
	}
	e.note(r.rs, hitsF)
	if len(ent.snap.rows) == 0 {
		e.note(r.rs, negativeHitsF)
	}
	return newReplayRows(&ent.snap), true
}

// refreshEarly decides, with XFetch's probability, whether this reader
// reloads an entry before it expires: when now − δ·β·ln(rand) ≥ expiry,
// δ being how long the query took.
func refreshEarly(reg *registration, ent *entry, now int64) bool {
	beta := reg.policy.Beta
	if beta <= 0 || ent.delta <= 0 {
		return false
	}
	gap := -float64(ent.delta) * beta * math.Log(1-rand.Float64())
	return float64(now)+gap >= float64(ent.expires)
}

// claimRefresh makes the caller the one reader reloading key, unless
// another reader already is. The claim ends when that load ends.
func (e *engine) claimRefresh(key string) bool {
	_, taken := e.refreshers.LoadOrStore(key, struct{}{})
	return !taken
}

func sameStamps(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] || a[i] == 0 {
			return false
		}
	}
	return true
}

// flightID names the load of key by readers who saw stamps. It is built
// on the stack where it fits: a miss names up to three flights.
func flightID(key string, stamps []uint64) string {
	var sb [flightIDBuf]byte
	b := append(sb[:0], key...)
	for _, s := range stamps {
		b = binary.LittleEndian.AppendUint64(b, s)
	}
	return string(b)
}

// flightIDBuf is the size of flightID's stack buffer: a key of a long
// prefix and name, and a few stamps.
const flightIDBuf = 192

// coldFlightID is the flight of key whose leader saw its stamps missing,
// which a reader that saw them all may join (see flightGroup.join): the
// leader creates them, and aliases its flight under them only after. ""
// if seen lacks a stamp itself.
func coldFlightID(key string, seen []uint64) string {
	if len(seen) == 0 || slices.Contains(seen, 0) {
		return ""
	}
	var zeros [stampBufCap]uint64
	if len(seen) > len(zeros) {
		return flightID(key, make([]uint64, len(seen)))
	}
	return flightID(key, zeros[:len(seen)])
}

// miss loads a registered read. Concurrent readers of one key that saw the
// same stamps share one Postgres query: the first leads and streams its
// rows, the others wait and replay the recorded result. holder is the
// token of the fill lease under seen, if the lookup learnt it.
func (e *engine) miss(ctx context.Context, r *read, seen []uint64, holder uint64) (driver.Rows, error) {
	if hasMark(seen) { // a write runs: its readers go to Postgres
		e.bypassed(r.rs, bypassWriting)
		return r.run(ctx)
	}
	if e.beforeJoin != nil {
		e.beforeJoin(r.key)
	}
	id := flightID(r.key, seen)
	f, leader, cold := e.flights.join(id, coldFlightID(r.key, seen), ctx)
	if !leader {
		e.note(r.rs, coalescedF)
		ent, err := f.wait(ctx)
		if err != nil {
			return nil, err
		}
		// A load that saw the stamps missing serves only if it read, once
		// it had created them, the stamps this reader saw: no write came
		// between.
		if ent != nil && time.Now().UnixNano() < ent.expires && (!cold || sameStamps(ent.stamps, seen)) {
			return newReplayRows(&ent.snap), nil
		}
		return r.run(ctx) // the leader could not record: load for ourselves
	}
	if ent := e.filledMeanwhile(r); ent != nil {
		e.flights.forget(id, f)
		// A reload this reader claimed is done: the entry is new. (The
		// load that stored it ended the key's claim, if it came first.)
		e.refreshers.Delete(r.key)
		f.finish(ent)
		e.note(r.rs, hitsF)
		return newReplayRows(&ent.snap), nil
	}
	lr := *r // the recording callback keeps it; r stays on the caller's stack
	return e.lead(ctx, f, id, &lr, seen, holder)
}

// filledMeanwhile returns the in-process store's entry for r if it is
// current now. Another load of r's key may have stored it, and left the
// flight group, between r's lookup and its join: r would lead a second
// load. (With Redis, r's lookup learnt that load's lease, and r waits for
// its entry instead; see awaitLease.)
func (e *engine) filledMeanwhile(r *read) *entry {
	ms, ok := e.store.(*memStore)
	if !ok {
		return nil
	}
	var sb [stampBufCap]uint64
	ent, now, _ := ms.lookup(context.Background(), r.key, r.tags, sb[:0])
	if !usable(r, ent, now, now) {
		return nil
	}
	return ent
}

// lead runs the query of a miss for every reader waiting on f.
// The stamps the lookup saw serve for the entry (they were read before the
// query runs); only missing ones cost another round trip to create.
func (e *engine) lead(ctx context.Context, f *flight, id string, r *read, seen []uint64, holder uint64) (driver.Rows, error) {
	ids := []string{id}
	forget := func() {
		for _, x := range ids {
			e.flights.forget(x, f)
		}
	}
	// end publishes a failed load, or an entry that needs no storing; the
	// refresh claim on the key ends with it. (A recorded entry is published
	// below: it stays with the flight until stored.)
	end := func(ent *entry) {
		forget()
		e.refreshers.Delete(r.key)
		f.finish(ent)
	}
	stamps, err := slices.Clone(seen), error(nil)
	if len(seen) != len(r.tags) || slices.Contains(seen, 0) {
		stamps, err = e.readStamps(ctx, r.tags)
		holder = 0 // a lease under seen is not one under these stamps
	}
	if err != nil || hasMark(stamps) {
		end(nil)
		why := bypassCacheError
		if err == nil {
			why = bypassWriting
		}
		e.bypassed(r.rs, why)
		return r.run(ctx)
	}
	if as := flightID(r.key, stamps); as != id && e.flights.alias(as, f) {
		ids = append(ids, as)
	}
	if ent := e.awaitLease(ctx, r, stamps, holder); ent != nil {
		end(ent)
		if r.replaces == 0 { // a reader, not an early refresh, is served it
			e.note(r.rs, hitsF)
		}
		return newReplayRows(&ent.snap), nil
	}
	stop := func() bool { return false }
	if err := ctx.Err(); err != nil {
		// The leader's context ended before its query began (while it
		// waited for another process's lease, say). It leaves now, not in
		// AfterFunc's goroutine: if nobody else waits, the query is not
		// sent at all. lib/pq would send it, and its cancel request, racing
		// the query, could arrive first and be lost, holding the caller
		// until the query ended.
		if f.leave(); f.ctx.Err() != nil {
			end(nil)
			e.releaseLease(r)
			return nil, err
		}
		// Waiters remain: load for them; handOver returns err.
	} else if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, f.leave)
	}
	start := time.Now()
	rows, err := r.run(f.ctx)
	if err != nil {
		stop()
		end(nil)
		e.releaseLease(r)
		return nil, err
	}
	e.note(r.rs, missesF)
	rec := e.record(r, rows, stamps, start, stop, func(ent *entry) {
		if ent == nil {
			end(nil)
			e.releaseLease(r)
			return
		}
		// Readers who come while the entry is being stored get it from the
		// flight, rather than miss the cache and wait for our lease.
		f.finish(ent)
		e.store1(r, ent, &f.void, forget)
	})
	return e.handOver(ctx, rec)
}

// record wraps the rows of r's query, which began at start, so that their
// Close stops the watch of the reader's context, then hands done the
// entry they make under stamps, or nil if they are not a whole result
// within r's limits.
func (e *engine) record(r *read, rows driver.Rows, stamps []uint64, start time.Time, stop func() bool, done func(*entry)) driver.Rows {
	lim := recordLimits{maxRows: r.reg.policy.MaxRows, maxBytes: r.reg.policy.MaxBytes}
	ran := time.Since(start)
	return newRecordingRows(rows, lim, func(s *snapshot, complete bool, spent time.Duration) {
		stop()
		r.rs.load.Store(int64(ran + spent))
		if !complete {
			e.bypassed(r.rs, bypassTooLarge)
			done(nil)
			return
		}
		ent := e.newEntry(r.reg, r.check, stamps, start, ran+spent, s)
		e.stats.dbLat.observe(time.Duration(ent.delta))
		done(ent)
	})
}

// handOver gives the leader its rows, unless its context ended while the
// shared query ran: then the rows are read to the end for the waiters and
// the leader gets its context's error, as it would without a cache, instead
// of whatever database/sql's race with the context's end decides.
func (e *engine) handOver(ctx context.Context, rec driver.Rows) (driver.Rows, error) {
	if err := ctx.Err(); err != nil {
		_ = rec.Close()
		return nil, err
	}
	return rec, nil
}

// readStamps reads (creating missing) the stamps of tags before a load.
func (e *engine) readStamps(ctx context.Context, tags []string) ([]uint64, error) {
	sctx, cancel := e.cacheCtx(ctx)
	defer cancel()
	stamps, err := e.store.readStamps(sctx, tags)
	if err != nil {
		e.fail(sctx, "read stamps", err)
	}
	return stamps, err
}

// newEntry stamps a recorded result with what it answers and how long it
// may be served.
func (e *engine) newEntry(reg *registration, check [16]byte, stamps []uint64, start time.Time, took time.Duration, s *snapshot) *entry {
	ttl := reg.ttl(len(s.rows) == 0)
	return &entry{
		check:   check,
		stamps:  stamps,
		created: start.UnixNano(),
		expires: start.Add(ttl).UnixNano(),
		delta:   int64(took), // XFetch's δ: the query's time
		snap:    *s,
	}
}

// ttl is how long an entry may be served: the policy's TTL with jitter, or
// the negative TTL for an empty result (0: not stored).
func (r *registration) ttl(empty bool) time.Duration {
	p := &r.policy
	if empty {
		return max(p.NegativeTTL, 0)
	}
	ttl := p.TTL
	if p.Jitter > 0 {
		ttl += time.Duration(rand.Int64N(int64(float64(p.TTL)*p.Jitter) + 1))
	}
	return ttl
}

// store1 writes a recorded entry off the caller's path: inline for the
// in-process store (a map write), in the background for Redis. It calls
// stored once a lookup finds the entry, or once it is clear none will.
// Once void is set (InvalidateQuery removed the key since the load began)
// it stores nothing: for a query that reads no table, no stamp tells the
// entry is old. A fill that void was set during is removed again:
// InvalidateQuery's own removal may have come before it.
func (e *engine) store1(r *read, ent *entry, void *atomic.Bool, stored func()) {
	if ent.expires <= ent.created || void.Load() {
		e.storeNothing(r, stored)
		return
	}
	if e.shared {
		if !e.goBackground(func() { e.fillShared(r, ent, void, stored) }) {
			e.storeNothing(r, stored) // closed: the next process to miss fills it
		}
		return
	}
	if e.beforeFill != nil {
		e.beforeFill(r.key)
	}
	ent.size = ent.snap.approxSize()
	ttl, tags := fillTerms(r, ent)
	e.fillNow(context.Background(), r, ent, ttl, tags, 0)
	e.removeIfVoid(context.Background(), r, void)
	stored()
	e.refreshers.Delete(r.key)
}

// fillTerms are how long ent stays in the cache and the tags that index it.
func fillTerms(r *read, ent *entry) (time.Duration, []string) {
	ttl := time.Duration(ent.expires-ent.created) + r.reg.policy.StaleFor
	return ttl, r.tags[:len(r.tags)-1] // entries are not indexed under the epoch
}

// fillShared is store1's work for the shared store, in the background.
func (e *engine) fillShared(r *read, ent *entry, void *atomic.Bool, stored func()) {
	if ent.expires <= ent.created || void.Load() { // void: InvalidateQuery removed the key since the load began
		e.storeNothing(r, stored)
		return
	}
	ttl, tags := fillTerms(r, ent)
	if e.beforeFill != nil {
		e.beforeFill(r.key)
	}
	ctx, cancel := withCacheTimeout(context.Background(), fillTimeout)
	defer cancel()
	var token uint64
	if h := r.held; h != nil && e.leases.CompareAndDelete(h.token, h) {
		token = h.token // released with the fill
	}
	e.fillNow(ctx, r, ent, ttl, tags, token)
	e.removeIfVoid(ctx, r, void)
	stored()
	e.refreshers.Delete(r.key) // only now does a lookup see the new entry
}

// removeIfVoid removes the entry r's load has just stored if void is set:
// InvalidateQuery voids the loads of a key before it removes the key, so
// a fill it came during may have landed after its removal. A failed
// removal counts as a cache failure, which voids the namespace.
func (e *engine) removeIfVoid(ctx context.Context, r *read, void *atomic.Bool) {
	if !void.Load() {
		return
	}
	if err := e.store.remove(ctx, r.key); err != nil {
		e.fail(ctx, "remove", err)
	}
}

// storeNothing ends a load whose entry is not stored: its lease and its
// refresh claim go.
func (e *engine) storeNothing(r *read, stored func()) {
	stored()
	e.releaseLease(r)
	e.refreshers.Delete(r.key)
}

// fillNow stores ent, releasing the fill lease token holds (if not 0).
func (e *engine) fillNow(ctx context.Context, r *read, ent *entry, ttl time.Duration, tags []string, token uint64) {
	err := error(nil)
	if token != 0 {
		err = e.store.(releasingFiller).fillReleasing(ctx, r.key, ent, ttl, tags, token)
		if err != nil { // the lease may be held still: let go of it
			e.giveBack(&heldLease{key: r.key, token: token})
		}
	} else {
		err = e.store.fill(ctx, r.key, ent, ttl, tags)
	}
	if err != nil {
		e.note(r.rs, fillErrorsF)
		if !errors.Is(err, errUncacheable) && !errors.Is(err, errTooLarge) {
			e.fail(ctx, "fill", err)
		}
		return
	}
	e.note(r.rs, fillsF)
	raw := uint64(ent.snap.approxSize())
	for _, c := range []*counters{&e.stats.counters, &r.rs.c} {
		c.fillBytesRaw.Add(raw)
		c.fillBytes.Add(uint64(ent.size))
	}
}
