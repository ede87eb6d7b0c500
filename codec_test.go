package cachedpq

import (
	"bytes"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/zeebo/xxh3"
)

// mustLoad loads a tz database zone or fails the test.
func mustLoad(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("LoadLocation(%q): %v", name, err)
	}
	return loc
}

// sameValue is reflect.DeepEqual, except that floats compare by bits, so
// NaN equals the same NaN and -0 differs from 0.
func sameValue(a, b driver.Value) bool {
	fa, aok := a.(float64)
	fb, bok := b.(float64)
	if aok && bok {
		return math.Float64bits(fa) == math.Float64bits(fb)
	}
	return reflect.DeepEqual(a, b)
}

// sameRows compares two row sets value by value with sameValue.
func sameRows(t testing.TB, got, want [][]driver.Value) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("row %d: got %d values, want %d", i, len(got[i]), len(want[i]))
		}
		for j := range want[i] {
			if !sameValue(got[i][j], want[i][j]) {
				t.Fatalf("row %d col %d: got %#v, want %#v", i, j, got[i][j], want[i][j])
			}
		}
	}
}

// edgeValues holds every kind a snapshot holds, with their edge cases.
func edgeValues(t testing.TB) map[string]driver.Value {
	ny := mustLoad(t, "America/New_York")
	pqTime, err := pq.ParseTimestamp(ny, "2024-07-04 12:30:45.123456-04")
	if err != nil {
		t.Fatal(err)
	}
	pqFixed, err := pq.ParseTimestamp(nil, "2024-01-02 03:04:05.5+05:30")
	if err != nil {
		t.Fatal(err)
	}
	return map[string]driver.Value{
		"nil":              nil,
		"false":            false,
		"true":             true,
		"int zero":         int64(0),
		"int small":        int64(7),
		"int negative":     int64(-300),
		"int min":          int64(math.MinInt64),
		"int max":          int64(math.MaxInt64),
		"float zero":       0.0,
		"float neg zero":   math.Copysign(0, -1),
		"float NaN":        math.NaN(),
		"float NaN bits":   math.Float64frombits(0x7ff8_dead_beef_0001),
		"float +Inf":       math.Inf(1),
		"float -Inf":       math.Inf(-1),
		"float tiny":       math.SmallestNonzeroFloat64,
		"float pi":         math.Pi,
		"string empty":     "",
		"string text":      "héllo, wörld",
		"string invalid":   "\xff\xfe\x00bad utf-8\xc3",
		"string large":     strings.Repeat("abcdefghij", 20000),
		"bytes nil":        []byte(nil),
		"bytes empty":      []byte{},
		"bytes data":       []byte{0, 1, 2, 0xff},
		"time UTC":         time.Date(2024, 2, 29, 23, 59, 59, 999999999, time.UTC),
		"time zero":        time.Time{},
		"time fixed +1":    time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600)),
		"time fixed -3.5":  time.Date(2020, 1, 1, 0, 0, 0, 1, time.FixedZone("", -12600)),
		"time fixed 0":     time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("", 0)),
		"time fixed named": time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("XYZ", 7200)),
		"time New York":    time.Date(2024, 11, 3, 1, 30, 0, 0, ny),
		"time Local":       time.Date(2001, 9, 9, 1, 46, 40, 0, time.Local),
		"time monotonic":   time.Now().Round(0).In(time.UTC),
		"time far past":    time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC),
		"time far future":  time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC),
		"time extreme":     time.Unix(math.MaxInt64-100, 5).UTC(),
		"time pq zone":     pqTime,
		"time pq fixed":    pqFixed,
	}
}

// oneValueEntry wraps v in a one-row, one-column entry.
func oneValueEntry(v driver.Value) *entry {
	return &entry{snap: snapshot{columns: []column{{name: "v"}}, rows: [][]driver.Value{{v}}}}
}

// roundTrip encodes and decodes e, failing the test on any error.
func roundTrip(t testing.TB, e *entry) *entry {
	t.Helper()
	b, err := encodeEntry(nil, e)
	if err != nil {
		t.Fatalf("encodeEntry: %v", err)
	}
	got, err := decodeEntry(b, 0)
	if err != nil {
		t.Fatalf("decodeEntry: %v", err)
	}
	if got.size != len(b) {
		t.Fatalf("size = %d, want %d", got.size, len(b))
	}
	return got
}

