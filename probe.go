package cachedpq

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"
)

// A new lib/pq connection answers one probe before it is handed out, for
// three facts the DSN does not tell:
//
//   - Whether it reached a standby. A standby replays the primary's writes
//     late: a miss read there after a write's invalidation would store rows
//     from before the write under stamps from after it, for every process
//     to be served. Reads on such a connection skip the cache.
//   - How lib/pq decodes infinite times: []byte("infinity"), or, once the
//     process has called pq.EnableInfinityTs, one of the two times it was
//     given. That is the process's choice, and processes sharing a cache
//     may choose differently, so keys must tell them apart: the first
//     probe adds the answer to the identity (unless it is the default, so
//     that keys do not change for processes that never enable it).
//   - Whether standard_conforming_strings is on, as the SQL analysis
//     assumes: a role or database may turn it off (ALTER ... SET). Such a
//     connection is refused, as a DSN that turns it off is.

// probeQuery reads whether the server is a standby, and both infinities as
// lib/pq decodes them.
const probeQuery = `select pg_catalog.pg_is_in_recovery(), '-infinity'::timestamptz, 'infinity'::timestamptz,
	pg_catalog.current_setting('standard_conforming_strings')`

// probe runs probeQuery on ic, a new connection, and reports whether it
// reached a standby; the first probe also settles the identity.
func (c *Connector) probe(ctx context.Context, ic driver.Conn) (standby bool, err error) {
	if !c.probes {
		return false, nil
	}
	q, ok := ic.(driver.QueryerContext)
	if !ok {
		return false, fmt.Errorf("cachedpq: %T cannot run queries", ic)
	}
	vals, err := queryRow(ctx, q, probeQuery, 4)
	if err != nil {
		return false, fmt.Errorf("cachedpq: probing a new connection: %w", err)
	}
	if scs, _ := vals[3].(string); scs != "on" {
		// Set for the role or the database (ALTER ... SET), which the DSN
		// does not show.
		return false, fmt.Errorf("%w (the server says %q)", errSCSOff, vals[3])
	}
	c.learnInfinity(vals[1:3])
	standby, _ = vals[0].(bool)
	return standby, nil
}

// queryRow runs query on q and returns its first row, which must have n
// columns.
func queryRow(ctx context.Context, q driver.QueryerContext, query string, n int) ([]driver.Value, error) {
	rows, err := q.QueryContext(ctx, query, nil)
	if err != nil {
		return nil, err
	}
	vals := make([]driver.Value, len(rows.Columns()))
	err = rows.Next(vals)
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	if err == nil && len(vals) != n {
		err = fmt.Errorf("%d columns, want %d", len(vals), n)
	}
	return vals, err
}

// learnInfinity adds how lib/pq decoded the infinities in vals to the
// identity, once per Connector. Until then no connection is handed out:
// every key is built with it.
func (c *Connector) learnInfinity(vals []driver.Value) {
	if c.infinityKnown.Load() {
		return
	}
	c.infinityMu.Lock()
	defer c.infinityMu.Unlock()
	if c.infinityKnown.Load() {
		return
	}
	if setting := infinitySetting(vals); setting != "" {
		id := c.id.with("infinity", setting)
		c.eng.id.Store(&id)
	}
	c.infinityKnown.Store(true)
}

// infinitySetting describes how lib/pq decoded the infinities in vals: ""
// for text (its default), else the two times pq.EnableInfinityTs was given.
func infinitySetting(vals []driver.Value) string {
	s := ""
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
		case time.Time:
			s += v.Format(time.RFC3339Nano) + " " + v.Location().String() + ";"
		default:
			s += fmt.Sprintf("%T;", v)
		}
	}
	return s
}

// knowInfinity probes a connection if none has been yet, for keys built
// without one (InvalidateQuery).
func (c *Connector) knowInfinity(ctx context.Context) error {
	if !c.probes || c.infinityKnown.Load() {
		return nil
	}
	conn, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	return conn.Close()
}
