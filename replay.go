package cachedpq

// This file holds the two driver.Rows that sit on either side of the
// cache: recording rows, which pass a live result through while keeping a
// deep copy of it, and replayed rows, which serve a stored snapshot. Both
// implement exactly the optional interfaces lib/pq's rows implement, so a
// caller cannot tell a hit from a miss.

import (
	"bytes"
	"database/sql/driver"
	"io"
	"reflect"
	"strings"
	"sync"
	"time"
	"unsafe"
)

var (
	_ driver.Rows                           = (*recordingRows)(nil)
	_ driver.RowsNextResultSet              = (*recordingRows)(nil)
	_ driver.RowsColumnTypeScanType         = (*recordingRows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*recordingRows)(nil)
	_ driver.RowsColumnTypeLength           = (*recordingRows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*recordingRows)(nil)

	_ driver.Rows                           = (*replayRows)(nil)
	_ driver.RowsNextResultSet              = (*replayRows)(nil)
	_ driver.RowsColumnTypeScanType         = (*replayRows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*replayRows)(nil)
	_ driver.RowsColumnTypeLength           = (*replayRows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*replayRows)(nil)
)

// recordLimits bounds what recording rows keep; past a limit the result is
// passed through but not recorded.
type recordLimits struct {
	maxRows  int // rows kept at most; 0 means no limit
	maxBytes int // snapshot.approxSize at most; 0 means no limit
}

// recordingRows passes every row of inner to the caller unchanged and
// keeps a deep copy of the whole result. A driver.Rows is used by one
// goroutine at a time, so it needs no lock.
type recordingRows struct {
	inner driver.Rows
	lim   recordLimits
	done  func(s *snapshot, complete bool, spent time.Duration)

	snap    snapshot
	size    int            // approxSize of snap so far
	slab    []driver.Value // unused tail of the current row slab
	keeping bool           // false once the result cannot be stored
	eof     bool           // inner returned io.EOF
	spent   time.Duration  // in inner's Next: the query's time, not the caller's between rows
	closed  bool
	drained error // what inner's Next returned when drain stopped on an error
}

// recordSlabRows is how many rows share one allocation of values.
const recordSlabRows = 64

// newRecordingRows wraps inner. done is called exactly once, by Close,
// with the snapshot and whether it is the whole result: read to io.EOF
// without error, within lim, with no further result set, and holding only
// values the codec can store; spent is the time inner's Next took (what
// the caller does between rows is not the query's time).
func newRecordingRows(inner driver.Rows, lim recordLimits, done func(s *snapshot, complete bool, spent time.Duration)) driver.Rows {
	r := &recordingRows{inner: inner, lim: lim, done: done}
	r.snap.columns, r.keeping = describeColumns(inner)
	r.size = r.snap.approxSize()
	return r
}

// Columns returns the inner rows' column names.
func (r *recordingRows) Columns() []string { return r.inner.Columns() }

// Next reads the next row into dest and keeps a copy of it. Errors from
// inner, io.EOF included, are returned as they are.
func (r *recordingRows) Next(dest []driver.Value) error {
	start := time.Now()
	err := r.inner.Next(dest)
	r.spent += time.Since(start)
	switch err {
	case nil:
		r.keep(dest)
	case io.EOF:
		r.eof = true
	default:
		r.stop()
	}
	return err
}

// keep appends a deep copy of row to the snapshot, or stops recording if
// a limit is passed or a value cannot be stored.
func (r *recordingRows) keep(row []driver.Value) {
	if !r.keeping {
		return
	}
	if r.lim.maxRows > 0 && len(r.snap.rows) >= r.lim.maxRows {
		r.stop()
		return
	}
	kept := r.rowSlot(len(row))
	for i, v := range row {
		c, ok := copyValue(v)
		if !ok {
			r.stop()
			return
		}
		kept[i] = c
		r.size += valueSize(c)
	}
	r.size += 24 + 16*len(row)
	r.snap.rows = append(r.snap.rows, kept)
	if r.lim.maxBytes > 0 && r.size > r.lim.maxBytes {
		r.stop()
	}
}