func TestCodecRoundTripValues(t *testing.T) {
	for name, v := range edgeValues(t) {
		t.Run(name, func(t *testing.T) {
			got := roundTrip(t, oneValueEntry(v)).snap.rows[0][0]
			if !sameValue(got, v) {
				t.Fatalf("got %#v, want %#v", got, v)
			}
			if want, ok := v.(time.Time); ok {
				assertSameTime(t, got.(time.Time), want)
			}
		})
	}
}

// assertSameTime checks what reflect.DeepEqual implies, spelled out: same
// instant, location name and offset, and no monotonic reading.
func assertSameTime(t *testing.T, got, want time.Time) {
	t.Helper()
	gn, goff := got.Zone()
	wn, woff := want.Zone()
	if !got.Equal(want) || gn != wn || goff != woff || got.Location().String() != want.Location().String() {
		t.Fatalf("got %v (%s %d, loc %q), want %v (%s %d, loc %q)", got, gn, goff, got.Location(), want, wn, woff, want.Location())
	}
	if strings.Contains(got.String(), "m=") {
		t.Fatalf("decoded time has a monotonic reading: %v", got)
	}
}

func TestCodecRoundTripMonotonicStripped(t *testing.T) {
	now := time.Now() // has a monotonic reading
	got := roundTrip(t, oneValueEntry(now)).snap.rows[0][0].(time.Time)
	if !reflect.DeepEqual(got, now.Round(0)) {
		t.Fatalf("got %#v, want %#v", got, now.Round(0))
	}
}

