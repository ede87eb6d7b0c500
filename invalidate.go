package cachedpq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/lib/pq"
)

// writeSet collects the tags a statement or transaction wrote.
type writeSet struct {
	tags  []string
	named []string // the tables the statements name, before the catalog's reach
	all   bool     // an unknown write: the whole namespace
	ddl   bool     // the catalog may have changed: read it again once this commits
	// hidden is set when the statement ran code the driver cannot see (a
	// volatile user function), which may have changed the session as well.
	hidden bool
	// ranCode is set when it ran such code at all, even code whose writes
	// Options.UnknownWrites names: it may have called set_config.
	ranCode bool
}

func (w *writeSet) add(tags ...string) {
	for _, t := range tags {
		if !slices.Contains(w.tags, t) {
			w.tags = append(w.tags, t)
		}
	}
}

func (w *writeSet) merge(o *writeSet) {
	w.add(o.tags...)
	for _, t := range o.named {
		if !slices.Contains(w.named, t) {
			w.named = append(w.named, t)
		}
	}
	w.all = w.all || o.all
	w.ddl = w.ddl || o.ddl
}

func (w *writeSet) empty() bool { return !w.all && len(w.tags) == 0 }

// list is the tags to bump: the written tables, and the epoch for an
// unknown write.
func (w *writeSet) list() []string {
	if w.all {
		return append(slices.Clone(w.tags), epochTag)
	}
	return w.tags
}

// mayWrite reports whether a statement can change data or the session, so
// that the engine must look at it after it runs. Plain reads skip all of it.
func mayWrite(a *analysis) bool {
	return len(a.writes) > 0 || a.unknownWrite || a.sessionChange || a.txControl ||
		a.ddl || len(a.functions) > 0
}

// readsWrite reports a statement that mayWrite lets pass whose reads may
// write all the same: it reads a view or a table with a row level
// security policy that calls a function that may write (see
// noteReadCalls), or calls one in attribute notation
// (u.bump for bump(u)), through an operator or a cast (see callsOf). A
// catalog that cannot be read cannot tell.
func (e *engine) readsWrite(ctx context.Context, c *conn, a *analysis) bool {
	if len(a.reads) == 0 && !a.hiddenCalls() || e.opts.NoCatalog {
		return false
	}
	cat, err := e.catalog(ctx, c)
	if err != nil {
		return true
	}
	tables, opaque, session := cat.readWrites(a.reads)
	return len(tables) > 0 || opaque || session || cat.anyMayWrite(cat.callsOf(a))
}

// afterStatement runs once a statement that mayWrite has run. err is what
// it returned: a statement Postgres refused wrote nothing, unless it was
// one of several in a string that committed some before it failed, or one
// that commits part of itself (CALL, DO, DETACH PARTITION ...
// CONCURRENTLY), or it was transaction control (a refused COMMIT rolled
// back); any other error (a lost connection) may hide a write that
// committed. before is the catalog as read before a DDL statement ran (see
// catalogBefore).
func (e *engine) afterStatement(ctx context.Context, c *conn, a *analysis, before *catalog, err error) {
	switch {
	case err == nil || !reportedByServer(err):
		e.afterWrite(ctx, c, a, before, err != nil)
	case notRun(err):
		// Postgres parses a whole string before it runs any of it: nothing
		// changed, and the state is as it was.
	case a.txControl && a.multi:
		// Some of the string ran: a COMMIT in it may have made its writes,
		// its DDL and its session changes last.
		var w writeSet
		e.noteEffects(ctx, c, a, before, &w)
		e.lostTrack(ctx, c, &w)
	case a.commitsMidway:
		// What it committed before it failed is as unknown as what it
		// writes when it succeeds.
		e.afterWrite(ctx, c, a, before, false)
	case a.txControl:
		e.refused(ctx, c, a, err)
	}
}

