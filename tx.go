package cachedpq

import (
	"context"
	"database/sql/driver"
	"errors"

	"github.com/lib/pq"
)

var _ driver.Tx = (*tx)(nil)

// tx wraps a transaction. It collects the tables the transaction writes and
// invalidates them only after Commit succeeds; Rollback forgets them.
type tx struct {
	inner  driver.Tx
	conn   *conn
	ctx    context.Context // kept because Commit has no context; only its values are used
	writes writeSet
	// unsure is set once a COMMIT or ROLLBACK sent as SQL text, or a
	// failed one, may have ended the transaction while database/sql holds
	// it: writes are then invalidated at once, and again at Commit.
	unsure bool
}

// add collects what a statement in the transaction wrote.
func (t *tx) add(ctx context.Context, e *engine, w *writeSet) {
	t.writes.merge(w)
	if t.unsure {
		e.invalidate(ctx, w)
	}
}

func newTx(c *conn, inner driver.Tx, ctx context.Context) *tx {
	return &tx{inner: inner, conn: c, ctx: ctx}
}

// Commit commits the inner transaction and invalidates what it wrote: with
// Redis, by a mark sent beside the COMMIT (see marks.go), else after it.
// A commit that succeeded in Postgres never fails because of the cache.
func (t *tx) Commit() error {
	t.conn.tx = nil
	e := t.conn.c.eng
	ctx := context.WithoutCancel(t.ctx)
	pm := e.markCommit(ctx, t)
	err := t.inner.Commit()
	// lib/pq answers the Commit of a failed transaction with a ROLLBACK,
	// and ErrInFailedTransaction once that succeeded: nothing committed.
	known := err == nil || reportedByServer(err) || errors.Is(err, pq.ErrInFailedTransaction)
	e.holdMark(t.conn, pm, known)
	if err == nil || !known {
		// Also when the outcome is unknown (the connection broke during
		// COMMIT): invalidating too much is safe, too little is not.
		e.committed(ctx, t.conn, &t.writes)
	}
	e.endMark(t.conn, pm)
	return err
}

// Rollback rolls the inner transaction back; nothing is invalidated.
func (t *tx) Rollback() error {
	t.conn.tx = nil
	return t.inner.Rollback()
}