// fullEntry builds an entry using every field, every kind of value and
// every combination of column metadata.
func fullEntry(t testing.TB) *entry {
	vals := edgeValues(t)
	e := &entry{
		check:   [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		stamps:  []uint64{0, 1, math.MaxUint64, 0xdeadbeef},
		created: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(),
		expires: math.MaxInt64,
		delta:   -5,
	}
	e.snap.columns = []column{
		{name: "a", dbType: "INT8", hasDBType: true, scan: scanInt64},
		{name: "", scan: scanUnknown},
		{name: "n", dbType: "NUMERIC", hasDBType: true, scan: scanAny, precision: 10, scale: 2, hasDecimal: true},
		{name: "s", dbType: "VARCHAR", hasDBType: true, scan: scanString, length: math.MaxInt64, hasLength: true},
		{name: "nn", scan: scanBytes, hasNullable: true, nullable: true},
		{name: "nf", scan: scanTime, hasNullable: true, length: -1, hasLength: true},
	}
	var row []driver.Value
	for _, name := range sortedKeys(vals) {
		row = append(row, vals[name])
		if len(row) == len(e.snap.columns) {
			e.snap.rows = append(e.snap.rows, row)
			row = nil
		}
	}
	for len(row) < len(e.snap.columns) {
		row = append(row, nil)
	}
	e.snap.rows = append(e.snap.rows, row)
	return e
}

func sortedKeys(m map[string]driver.Value) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// insertion sort keeps the test free of extra imports and is plenty here
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// sameEntry compares every encoded field of two entries.
func sameEntry(t testing.TB, got, want *entry) {
	t.Helper()
	if got.check != want.check || got.created != want.created || got.expires != want.expires || got.delta != want.delta {
		t.Fatalf("fixed fields differ: got %+v, want %+v", got, want)
	}
	if len(got.stamps) != len(want.stamps) || len(want.stamps) > 0 && !reflect.DeepEqual(got.stamps, want.stamps) {
		t.Fatalf("stamps: got %v, want %v", got.stamps, want.stamps)
	}
	if len(got.snap.columns) != len(want.snap.columns) || len(want.snap.columns) > 0 && !reflect.DeepEqual(got.snap.columns, want.snap.columns) {
		t.Fatalf("columns:\n got %+v\nwant %+v", got.snap.columns, want.snap.columns)
	}
	sameRows(t, got.snap.rows, want.snap.rows)
}

func TestCodecRoundTripEntry(t *testing.T) {
	for _, kind := range []int{compressNone, compressS2, compressZstd} {
		t.Run(fmt.Sprint("compression ", kind), func(t *testing.T) {
			defer setCompression(kind, 0)()
			want := fullEntry(t)
			b, err := encodeEntry([]byte("prefix"), want)
			if err != nil {
				t.Fatal(err)
			}
			if string(b[:6]) != "prefix" {
				t.Fatalf("encodeEntry did not append to dst")
			}
			if got := int(b[6+3] & compressMask); got != kind {
				t.Fatalf("compression kind %d, want %d", got, kind)
			}
			got, err := decodeEntry(b[6:], 0)
			if err != nil {
				t.Fatal(err)
			}
			sameEntry(t, got, want)
		})
	}
}

// setCompression makes encodeEntry compress with kind above min bytes
// until the returned function restores the defaults. Tests calling it
// must not run in parallel.
func setCompression(kind, min int) func() {
	oldKind, oldMin := codecCompression, codecCompressMin
	codecCompression, codecCompressMin = kind, min
	return func() { codecCompression, codecCompressMin = oldKind, oldMin }
}

func TestCodecEmptyResults(t *testing.T) {
	tests := map[string]*entry{
		"zero value":       {},
		"columns, no rows": {snap: snapshot{columns: []column{{name: "x"}}}},
		"rows, no columns": {snap: snapshot{rows: [][]driver.Value{{}, {}, {}}}},
	}
	for name, e := range tests {
		t.Run(name, func(t *testing.T) {
			got := roundTrip(t, e)
			if len(got.snap.rows) != len(e.snap.rows) || len(got.snap.columns) != len(e.snap.columns) {
				t.Fatalf("got %d rows %d columns", len(got.snap.rows), len(got.snap.columns))
			}
		})
	}
}

func TestCodecSmallResultsStayUncompressed(t *testing.T) {
	b, err := encodeEntry(nil, oneValueEntry("small"))
	if err != nil {
		t.Fatal(err)
	}
	if b[3]&compressMask != compressNone {
		t.Fatalf("a %d byte entry was compressed", len(b))
	}
	b, err = encodeEntry(nil, oneValueEntry(strings.Repeat("compressible ", 1000)))
	if err != nil {
		t.Fatal(err)
	}
	if b[3]&compressMask == compressNone || len(b) > 2000 {
		t.Fatalf("a 13 kB repetitive entry was stored in %d bytes, flags %#x", len(b), b[3])
	}
}

func TestCodecUncacheable(t *testing.T) {
	tests := map[string]driver.Value{
		"int32":     int32(1),
		"float32":   float32(1),
		"uint64":    uint64(1),
		"int":       1,
		"pointer":   new(int64),
		"struct":    struct{}{},
		"time ptr":  &time.Time{},
		"odd zone":  time.Date(2020, 1, 1, 0, 0, 0, 0, customZone(t)),
		"too large": time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("", 100*3600)),
	}
	for name, v := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := encodeEntry(nil, oneValueEntry(v))
			if !errors.Is(err, errUncacheable) {
				t.Fatalf("err = %v, want errUncacheable", err)
			}
		})
	}
	t.Run("ragged row", func(t *testing.T) {
		e := &entry{snap: snapshot{columns: []column{{name: "a"}}, rows: [][]driver.Value{{nil, nil}}}}
		if _, err := encodeEntry(nil, e); !errors.Is(err, errUncacheable) {
			t.Fatalf("err = %v, want errUncacheable", err)
		}
	})
}