// noteEffects adds what a statement wrote to w, and notes what else it
// changed: its connection's session, the catalog.
func (e *engine) noteEffects(ctx context.Context, c *conn, a *analysis, before *catalog, w *writeSet) {
	e.writesOf(ctx, c, a, before, w)
	if a.sessionLasting || w.hidden || writesSettings(a) {
		// SET LOCAL ends with its transaction, where reads bypass anyway; a
		// function or DO block may call set_config (a tenant for row level
		// security, a time zone) as surely as SET does, and so does the
		// rule of pg_settings, with is_local false.
		c.dirty = true
	}
	if a.ddl {
		e.cat.reset() // now, for this conn's next statements, and again at commit
		w.ddl = true
	}
	switch {
	case a.scsOff:
		c.broken = errSCSTurnedOff
	case a.scsAsk || a.runsCode || w.ranCode || writesSettings(a):
		// Code the text does not show (DO, CALL, EXECUTE, a volatile
		// function, the rule of pg_settings) may call set_config too: ask.
		askSCS(ctx, c)
	}
}

// errSCSTurnedOff closes a connection a statement may have turned
// standard_conforming_strings off on.
var errSCSTurnedOff = fmt.Errorf("%w (it was turned off on this connection, which is now closed)", errSCSOff)

// writesSettings reports a statement that writes pg_settings, whose rule
// calls set_config.
func writesSettings(a *analysis) bool {
	return slices.Contains(a.writes, "pg_settings")
}

// askSCS asks c's session whether standard_conforming_strings is still on,
// and closes c if it is not. An aborted transaction cannot answer: c asks
// again before its next statement (which, until the transaction ends,
// Postgres refuses or which writes nothing).
func askSCS(ctx context.Context, c *conn) {
	on, err := scsOn(ctx, c)
	var pqErr *pq.Error
	switch {
	case errors.As(err, &pqErr) && pqErr.Code == "25P02": // in_failed_sql_transaction
		c.scsUnknown = true
	case err != nil:
		// Not asked (a lost connection): no claim about the setting, and
		// database/sql discards the connection.
		c.broken = driver.ErrBadConn
	case !on:
		c.broken = errSCSTurnedOff
	default:
		c.scsUnknown = false
	}
}

// scsOn reads c's standard_conforming_strings.
func scsOn(ctx context.Context, c *conn) (bool, error) {
	q, ok := c.inner.(driver.QueryerContext)
	if !ok || !c.c.probes {
		return true, nil // not lib/pq through NewConnector: a test double, another driver
	}
	v, err := queryRow(context.WithoutCancel(ctx), q, `select pg_catalog.current_setting('standard_conforming_strings')`, 1)
	if err != nil {
		return false, err
	}
	return v[0] == "on", nil
}

// afterWrite notes what a statement that ran changed: the session, and
// the tables it wrote, invalidated now outside a transaction, at commit
// inside one (DDL reaches them through the new catalog too, see
// committed). unsure is true when the statement's outcome is unknown.
func (e *engine) afterWrite(ctx context.Context, c *conn, a *analysis, before *catalog, unsure bool) {
	var w writeSet
	e.noteEffects(ctx, c, a, before, &w)
	switch {
	case a.txControl && unsure:
		e.lostTrack(ctx, c, &w)
	case a.txControl && c.tx != nil:
		e.txStatementInTx(ctx, c.tx, a, &w)
	case a.txControl:
		e.txStatement(ctx, c, a, &w)
	case c.tx != nil:
		c.tx.add(ctx, e, &w)
	case c.rawTx:
		c.rawWrites.merge(&w)
	case c.txUnsure:
		c.rawWrites.merge(&w)
		e.committed(ctx, c, &w)
	default:
		e.committed(ctx, c, &w)
	}
}

