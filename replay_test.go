package cachedpq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
)

// fakeRows is a hand-written inner driver.Rows with lib/pq's optional
// interfaces. Like lib/pq, it hands out []byte values that alias one read
// buffer, which the next row overwrites.
type fakeRows struct {
	cols     []string
	rows     [][]driver.Value
	next     int
	errAt    int   // row index at which Next fails with err; -1 never
	err      error // returned at errAt
	more     bool  // HasNextResultSet's answer
	closeErr error
	closed   int
	buf      []byte // the aliased read buffer
}

func newFakeRows(cols []string, rows [][]driver.Value) *fakeRows {
	return &fakeRows{cols: cols, rows: rows, errAt: -1, buf: make([]byte, 64)}
}

func (f *fakeRows) Columns() []string { return f.cols }

func (f *fakeRows) Close() error { f.closed++; return f.closeErr }

func (f *fakeRows) Next(dest []driver.Value) error {
	if f.next == f.errAt {
		return f.err
	}
	if f.next >= len(f.rows) {
		return io.EOF
	}
	for i, v := range f.rows[f.next] {
		if b, ok := v.([]byte); ok && b != nil {
			n := copy(f.buf, b) // alias the read buffer, as lib/pq does
			v = f.buf[:n:n]
		}
		dest[i] = v
	}
	f.next++
	return nil
}

func (f *fakeRows) HasNextResultSet() bool { return f.more }
func (f *fakeRows) NextResultSet() error   { return io.EOF }

func (f *fakeRows) ColumnTypeScanType(i int) reflect.Type {
	return [...]reflect.Type{reflect.TypeFor[int64](), reflect.TypeFor[any]()}[i%2]
}
func (f *fakeRows) ColumnTypeDatabaseTypeName(i int) string { return fmt.Sprint("T", i) }
func (f *fakeRows) ColumnTypeLength(i int) (int64, bool)    { return int64(i) * 10, i%2 == 1 }
func (f *fakeRows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	return int64(i), 2, i == 0
}

// bareRows hides every optional interface of a fakeRows.
type bareRows struct{ f *fakeRows }

func (b bareRows) Columns() []string              { return b.f.Columns() }
func (b bareRows) Close() error                   { return b.f.Close() }
func (b bareRows) Next(dest []driver.Value) error { return b.f.Next(dest) }

// recorder collects what done was called with.
type recorder struct {
	calls    int
	snap     *snapshot
	complete bool
}

func (r *recorder) done(s *snapshot, complete bool, _ time.Duration) {
	r.calls++
	r.snap, r.complete = s, complete
}

func sampleRows(n int) [][]driver.Value {
	rows := make([][]driver.Value, n)
	for i := range rows {
		rows[i] = []driver.Value{int64(i), []byte(fmt.Sprintf("bytes-%03d", i))}
	}
	return rows
}

// readAll reads n rows (all if n < 0) then closes.
func readAll(t *testing.T, r driver.Rows, n int) error {
	t.Helper()
	dest := make([]driver.Value, len(r.Columns()))
	var err error
	for i := 0; n < 0 || i < n; i++ {
		if err = r.Next(dest); err != nil {
			break
		}
	}
	if cerr := r.Close(); cerr != nil {
		return cerr
	}
	if err == io.EOF {
		return nil
	}
	return err
}

func TestRecordingRows(t *testing.T) {
	tests := []struct {
		name     string
		rows     int
		read     int // rows the caller reads; -1 reads to the end
		lim      recordLimits
		complete bool
		kept     int
	}{
		{"read to the end", 10, -1, recordLimits{}, true, 10},
		{"early close drains", 10, 1, recordLimits{}, true, 10},
		{"no rows", 0, -1, recordLimits{}, true, 0},
		{"closed before any read", 5, 0, recordLimits{}, true, 5},
		{"exactly max rows", 5, -1, recordLimits{maxRows: 5}, true, 5},
		{"over max rows", 6, -1, recordLimits{maxRows: 5}, false, 0},
		{"early close over max rows", 6, 1, recordLimits{maxRows: 5}, false, 0},
		{"over max bytes", 100, -1, recordLimits{maxBytes: 1000}, false, 0},
		{"early close over max bytes", 100, 1, recordLimits{maxBytes: 1000}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := newFakeRows([]string{"id", "b"}, sampleRows(tt.rows))
			var rec recorder
			if err := readAll(t, newRecordingRows(inner, tt.lim, rec.done), tt.read); err != nil {
				t.Fatal(err)
			}
			if rec.calls != 1 || rec.complete != tt.complete || len(rec.snap.rows) != tt.kept || inner.closed != 1 {
				t.Fatalf("done calls %d complete %v kept %d inner closed %d", rec.calls, rec.complete, len(rec.snap.rows), inner.closed)
			}
			if tt.complete {
				sameRows(t, rec.snap.rows, sampleRows(tt.rows))
			}
		})
	}
}

