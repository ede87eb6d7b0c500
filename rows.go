package cachedpq

import (
	"database/sql/driver"
	"io"
	"reflect"
)

// rows exposes exactly the optional interfaces of lib/pq's rows.
var (
	_ driver.Rows                           = (*rows)(nil)
	_ driver.RowsNextResultSet              = (*rows)(nil)
	_ driver.RowsColumnTypeScanType         = (*rows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*rows)(nil)
	_ driver.RowsColumnTypeLength           = (*rows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*rows)(nil)
)

// rows wraps live rows from the inner driver to run onClose (the
// invalidation of a write made through Query, such as INSERT ... RETURNING)
// before Close returns. Unhooked queries hand out the inner rows as they are.
type rows struct {
	inner   driver.Rows
	onClose func()
	closed  bool
	err     error // the first error other than io.EOF the rows met
}

func newRows(inner driver.Rows, onClose func()) *rows {
	return &rows{inner: inner, onClose: onClose}
}

// Columns returns the inner column names.
func (r *rows) Columns() []string { return r.inner.Columns() }

// Next reads the next row from the inner rows.
func (r *rows) Next(dest []driver.Value) error { return r.met(r.inner.Next(dest)) }

// met remembers the first error other than io.EOF, for the hook.
func (r *rows) met(err error) error {
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return err
}

// Close closes the inner rows, then runs the hook once.
func (r *rows) Close() error {
	err := r.met(r.inner.Close())
	if !r.closed {
		r.closed = true
		if r.onClose != nil {
			r.onClose()
		}
	}
	return err
}

// HasNextResultSet reports whether the inner rows have another result set.
func (r *rows) HasNextResultSet() bool {
	if n, ok := r.inner.(driver.RowsNextResultSet); ok {
		return n.HasNextResultSet()
	}
	return false
}

// NextResultSet advances the inner rows to their next result set.
func (r *rows) NextResultSet() error {
	if n, ok := r.inner.(driver.RowsNextResultSet); ok {
		return r.met(n.NextResultSet())
	}
	return io.EOF
}

// ColumnTypeScanType answers from the inner rows, else as database/sql would.
func (r *rows) ColumnTypeScanType(i int) reflect.Type {
	if c, ok := r.inner.(driver.RowsColumnTypeScanType); ok {
		return c.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

// ColumnTypeDatabaseTypeName answers from the inner rows, else "".
func (r *rows) ColumnTypeDatabaseTypeName(i int) string {
	if c, ok := r.inner.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return c.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

// ColumnTypeLength answers from the inner rows, else not known.
func (r *rows) ColumnTypeLength(i int) (int64, bool) {
	if c, ok := r.inner.(driver.RowsColumnTypeLength); ok {
		return c.ColumnTypeLength(i)
	}
	return 0, false
}

// ColumnTypePrecisionScale answers from the inner rows, else not known.
func (r *rows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	if c, ok := r.inner.(driver.RowsColumnTypePrecisionScale); ok {
		return c.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}