// customZone is a location with real rules under a name the tz database
// does not know, which the codec cannot rebuild.
func customZone(t testing.TB) *time.Location {
	data, err := os.ReadFile("/usr/share/zoneinfo/America/New_York")
	if err != nil {
		return time.FixedZone("NotFixed", 3600) // abbreviation and name differ below
	}
	loc, err := time.LoadLocationFromTZData("Custom/Zone", data)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// validEncoding returns an encoding of a mid-sized entry with kind.
func validEncoding(t testing.TB, kind int) []byte {
	t.Helper()
	defer setCompression(kind, 0)()
	e := fullEntry(t)
	e.snap.rows = e.snap.rows[:2] // keep the exhaustive loops below quick
	b, err := encodeEntry(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertCorrupt decodes b and wants an errCorrupt error, no panic.
func assertCorrupt(t *testing.T, b []byte, maxBytes int, what string) {
	t.Helper()
	e, err := decodeEntry(b, maxBytes)
	if !errors.Is(err, errCorrupt) || e != nil {
		t.Fatalf("%s: got entry %v, err %v; want errCorrupt", what, e != nil, err)
	}
}

func TestDecodeEveryTruncation(t *testing.T) {
	for _, kind := range []int{compressNone, compressS2, compressZstd} {
		b := validEncoding(t, kind)
		for n := range len(b) {
			assertCorrupt(t, b[:n], 0, fmt.Sprintf("kind %d, %d of %d bytes", kind, n, len(b)))
		}
	}
}

func TestDecodeEveryBitFlip(t *testing.T) {
	for _, kind := range []int{compressNone, compressS2, compressZstd} {
		b := validEncoding(t, kind)
		for i := range len(b) * 8 {
			c := bytes.Clone(b)
			c[i/8] ^= 1 << (i % 8)
			assertCorrupt(t, c, 0, fmt.Sprintf("kind %d, bit %d", kind, i))
		}
	}
}

// reframe rebuilds a frame around body with a valid checksum, so tests
// reach the checks behind the checksum.
func reframe(head []byte, body []byte) []byte {
	b := append(bytes.Clone(head), binary.AppendUvarint(nil, uint64(len(body)))...)
	b = append(b, body...)
	return binary.LittleEndian.AppendUint64(b, xxh3.Hash(b))
}

// bodyOf returns the raw body of an uncompressed encoding of e.
func bodyOf(t *testing.T, e *entry) []byte {
	t.Helper()
	defer setCompression(compressNone, 0)()
	b, err := encodeEntry(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	_, n := binary.Uvarint(b[codecHeadLen:])
	return b[codecHeadLen+n : len(b)-codecSumLen]
}

func TestDecodeRejects(t *testing.T) {
	body := bodyOf(t, fullEntry(t))
	nyBody := bodyOf(t, oneValueEntry(time.Date(2020, 1, 1, 0, 0, 0, 0, mustLoad(t, "America/New_York"))))
	head := []byte{codecMagic0, codecMagic1, codecVersion, compressNone}
	if _, err := decodeEntry(reframe(head, body), 0); err != nil {
		t.Fatalf("reframed valid body: %v", err)
	}
	tests := map[string][]byte{
		"empty":            nil,
		"foreign magic":    reframe([]byte{'{', '"', codecVersion, 0}, body),
		"gob-like":         append([]byte{0x0d, 0xff, 0x81}, body...),
		"older version":    reframe([]byte{codecMagic0, codecMagic1, 0, 0}, body),
		"newer version":    reframe([]byte{codecMagic0, codecMagic1, codecVersion + 1, 0}, body),
		"unknown flags":    reframe([]byte{codecMagic0, codecMagic1, codecVersion, 0x80}, body),
		"unknown kind":     reframe([]byte{codecMagic0, codecMagic1, codecVersion, 3}, body),
		"trailing garbage": reframe(head, append(bytes.Clone(body), 0)),
		"short body":       reframe(head, body[:len(body)-1]),
		"s2 flag, raw":     reframe([]byte{codecMagic0, codecMagic1, codecVersion, compressS2}, body),
		"zstd flag, raw":   reframe([]byte{codecMagic0, codecMagic1, codecVersion, compressZstd}, body),
		"bad time zone":    reframe(head, replaceOnce(t, nyBody, "America/New_York", "America/New_Yorx")),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) { assertCorrupt(t, b, 0, name) })
	}
}

// replaceOnce replaces old with new, of the same length, in b.
func replaceOnce(t *testing.T, b []byte, old, new string) []byte {
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%q not in body", old)
	}
	return bytes.Replace(bytes.Clone(b), []byte(old), []byte(new), 1)
}

func TestDecodeSizeLimit(t *testing.T) {
	big := oneValueEntry(strings.Repeat("x", 100_000))
	for _, kind := range []int{compressNone, compressS2, compressZstd} {
		restore := setCompression(kind, 0)
		b, err := encodeEntry(nil, big)
		restore()
		if err != nil {
			t.Fatal(err)
		}
		assertCorrupt(t, b, 50_000, fmt.Sprint("kind ", kind, " over limit"))
		if _, err := decodeEntry(b, 200_000); err != nil {
			t.Fatalf("kind %d under limit: %v", kind, err)
		}
	}
}

func TestDecodeHugeDeclaredLengthsAllocateLittle(t *testing.T) {
	head := []byte{codecMagic0, codecMagic1, codecVersion, compressNone}
	var body []byte
	body = append(body, make([]byte, codecCheckLen)...)
	body = append(body, 0, 0, 0) // created, expires, delta
	huge := []byte{0xff, 0xff, 0xff, 0xff, 0x07}
	tests := map[string][]byte{
		"stamps":           append(bytes.Clone(body), huge...),
		"columns":          append(append(bytes.Clone(body), 0), huge...),
		"rows":             append(append(bytes.Clone(body), 0, 1), huge...),
		"zero-column rows": append(append(bytes.Clone(body), 0, 0), huge...),
		"heap":             append(append(bytes.Clone(body), 0, 0, 0, 0, 0, 0, 0, 0), huge...),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			framed := reframe(head, append(b, make([]byte, 16)...))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			assertCorrupt(t, framed, 0, name)
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
				t.Fatalf("decoding allocated %d bytes", grew)
			}
		})
	}
	t.Run("s2 declared size", func(t *testing.T) {
		framed := reframe([]byte{codecMagic0, codecMagic1, codecVersion, compressS2}, []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0})
		assertCorrupt(t, framed, 0, "s2 declared size")
	})
}

