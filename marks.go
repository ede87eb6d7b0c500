package cachedpq

import (
	"context"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Marks. A write outside a transaction would cost its statement and then
// a round trip to Redis for the new stamps of the tables it wrote: the
// invalidation must land before Exec returns (so the writing process,
// and anyone it answers, reads the write), and a stamp replaced before the
// commit would let a reader that raced the write store its old rows under
// the new stamp. With Redis, the round trip runs beside the statement
// instead (and beside the COMMIT of a BeginTx transaction: markCommit):
//
//  1. Before the statement is sent, the stamps of the tables it will
//     write are marked (see markScript), with a PX TTL of markTTL. A
//     reader that meets a mark goes to Postgres and stores nothing
//     (Bypass "writing"); an entry never records a mark, so none is
//     served.
//  2. The statement runs on Postgres while the mark is on its way; Exec
//     waits for both (a write run through Query, with RETURNING or a
//     writable CTE: its rows' Close).
//  3. After the statement, the mark is taken back in the background: the
//     last write under it to end gives the stamp a fresh value (or, if
//     every one failed and nothing else invalidated meanwhile, the stamp
//     it had). Reads in the writing process wait for that.
//
// An entry loaded under the stamp before the mark is void from the mark
// on; a reader that met the mark stored nothing; a stamp read after the
// last write ended was read after its commit. So no entry that predates a
// write is served once its Exec has returned, in any process.
//
// What could break that is handled so:
//   - The mark fails or times out: the write invalidates as before, after
//     the statement, in its own round trip. A mark that landed late lapses
//     with its TTL.
//   - The statement outlasts markTrust (half the mark's TTL, which a later
//     write's mark may have reset, or the mark may have lapsed and a reader
//     stored under a new stamp): as before, a round trip after it. Its
//     mark is not taken back, since its count may be another write's by
//     now; it lapses.
//   - The connection is lost: the statement may still commit. Its mark is
//     left to lapse, covering a late commit within markTTL, and the write
//     invalidates as before.
//   - A process dies in a write: its mark lapses within markTTL; until
//     then its tables' reads go to Postgres.
//   - The mark is evicted while the statement runs (an eviction policy
//     that evicts keys with a TTL), and a reader stores the old rows under
//     a new stamp: taking the mark back replaces that stamp. Until it has,
//     the writing process's reads wait (awaitUnmarked), but another
//     process may serve those rows, for about a round trip after the
//     write's Exec returned.
//   - A plain invalidation (a transaction's commit, InvalidateTables)
//     leaves a mark alone but for noting it (bumpScript): the last write
//     under the mark replaces the stamp, after that commit.

const (
	// markedStamp is what a mark reads as: no stamp newStamp returns
	// (they are below stampLimit), nor one an entry records.
	markedStamp = math.MaxUint64
	// markTTL bounds how long a mark keeps every process's reads of its
	// tables off the cache when nobody takes it back (a long statement, a
	// lost process): each such read then goes to Postgres.
	markTTL = time.Second
	// markTrust is how long after its mark was sent a statement may end
	// and still count on it: a longer one invalidates after it, as
	// without marks, and its round trip weighs little beside it.
	markTrust = markTTL / 2
)

// A mark is "m<n>:<d>:<old>": n writes run; d is 1 once one of them
// ended having written, or an invalidation came meanwhile, else 0; old is
// the stamp the first mark replaced ("" if there was none). If every write
// under a mark failed and nothing else invalidated the tag, the last one
// to end puts old back: a failed write invalidates nothing, as without
// marks (readers stored nothing under the mark, and what they stored
// before is still true). The scripts answer the value they leave.

// markScript marks the stamp KEYS[1] for one more write, for ARGV[1] ms.
var markScript = redis.NewScript(`
local v = redis.pcall('GET', KEYS[1])
local n, d, old = 0, '0', ''
if type(v) == 'string' then
	local mn, md, mo = string.match(v, '^m(%d+):([01]):(%d*)$')
	if mn then
		n, d, old = tonumber(mn), md, mo
	elseif #v <= 19 and string.match(v, '^[1-9]%d*$') then
		old = v
	end
end
local m = 'm' .. (n + 1) .. ':' .. d .. ':' .. old
redis.call('SET', KEYS[1], m, 'PX', ARGV[1])
return m`)

// unmarkScript takes back one write's mark on KEYS[1]; ARGV[2] is 1 if
// the write wrote. The last write to end gives the stamp the fresh value
// ARGV[1], without a TTL, or puts the old one back (see above). A mark
// that is not there (it lapsed) is replaced all the same.
var unmarkScript = redis.NewScript(`
local v = redis.pcall('GET', KEYS[1])
local n, d, old = 0, ARGV[2], ''
if type(v) == 'string' then
	local mn, md, mo = string.match(v, '^m(%d+):([01]):(%d*)$')
	if mn then
		n, old = tonumber(mn), mo
		if md == '1' then d = '1' end
	end
end
if n > 1 then
	local m = 'm' .. (n - 1) .. ':' .. d .. ':' .. old
	redis.call('SET', KEYS[1], m, 'KEEPTTL')
	return m
end
if n == 1 and d == '0' then
	if old == '' then
		redis.call('DEL', KEYS[1])
	else
		redis.call('SET', KEYS[1], old)
	end
	return old
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]`)

// bumpScript gives the stamp KEYS[1] the fresh value ARGV[1], unless a
// write's mark is there: the mark then notes the invalidation, and the
// stamp gets a fresh value when the last marked write ends, which is after
// this call.
var bumpScript = redis.NewScript(`
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'string' then
	local mn, md, mo = string.match(v, '^m(%d+):([01]):(%d*)$')
	if mn then
		local m = 'm' .. mn .. ':1:' .. mo
		redis.call('SET', KEYS[1], m, 'KEEPTTL')
		return m
	end
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]`)

// errMarked refuses an entry recorded under a mark; the engine never
// records one.
var errMarked = errors.New("cachedpq: entry recorded under a write's mark")

// marker is a backend whose stamps writes can mark (see above).
type marker interface {
	mark(ctx context.Context, tags []string) error
	unmark(ctx context.Context, tags []string, wrote bool) error
	// unmarking tells readers here to wait (see awaitUnmarked) until
	// unmarked is called for the same tags.
	unmarking(tags []string)
	unmarked(tags []string)
	awaitUnmarked(ctx context.Context, tags []string)
}

var _ marker = (*redisBackend)(nil)

func (s *redisStore) unmarking(tags []string) {
	for _, t := range tags {
		s.slot(t).unmarking.Add(1)
	}
}

func (s *redisStore) unmarked(tags []string) {
	for _, t := range tags {
		s.slot(t).unmarking.Add(-1)
	}
	s.landedMu.Lock()
	if s.landed != nil {
		close(s.landed)
		s.landed = nil
	}
	s.landedMu.Unlock()
}

// awaitUnmarked waits, at most until ctx ends, until no mark this process
// is taking back holds tags. A read here that follows a write here then
// reads the stamp the write left: it never meets an entry that another
// process stored, while the write ran, under a stamp made after its mark
// was lost (evicted); and it is served, or stores its rows, rather than go
// to Postgres because the mark is still there.
func (s *redisStore) awaitUnmarked(ctx context.Context, tags []string) {
	for s.anyUnmarking(tags) {
		s.landedMu.Lock()
		if s.landed == nil {
			s.landed = make(chan struct{})
		}
		ch := s.landed
		s.landedMu.Unlock()
		if !s.anyUnmarking(tags) { // landed before ch was taken
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

func (s *redisStore) anyUnmarking(tags []string) bool {
	for _, t := range tags {
		if s.slot(t).unmarking.Load() > 0 {
			return true
		}
	}
	return false
}

func (s *redisStore) mark(ctx context.Context, tags []string) error {
	_, err := s.runEach(ctx, markScript, tags, func(int) []any { return []any{markTTL.Milliseconds()} })
	return err
}

func (s *redisStore) unmark(ctx context.Context, tags []string, wrote bool) error {
	stamps := make([]string, len(tags))
	for i := range stamps {
		stamps[i] = formatStamp(newStamp())
	}
	left, err := s.runEach(ctx, unmarkScript, tags, func(i int) []any { return []any{stamps[i], boolArg(wrote)} })
	if err != nil {
		return err
	}
	s.sawValues(tags, left)
	return nil
}

// mark marks tags, then checks the server if a check is due, as bump does.
func (b *redisBackend) mark(ctx context.Context, tags []string) error {
	if err := b.redisStore.mark(ctx, tags); err != nil {
		return err
	}
	return b.verifyBump(ctx)
}

// hasMark reports a marked stamp: a write to one of the tables runs.
func hasMark(stamps []uint64) bool { return slices.Contains(stamps, markedStamp) }

// pendingMark is the mark of one write's tables, on its way while the
// statement runs.
type pendingMark struct {
	m     marker
	tags  []string
	start time.Time
	done  chan struct{}
	err   error // the mark's, once done is closed
	taken bool  // committed took it back as the write's invalidation
}

// markWrite marks the tables the statement a writes, in the background,
// where the engine may count on a mark (see above); nil where it may not,
// and the statement invalidates after it runs.
func (e *engine) markWrite(ctx context.Context, c *conn, a *analysis, before *catalog) *pendingMark {
	if !e.canMark() || !mayWrite(a) || a.txControl || a.ddl || a.multi || c.inTx() {
		return nil
	}
	var w writeSet
	e.writesOf(ctx, c, a, before, &w)
	c.wrote = &statementWrites{a: a, w: w}
	return e.startMark(ctx, &w)
}

// markCommit marks the tables a transaction wrote, in the background,
// while its COMMIT runs, where the engine may count on a mark; nil where it
// may not, and the commit invalidates after it. A transaction that ran DDL
// reaches more tables once it committed (see committed): it invalidates
// after its COMMIT, as does one that may have ended already (unsure).
func (e *engine) markCommit(ctx context.Context, t *tx) *pendingMark {
	if !e.canMark() || t.unsure {
		return nil
	}
	return e.startMark(ctx, &t.writes)
}

// canMark reports whether writes may mark now: the store can, no
// invalidation is pending (its retry must land first), and the breaker
// is not open (the mark would only wait for its timeout).
func (e *engine) canMark() bool {
	return e.marks != nil && !e.unsure.Load() && (e.breakr == nil || !e.breakr.open())
}

// startMark sends the mark of what w invalidates, unless w is empty or
// holds DDL, whose tables are known only once it has committed.
func (e *engine) startMark(ctx context.Context, w *writeSet) *pendingMark {
	if w.empty() || w.ddl {
		return nil
	}
	m := e.marks
	pm := &pendingMark{m: m, tags: w.list(), start: time.Now(), done: make(chan struct{})}
	if !e.goBackground(func() {
		mctx, cancel := e.cacheCtx(context.WithoutCancel(ctx))
		pm.err = m.mark(mctx, pm.tags)
		cancel()
		close(pm.done)
	}) {
		return nil
	}
	return pm
}

// markLanded waits for pm's mark, and reports whether its statement, just
// ended, may count on it: it landed, and the statement ended within
// markTrust. A mark that failed is a cache failure.
func (e *engine) markLanded(pm *pendingMark) bool {
	<-pm.done
	if pm.err != nil {
		e.fail(context.Background(), "mark", pm.err)
		return false
	}
	return time.Since(pm.start) < markTrust
}

// holdMark waits for pm (nil: no mark was sent) once its statement has
// ended, and leaves it on c for the invalidation to take (see committed)
// if the statement may count on it: it landed in time, and the
// statement's outcome is known (known false: the connection was lost, and
// the statement may commit later; its mark is left to lapse).
func (e *engine) holdMark(c *conn, pm *pendingMark, known bool) {
	if pm != nil && e.markLanded(pm) && known {
		c.marked = pm
	}
}

// covers reports whether the mark holds every tag w invalidates.
func (pm *pendingMark) covers(w *writeSet) bool {
	if w.ddl {
		return false
	}
	for _, t := range w.list() {
		if !slices.Contains(pm.tags, t) {
			return false
		}
	}
	return true
}

// endMark ends pm (nil: none) once its statement is done: a mark the
// write could count on and no invalidation took back (the statement
// failed, or wrote nothing after all) is taken back now; one it could not
// count on lapses.
func (e *engine) endMark(c *conn, pm *pendingMark) {
	switch {
	case pm == nil, pm.taken:
	case c.marked == pm:
		c.marked = nil
		e.unmarkLater(pm, false)
	}
}

// unmarkLater takes back a landed mark in the background; wrote tells
// whether its write wrote (it is then counted as the invalidation it is).
// Readers here wait for it (see awaitUnmarked).
func (e *engine) unmarkLater(pm *pendingMark, wrote bool) {
	if wrote {
		e.counted(pm.tags)
		e.purgeLater(pm.tags)
	}
	e.bumps.record(pm.tags)
	pm.m.unmarking(pm.tags)
	if !e.goBackground(func() {
		if e.beforeUnmark != nil {
			e.beforeUnmark(pm.tags)
		}
		ctx, cancel := withCacheTimeout(context.Background(), e.opts.Timeout)
		if err := pm.m.unmark(ctx, pm.tags, wrote); err != nil {
			e.fail(ctx, "unmark", err) // the mark lapses with its TTL
		}
		cancel()
		pm.m.unmarked(pm.tags)
	}) {
		pm.m.unmarked(pm.tags) // closed: the mark lapses
	}
}