// refused follows one transaction-control statement that Postgres refused
// as SQL text. Where a refused COMMIT or PREPARE TRANSACTION leaves the
// session is known: the transaction ended without committing (a deferred
// check failed, say); a refused BEGIN or SAVEPOINT leaves things as they
// were. The rest (a refused ROLLBACK, AND CHAIN, text inside a BeginTx
// transaction) leaves the connection unsure. (A FATAL error is no refusal:
// see reportedByServer.)
func (e *engine) refused(ctx context.Context, c *conn, a *analysis, err error) {
	switch {
	case !a.txCommits && !a.txRollsBack:
		// BEGIN, SAVEPOINT, RELEASE, ROLLBACK TO: as it was
	case c.tx == nil && a.txEnd == txClosed && (a.txCommits || a.txPrepares) && failedAtCommit(err):
		c.rawTx, c.txUnsure, c.rawWrites = false, false, writeSet{} // ended, committing nothing
	default:
		e.lostTrack(ctx, c, &writeSet{})
	}
}

// notRun reports a syntax error in the statement text itself, which
// Postgres's raw parser raises before it runs any statement of the string
// (also its refusal to prepare a string of several statements sent with
// arguments, as lib/pq does). A syntax error in SQL that a function runs
// points into that SQL instead (InternalPosition); one raised as a
// statement is analyzed or runs (SELECT INTO in a UNION, to_tsquery('&&'))
// comes after the statements before it in the string ran, and from
// another routine.
func notRun(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "42601" && pqErr.InternalPosition == "" &&
		parseRoutines[pqErr.Routine]
}

// parseRoutines are the server's routines that raise the syntax errors of
// notRun: the scanner's and grammar's, and exec_parse_message's refusal.
var parseRoutines = map[string]bool{"scanner_yyerror": true, "base_yyparse": true, "exec_parse_message": true}

// failedAtCommit reports an error a COMMIT raises as it commits, after
// which the transaction is over: a deferred constraint (class 23) or a
// serialization failure (class 40).
func failedAtCommit(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && (pqErr.Code.Class() == "23" || pqErr.Code.Class() == "40")
}

// lostTrack handles transaction control whose outcome is unknown: a
// refused COMMIT, a string of statements that failed part way. Writes it
// may have committed (w, and those of the transaction) are invalidated
// now (see committed), and the connection is unsure whether a transaction
// is open: its reads skip the cache, and its writes are invalidated both
// at once and at the next COMMIT, until transaction control tells again.
func (e *engine) lostTrack(ctx context.Context, c *conn, w *writeSet) {
	// The writes stay pending too: the transaction may live on (an error
	// in a savepoint it rolls back to) and commit them later.
	if t := c.tx; t != nil {
		t.writes.merge(w)
		t.unsure = true
		w.merge(&t.writes)
	} else {
		c.rawWrites.merge(w)
		c.rawTx, c.txUnsure = false, true
		w.merge(&c.rawWrites)
	}
	e.committed(ctx, c, w)
}

// committed invalidates what a transaction, or a statement outside one,
// wrote, once it committed. A transaction that ran DDL reached its tables
// through the catalog as it was before (a view, foreign key, partition or
// parent of its own was not in it): they are reached again through the
// committed catalog.
func (e *engine) committed(ctx context.Context, c *conn, w *writeSet) {
	if w.ddl && !e.opts.NoCatalog {
		e.cat.reset()
		if cat, err := e.catalog(ctx, c); err != nil {
			w.all = true
		} else {
			tables, opaque := cat.reach(w.named, false)
			w.add(tables...)
			w.all = w.all || opaque
		}
		w.ddl = false // the catalog just read is the committed one: invalidate need not drop it
	}
	if pm := c.marked; pm != nil && pm.covers(w) {
		c.marked, pm.taken = nil, true
		e.unmarkLater(pm, true)
		return
	}
	e.invalidate(ctx, w)
}

