package cachedpq

import (
	"bytes"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// fuzzMaxBytes keeps fuzz inputs from asking for much memory.
const fuzzMaxBytes = 1 << 20

// FuzzDecodeEntry feeds arbitrary bytes to decodeEntry. An input whose
// first byte is odd is taken as a body and given a valid frame, so the
// fuzzer reaches the body parser and the decompressors behind the
// checksum. Decoding must fail with errCorrupt or yield an entry that
// encodes and decodes to itself.
func FuzzDecodeEntry(f *testing.F) {
	for _, kind := range []int{compressNone, compressS2, compressZstd} {
		f.Add(validEncoding(f, kind))
	}
	f.Add([]byte{})
	f.Add([]byte{codecMagic0, codecMagic1, codecVersion, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	for _, e := range []*entry{oneValueEntry("x"), oneValueEntry(time.Date(2020, 1, 1, 0, 0, 0, 0, pqFixed)), {}} {
		b, err := encodeEntry(nil, e)
		if err != nil {
			f.Fatal(err)
		}
		_, n := binary.Uvarint(b[codecHeadLen:])
		f.Add(append([]byte{1, compressNone}, b[codecHeadLen+n:len(b)-codecSumLen]...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) >= 2 && data[0]&1 == 1 {
			data = reframe([]byte{codecMagic0, codecMagic1, codecVersion, data[1] & compressMask}, data[2:])
		}
		e, err := decodeEntry(data, fuzzMaxBytes)
		if err != nil {
			if !errors.Is(err, errCorrupt) || e != nil {
				t.Fatalf("decodeEntry: %v (entry %v)", err, e != nil)
			}
			return
		}
		again := roundTrip(t, e)
		sameEntry(t, again, e)
	})
}

// FuzzRoundTrip builds a result from the fuzz input and checks that it
// decodes to exactly what was encoded.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(1), []byte{0, 1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(uint8(3), []byte("\x04\x00\x00\x00\x00\x00\x00\xf8\x7f\x05\x03abc\x07\x02\xff\x00\x06\x08"))
	f.Add(uint8(2), []byte("\x08\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x02\x03\x02\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x00\x00\x00\x00\x03"))
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, ncols uint8, data []byte) {
		want := fuzzEntry(int(ncols%16), data)
		got := roundTrip(t, want)
		sameEntry(t, got, want)
		for i, row := range want.snap.rows {
			for j, v := range row {
				if tv, ok := v.(time.Time); ok {
					gt := got.snap.rows[i][j].(time.Time)
					gn, go_ := gt.Zone()
					wn, wo := tv.Zone()
					if gn != wn || go_ != wo || gt.Location().String() != tv.Location().String() {
						t.Fatalf("time %v came back as %v", tv, gt)
					}
				}
			}
		}
	})
}

// fuzzEntry reads values from data until it runs out and lays them out in
// rows of ncols.
func fuzzEntry(ncols int, data []byte) *entry {
	e := &entry{}
	for i := range ncols {
		e.snap.columns = append(e.snap.columns, column{name: string(rune('a' + i)), scan: scanKind(i % int(scanBytes+1))})
	}
	src := fuzzSource{data: data}
	var row []driver.Value
	for ncols > 0 && len(src.data) > 0 {
		row = append(row, src.value())
		if len(row) == ncols {
			e.snap.rows = append(e.snap.rows, row)
			row = nil
		}
	}
	e.stamps = []uint64{src.u64()}
	e.created, e.expires, e.delta = int64(src.u64()), int64(src.u64()), int64(src.u64())
	return e
}

// fuzzSource hands out fuzz bytes; reads past the end return zeros.
type fuzzSource struct{ data []byte }

func (s *fuzzSource) take(n int) []byte {
	out := make([]byte, n)
	m := copy(out, s.data)
	s.data = s.data[m:]
	return out
}

func (s *fuzzSource) u64() uint64 { return binary.LittleEndian.Uint64(s.take(8)) }
func (s *fuzzSource) u8() byte    { return s.take(1)[0] }

func (s *fuzzSource) value() driver.Value {
	switch s.u8() % 9 {
	case 0:
		return nil
	case 1:
		return s.u8()&1 == 1
	case 2:
		return int64(s.u64())
	case 3:
		return math.Float64frombits(s.u64())
	case 4:
		return string(s.take(int(s.u8())))
	case 5:
		return []byte(nil)
	case 6:
		return s.take(int(s.u8()))
	case 7:
		return []byte{}
	}
	return s.time()
}

// time makes an instant anywhere in time.Time's range in one of the
// locations lib/pq produces.
func (s *fuzzSource) time() time.Time {
	t := time.Unix(int64(s.u64()), int64(s.u64()%1e9))
	offset := int(int32(binary.LittleEndian.Uint32(s.take(4)))) % maxZoneOffset
	switch s.u8() % 5 {
	case 0:
		return t.UTC()
	case 1:
		return t.In(time.Local)
	case 2:
		return t.In(fuzzNewYork)
	case 3:
		return t.In(time.FixedZone("", offset))
	}
	return t.In(time.FixedZone("+05", offset))
}

var fuzzNewYork, _ = time.LoadLocation("America/New_York")

