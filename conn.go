package cachedpq

import (
	"context"
	"database/sql/driver"
	"errors"

	"github.com/lib/pq"
)

// conn implements exactly the optional interfaces of lib/pq's connection.
var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.Execer             = (*conn)(nil) //nolint:staticcheck // lib/pq has it
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.Queryer            = (*conn)(nil) //nolint:staticcheck // lib/pq has it
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.Validator          = (*conn)(nil)
)

// conn wraps one inner connection. database/sql uses a driver.Conn from one
// goroutine at a time, so its fields need no lock.
type conn struct {
	inner driver.Conn
	c     *Connector
	tx    *tx  // the open transaction, nil outside one
	dirty bool // session state changed (SET, RESET, SET ROLE...): never use the cache again
	// standby is set on a connection that reached a standby, whose rows may
	// predate a write already invalidated: it never uses the cache.
	standby bool
	// otherSettings is set on a connection that started with other
	// settings than the identity's (see probe.go): it never uses the cache.
	otherSettings bool
	// broken, once set, is returned by every later use: a statement turned
	// standard_conforming_strings off, and the SQL analysis would misread
	// what the connection runs. database/sql then discards it.
	broken error
	// scsUnknown: whether standard_conforming_strings is still on could
	// not be asked (an aborted transaction); it is asked before the next
	// statement.
	scsUnknown bool

	// rawTx and rawWrites track a transaction opened with a BEGIN statement
	// rather than BeginTx: its writes are invalidated at its COMMIT.
	// txUnsure is set when transaction control failed or its outcome is
	// unknown: a transaction may be open or not, so reads skip the cache and
	// writes are invalidated at once and again at the next COMMIT.
	rawTx     bool
	txUnsure  bool
	rawWrites writeSet

	// marked is the mark of the statement running, while its write may
	// count on it (see marks.go): committed takes it back in place of an
	// invalidation.
	marked *pendingMark
	// wrote is the write set of the statement running, as markWrite found
	// it before the statement was sent; writesOf reuses it after, so that
	// Options.UnknownWrites is asked once per statement.
	wrote *statementWrites

	// stmts are the statements prepared for loads (Options.Prepare), by
	// query text; at most maxStmts.
	stmts map[string]driver.Stmt

	// lastQuery and lastA are the text and analysis of the last statement
	// run on the connection: applications repeat their statements, and a
	// comparison with the same string costs less than the memo's lookup.
	lastQuery string
	lastA     *analysis
	lastReg   regMemo
}

// regMemo is what engine.registered found for an analysis, valid while the
// registry's map is the one it was found in (the map is copied on every
// change).
type regMemo struct {
	a   *analysis
	in  *map[[16]byte]*registration
	reg *registration // nil: not registered
	rs  *regState
}

// analyze returns the analysis of query (see analyze).
func (c *conn) analyze(query string) *analysis {
	if c.lastA != nil && query == c.lastQuery {
		return c.lastA
	}
	a := analyze(query)
	if len(query) <= memoMaxQuery { // as the memo, pin no bulk statement
		c.lastQuery, c.lastA = query, a
	}
	return a
}

// usable returns why c must not run a statement, if it must not: it was
// closed for standard_conforming_strings. A connection that could not be
// asked about the setting (see askSCS) is asked first.
func (c *conn) usable(ctx context.Context) error {
	if c.scsUnknown {
		askSCS(ctx, c)
	}
	return c.broken
}

// inTx reports whether a transaction is or may be open on c.
func (c *conn) inTx() bool { return c.tx != nil || c.rawTx || c.txUnsure }

func newConn(c *Connector, inner driver.Conn) *conn {
	return &conn{inner: inner, c: c}
}

// Close closes the inner connection.
func (c *conn) Close() error { return c.inner.Close() }

// Prepare prepares a statement without a context.
func (c *conn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// PrepareContext prepares query on the inner connection.
func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	// Asked now, not at the statement's first Exec: a COPY starts here,
	// and the question cannot be asked in its midst.
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	var (
		s   driver.Stmt
		err error
	)
	if p, ok := c.inner.(driver.ConnPrepareContext); ok {
		s, err = p.PrepareContext(ctx, query)
	} else {
		s, err = prepareNoContext(ctx, c.inner, query)
	}
	if err != nil {
		return nil, err
	}
	return newStmt(c, s, query), nil
}

