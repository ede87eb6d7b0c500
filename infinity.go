package cachedpq

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"
)

// lib/pq decodes an infinite timestamp or date as []byte("infinity"), or,
// once the process has called pq.EnableInfinityTs, as one of the two times
// it was given. That is the process's choice, not the connection's, and
// processes sharing a cache may choose differently, so keys must tell them
// apart. lib/pq does not say which it made: the Connector's first
// connection asks Postgres for both infinities and looks at what lib/pq
// made of them. A process that has not enabled it keeps the identity it
// had, and its keys.

// infinityQuery reads both infinities as lib/pq decodes them.
const infinityQuery = `select '-infinity'::timestamptz, 'infinity'::timestamptz`

// learnInfinity makes the identity tell how lib/pq decodes infinities, once
// per Connector, on ic, one of its connections. Until it is known no
// connection is handed out: every key is built with it.
func (c *Connector) learnInfinity(ctx context.Context, ic driver.Conn) error {
	if !c.asksInfinity || c.infinityKnown.Load() {
		return nil
	}
	c.infinityMu.Lock()
	defer c.infinityMu.Unlock()
	if c.infinityKnown.Load() {
		return nil
	}
	q, ok := ic.(driver.QueryerContext)
	if !ok {
		return fmt.Errorf("cachedpq: %T cannot run queries", ic)
	}
	rows, err := q.QueryContext(ctx, infinityQuery, nil)
	if err != nil {
		return err
	}
	vals := make([]driver.Value, len(rows.Columns()))
	err = rows.Next(vals)
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cachedpq: reading how lib/pq decodes infinity: %w", err)
	}
	if setting := infinitySetting(vals); setting != "" {
		id := c.id.with("infinity", setting)
		c.eng.id.Store(&id)
	}
	c.infinityKnown.Store(true)
	return nil
}

// infinitySetting describes how lib/pq decoded the infinities in vals: ""
// for text (its default), else the two times pq.EnableInfinityTs was given.
func infinitySetting(vals []driver.Value) string {
	if len(vals) != 2 {
		return "unexpected"
	}
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

// knowInfinity learns the infinity setting if no connection has yet, for
// keys built without one (InvalidateQuery).
func (c *Connector) knowInfinity(ctx context.Context) error {
	if !c.asksInfinity || c.infinityKnown.Load() {
		return nil
	}
	conn, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	return conn.Close()
}