// txStatement follows a transaction opened or closed by SQL text (BEGIN,
// COMMIT, ROLLBACK) instead of BeginTx. In a string of several statements,
// what the string wrote is invalidated at once, since an earlier COMMIT in
// it may have committed it, and again at the COMMIT of a transaction it
// leaves open.
func (e *engine) txStatement(ctx context.Context, c *conn, a *analysis, w *writeSet) {
	var now writeSet // what the statement committed
	now.merge(w)
	switch {
	case a.txCommits:
		now.merge(&c.rawWrites)
		c.rawWrites = writeSet{}
	case a.txRollsBack:
		c.rawWrites = writeSet{}
	}
	now.all = now.all || a.commitPrepared // its writes were not seen here
	switch a.txEnd {
	case txOpen:
		c.rawTx, c.txUnsure = true, false
		c.rawWrites.merge(w)
	case txClosed:
		c.rawTx, c.txUnsure = false, false
	default: // savepoints: the state is what it was
		if c.rawTx || c.txUnsure {
			c.rawWrites.merge(w)
		}
	}
	e.committed(ctx, c, &now) // with the state updated: the catalog is read where it is committed
}

// txStatementInTx follows transaction control sent as SQL text inside a
// BeginTx transaction. A COMMIT there commits what the transaction wrote so
// far; after a COMMIT or ROLLBACK the session may be outside any
// transaction while database/sql still holds one, so the transaction turns
// unsure (see tx.add).
func (e *engine) txStatementInTx(ctx context.Context, t *tx, a *analysis, w *writeSet) {
	committed := a.txCommits || a.commitPrepared
	if !committed && !a.txRollsBack {
		t.add(ctx, e, w) // savepoints
		return
	}
	var now writeSet
	if committed {
		now.merge(&t.writes)
		now.all = now.all || a.commitPrepared
	}
	now.merge(w) // committed by the string, or written after it outside a transaction
	t.writes, t.unsure = writeSet{}, true
	t.writes.merge(w) // or written in a transaction the string opened
	e.committed(ctx, t.conn, &now)
}

// statementWrites is what writesOf found for the statement a, before it
// ran (see conn.wrote).
type statementWrites struct {
	a *analysis
	w writeSet
}

// writesOf adds to w the tags a statement wrote: the tables its text names,
// the tables foreign keys cascade to, the base tables of written views, and
// the whole namespace for writes the text cannot show. DDL reaches them
// through before, the catalog as it was before it ran.
func (e *engine) writesOf(ctx context.Context, c *conn, a *analysis, before *catalog, w *writeSet) {
	if k := c.wrote; k != nil && k.a == a {
		w.merge(&k.w)
		w.hidden = w.hidden || k.w.hidden
		w.ranCode = w.ranCode || k.w.ranCode
		return
	}
	w.merge(&writeSet{named: a.writes})
	truncateCascade := a.cascade && a.kind == kindTruncate && !a.multi
	if a.unknownWrite && !(truncateCascade && !e.opts.NoCatalog) {
		e.unknownWrite(a, w, false)
		return
	}
	events := a.ddl || a.events // event triggers may write tables the text does not name
	if len(a.writes) == 0 && len(a.functions) == 0 && len(a.reads) == 0 && !a.hiddenCalls() && !events {
		return
	}
	if e.opts.NoCatalog {
		w.add(a.writes...)
		return
	}
	cat, err := e.catalogOf(ctx, c, a, before)
	if err != nil {
		w.all = true // cannot see cascades or volatility: assume the worst
		if len(a.functions) > 0 {
			// Any of them may be volatile code that called set_config.
			w.ranCode, w.hidden = true, true
		}
		return
	}
	written := a.writes
	if events {
		written = slices.Concat(written, cat.ddlFired)
	}
	called, known := cat.anyCallWrites(cat.callsOf(a))
	read, readOpaque, session := cat.readWrites(a.reads) // views that call writers, or set_config
	if session {
		w.hidden = true // a view that calls set_config changed the session
	}
	tables, opaque := cat.reach(slices.Concat(written, called, read), truncateCascade)
	w.add(tables...) // what UnknownWrites names comes on top of what the catalog shows
	if opaque || events && cat.ddlOpaque || !known || readOpaque {
		// A trigger's function is code the text does not show, as a
		// volatile function's is.
		e.unknownWrite(a, w, true)
	}
}