// prepareNoContext is database/sql's fallback for drivers without
// ConnPrepareContext: check the context, prepare, and close the statement
// again if the context ended meanwhile.
func prepareNoContext(ctx context.Context, ci driver.Conn, query string) (driver.Stmt, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := ci.Prepare(query)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Begin starts a transaction without a context.
func (c *conn) Begin() (driver.Tx, error) { //nolint:staticcheck // driver.Conn requires it
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx starts a transaction. Reads inside it never touch the cache, and
// the tables it writes are invalidated only once it commits.
func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	var (
		inner driver.Tx
		err   error
	)
	if b, ok := c.inner.(driver.ConnBeginTx); ok {
		inner, err = b.BeginTx(ctx, opts)
	} else {
		inner, err = beginNoContext(ctx, c.inner, opts)
	}
	if err != nil {
		return nil, err
	}
	t := newTx(c, inner, ctx)
	if c.rawTx || c.txUnsure {
		// lib/pq begins only outside a transaction: the one text control
		// left behind has ended unseen, and its writes may have committed.
		c.c.eng.invalidate(ctx, &c.rawWrites)
		if _, libpq := c.c.inner.(*pq.Connector); !libpq {
			// Another driver's BEGIN may have joined the open transaction:
			// its Commit commits them.
			t.writes.merge(&c.rawWrites)
			t.unsure = true
		}
		c.rawTx, c.txUnsure, c.rawWrites = false, false, writeSet{}
	}
	c.tx = t
	return t, nil
}

// errTxOptions mirrors database/sql's refusal of options that a driver
// without ConnBeginTx cannot honour.
var errTxOptions = errors.New("cachedpq: driver does not support non-default isolation level or read-only transactions")

func beginNoContext(ctx context.Context, ci driver.Conn, opts driver.TxOptions) (driver.Tx, error) {
	if opts.Isolation != 0 || opts.ReadOnly {
		return nil, errTxOptions
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return ci.Begin() //nolint:staticcheck // the documented fallback
}

// Ping checks the inner connection; without driver.Pinger it succeeds,
// as database/sql assumes.
func (c *conn) Ping(ctx context.Context) error {
	if c.broken != nil {
		return driver.ErrBadConn
	}
	if p, ok := c.inner.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

// Exec runs a statement without a context.
func (c *conn) Exec(query string, args []driver.Value) (driver.Result, error) {
	return c.ExecContext(context.Background(), query, valuesToNamed(args))
}

// ExecContext runs a statement and invalidates what it wrote.
func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if _, ok := c.inner.(driver.ExecerContext); !ok {
		return nil, driver.ErrSkip
	}
	return c.c.eng.exec(ctx, c, c, query, args)
}

// innerExec runs a statement on the inner connection, which has
// driver.ExecerContext (ExecContext checked).
func (c *conn) innerExec(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.inner.(driver.ExecerContext).ExecContext(ctx, query, args)
}

// innerQuery runs a query on the inner connection, which has
// driver.QueryerContext (QueryContext checked).
func (c *conn) innerQuery(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.inner.(driver.QueryerContext).QueryContext(ctx, query, args)
}

// maxStmts bounds the statements a connection prepares for loads: beyond
// it, loads run unprepared.
const maxStmts = 64

// loadQuery runs the query of a registered read's load. With
// Options.Prepare, a query with arguments runs as a statement prepared
// once on this connection, outside a transaction and while the session is
// as it opened: one round trip, where lib/pq's query costs two. A
// statement that is gone (DEALLOCATE, DISCARD, a pooler's other session)
// or whose result type changed (its table's columns) is dropped, and the
// query runs unprepared: those errors come before the query runs.
func (c *conn) loadQuery(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	// A background reload's conn has no Connector (see engine.reload): it
	// runs unprepared.
	if c.c == nil || !c.c.opts.Prepare || len(args) == 0 || c.inTx() || c.dirty {
		return c.innerQuery(ctx, query, args)
	}
	st, err := c.prepared(ctx, query)
	if err != nil || st == nil {
		// Refused (a pooler's name clash, say) or full: lib/pq's way, which
		// also returns the error of a query Postgres cannot parse.
		return c.innerQuery(ctx, query, args)
	}
	rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, args)
	if stalePrepared(err) {
		delete(c.stmts, query)
		_ = st.Close()
		return c.innerQuery(ctx, query, args)
	}
	return rows, err
}

// prepared returns the statement prepared for query on c, preparing it if
// it is not yet; nil if c holds maxStmts already, or if the inner driver's
// statement cannot take a context (noted, so it is prepared once).
func (c *conn) prepared(ctx context.Context, query string) (driver.Stmt, error) {
	if st, ok := c.stmts[query]; ok {
		return st, nil
	}
	if len(c.stmts) >= maxStmts {
		return nil, nil
	}
	pc, ok := c.inner.(driver.ConnPrepareContext)
	if !ok {
		return nil, nil
	}
	st, err := pc.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if c.stmts == nil {
		c.stmts = make(map[string]driver.Stmt)
	}
	if _, ok := st.(driver.StmtQueryContext); !ok {
		_ = st.Close()
		st = nil // lib/pq's can; another driver's loads run unprepared
	}
	c.stmts[query] = st
	return st, nil
}

// stalePrepared reports an error of a prepared statement that the same
// query would not meet unprepared: the statement does not exist (26000),
// or its result type changed since it was prepared (0A000, "cached plan
// must not change result type").
func stalePrepared(err error) bool {
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) {
		return false
	}
	return pqErr.Code == "26000" || pqErr.Code == "0A000"
}

// Query runs a query without a context.
func (c *conn) Query(query string, args []driver.Value) (driver.Rows, error) {
	return c.QueryContext(context.Background(), query, valuesToNamed(args))
}

// QueryContext runs a query, from the cache when it is registered and the
// connection may use the cache.
func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if _, ok := c.inner.(driver.QueryerContext); !ok {
		return nil, driver.ErrSkip
	}
	return c.c.eng.query(ctx, c, c, query, args)
}

// CheckNamedValue converts arguments the inner driver's way (lib/pq turns
// slices into arrays); without a checker database/sql's default applies.
func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := c.inner.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// ResetSession is called before a pooled connection is reused.
func (c *conn) ResetSession(ctx context.Context) error {
	if c.broken != nil {
		return driver.ErrBadConn
	}
	if r, ok := c.inner.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

// IsValid reports whether the connection may return to the pool.
func (c *conn) IsValid() bool {
	if c.broken != nil {
		return false
	}
	if v, ok := c.inner.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func valuesToNamed(args []driver.Value) []driver.NamedValue {
	if len(args) == 0 {
		return nil
	}
	nv := make([]driver.NamedValue, len(args))
	for i, v := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return nv
}