func TestRecordingRowsErrorsPassThroughByIdentity(t *testing.T) {
	pqErr := &pq.Error{Code: "57014", Message: "canceling statement due to statement timeout"}
	for _, want := range []error{pqErr, driver.ErrBadConn, io.ErrUnexpectedEOF} {
		t.Run(fmt.Sprint(want), func(t *testing.T) {
			inner := newFakeRows([]string{"id", "b"}, sampleRows(5))
			inner.errAt, inner.err = 2, want
			var rec recorder
			r := newRecordingRows(inner, recordLimits{}, rec.done)
			dest := make([]driver.Value, 2)
			var err error
			for err == nil {
				err = r.Next(dest)
			}
			if err != want { // identity, not errors.Is: callers compare with ==
				t.Fatalf("Next error %#v, want %#v", err, want)
			}
			if err := r.Close(); err != nil || rec.calls != 1 || rec.complete {
				t.Fatalf("Close %v, done calls %d complete %v", err, rec.calls, rec.complete)
			}
		})
	}
	t.Run("EOF and Close error", func(t *testing.T) {
		inner := newFakeRows([]string{"id", "b"}, nil)
		inner.closeErr = driver.ErrBadConn
		var rec recorder
		r := newRecordingRows(inner, recordLimits{}, rec.done)
		if err := r.Next(make([]driver.Value, 2)); err != io.EOF {
			t.Fatalf("Next %v, want io.EOF itself", err)
		}
		if err := r.Close(); err != driver.ErrBadConn || rec.complete {
			t.Fatalf("Close %v complete %v", err, rec.complete)
		}
	})
}

func TestRecordingRowsNotComplete(t *testing.T) {
	tests := map[string]func(*fakeRows){
		"another result set":  func(f *fakeRows) { f.more = true },
		"uncacheable value":   func(f *fakeRows) { f.rows[1][0] = int32(1) },
		"uncacheable in tail": func(f *fakeRows) { f.rows[4][0] = uint64(1) },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			inner := newFakeRows([]string{"id", "b"}, sampleRows(5))
			mutate(inner)
			var rec recorder
			if err := readAll(t, newRecordingRows(inner, recordLimits{}, rec.done), 2); err != nil {
				t.Fatal(err)
			}
			if rec.calls != 1 || rec.complete || rec.snap.rows != nil {
				t.Fatalf("done calls %d complete %v rows %d", rec.calls, rec.complete, len(rec.snap.rows))
			}
		})
	}
	t.Run("NextResultSet called", func(t *testing.T) {
		inner := newFakeRows([]string{"id", "b"}, sampleRows(1))
		var rec recorder
		r := newRecordingRows(inner, recordLimits{}, rec.done)
		_ = r.(driver.RowsNextResultSet).NextResultSet()
		if err := readAll(t, r, -1); err != nil || rec.complete {
			t.Fatalf("err %v complete %v", err, rec.complete)
		}
	})
}

func TestRecordingRowsCopiesAliasedBytes(t *testing.T) {
	inner := newFakeRows([]string{"id", "b"}, sampleRows(3))
	var rec recorder
	if err := readAll(t, newRecordingRows(inner, recordLimits{}, rec.done), -1); err != nil {
		t.Fatal(err)
	}
	copy(inner.buf, "XXXXXXXXXXXXXXXX") // the driver reuses its buffer
	sameRows(t, rec.snap.rows, sampleRows(3))
}

func TestRecordingRowsStripsMonotonic(t *testing.T) {
	now := time.Now()
	inner := newFakeRows([]string{"t"}, [][]driver.Value{{now}})
	var rec recorder
	if err := readAll(t, newRecordingRows(bareRows{inner}, recordLimits{}, rec.done), -1); err != nil {
		t.Fatal(err)
	}
	if got := rec.snap.rows[0][0]; !reflect.DeepEqual(got, now.Round(0)) {
		t.Fatalf("kept %#v, want %#v", got, now.Round(0))
	}
}