// unknownWrite handles a statement whose writes the text cannot show: the
// tables Options.UnknownWrites names for it, else the whole namespace.
// A statement UnknownWrites does not narrow also counts as hidden code
// (see writeSet.hidden) when it is CALL, DO, EXECUTE or calls a volatile
// function: volatile is true for the latter.
func (e *engine) unknownWrite(a *analysis, w *writeSet, volatile bool) {
	w.ranCode = w.ranCode || a.runsCode || volatile
	if e.opts.UnknownWrites != nil {
		if tables, ok := e.opts.UnknownWrites(a.normalized); ok {
			if tags, err := foldTags(tables); err == nil {
				w.add(a.writes...)
				w.add(tags...)
				return
			}
			e.opts.Logger.Warn("cachedpq: UnknownWrites named a bad table; invalidating everything")
		}
	}
	w.all = true
	w.hidden = a.runsCode || volatile
}

// invalidate replaces the stamps of the written tags, so no entry that
// depended on them is served again, then reclaims their entries in the
// background. A failed invalidation is retried until it is confirmed.
func (e *engine) invalidate(ctx context.Context, w *writeSet) {
	if w.ddl {
		e.cat.reset() // it reads the committed catalog from now on
	}
	if w.empty() {
		return
	}
	tags := w.list()
	bctx := context.WithoutCancel(ctx) // the write is done: its caller's end must not stop the bump
	if err := e.bumpNow(bctx, tags); err != nil {
		e.fail(bctx, "invalidate", err)
		e.markPending(tags)
		return
	}
	e.counted(tags)
	e.purgeLater(tags)
}

// bumpNow replaces the stamps of tags, trying a few times:
// a writer that returns before its invalidation landed leaves other
// processes a window in which they may serve what it overwrote.
func (e *engine) bumpNow(ctx context.Context, tags []string) error {
	e.bumps.record(tags)
	var err error
	for range bumpAttempts {
		// Invalidations go past the breaker: a writer whose breaker is open
		// while the cache answers others would leave them stale entries.
		bctx, cancel := e.cacheCtx(ctx)
		err = e.direct.bump(bctx, tags)
		cancel()
		if err == nil {
			return nil
		}
	}
	return err
}

func (e *engine) counted(tags []string) {
	e.stats.invalidations.Add(uint64(len(tags)))
	if slices.Contains(tags, epochTag) {
		e.stats.epochBumps.Add(1)
	}
}

// purgeLater deletes the entries indexed under tags off the write path.
// Purges run one pass at a time, purgeDelay after the write that asks for
// one: tags invalidated meanwhile join the pass, so a burst of writes costs
// a few passes rather than one per write, and the writers' CPU and the
// cache's are spent on the writes themselves.
func (e *engine) purgeLater(tags []string) {
	e.purgeMu.Lock()
	defer e.purgeMu.Unlock()
	for _, t := range tags {
		if t != epochTag {
			e.purgeTags = append(e.purgeTags, t)
		}
	}
	if len(e.purgeTags) > 0 && !e.purging {
		e.purging = e.goBackground(e.purgePasses)
		if !e.purging { // closed: the entries expire in their time
			e.purgeTags = nil
		}
	}
}

// purgePasses purges the tags gathered by purgeLater until none are left.
func (e *engine) purgePasses() {
	for {
		select {
		case <-time.After(purgeDelay):
		case <-e.closing:
		}
		e.purgeMu.Lock()
		tags := e.purgeTags
		e.purgeTags = nil
		if len(tags) == 0 {
			e.purging = false
			e.purgeMu.Unlock()
			return
		}
		e.purgeMu.Unlock()
		slices.Sort(tags)
		ctx, cancel := withCacheTimeout(context.Background(), purgeTimeout)
		if err := e.store.purge(ctx, slices.Compact(tags)); err != nil {
			e.fail(ctx, "purge", err)
		}
		cancel()
	}
}