// FuzzReaderVarints reads data as a run of varints with the reader and
// with encoding/binary, which must agree on every value and length and on
// where the data stops being valid.
func FuzzReaderVarints(f *testing.F) {
	f.Add([]byte{0x01, 0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00})
	f.Add(binary.AppendUvarint(binary.AppendVarint(nil, math.MinInt64), math.MaxUint64))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02})
	f.Fuzz(func(t *testing.T, data []byte) {
		for signed := range 2 {
			r := reader{b: data}
			for off := 0; off < len(data); {
				var got, want uint64
				var n int
				if signed == 1 {
					var w int64
					w, n = binary.Varint(data[off:])
					got, want = uint64(r.varint()), uint64(w)
				} else {
					want, n = binary.Uvarint(data[off:])
					got = r.uvarint()
				}
				if n <= 0 {
					if !r.bad || got != 0 {
						t.Fatalf("offset %d: got %d, bad %v; binary says invalid", off, got, r.bad)
					}
					break
				}
				if off += n; r.bad || got != want || r.off != off {
					t.Fatalf("got %d ending at %d (bad %v), want %d ending at %d", got, r.off, r.bad, want, off)
				}
			}
		}
	})
}

// FuzzFastValue parses the value that data starts with twice, with
// fastValue and with value, which must agree whenever fastValue takes
// it: on the value, the bytes read, the heap bytes used and the reader's
// state.
func FuzzFastValue(f *testing.F) {
	for _, v := range []driver.Value{int64(-300), int64(math.MinInt64), "héllo", []byte{1, 2},
		time.Date(2025, 3, 14, 9, 26, 53, 589793000, pqFixed), time.Unix(math.MaxInt64-100, 5).UTC()} {
		enc := new(encoder)
		if err := enc.value(v); err != nil {
			f.Fatal(err)
		}
		f.Add(enc.vals)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		data = append(data, make([]byte, fastValueMax)...)
		fast, slow := valueDecoder(t, data), valueDecoder(t, data)
		var got driver.Value
		if !fast.fastValue(&got) {
			return
		}
		want := slow.value()
		if !sameValue(got, want) || fast.r.off != slow.r.off || fast.r.bad != slow.r.bad ||
			fast.strOff != slow.strOff || fast.binOff != slow.binOff || fast.slabs.used() != slow.slabs.used() {
			t.Fatalf("fastValue: %#v at %d (bad %v); value: %#v at %d (bad %v)",
				got, fast.r.off, fast.r.bad, want, slow.r.off, slow.r.bad)
		}
	})
}

// valueDecoder is a decoder positioned at body, with 300-byte heaps, room
// for one value of each kind and three locations, UTC, a fixed zone and
// time.Local stored with that zone's offset.
func valueDecoder(t *testing.T, body []byte) *decoder {
	heap := []byte(strings.Repeat("0123456789", 30))
	d := &decoder{r: reader{b: body}, strs: string(heap), bins: heap}
	a := newArena(arenaSize(shape{}, kindCounts{1, 1, 1, 1, 1}, 0))
	d.counts = kindCounts{1, 1, 1, 1, 1}
	d.slabs = newSlabs(&a, d.counts)
	d.locs.add(tableLoc{loc: time.UTC}, true)
	d.locs.add(tableLoc{loc: pqFixed}, true)
	_, off := time.Time{}.In(pqFixed).Zone()
	d.locs.add(tableLoc{loc: pqFixed}, true)
	d.locs.addLocal(int64(off))
	return d
}

// FuzzRedisValue feeds redisBackend.decode, which splits a Redis value into
// its stamps and its entry, arbitrary bytes and stamped entries: it returns
// an entry or a corrupt-entry error, never panics, and an entry it returns
// round-trips.
func FuzzRedisValue(f *testing.F) {
	b := &redisBackend{maxBytes: fuzzMaxBytes}
	stamped := func(stamps []uint64, e *entry) []byte {
		v, err := encodeEntry(append(appendStampTag(nil, stamps), '|'), e)
		if err != nil {
			f.Fatal(err)
		}
		return v
	}
	f.Add(stamped([]uint64{1, 2}, oneValueEntry("x")))
	f.Add(stamped(nil, &entry{}))
	f.Add(validEncoding(f, compressS2)) // no stamps
	f.Add([]byte("|"))
	f.Add([]byte("12,34|"))
	f.Add([]byte{})
	memo := &redisBackend{maxBytes: fuzzMaxBytes, memo: newDecodeMemo(memoMinBytes)}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := b.decode(data)
		if err != nil {
			if !errors.As(err, new(errCorruptEntry)) || !errors.Is(err, errCorrupt) || e != nil {
				t.Fatalf("decode: %v (entry %v)", err, e != nil)
			}
			if m, merr := memo.decode(data); m != nil || merr == nil {
				t.Fatalf("through the memo, a value that does not decode gave %v, %v", m, merr)
			}
			return
		}
		sameEntry(t, roundTrip(t, e), e)
		// Through the memo, twice: what decoding gives, then the same.
		for range 2 {
			m, err := memo.decode(bytes.Clone(data))
			if err != nil {
				t.Fatalf("through the memo: %v", err)
			}
			sameEntry(t, m, e)
		}
	})
}
