package cachedpq

import (
	"bytes"
	"database/sql/driver"
	"encoding/gob"
	"fmt"
	"hash/crc32"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/zeebo/xxh3"
)

// pqFixed is the location lib/pq gives timestamptz values whose offset
// the session zone does not explain: time.FixedZone("", offset).
var pqFixed = time.FixedZone("", -5*3600)

// col builds a column as lib/pq describes one of type dbType.
func col(name, dbType string, scan scanKind) column {
	c := column{name: name, dbType: dbType, hasDBType: true, scan: scan}
	switch dbType {
	case "TEXT":
		c.length, c.hasLength = math.MaxInt64, true
	case "VARCHAR":
		c.length, c.hasLength = 64, true
	case "NUMERIC":
		c.precision, c.scale, c.hasDecimal = 65535, 65531, true
	}
	return c
}

// benchResults returns the four realistic results of the issue: a user
// row, a page of a list, an aggregate and a page of JSON documents.
func benchResults(tb testing.TB) map[string]*entry {
	base := time.Date(2025, 3, 14, 9, 26, 53, 589793000, pqFixed)
	return map[string]*entry{
		"1x8":       userRow(base),
		"50x4":      listPage(base),
		"agg20":     aggregate(base),
		"jsonb1000": jsonPage(base),
	}
}

func stamped(cols []column, rows [][]driver.Value) *entry {
	return &entry{
		check: [16]byte{9, 8, 7, 6, 5, 4, 3, 2, 1}, stamps: []uint64{0x1234567890abcdef, 0xfedcba0987654321},
		created: 1_741_944_413_000_000_000, expires: 1_741_944_713_000_000_000, delta: 1_250_000,
		snap: snapshot{columns: cols, rows: rows},
	}
}

func userRow(base time.Time) *entry {
	cols := []column{col("id", "INT8", scanInt64), col("name", "TEXT", scanString), col("email", "VARCHAR", scanString),
		col("created_at", "TIMESTAMPTZ", scanTime), col("active", "BOOL", scanBool), col("balance", "NUMERIC", scanAny),
		col("uuid", "UUID", scanAny), col("score", "FLOAT8", scanFloat64)}
	row := []driver.Value{int64(48213), "Ada Lovelace", "ada@example.org", base, true, []byte("1234.56"),
		[]byte("6f1c2a3e-9b7d-4c1e-8f2a-5d3b9e7c1a04"), 0.8125}
	return stamped(cols, [][]driver.Value{row})
}

func listPage(base time.Time) *entry {
	cols := []column{col("id", "INT8", scanInt64), col("title", "TEXT", scanString),
		col("updated_at", "TIMESTAMPTZ", scanTime), col("status", "TEXT", scanString)}
	statuses := []string{"open", "closed", "pending"}
	var rows [][]driver.Value
	for i := range 50 {
		rows = append(rows, []driver.Value{int64(100_000 + i*7), fmt.Sprintf("Issue %d: fix the flaky widget test", i),
			base.Add(-time.Duration(i) * 37 * time.Minute), statuses[i%3]})
	}
	return stamped(cols, rows)
}

func aggregate(base time.Time) *entry {
	cols := []column{col("category", "TEXT", scanString), col("count", "INT8", scanInt64),
		col("total", "NUMERIC", scanAny), col("avg", "NUMERIC", scanAny), col("last", "TIMESTAMPTZ", scanTime)}
	var rows [][]driver.Value
	for i := range 20 {
		rows = append(rows, []driver.Value{fmt.Sprintf("category-%02d", i), int64(i*i*13 + 5),
			[]byte(fmt.Sprintf("%d.%02d", i*98765, i*7%100)), []byte(fmt.Sprintf("%.16f", float64(i)*3.14159/7)),
			base.Add(time.Duration(i) * time.Hour)})
	}
	return stamped(cols, rows)
}