func TestRecordingRowsCloseTwiceCallsDoneOnce(t *testing.T) {
	var rec recorder
	r := newRecordingRows(newFakeRows([]string{"id"}, nil), recordLimits{}, rec.done)
	_ = r.Close()
	_ = r.Close()
	if rec.calls != 1 {
		t.Fatalf("done called %d times", rec.calls)
	}
}

// columnAnswers is everything a Rows says about its columns.
type columnAnswers struct {
	Name           string
	ScanType       reflect.Type
	DBType         string
	Length         int64
	HasLength      bool
	Prec, Scale    int64
	HasPrecision   bool
	HasNextResults bool
}

func answers(r driver.Rows) []columnAnswers {
	var out []columnAnswers
	for i, name := range r.Columns() {
		a := columnAnswers{Name: name}
		a.ScanType = r.(driver.RowsColumnTypeScanType).ColumnTypeScanType(i)
		a.DBType = r.(driver.RowsColumnTypeDatabaseTypeName).ColumnTypeDatabaseTypeName(i)
		a.Length, a.HasLength = r.(driver.RowsColumnTypeLength).ColumnTypeLength(i)
		a.Prec, a.Scale, a.HasPrecision = r.(driver.RowsColumnTypePrecisionScale).ColumnTypePrecisionScale(i)
		a.HasNextResults = r.(driver.RowsNextResultSet).HasNextResultSet()
		out = append(out, a)
	}
	return out
}

func TestReplayAnswersAsRecorded(t *testing.T) {
	for _, bare := range []bool{false, true} {
		t.Run(fmt.Sprint("bare ", bare), func(t *testing.T) {
			var inner driver.Rows = newFakeRows([]string{"id", "b"}, sampleRows(2))
			if bare {
				inner = bareRows{inner.(*fakeRows)}
			}
			var rec recorder
			live := newRecordingRows(inner, recordLimits{}, rec.done)
			want := answers(live)
			if err := readAll(t, live, -1); err != nil || !rec.complete {
				t.Fatalf("err %v complete %v", err, rec.complete)
			}
			decoded := roundTrip(t, &entry{snap: *rec.snap})
			replay := newReplayRows(&decoded.snap)
			if got := answers(replay); !reflect.DeepEqual(got, want) {
				t.Fatalf("replay answers\n%+v\nlive\n%+v", got, want)
			}
			if err := replay.(driver.RowsNextResultSet).NextResultSet(); err != io.EOF {
				t.Fatalf("NextResultSet %v", err)
			}
		})
	}
}

func TestReplayRowsShareNothingWritable(t *testing.T) {
	s := &snapshot{columns: []column{{name: "a"}}, rows: [][]driver.Value{{int64(1)}, {int64(2)}}}
	r := newReplayRows(s)
	dest := make([]driver.Value, 1)
	for r.Next(dest) == nil {
		dest[0] = "scribble" // a caller may reuse dest freely
	}
	if s.rows[0][0] != int64(1) || s.rows[1][0] != int64(2) {
		t.Fatalf("snapshot changed: %v", s.rows)
	}
	if err := r.Next(dest); err != io.EOF {
		t.Fatalf("Next after end: %v", err)
	}
}

func TestReplayRowsHandOutTheirOwnBytes(t *testing.T) {
	s := &snapshot{columns: []column{{name: "a"}, {name: "b"}}, rows: [][]driver.Value{
		{[]byte("one"), []byte("two")}, {[]byte("three"), []byte{}}, {[]byte("four"), []byte(nil)},
	}}
	want := fmt.Sprintf("%#v", s.rows)
	r := newReplayRows(s)
	dest := make([]driver.Value, 2)
	for r.Next(dest) == nil {
		a := dest[0].([]byte)
		for i := range a {
			a[i] = 'X' // as a caller may through sql.RawBytes
		}
		_ = append(a, 'Y') // capped: must not reach the next value
		if got := dest[1].([]byte); len(got) > 0 && got[0] == 'Y' {
			t.Fatalf("an append reached the next value: %q", got)
		}
	}
	if got := fmt.Sprintf("%#v", s.rows); got != want {
		t.Fatalf("snapshot changed:\n%s\nwant\n%s", got, want)
	}
}