// markPending remembers tags whose invalidation failed. Until a retry
// confirms it, together with an invalidation of the whole namespace, this
// process serves no hit: an entry it would serve may predate the write.
func (e *engine) markPending(tags []string) {
	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	for _, t := range tags {
		e.pending[t] = struct{}{}
	}
	e.pendingGen++
	e.unsure.Store(true)
	if !e.retrying {
		// After close no retry starts: this process serves no hit again.
		e.retrying = e.goBackground(e.retryPending)
	}
}

// retryPending retries failed invalidations, backing off, until the cache
// confirms them or the Connector closes.
func (e *engine) retryPending() {
	wait := retryMin
	for {
		select {
		case <-e.closing:
			return
		case <-time.After(wait):
		}
		tags, gen := e.pendingTags()
		ctx, cancel := context.WithTimeout(context.Background(), max(e.opts.Timeout, retryMin))
		err := e.direct.bump(ctx, tags)
		cancel()
		if err == nil && e.confirm(tags, gen) {
			e.opts.Logger.Info("cachedpq: pending invalidations confirmed", "tags", len(tags))
			return
		}
		wait = min(wait*2, retryMax)
	}
}

// pendingTags lists the pending tags and the epoch, and the generation of
// pending they were read at.
func (e *engine) pendingTags() ([]string, uint64) {
	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	tags := make([]string, 0, len(e.pending)+1)
	for t := range e.pending {
		if t != epochTag {
			tags = append(tags, t)
		}
	}
	return append(tags, epochTag), e.pendingGen
}

// confirm ends the retries once bumped, the pending tags of generation
// gen, reached the cache, and reports whether it did: hits are served
// again. A failure marked while the bump was on its way (a new generation)
// may have come after the bump landed, even for a tag it named, so it
// needs another.
func (e *engine) confirm(bumped []string, gen uint64) bool {
	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	e.counted(bumped)
	if e.pendingGen != gen {
		return false
	}
	clear(e.pending)
	e.retrying = false
	e.unsure.Store(false)
	return true
}

// InvalidateTables invalidates every entry that depends on the named
// tables, for writes the driver cannot see (a script, another
// application). Names are folded as in SQL. It is safe for concurrent use.
func (c *Connector) InvalidateTables(ctx context.Context, tables ...string) error {
	tags, err := foldTags(tables)
	if err != nil {
		return fmt.Errorf("cachedpq: invalidate: %w", err)
	}
	return c.eng.invalidateNow(ctx, tags)
}

// InvalidateAll invalidates every entry in the Connector's namespace, in
// every process that shares it. It is safe for concurrent use.
func (c *Connector) InvalidateAll(ctx context.Context) error {
	return c.eng.invalidateNow(ctx, []string{epochTag})
}

func (e *engine) invalidateNow(ctx context.Context, tags []string) error {
	if len(tags) == 0 {
		return nil
	}
	if err := e.bumpNow(ctx, tags); err != nil {
		e.fail(ctx, "invalidate", err)
		e.markPending(tags)
		return fmt.Errorf("cachedpq: invalidate: %w", err)
	}
	e.counted(tags)
	e.purgeLater(tags)
	return nil
}