func jsonPage(base time.Time) *entry {
	cols := []column{col("id", "INT8", scanInt64), col("doc", "JSONB", scanAny), col("created_at", "TIMESTAMPTZ", scanTime)}
	var rows [][]driver.Value
	for i := range 1000 {
		doc := fmt.Sprintf(`{"id": %d, "tags": ["alpha", "beta", "%c"], "user": {"name": "user%d", "email": "user%d@example.com", "verified": %t}, `+
			`"stats": {"views": %d, "likes": %d, "ratio": %.4f}, "body": "%s", "created": "%s"}`,
			i, 'a'+i%26, i, i, i%2 == 0, i*31%1000, i*7%300, float64(i%97)/97, strings.Repeat("lorem ipsum ", 6+i%5),
			base.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano))
		rows = append(rows, []driver.Value{int64(i + 1), []byte(doc), base.Add(time.Duration(i) * time.Second)})
	}
	return stamped(cols, rows)
}

func resultNames(m map[string]*entry) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// gobEntry mirrors entry with exported fields for the comparison codecs.
type gobEntry struct {
	Check                   [16]byte
	Stamps                  []uint64
	Created, Expires, Delta int64
	Columns                 []gobColumn
	Rows                    [][]any
}

type gobColumn struct {
	Name, DBType                     string
	Scan                             uint8
	Length, Precision, Scale         int64
	HasDBType, HasLength, HasDecimal bool
	Nullable, HasNullable            bool
}

func init() { gob.Register(time.Time{}) }

func toGob(e *entry) *gobEntry {
	g := &gobEntry{Check: e.check, Stamps: e.stamps, Created: e.created, Expires: e.expires, Delta: e.delta}
	for _, c := range e.snap.columns {
		g.Columns = append(g.Columns, gobColumn{c.name, c.dbType, uint8(c.scan), c.length, c.precision, c.scale,
			c.hasDBType, c.hasLength, c.hasDecimal, c.nullable, c.hasNullable})
	}
	for _, r := range e.snap.rows {
		row := make([]any, len(r))
		for i, v := range r {
			row[i] = v
		}
		g.Rows = append(g.Rows, row)
	}
	return g
}

// otherCodec is a general-purpose encoder measured beside ours, with the
// same compression as ours applied above the same size.
type otherCodec struct {
	name   string
	encode func(*gobEntry) ([]byte, error)
	decode func([]byte) error
}

var otherCodecs = []otherCodec{
	{"gob", func(g *gobEntry) ([]byte, error) {
		var buf bytes.Buffer
		err := gob.NewEncoder(&buf).Encode(g)
		return buf.Bytes(), err
	}, func(b []byte) error {
		var g gobEntry
		return gob.NewDecoder(bytes.NewReader(b)).Decode(&g)
	}},
	{"msgpack", func(g *gobEntry) ([]byte, error) { return msgpack.Marshal(g) },
		func(b []byte) error {
			var g gobEntry
			return msgpack.Unmarshal(b, &g)
		}},
}

// compressLike compresses b as encodeEntry would.
func compressLike(b []byte) []byte {
	if len(b) < codecCompressMin || codecCompression == compressNone {
		return b
	}
	return compressInto(nil, b, byte(codecCompression))
}

func decompressLike(raw int, b []byte) ([]byte, error) {
	if raw < codecCompressMin || codecCompression == compressNone {
		return b, nil
	}
	if codecCompression == compressS2 {
		return s2.Decode(nil, b)
	}
	return zstdDecoder().DecodeAll(b, nil)
}

func BenchmarkCodecEncode(b *testing.B) {
	results := benchResults(b)
	for _, name := range resultNames(results) {
		e := results[name]
		b.Run(name+"/cachedpq", func(b *testing.B) {
			b.ReportAllocs()
			buf, _ := encodeEntry(nil, e)
			for b.Loop() {
				buf, _ = encodeEntry(buf[:0], e)
			}
			b.ReportMetric(float64(len(buf)), "bytes")
		})
		for _, oc := range otherCodecs {
			b.Run(name+"/"+oc.name, func(b *testing.B) {
				b.ReportAllocs()
				var out []byte
				for b.Loop() {
					raw, err := oc.encode(toGob(e))
					if err != nil {
						b.Fatal(err)
					}
					out = compressLike(raw)
				}
				b.ReportMetric(float64(len(out)), "bytes")
			})
		}
	}
}