// TestReplayRowsOutliveNothingTheyHandOut: closed replayed rows are used
// again, but nothing they handed out is: the column names a caller holds
// stay as they were after Close (database/sql hands out the driver's
// slice), and rows still open, or closed twice, are never handed out
// twice, so the []byte values of open rows stay theirs until their next
// Next.
func TestReplayRowsOutliveNothingTheyHandOut(t *testing.T) {
	s := &snapshot{columns: []column{{name: "a"}, {name: "b"}}, rows: [][]driver.Value{
		{[]byte("one"), int64(1)}, {[]byte("two"), int64(2)},
	}}
	other := &snapshot{columns: []column{{name: "x"}, {name: "y"}}, rows: [][]driver.Value{
		{[]byte("XXX"), int64(3)},
	}}
	dest := make([]driver.Value, 2)
	r := newReplayRows(s)
	cols := r.Columns()
	must(t, r.Next(dest))
	held := dest[0].([]byte)
	for range 4 { // rows of another snapshot, replayed while r is open
		o := newReplayRows(other)
		if o == r {
			t.Fatal("open rows were handed out again")
		}
		o.Columns()
		must(t, o.Next(make([]driver.Value, 2)))
		must(t, o.Close())
	}
	if string(held) != "one" {
		t.Fatalf("open rows' value became %q", held)
	}
	must(t, r.Close())
	if err := r.Next(dest); err != io.EOF { // as lib/pq's closed rows answer
		t.Fatalf("Next after Close: %v", err)
	}
	must(t, r.Close()) // once too often: still one reuse
	var again []driver.Rows
	for range 4 {
		o := newReplayRows(other)
		if slices.Contains(again, o) {
			t.Fatal("rows closed twice were handed out twice")
		}
		again = append(again, o)
		o.Columns()
	}
	for _, o := range again {
		must(t, o.Close())
	}
	if !slices.Equal(cols, []string{"a", "b"}) {
		t.Fatalf("column names held after Close became %q", cols)
	}
}

func TestReplayAllocatesNothingPerRow(t *testing.T) {
	s := &benchResults(t)["jsonb1000"].snap
	dest := make([]driver.Value, len(s.columns))
	allocs := testing.AllocsPerRun(20, func() {
		r := newReplayRows(s)
		for r.Next(dest) == nil {
		}
	})
	if allocs > 2 { // the rows and the buffer its []byte values are copied to
		t.Fatalf("replaying %d rows took %v allocations", len(s.rows), allocs)
	}
}

// snapConnector is a database/sql driver.Connector whose every query
// returns rows made by rows(); it lets tests go through database/sql
// without registering a driver name.
type snapConnector struct{ rows func() driver.Rows }

func (c snapConnector) Connect(context.Context) (driver.Conn, error) { return snapConn(c), nil }
func (c snapConnector) Driver() driver.Driver                        { return nil }

type snapConn snapConnector

func (c snapConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("not supported") }
func (c snapConn) Close() error                        { return nil }
func (c snapConn) Begin() (driver.Tx, error)           { return nil, errors.New("not supported") }
func (c snapConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	return c.rows(), nil
}

// scanDests returns a fresh destination of every type database/sql scans
// into.
func scanDests() map[string]func() any {
	return map[string]func() any{
		"any": func() any { return new(any) }, "int64": func() any { return new(int64) },
		"int": func() any { return new(int) }, "int32": func() any { return new(int32) },
		"uint64": func() any { return new(uint64) }, "float64": func() any { return new(float64) },
		"float32": func() any { return new(float32) }, "bool": func() any { return new(bool) },
		"string": func() any { return new(string) }, "bytes": func() any { return new([]byte) },
		"RawBytes": func() any { return new(sql.RawBytes) }, "time": func() any { return new(time.Time) },
		"NullString": func() any { return new(sql.NullString) }, "NullInt64": func() any { return new(sql.NullInt64) },
		"NullFloat64": func() any { return new(sql.NullFloat64) }, "NullBool": func() any { return new(sql.NullBool) },
		"NullTime": func() any { return new(sql.NullTime) }, "Null[[]byte]": func() any { return new(sql.Null[[]byte]) },
	}
}