// rowSlot returns room for one row, cut from a slab shared by many rows.
func (r *recordingRows) rowSlot(n int) []driver.Value {
	if len(r.slab) < n {
		// Slabs grow with the result: most cached results are a row or a
		// few, and a large first slab would cost each of them a big clear.
		rows := min(max(len(r.snap.rows), 1), recordSlabRows)
		r.slab = make([]driver.Value, n*rows)
	}
	row := r.slab[:n:n]
	r.slab = r.slab[n:]
	return row
}

// stop gives up recording and lets go of what was kept.
func (r *recordingRows) stop() {
	r.keeping = false
	r.snap.rows, r.slab = nil, nil
}

// copyValue returns a copy of v that owns its memory: lib/pq's []byte
// values alias its read buffer, which the next row overwrites. ok is false
// for a value the codec cannot store.
func copyValue(v driver.Value) (c driver.Value, ok bool) {
	switch v := v.(type) {
	case nil, int64, float64, bool, string:
		return v, true
	case []byte:
		return bytes.Clone(v), true
	case time.Time:
		return v.Round(0), true
	}
	return nil, false
}

// Close completes a result the caller left early (QueryRow reads one row)
// by draining inner within the limits, closes inner and reports the
// snapshot. It returns what lib/pq's Close would: the first error met
// while reading the rest of the result (Postgres may raise one after the
// rows the caller read), else inner's Close error, as they are.
func (r *recordingRows) Close() error {
	if r.closed {
		return r.inner.Close()
	}
	r.closed = true
	r.drain()
	more := r.HasNextResultSet()
	err := r.inner.Close()
	complete := r.keeping && r.eof && !more && err == nil
	if !complete {
		r.snap.rows = nil
	}
	r.done(&r.snap, complete, r.spent)
	if r.drained != nil {
		return r.drained
	}
	return err
}

// drain reads the rest of the result while it can still be stored. An
// error stops recording, and is kept for Close.
func (r *recordingRows) drain() {
	if r.eof || !r.keeping {
		return
	}
	dest := make([]driver.Value, len(r.snap.columns))
	for r.keeping && !r.eof {
		if err := r.Next(dest); err != nil && err != io.EOF {
			r.drained = err
		}
	}
}

// HasNextResultSet reports whether inner has another result set; false
// when inner cannot have one, as database/sql assumes.
func (r *recordingRows) HasNextResultSet() bool {
	if nr, ok := r.inner.(driver.RowsNextResultSet); ok {
		return nr.HasNextResultSet()
	}
	return false
}

// NextResultSet moves inner to its next result set. A result with more
// than one set is not stored, so recording stops.
func (r *recordingRows) NextResultSet() error {
	r.stop()
	if nr, ok := r.inner.(driver.RowsNextResultSet); ok {
		return nr.NextResultSet()
	}
	return io.EOF
}