func BenchmarkCodecDecode(b *testing.B) {
	results := benchResults(b)
	for _, name := range resultNames(results) {
		e := results[name]
		b.Run(name+"/cachedpq", func(b *testing.B) {
			buf, err := encodeEntry(nil, e)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeEntry(buf, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(buf)), "bytes")
		})
		for _, oc := range otherCodecs {
			b.Run(name+"/"+oc.name, func(b *testing.B) {
				raw, err := oc.encode(toGob(e))
				if err != nil {
					b.Fatal(err)
				}
				packed := compressLike(raw)
				b.ReportAllocs()
				for b.Loop() {
					plain, err := decompressLike(len(raw), packed)
					if err != nil {
						b.Fatal(err)
					}
					if err := oc.decode(plain); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(packed)), "bytes")
			})
		}
	}
}

// BenchmarkCodecCompression measures each compression kind on each result:
// this is how codecCompression and codecCompressMin were chosen.
func BenchmarkCodecCompression(b *testing.B) {
	results := benchResults(b)
	for _, name := range resultNames(results) {
		for _, kind := range []int{compressNone, compressS2, compressZstd} {
			b.Run(fmt.Sprintf("%s/%s", name, [...]string{"none", "s2", "zstd"}[kind]), func(b *testing.B) {
				defer setCompression(kind, 0)()
				buf, err := encodeEntry(nil, results[name])
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := decodeEntry(buf, 0); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(buf)), "bytes")
			})
		}
	}
}

// BenchmarkCodecChecksum compares the two cheap integrity checks on the
// largest realistic body.
func BenchmarkCodecChecksum(b *testing.B) {
	defer setCompression(compressNone, 0)()
	body, err := encodeEntry(nil, benchResults(b)["jsonb1000"])
	if err != nil {
		b.Fatal(err)
	}
	table := crc32.MakeTable(crc32.Castagnoli)
	b.Run("xxh3", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			xxh3.Hash(body)
		}
	})
	b.Run("crc32c", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			crc32.Checksum(body, table)
		}
	})
}

// BenchmarkCodecReplay measures serving a decoded snapshot row by row.
func BenchmarkCodecReplay(b *testing.B) {
	s := &benchResults(b)["jsonb1000"].snap
	dest := make([]driver.Value, len(s.columns))
	b.ReportAllocs()
	for b.Loop() {
		r := newReplayRows(s)
		for r.Next(dest) == nil {
		}
	}
}

// BenchmarkCodecPaired decodes and encodes each result with cachedpq and
// gob in turns (see runPaired) and reports how many times faster cachedpq
// is: the speed targets compare the two, and pairing keeps load from other
// processes from favouring either.
func BenchmarkCodecPaired(b *testing.B) {
	results := benchResults(b)
	gobCodec := otherCodecs[0]
	for _, name := range resultNames(results) {
		e := results[name]
		b.Run(name, func(b *testing.B) {
			buf, err := encodeEntry(nil, e)
			if err != nil {
				b.Fatal(err)
			}
			raw, err := gobCodec.encode(toGob(e))
			if err != nil {
				b.Fatal(err)
			}
			packed := compressLike(raw)
			var out []byte
			runPaired(b, []pairedOp{
				{name: "decode", run: func() {
					if _, err := decodeEntry(buf, 0); err != nil {
						b.Fatal(err)
					}
				}},
				{name: "gob-decode", run: func() {
					plain, err := decompressLike(len(raw), packed)
					if err == nil {
						err = gobCodec.decode(plain)
					}
					if err != nil {
						b.Fatal(err)
					}
				}},
				{name: "encode", run: func() { out, _ = encodeEntry(out[:0], e) }},
				{name: "gob-encode", run: func() {
					raw, err := gobCodec.encode(toGob(e))
					if err != nil {
						b.Fatal(err)
					}
					compressLike(raw)
				}},
			}, [2]string{"gob-decode", "decode"}, [2]string{"gob-encode", "encode"})
		})
	}
}