// scanned scans column col of every row of db's result into a fresh dest
// and renders what came out, error included.
func scanned(t *testing.T, db *sql.DB, col int, dest func() any) []string {
	t.Helper()
	rows, err := db.Query("q")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		ptrs := make([]any, len(cols))
		for i := range ptrs {
			ptrs[i] = new(any)
		}
		ptrs[col] = dest()
		err := rows.Scan(ptrs...)
		out = append(out, fmt.Sprintf("%#v %v", reflect.ValueOf(ptrs[col]).Elem().Interface(), err))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReplayScansLikeLive(t *testing.T) {
	want := fullEntry(t)
	got := roundTrip(t, want)
	live := sql.OpenDB(snapConnector{func() driver.Rows { return newReplayRows(&want.snap) }})
	replay := sql.OpenDB(snapConnector{func() driver.Rows { return newReplayRows(&got.snap) }})
	defer live.Close()
	defer replay.Close()
	for name, dest := range scanDests() {
		for col := range want.snap.columns {
			t.Run(fmt.Sprintf("%s/col%d", name, col), func(t *testing.T) {
				w, g := scanned(t, live, col, dest), scanned(t, replay, col, dest)
				if !reflect.DeepEqual(g, w) {
					t.Fatalf("replayed scans\n%q\nlive\n%q", g, w)
				}
			})
		}
	}
}

func TestRecordingThroughQueryRow(t *testing.T) {
	var rec recorder
	db := sql.OpenDB(snapConnector{func() driver.Rows {
		return newRecordingRows(newFakeRows([]string{"id", "b"}, sampleRows(4)), recordLimits{}, rec.done)
	}})
	defer db.Close()
	var id int64
	var b []byte
	if err := db.QueryRow("q").Scan(&id, &b); err != nil || id != 0 || string(b) != "bytes-000" {
		t.Fatalf("QueryRow: %v %d %q", err, id, b)
	}
	if rec.calls != 1 || !rec.complete || len(rec.snap.rows) != 4 {
		t.Fatalf("done calls %d complete %v rows %d", rec.calls, rec.complete, len(rec.snap.rows))
	}
}

func TestScanKindOf(t *testing.T) {
	for k, typ := range scanTypes {
		if k == int(scanUnknown) {
			continue
		}
		if got := scanKindOf(typ); got != scanKind(k) {
			t.Fatalf("scanKindOf(%v) = %d, want %d", typ, got, k)
		}
	}
	if got := scanKindOf(reflect.TypeFor[uint8]()); got != scanUnknown {
		t.Fatalf("uint8 gave %d", got)
	}
	var rec recorder
	odd := &oddScanRows{newFakeRows([]string{"x"}, [][]driver.Value{{int64(1)}})}
	if err := readAll(t, newRecordingRows(odd, recordLimits{}, rec.done), -1); err != nil || rec.complete {
		t.Fatalf("a scan type without a scanKind was stored: %v %v", err, rec.complete)
	}
}

// oddScanRows reports a scan type the snapshot cannot name.
type oddScanRows struct{ *fakeRows }

func (o *oddScanRows) ColumnTypeScanType(int) reflect.Type { return reflect.TypeFor[uint8]() }

// TestConcurrentReplayAndCodec shares one decoded snapshot between
// goroutines that replay it while others encode and decode; run under
// -race.
func TestConcurrentReplayAndCodec(t *testing.T) {
	want := fullEntry(t)
	shared := roundTrip(t, want)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			dest := make([]driver.Value, len(shared.snap.columns))
			for range 20 {
				r := newReplayRows(&shared.snap)
				for i := 0; r.Next(dest) == nil; i++ {
					for j, v := range dest {
						if !sameValue(v, want.snap.rows[i][j]) {
							t.Errorf("row %d col %d: %#v", i, j, v) // Errorf: not the test goroutine
						}
					}
				}
				b, err := encodeEntry(nil, shared)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := decodeEntry(b, 0); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

// TestNamesCatalog: the OID types, and arrays of them, are told apart
// from other columns as lib/pq names them, without allocating for the
// others (every column of every miss is asked).
func TestNamesCatalog(t *testing.T) {
	for dbType, want := range map[string]bool{"REGCLASS": true, "_REGTYPE": true, "regproc": true,
		"INT8": false, "_TEXT": false, "RE": false, "": false, "REGION": false} {
		if got := namesCatalog(dbType); got != want {
			t.Errorf("namesCatalog(%q) = %v, want %v", dbType, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { namesCatalog("TIMESTAMPTZ") }); n != 0 {
		t.Errorf("namesCatalog allocates %v times for another column", n)
	}
}