// ColumnTypeScanType asks inner; database/sql's fallback is any.
func (r *recordingRows) ColumnTypeScanType(i int) reflect.Type {
	if ct, ok := r.inner.(driver.RowsColumnTypeScanType); ok {
		return ct.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

// ColumnTypeDatabaseTypeName asks inner; the fallback is "".
func (r *recordingRows) ColumnTypeDatabaseTypeName(i int) string {
	if ct, ok := r.inner.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return ct.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

// ColumnTypeLength asks inner; the fallback is "not variable length".
func (r *recordingRows) ColumnTypeLength(i int) (int64, bool) {
	if ct, ok := r.inner.(driver.RowsColumnTypeLength); ok {
		return ct.ColumnTypeLength(i)
	}
	return 0, false
}

// ColumnTypePrecisionScale asks inner; the fallback is "not decimal".
func (r *recordingRows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	if ct, ok := r.inner.(driver.RowsColumnTypePrecisionScale); ok {
		return ct.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}

// describeColumns records what inner reports about each column. ok is
// false if a scan type has no scanKind, since replaying it would answer
// differently, or if a column is of an OID type (see namesCatalog).
func describeColumns(inner driver.Rows) (cols []column, ok bool) {
	names := inner.Columns()
	cols = make([]column, len(names))
	ok = true
	for i, name := range names {
		c := &cols[i]
		c.name = name
		if ct, has := inner.(driver.RowsColumnTypeScanType); has {
			c.scan = scanKindOf(ct.ColumnTypeScanType(i))
			ok = ok && c.scan != scanUnknown
		}
		if ct, has := inner.(driver.RowsColumnTypeDatabaseTypeName); has {
			c.dbType, c.hasDBType = ct.ColumnTypeDatabaseTypeName(i), true
			ok = ok && !namesCatalog(c.dbType)
		}
		if ct, ok := inner.(driver.RowsColumnTypeLength); ok {
			c.length, c.hasLength = ct.ColumnTypeLength(i)
		}
		if ct, ok := inner.(driver.RowsColumnTypePrecisionScale); ok {
			c.precision, c.scale, c.hasDecimal = ct.ColumnTypePrecisionScale(i)
		}
		if ct, ok := inner.(driver.RowsColumnTypeNullable); ok {
			c.nullable, c.hasNullable = ct.ColumnTypeNullable(i)
		}
	}
	return cols, ok
}

// namesCatalog reports a column of one of the OID types (regclass,
// regtype, ...), or of an array of one, as lib/pq names its type: its
// values print the current names of what they number, which DDL changes
// under no tag of the read (ALTER TABLE ... RENAME), so a result that has
// one is not kept.
func namesCatalog(dbType string) bool {
	name := strings.TrimPrefix(dbType, "_")
	if len(name) < 3 || !strings.EqualFold(name[:3], "reg") {
		return false // every other column of every miss: no lowered copy
	}
	name = strings.ToLower(name)
	return unseenBuiltins[name] == catalogByName
}

// scanTypes maps each scanKind to its type; scanUnknown replays as any,
// which is what database/sql assumes when a driver does not say.
var scanTypes = [...]reflect.Type{
	scanUnknown: reflect.TypeFor[any](),
	scanAny:     reflect.TypeFor[any](),
	scanInt64:   reflect.TypeFor[int64](),
	scanInt32:   reflect.TypeFor[int32](),
	scanInt16:   reflect.TypeFor[int16](),
	scanFloat64: reflect.TypeFor[float64](),
	scanFloat32: reflect.TypeFor[float32](),
	scanString:  reflect.TypeFor[string](),
	scanBool:    reflect.TypeFor[bool](),
	scanTime:    reflect.TypeFor[time.Time](),
	scanBytes:   reflect.TypeFor[[]byte](),
}

// scanKindOf names t, or returns scanUnknown for a type outside the list
// (no lib/pq type is).
func scanKindOf(t reflect.Type) scanKind {
	for k, st := range scanTypes {
		if k != int(scanUnknown) && st == t {
			return scanKind(k)
		}
	}
	return scanUnknown
}

// replayRows serves a snapshot. The snapshot is shared by concurrent
// readers and is only read; each replayRows is used by one goroutine.
// Closed rows go back to replayPool, with their buffers.
type replayRows struct {
	s     *snapshot // nil once closed
	next  int       // index of the row Next returns
	names []string  // handed out by Columns: never reused

	// The current row's []byte values: their bytes, and the slice headers
	// the values in dest point to. Both are reused from row to row, and
	// by the next rows to use this replayRows.
	buf     []byte
	bins    [][]byte
	binsBuf [8][]byte // bins of a row with up to 8 []byte values, saving an allocation
}

// replayPool holds closed replayRows for the next hit. database/sql uses no
// driver.Rows after its Close, and the []byte values the rows handed out
// were valid until then only, as lib/pq's are (its next query on the
// connection overwrites them). Column names outlive Close: they are not
// reused.
var replayPool = sync.Pool{New: func() any { return new(replayRows) }}

// The largest buffers closed rows keep for the next: bytes, and []byte
// values in a row.
const (
	replayKeepBytes = 4 << 10
	replayKeepBins  = 64
)

// newReplayRows returns rows that replay s from its first row.
func newReplayRows(s *snapshot) driver.Rows {
	r := replayPool.Get().(*replayRows)
	r.s = s
	return r
}

// Columns returns the recorded column names, in a slice of these rows'
// own: database/sql hands it to the caller, who may keep it.
func (r *replayRows) Columns() []string {
	if r.names == nil {
		cols := r.s.columns
		names := make([]string, len(cols))
		for i := range names {
			names[i] = cols[i].name
		}
		r.names = names
	}
	return r.names
}

// Next copies the next row's values into dest. []byte values are copies
// the rows own, valid until the next call, as lib/pq's are: database/sql
// hands them to sql.RawBytes and Scanners as they are, and a caller may
// write into them, while the snapshot's are shared by every reader.
func (r *replayRows) Next(dest []driver.Value) error {
	if r.s == nil || r.next >= len(r.s.rows) { // closed, as lib/pq's rows answer then
		return io.EOF
	}
	row := r.s.rows[r.next]
	r.next++
	copy(dest, row)
	if vals, n := bytesIn(dest); n > 0 {
		r.copyBytes(dest, vals, n)
	}
	return nil
}

// bytesIn counts the non-empty []byte values in row, and their bytes.
func bytesIn(row []driver.Value) (vals, n int) {
	for _, v := range row {
		if b, ok := v.([]byte); ok && len(b) > 0 {
			vals, n = vals+1, n+len(b)
		}
	}
	return vals, n
}

// copyBytes replaces each non-empty []byte value in dest, vals values of
// n bytes in all, with a copy in r.buf. The copies are capped, so that an
// append by a caller cannot reach the next one, and boxed in place (see
// boxAt) from r.bins, so that no value costs an allocation: the next call
// rewrites both, as lib/pq's next row overwrites its read buffer. (An
// empty value has no room to write into, and is left as it is.)
func (r *replayRows) copyBytes(dest []driver.Value, vals, n int) {
	buf := r.room(n)
	switch {
	case vals > cap(r.bins) && vals <= len(r.binsBuf):
		r.bins = r.binsBuf[:0]
	case vals > cap(r.bins):
		r.bins = make([][]byte, 0, vals)
	}
	r.bins = r.bins[:0]
	for i, v := range dest {
		b, ok := v.([]byte)
		if !ok || len(b) == 0 {
			continue
		}
		c := buf[:len(b):len(b)]
		copy(c, b)
		buf = buf[len(b):]
		r.bins = append(r.bins, c)
		dest[i] = boxAt(bytesType, unsafe.Pointer(&r.bins[len(r.bins)-1]))
	}
}

// room returns n bytes of r.buf, growing it if it is smaller. While rows
// remain it grows to twice the need, so that rows of about one size share
// one allocation.
func (r *replayRows) room(n int) []byte {
	if n > cap(r.buf) {
		size := max(n, 2*cap(r.buf))
		if r.next < len(r.s.rows) {
			size = max(size, 2*n)
		}
		r.buf = make([]byte, size)
	}
	return r.buf[:n]
}

// Close ends the replay and puts the rows back in replayPool, letting go
// of the snapshot. Nothing may use the rows after Close, as database/sql
// does not; a second Close right after it does nothing, so that the rows
// go back once.
func (r *replayRows) Close() error {
	if r.s == nil {
		return nil
	}
	r.s, r.next, r.names = nil, 0, nil
	if cap(r.buf) > replayKeepBytes {
		r.buf, r.bins = nil, nil
		clear(r.binsBuf[:]) // they point into buf
	}
	if cap(r.bins) > replayKeepBins {
		r.bins = nil
	}
	replayPool.Put(r)
	return nil
}

// HasNextResultSet is false: only single result sets are stored.
func (r *replayRows) HasNextResultSet() bool { return false }

// NextResultSet reports io.EOF: there is no further result set.
func (r *replayRows) NextResultSet() error { return io.EOF }

// ColumnTypeScanType answers as the live rows did.
func (r *replayRows) ColumnTypeScanType(i int) reflect.Type {
	if k := r.s.columns[i].scan; int(k) < len(scanTypes) {
		return scanTypes[k]
	}
	return reflect.TypeFor[any]()
}

// ColumnTypeDatabaseTypeName answers as the live rows did.
func (r *replayRows) ColumnTypeDatabaseTypeName(i int) string {
	return r.s.columns[i].dbType
}

// ColumnTypeLength answers as the live rows did.
func (r *replayRows) ColumnTypeLength(i int) (int64, bool) {
	c := &r.s.columns[i]
	return c.length, c.hasLength
}

// ColumnTypePrecisionScale answers as the live rows did.
func (r *replayRows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	c := &r.s.columns[i]
	return c.precision, c.scale, c.hasDecimal
}