func TestDecodeRejectsHeaderLengthOverLimit(t *testing.T) {
	b := []byte{codecMagic0, codecMagic1, codecVersion, compressS2}
	b = binary.AppendUvarint(b, 1<<40)
	b = append(b, 1, 2, 3)
	b = binary.LittleEndian.AppendUint64(b, xxh3.Hash(b))
	_, err := decodeEntry(b, 0)
	if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("err = %v", err)
	}
}

func TestDecodedValuesDoNotAlias(t *testing.T) {
	b, err := encodeEntry(nil, oneValueEntry([]byte("abc")))
	if err != nil {
		t.Fatal(err)
	}
	e, err := decodeEntry(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	clear(b) // the caller's buffer may be reused
	if got := e.snap.rows[0][0].([]byte); string(got) != "abc" || cap(got) != 3 {
		t.Fatalf("got %q cap %d", got, cap(got))
	}
}

func TestDecodeAllocations(t *testing.T) {
	for name, e := range benchResults(t) {
		t.Run(name, func(t *testing.T) {
			b, err := encodeEntry(nil, e)
			if err != nil {
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(50, func() {
				if _, err := decodeEntry(b, 0); err != nil {
					t.Fatal(err)
				}
			})
			// the entry and its arena: no per-value cost
			if allocs > 2 {
				t.Fatalf("decoding took %v allocations", allocs)
			}
		})
	}
}

func TestApproxSize(t *testing.T) {
	small := oneValueEntry(int64(1)).snap
	large := oneValueEntry(strings.Repeat("x", 10_000)).snap
	if s, l := small.approxSize(), large.approxSize(); s <= 0 || l < 10_000 || l > 11_000 {
		t.Fatalf("approxSize small %d large %d", s, l)
	}
}

// v1Entry is an entry as format version 1 encoded it: one row of a UTC
// time and the string "x".
const v1Entry = "\xc7P\x01\x008\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x01\x00\x00\x01\x01\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\b\x00\xca\xf6\xea\xe0\v\x06\x05\x01vsx\x1e\x8b\x86\x92\xed\xa3\xbee"

func TestDecodeRejectsVersion1(t *testing.T) {
	_, err := decodeEntry([]byte(v1Entry), 0)
	if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "format version 1") {
		t.Fatalf("err = %v, want a format version error", err)
	}
}

func TestCodecCompressedBlockEdges(t *testing.T) {
	tests := map[string]*entry{
		"zero value":   {},
		"no heaps":     oneValueEntry(int64(12345)),
		"empty heaps":  oneValueEntry([]byte{}),
		"only heaps":   {snap: snapshot{columns: []column{{}}, rows: [][]driver.Value{{strings.Repeat("y", 3000)}}}},
		"zero columns": {snap: snapshot{rows: [][]driver.Value{{}, {}}}},
	}
	for _, kind := range []int{compressS2, compressZstd} {
		for name, e := range tests {
			t.Run(fmt.Sprint(name, " kind ", kind), func(t *testing.T) {
				defer setCompression(kind, 0)()
				b, err := encodeEntry(nil, e)
				if err != nil {
					t.Fatal(err)
				}
				got, err := decodeEntry(b, 0)
				if err != nil {
					t.Fatalf("%v (flags %#x)", err, b[3])
				}
				sameEntry(t, got, e)
			})
		}
	}
}

// garbage allocates and drops memory, so that anything the collector
// wrongly freed is reused and overwritten.
func garbage() {
	var keep [][]byte
	for i := range 2000 {
		b := make([]byte, 64+i%512)
		for j := range b {
			b[j] = 0xAA
		}
		keep = append(keep, b)
	}
	runtime.KeepAlive(keep)
}

// TestDecodedValuesSurviveCollection keeps only single values of a decoded
// entry, collects everything else, and checks the values are intact: the
// arena they live in is invisible to the collector, so this is what shows
// that every pointer in it is kept alive (see arena).
func TestDecodedValuesSurviveCollection(t *testing.T) {
	ny := mustLoad(t, "America/New_York")
	want := []driver.Value{"a string value", []byte("a bytes value"), int64(1 << 40), 2.5,
		time.Date(2024, 7, 4, 12, 0, 0, 0, ny), time.Date(2024, 7, 4, 12, 0, 0, 0, time.FixedZone("", 3600)),
		time.Date(2024, 7, 4, 12, 0, 0, 0, time.UTC)}
	for _, kind := range []int{compressNone, compressS2} {
		restore := setCompression(kind, 0)
		kept := make([]driver.Value, len(want))
		for i, v := range want {
			e := oneValueEntry(v)
			e.snap.rows[0] = append(e.snap.rows[0], strings.Repeat("padding ", 100))
			e.snap.columns = append(e.snap.columns, column{name: "p"})
			kept[i] = roundTrip(t, e).snap.rows[0][0]
		}
		restore()
		for range 3 {
			runtime.GC()
			garbage()
		}
		for i := range want {
			if !sameValue(kept[i], want[i]) {
				t.Fatalf("kind %d: value %d is %#v after collection, want %#v", kind, i, kept[i], want[i])
			}
		}
	}
}

// TestDecodeMortalLocation decodes a time in a fixed zone the zone cache
// has no room for, so that only its pin to the arena keeps it alive.
func TestDecodeMortalLocation(t *testing.T) {
	old := fixedZoneCount.Load()
	fixedZoneCount.Store(maxCachedLocations)
	defer fixedZoneCount.Store(old)
	want := time.Date(2001, 2, 3, 4, 5, 6, 7, time.FixedZone("MORTAL", 4567))
	b, err := encodeEntry(nil, oneValueEntry(want))
	if err != nil {
		t.Fatal(err)
	}
	e, err := decodeEntry(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, cached := fixedZones.Load(locCode{kind: locFixed, name: "MORTAL", offset: 4567}); cached {
		t.Fatal("the zone was cached; the test needs it not to be")
	}
	got := e.snap.rows[0][0]
	e = nil
	for range 3 {
		runtime.GC()
		garbage()
	}
	assertSameTime(t, got.(time.Time), want)
}

func TestDecodedStringsDoNotAlias(t *testing.T) {
	for _, kind := range []int{compressNone, compressS2} {
		restore := setCompression(kind, 0)
		b, err := encodeEntry(nil, oneValueEntry("abc"))
		restore()
		if err != nil {
			t.Fatal(err)
		}
		e, err := decodeEntry(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		clear(b)
		if got := e.snap.rows[0][0].(string); got != "abc" {
			t.Fatalf("kind %d: got %q", kind, got)
		}
	}
}

// TestDecodeWhileCollecting decodes while the collector runs, so that the
// decoder's stores into arenas, which skip the write barrier (see put),
// happen while it marks; then it checks every kept entry after further
// collections. Large freed blocks are dirtied first so that large arenas
// are likely to be carved out of memory that held something else.
func TestDecodeWhileCollecting(t *testing.T) {
	results := benchResults(t)
	names := resultNames(results)
	encoded := make([][]byte, len(names))
	for i, name := range names {
		b, err := encodeEntry(nil, results[name])
		if err != nil {
			t.Fatal(err)
		}
		encoded[i] = b
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go collectUntil(stop, stopped)
	var kept []*entry
	for range 10 {
		for _, b := range encoded {
			dirtyLargeBlocks()
			e, err := decodeEntry(b, 0)
			if err != nil {
				t.Fatal(err)
			}
			kept = append(kept, e)
		}
	}
	close(stop)
	<-stopped
	runtime.GC()
	garbage()
	for i, e := range kept {
		sameEntry(t, e, results[names[i%len(names)]])
	}
}

// collectUntil collects garbage over and over until stop is closed.
func collectUntil(stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	for {
		select {
		case <-stop:
			return
		default:
			runtime.GC()
			garbage()
		}
	}
}

// dirtyLargeBlocks allocates, fills and drops blocks of arena sizes.
func dirtyLargeBlocks() {
	for _, n := range []int{64 << 10, 512 << 10} {
		b := make([]byte, n)
		for i := range b {
			b[i] = 0xAA
		}
		runtime.KeepAlive(b)
	}
}

// TestNewArena checks that arenas on both sides of arenaNoZeroMin have
// the size asked for and the alignment carve relies on.
func TestNewArena(t *testing.T) {
	for _, size := range []int{1, 7, 16, arenaNoZeroMin - 1, arenaNoZeroMin, arenaNoZeroMin + 3, 1 << 20} {
		a := newArena(size)
		if len(a.mem) < size || !aligned(a.mem) {
			t.Fatalf("size %d: got %d bytes at %p", size, len(a.mem), a.base())
		}
	}
}

// TestReaderVarints reads varints of every length, with and without
// enough bytes after them for the reader's eight-byte fast path.
func TestReaderVarints(t *testing.T) {
	for shift := range 64 {
		for _, u := range []uint64{1 << shift, 1<<shift - 1, 1<<shift | 1<<(shift/2)} {
			for _, pad := range []int{0, 1, 7, 8} {
				b := append(binary.AppendUvarint(nil, u), make([]byte, pad)...)
				r := reader{b: b}
				if got := r.uvarint(); got != u || r.bad || r.off != len(b)-pad {
					t.Fatalf("uvarint %#x pad %d: got %#x at %d, bad %v", u, pad, got, r.off, r.bad)
				}
				b = append(binary.AppendVarint(nil, -int64(u)), make([]byte, pad)...)
				r = reader{b: b}
				if got := r.varint(); got != -int64(u) || r.bad || r.off != len(b)-pad {
					t.Fatalf("varint %d pad %d: got %d at %d, bad %v", -int64(u), pad, got, r.off, r.bad)
				}
			}
		}
	}
}

// TestDecodedValuesOutliveTheDecoder overwrites the stack that decoding
// used and collects garbage before it compares the entry: a value that
// points anywhere but into the arena, static data or a kept location
// shows up as changed (see put).
func TestDecodedValuesOutliveTheDecoder(t *testing.T) {
	want := fullEntry(t)
	for _, kind := range []int{compressNone, compressS2} {
		restore := setCompression(kind, 0)
		got := roundTrip(t, want)
		restore()
		scribbleStack(16)
		runtime.GC()
		garbage()
		sameEntry(t, got, want)
	}
}

// scribbleStack fills depth frames of stack with a pattern.
//
//go:noinline
func scribbleStack(depth int) byte {
	var frame [4096]byte
	for i := range frame {
		frame[i] = 0xA5
	}
	if depth == 0 {
		return frame[0]
	}
	return scribbleStack(depth-1) ^ frame[depth]
}
