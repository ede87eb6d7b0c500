package cachedpq

import (
	"context"
	"database/sql/driver"
	"errors"
)

// stmt implements the optional interfaces of lib/pq's statements, plus
// NamedValueChecker: database/sql asks the statement's checker before the
// connection's, so ours falls back to the connection's to keep lib/pq's
// conversions ([]int64 arguments, pq.CopyIn) working.
var (
	_ driver.Stmt              = (*stmt)(nil)
	_ driver.StmtExecContext   = (*stmt)(nil)
	_ driver.StmtQueryContext  = (*stmt)(nil)
	_ driver.NamedValueChecker = (*stmt)(nil)
)

// stmt wraps a prepared statement. Its methods never return driver.ErrSkip,
// which database/sql does not allow from a statement.
type stmt struct {
	inner driver.Stmt
	conn  *conn
	query string
}

func newStmt(c *conn, inner driver.Stmt, query string) *stmt {
	return &stmt{inner: inner, conn: c, query: query}
}

// Close closes the inner statement.
func (s *stmt) Close() error { return s.inner.Close() }

// NumInput reports the inner statement's number of placeholders.
func (s *stmt) NumInput() int { return s.inner.NumInput() }

// Exec runs the statement without a context.
func (s *stmt) Exec(args []driver.Value) (driver.Result, error) { //nolint:staticcheck // driver.Stmt requires it
	return s.ExecContext(context.Background(), valuesToNamed(args))
}

// Query runs the statement without a context.
func (s *stmt) Query(args []driver.Value) (driver.Rows, error) { //nolint:staticcheck // driver.Stmt requires it
	return s.QueryContext(context.Background(), valuesToNamed(args))
}

// ExecContext runs the statement and invalidates what it wrote.
func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.conn.c.eng.exec(ctx, s.conn, s, s.query, args)
}

// QueryContext runs the statement, from the cache when it is registered.
func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.conn.c.eng.query(ctx, s.conn, s, s.query, args)
}

// innerExec runs the inner statement; query is its own text.
func (s *stmt) innerExec(ctx context.Context, _ string, args []driver.NamedValue) (driver.Result, error) {
	if e, ok := s.inner.(driver.StmtExecContext); ok {
		return e.ExecContext(ctx, args)
	}
	vals, err := namedToValues(args)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.inner.Exec(vals) //nolint:staticcheck // the documented fallback
}

// loadQuery runs the inner statement, which the application prepared.
func (s *stmt) loadQuery(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return s.innerQuery(ctx, query, args)
}

// innerQuery runs the inner statement; query is its own text.
func (s *stmt) innerQuery(ctx context.Context, _ string, args []driver.NamedValue) (driver.Rows, error) {
	if q, ok := s.inner.(driver.StmtQueryContext); ok {
		return q.QueryContext(ctx, args)
	}
	vals, err := namedToValues(args)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.inner.Query(vals) //nolint:staticcheck // the documented fallback
}

// CheckNamedValue asks the inner statement, then the connection.
func (s *stmt) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := s.inner.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return s.conn.CheckNamedValue(nv)
}

// errNamedArgs mirrors database/sql's refusal of named arguments for a
// driver that cannot take them.
var errNamedArgs = errors.New("cachedpq: driver does not support the use of Named Parameters")

func namedToValues(args []driver.NamedValue) ([]driver.Value, error) {
	vals := make([]driver.Value, len(args))
	for i, a := range args {
		if a.Name != "" {
			return nil, errNamedArgs
		}
		vals[i] = a.Value
	}
	return vals, nil
}