// InvalidateQuery removes the entry of one registered query with its
// arguments. So that a load of it that read Postgres before the change
// cannot store the old rows afterwards, it also renews the stamps of the
// tables the query reads (and its Policy.Tags): their other entries miss
// once, as after InvalidateTables. It is safe for concurrent use.
func (c *Connector) InvalidateQuery(ctx context.Context, query string, args ...any) error {
	a := analyze(query)
	reg := c.eng.reg.lookup(a)
	if reg == nil {
		return fmt.Errorf("cachedpq: invalidate: query not registered: %q", query)
	}
	named := make([]driver.NamedValue, len(args))
	for i, v := range args {
		dv, err := driverValue(v, c.binaryParams)
		if err != nil {
			return fmt.Errorf("cachedpq: invalidate: argument %d: %w", i+1, err)
		}
		named[i] = driver.NamedValue{Ordinal: i + 1, Value: dv}
	}
	if _, _, ok := appendKey(nil, c.eng.opts.Prefix, reg.name, c.eng.id.Load(), reg.a, named); !ok {
		return errors.New("cachedpq: invalidate: arguments cannot be keyed")
	}
	if err := c.eng.invalidateNow(ctx, reg.tags); err != nil {
		return err
	}
	// The key holds what the first connection tells (see probe.go).
	if err := c.settleIdentity(ctx); err != nil {
		if len(reg.tags) > 0 {
			return nil // the tables' new stamps void the entry; its bytes expire
		}
		return fmt.Errorf("cachedpq: invalidate: %w", err)
	}
	key, _, _ := appendKey(nil, c.eng.opts.Prefix, reg.name, c.eng.id.Load(), reg.a, named)
	// A load of the key that has stored its entry may still be in the
	// flight group, whose later readers it would serve: for a query that
	// reads no table, whose stamps do not change, they would see the same
	// stamps, and join it.
	c.eng.flights.voidKey(string(key))
	rctx, cancel := c.eng.cacheCtx(ctx)
	defer cancel()
	if err := c.eng.store.remove(rctx, string(key)); err != nil {
		return fmt.Errorf("cachedpq: invalidate: %w", err)
	}
	return nil
}

// driverValue converts an argument the way database/sql and lib/pq do
// before a query reaches the driver, so the key matches the query's:
// lib/pq's CheckNamedValue first (binary, as binary_parameters=yes), then,
// where it declines, database/sql's default conversion, which calls Value
// methods as database/sql does (a nil pointer to a type whose Value has a
// value receiver is NULL, not a panic).
func driverValue(v any, binary bool) (driver.Value, error) {
	if dv, ok, err := pqCheckValue(v, binary); ok || err != nil {
		return dv, err
	}
	return driver.DefaultParameterConverter.ConvertValue(v)
}

// pqCheckValue is lib/pq's conn.CheckNamedValue (v1.12): ok is false where
// it returns driver.ErrSkip.
func pqCheckValue(x any, binary bool) (v driver.Value, ok bool, err error) {
	if binary {
		if bin, is := x.(interface{ BinaryValue() ([]byte, error) }); is {
			v, err = bin.BinaryValue()
			return v, true, err
		}
	}
	if _, is := x.(driver.Valuer); is {
		return nil, false, nil // for pq.Array and the like
	}
	rv := reflect.ValueOf(x)
	if !rv.IsValid() {
		return nil, false, nil
	}
	t := rv.Type()
	for t.Kind() == reflect.Pointer && rv.IsValid() {
		t, rv = t.Elem(), rv.Elem()
	}
	// []byte and its kin (json.RawMessage) are left to database/sql.
	if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
		return nil, false, nil
	}
	switch rv.Kind() {
	case reflect.Slice:
		v, err = pq.Array(rv.Interface()).Value()
		return v, true, err
	case reflect.Uint64:
		u := rv.Uint()
		if u >= math.MaxInt64 { // sic: MaxInt64 itself too
			return strconv.FormatUint(u, 10), true, nil
		}
		return int64(u), true, nil
	}
	return nil, false, nil
}

// ConnectorOf returns the Connector behind a DB opened with the "cachedpq"
// driver or OpenDB, for its Stats and Invalidate methods. It takes no
// connection from the pool, so it answers at once even when every
// connection is busy or Postgres is down.
func ConnectorOf(db *sql.DB) (*Connector, error) {
	if d, ok := db.Driver().(*boundDriver); ok {
		return d.c, nil
	}
	return nil, errors.New("cachedpq: the DB does not use the cachedpq driver")
}
