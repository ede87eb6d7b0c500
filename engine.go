package cachedpq

import (
	"context"
	"database/sql/driver"
)

// engine applies the cache-aside pattern for one Connector.
type engine struct {
	c *Connector
}

func newEngine(c *Connector) *engine { return &engine{c: c} }

func (e *engine) close() {}

// writeSet collects the tags a transaction wrote.
type writeSet struct {
	tags    []string
	unknown bool
}

func (e *engine) exec(ctx context.Context, c *conn, query string, run func() (driver.Result, error)) (driver.Result, error) {
	return run()
}

func (e *engine) query(ctx context.Context, c *conn, query string, args []driver.NamedValue, run func(context.Context) (driver.Rows, error)) (driver.Rows, error) {
	return run(ctx)
}

func (e *engine) invalidate(ctx context.Context, w *writeSet) {}
