package cachedpq

// This file holds the entry codec: the bytes a cache stores for one result.
//
// An encoded entry is
//
//	magic (2) | version (1) | flags (1) | uvarint raw body length | payload | xxh3-64 (8, little endian)
//
// where payload is the body, compressed or not as flags say, and the xxh3
// sum covers every byte before it, so corruption is caught before any
// decompression or parsing. The body is
//
//	check (16) | varint created, expires, delta | uvarint #stamps | stamps (8 each)
//	uvarint #columns, #rows | uvarint count of int64, float64, time, string, []byte values
//	uvarint string heap length, []byte heap length
//	columns | locations | values (one tag byte each, then its payload) | string heap | []byte heap
//
// Strings and byte slices live apart from the structure, in two heaps, so a
// decoder makes every string of a snapshot out of one allocation and every
// []byte out of another; typed values are boxed out of slabs (see slabs
// below), so decoding costs a constant number of allocations.

import (
	"bytes"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/xxh3"
)

// errUncacheable reports a result holding a value the format cannot hold;
// such a result is served but never stored.
var errUncacheable = errors.New("cachedpq: result holds a value the cache cannot store")

// errCorrupt reports bytes that are not a valid entry of this format
// version; the engine treats it as a miss.
var errCorrupt = errors.New("cachedpq: corrupt cache entry")

const (
	codecMagic0   = 0xC7 // 0xC7 0x50: no text encoding starts with this pair
	codecMagic1   = 0x50
	codecVersion  = 1
	codecHeadLen  = 4
	codecSumLen   = 8
	codecCheckLen = 16

	// codecMaxDefault bounds a decoded body when the caller gives no limit.
	codecMaxDefault = 64 << 20
)

// Compression kinds, stored in the low bits of the flags byte.
const (
	compressNone = 0
	compressS2   = 1
	compressZstd = 2
	compressMask = 0x03
)

// codecCompression is the kind encodeEntry uses; codecCompressMin is the
// raw body size below which compression does not pay. Both were chosen by
// codec_bench_test.go: on the 300 kB JSON result s2 decompresses in about
// 66 µs against zstd's 154 µs and compresses twice as fast, while zstd
// stores 22 kB against 50 kB; every hit decompresses, so s2. Below about
// 512 bytes (the 1-row result) neither saves anything. decodeEntry reads
// both kinds, so switching later needs no format change.
var (
	codecCompression = compressS2
	codecCompressMin = 512
)

// Value tags: one byte before each value in the body.
const (
	tagNil byte = iota
	tagFalse
	tagTrue
	tagInt
	tagFloat
	tagString
	tagBytesNil
	tagBytes
	tagTime
	tagCount // first invalid tag
)

// Column flag bits.
const (
	colHasDBType = 1 << iota
	colHasLength
	colHasDecimal
	colHasNullable
	colNullable
	colFlagsAll = 1<<iota - 1
)

// kindCounts counts the values of each slab-backed kind in a snapshot, so
// the decoder can size each slab once.
type kindCounts struct {
	ints, floats, times, strs, bins int
}

// encoder is the scratch state of one encodeEntry call, pooled so that
// encoding allocates nothing once warm.
type encoder struct {
	vals, strs, bins, body []byte
	locs                   []*time.Location
	counts                 kindCounts
}

var encoderPool = sync.Pool{New: func() any { return new(encoder) }}

// encodeEntry appends the encoding of e (every field but size) to dst.
// It returns errUncacheable if a value has a type the format cannot hold.
// It is safe for concurrent use.
func encodeEntry(dst []byte, e *entry) ([]byte, error) {
	enc := encoderPool.Get().(*encoder)
	defer encoderPool.Put(enc)
	enc.reset()
	if err := enc.snapshot(&e.snap); err != nil {
		return dst, err
	}
	enc.assemble(e)
	return appendFramed(dst, enc.body)
}

// reset empties the scratch buffers, keeping their memory.
func (enc *encoder) reset() {
	enc.vals, enc.strs, enc.bins, enc.body = enc.vals[:0], enc.strs[:0], enc.bins[:0], enc.body[:0]
	clear(enc.locs)
	enc.locs = enc.locs[:0]
	enc.counts = kindCounts{}
}

// snapshot encodes the columns' strings into the heap and every value into
// enc.vals; columns themselves are written by assemble.
func (enc *encoder) snapshot(s *snapshot) error {
	for i := range s.columns {
		enc.strs = append(enc.strs, s.columns[i].name...)
		if s.columns[i].hasDBType {
			enc.strs = append(enc.strs, s.columns[i].dbType...)
		}
	}
	for _, row := range s.rows {
		if len(row) != len(s.columns) {
			return fmt.Errorf("%w: row of %d values for %d columns", errUncacheable, len(row), len(s.columns))
		}
		for _, v := range row {
			if err := enc.value(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// value appends one value's tag and payload.
func (enc *encoder) value(v driver.Value) error {
	switch v := v.(type) {
	case nil:
		enc.vals = append(enc.vals, tagNil)
	case bool:
		enc.vals = append(enc.vals, boolTag(v))
	case int64:
		enc.counts.ints++
		enc.vals = binary.AppendVarint(append(enc.vals, tagInt), v)
	case float64:
		enc.counts.floats++
		enc.vals = binary.LittleEndian.AppendUint64(append(enc.vals, tagFloat), math.Float64bits(v))
	case string:
		enc.counts.strs++
		enc.vals = binary.AppendUvarint(append(enc.vals, tagString), uint64(len(v)))
		enc.strs = append(enc.strs, v...)
	case []byte:
		enc.bytesValue(v)
	case time.Time:
		return enc.timeValue(v)
	default:
		return fmt.Errorf("%w: value of type %T", errUncacheable, v)
	}
	return nil
}

func boolTag(v bool) byte {
	if v {
		return tagTrue
	}
	return tagFalse
}

// bytesValue keeps a nil []byte apart from an empty one: Postgres NULL
// arrives as a nil interface, but drivers and callers tell them apart.
func (enc *encoder) bytesValue(v []byte) {
	if v == nil {
		enc.vals = append(enc.vals, tagBytesNil)
		return
	}
	enc.counts.bins++
	enc.vals = binary.AppendUvarint(append(enc.vals, tagBytes), uint64(len(v)))
	enc.bins = append(enc.bins, v...)
}

// timeValue stores the instant as Unix seconds and nanoseconds, which
// drops any monotonic reading, and its Location as an index into the
// entry's location table.
func (enc *encoder) timeValue(t time.Time) error {
	idx, err := enc.locIndex(t.Location())
	if err != nil {
		return err
	}
	enc.counts.times++
	enc.vals = binary.AppendUvarint(append(enc.vals, tagTime), uint64(idx))
	enc.vals = binary.AppendVarint(enc.vals, t.Unix())
	enc.vals = binary.AppendUvarint(enc.vals, uint64(t.Nanosecond()))
	return nil
}

// locIndex finds or adds loc in the entry's location table. Results hold
// one or two locations, so a linear scan beats a map.
func (enc *encoder) locIndex(loc *time.Location) (int, error) {
	for i, l := range enc.locs {
		if l == loc {
			return i, nil
		}
	}
	if _, ok := classifyLocation(loc); !ok {
		return 0, fmt.Errorf("%w: time.Location %q is neither UTC, Local, a tz database zone nor a fixed zone", errUncacheable, loc)
	}
	enc.locs = append(enc.locs, loc)
	return len(enc.locs) - 1, nil
}

// assemble writes the body: fixed fields, counts, columns, locations,
// values and both heaps.
func (enc *encoder) assemble(e *entry) {
	b := append(enc.body, e.check[:]...)
	b = binary.AppendVarint(b, e.created)
	b = binary.AppendVarint(b, e.expires)
	b = binary.AppendVarint(b, e.delta)
	b = binary.AppendUvarint(b, uint64(len(e.stamps)))
	for _, s := range e.stamps {
		b = binary.LittleEndian.AppendUint64(b, s)
	}
	b = appendUvarints(b, len(e.snap.columns), len(e.snap.rows),
		enc.counts.ints, enc.counts.floats, enc.counts.times, enc.counts.strs, enc.counts.bins,
		len(enc.strs), len(enc.bins))
	for i := range e.snap.columns {
		b = appendColumn(b, &e.snap.columns[i])
	}
	b = binary.AppendUvarint(b, uint64(len(enc.locs)))
	for _, loc := range enc.locs {
		code, _ := classifyLocation(loc)
		b = code.append(b)
	}
	b = append(b, enc.vals...)
	b = append(b, enc.strs...)
	enc.body = append(b, enc.bins...)
}

func appendUvarints(b []byte, ns ...int) []byte {
	for _, n := range ns {
		b = binary.AppendUvarint(b, uint64(n))
	}
	return b
}

// appendColumn writes a column's flags, scan kind, string lengths (the
// strings are in the heap), length, precision and scale.
func appendColumn(b []byte, c *column) []byte {
	flags := columnFlags(c)
	b = append(b, flags, byte(c.scan))
	b = binary.AppendUvarint(b, uint64(len(c.name)))
	if c.hasDBType {
		b = binary.AppendUvarint(b, uint64(len(c.dbType)))
	}
	// The numbers are kept even when the driver said "not applicable":
	// database/sql hands them to callers regardless.
	b = binary.AppendVarint(b, c.length)
	return binary.AppendVarint(binary.AppendVarint(b, c.precision), c.scale)
}

func columnFlags(c *column) byte {
	var f byte
	for _, bit := range [...]struct {
		on   bool
		flag byte
	}{{c.hasDBType, colHasDBType}, {c.hasLength, colHasLength}, {c.hasDecimal, colHasDecimal},
		{c.hasNullable, colHasNullable}, {c.nullable, colNullable}} {
		if bit.on {
			f |= bit.flag
		}
	}
	return f
}

// appendFramed appends header, payload (compressed when it pays) and
// checksum for body to dst.
func appendFramed(dst, body []byte) ([]byte, error) {
	start := len(dst)
	kind := byte(compressNone)
	if len(body) >= codecCompressMin {
		kind = byte(codecCompression)
	}
	dst = append(dst, codecMagic0, codecMagic1, codecVersion, kind)
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	payloadAt := len(dst)
	dst = compressInto(dst, body, kind)
	if kind != compressNone && len(dst)-payloadAt >= len(body) {
		// Incompressible: store raw rather than pay for decompression.
		dst = append(dst[:payloadAt], body...)
		dst[start+3] = compressNone
	}
	return binary.LittleEndian.AppendUint64(dst, xxh3.Hash(dst[start:])), nil
}

// compressInto appends body to dst compressed with kind.
func compressInto(dst, body []byte, kind byte) []byte {
	switch kind {
	case compressS2:
		n := len(dst)
		dst = growBytes(dst, s2.MaxEncodedLen(len(body)))
		out := s2.Encode(dst[n:cap(dst)], body)
		return dst[:n+len(out)]
	case compressZstd:
		return zstdEncoder().EncodeAll(body, dst)
	}
	return append(dst, body...)
}

// growBytes makes room for n more bytes beyond len(b).
func growBytes(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

var zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(err) // only invalid options fail
	}
	return enc
})

var zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(1<<30))
	if err != nil {
		panic(err) // only invalid options fail
	}
	return dec
})

// corrupt builds an error wrapping errCorrupt.
func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCorrupt}, args...)...)
}

// decodeEntry decodes an entry made by encodeEntry, strictly: anything but
// an intact entry of this version whose body is at most maxBytes (<= 0:
// 64 MiB) is an error wrapping errCorrupt. It is safe for concurrent use.
func decodeEntry(b []byte, maxBytes int) (*entry, error) {
	if maxBytes <= 0 {
		maxBytes = codecMaxDefault
	}
	scratch := scratchPool.Get().(*[]byte)
	defer putScratch(scratch)
	body, err := unframe(b, maxBytes, scratch)
	if err != nil {
		return nil, err
	}
	e, err := decodeBody(body, maxBytes)
	if err != nil {
		return nil, err
	}
	e.size = len(b)
	return e, nil
}

// unframe checks header and checksum and returns the raw body: part of b,
// or decompressed into *scratch (grown if too small).
func unframe(b []byte, maxBytes int, scratch *[]byte) ([]byte, error) {
	if len(b) < codecHeadLen+1+codecSumLen {
		return nil, corrupt("%d bytes is too short", len(b))
	}
	if b[0] != codecMagic0 || b[1] != codecMagic1 {
		return nil, corrupt("foreign magic %#x %#x", b[0], b[1])
	}
	if b[2] != codecVersion {
		return nil, corrupt("format version %d, want %d", b[2], codecVersion)
	}
	sumAt := len(b) - codecSumLen
	if binary.LittleEndian.Uint64(b[sumAt:]) != xxh3.Hash(b[:sumAt]) {
		return nil, corrupt("checksum mismatch")
	}
	if b[3]&^compressMask != 0 {
		return nil, corrupt("unknown flags %#x", b[3])
	}
	rawLen, n := binary.Uvarint(b[codecHeadLen:sumAt])
	if n <= 0 {
		return nil, corrupt("bad body length")
	}
	if rawLen > uint64(maxBytes) {
		return nil, corrupt("body of %d bytes over the limit of %d", rawLen, maxBytes)
	}
	return decompress(b[codecHeadLen+n:sumAt], b[3]&compressMask, int(rawLen), scratch)
}

// decompress returns payload decompressed with kind into scratch, which
// must yield exactly rawLen bytes; rawLen was checked against the limit.
func decompress(payload []byte, kind byte, rawLen int, scratch *[]byte) ([]byte, error) {
	var body []byte
	var err error
	if kind != compressNone {
		*scratch = growBytes((*scratch)[:0], rawLen) // keeps a grown buffer for next time
	}
	switch kind {
	case compressNone:
		body = payload
	case compressS2:
		body, err = s2Decode(payload, rawLen, *scratch)
	case compressZstd:
		body, err = zstdDecoder().DecodeAll(payload, *scratch)
	default:
		return nil, corrupt("unknown compression %d", kind)
	}
	if err != nil {
		return nil, corrupt("decompress: %v", err)
	}
	if len(body) != rawLen {
		return nil, corrupt("body is %d bytes, header says %d", len(body), rawLen)
	}
	return body, nil
}

// s2Decode checks the block's declared length against the header's, which
// scratch was sized for.
func s2Decode(payload []byte, rawLen int, scratch []byte) ([]byte, error) {
	n, err := s2.DecodedLen(payload)
	if err != nil {
		return nil, err
	}
	if n != rawLen {
		return nil, fmt.Errorf("s2 block says %d bytes, header %d", n, rawLen)
	}
	return s2.Decode(scratch[:n], payload)
}

// scratchPool holds buffers that compressed bodies are decompressed into:
// a warm buffer decompresses much faster than fresh zeroed memory, and
// only the heaps are copied out of it.
var scratchPool = sync.Pool{New: func() any { return new([]byte) }}

// scratchMax is the largest buffer kept in scratchPool.
const scratchMax = 4 << 20

func putScratch(p *[]byte) {
	if cap(*p) <= scratchMax {
		scratchPool.Put(p)
	}
}

// reader reads a body front to back; the first short or malformed read
// marks it bad and makes every later read return zero.
type reader struct {
	b   []byte
	off int
	bad bool
}

func (r *reader) rest() int { return len(r.b) - r.off }

func (r *reader) byte() byte {
	if r.off >= len(r.b) {
		r.bad = true
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) uvarint() uint64 {
	if r.off < len(r.b) && r.b[r.off] < 0x80 { // most lengths fit one byte
		r.off++
		return uint64(r.b[r.off-1])
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.bad = true
		r.off = len(r.b)
		return 0
	}
	r.off += n
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.bad = true
		r.off = len(r.b)
		return 0
	}
	r.off += n
	return v
}

// count reads a length or count and checks it against limit before anyone
// allocates for it.
func (r *reader) count(limit int) int {
	v := r.uvarint()
	if v > uint64(limit) {
		r.bad = true
		return 0
	}
	return int(v)
}

func (r *reader) take(n int) []byte {
	if n < 0 || n > r.rest() {
		r.bad = true
		r.off = len(r.b)
		return nil
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

func (r *reader) u64() uint64 {
	p := r.take(8)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(p)
}

// decoder holds the state of decoding one body's snapshot.
type decoder struct {
	r       reader
	strs    string // the string heap, one allocation
	strOff  int
	bins    []byte // the []byte heap, one allocation
	binOff  int
	counts  kindCounts // declared
	slabs   slabs
	locs    []*time.Location
	maxRows int
}

// decodeBody parses a raw body, which it neither keeps nor writes.
func decodeBody(body []byte, maxBytes int) (*entry, error) {
	d := decoder{r: reader{b: body}, maxRows: maxBytes / 24}
	e := &entry{}
	copy(e.check[:], d.r.take(codecCheckLen))
	e.created, e.expires, e.delta = d.r.varint(), d.r.varint(), d.r.varint()
	if n := d.r.count(d.r.rest() / 8); n > 0 {
		e.stamps = make([]uint64, n)
		for i := range e.stamps {
			e.stamps[i] = d.r.u64()
		}
	}
	if err := d.snapshot(&e.snap); err != nil {
		return nil, err
	}
	return e, nil
}

// snapshot parses counts, heaps, columns, locations and values, and
// checks that every byte and every declared count was used.
func (d *decoder) snapshot(s *snapshot) error {
	ncols, nrows, err := d.shape()
	if err != nil {
		return err
	}
	s.columns = d.columns(ncols)
	if err := d.locations(); err != nil {
		return err
	}
	s.rows = d.rows(ncols, nrows)
	if d.r.bad {
		return corrupt("truncated or malformed body")
	}
	if d.r.rest() != 0 || d.strOff != len(d.strs) || d.binOff != len(d.bins) || d.counts != d.slabs.used() {
		return corrupt("body has unused bytes or values")
	}
	return nil
}

// shape reads the dimensions, counts and heap lengths, checks them against
// the bytes that remain, and splits the heaps off the body's tail.
func (d *decoder) shape() (ncols, nrows int, err error) {
	r := &d.r
	ncols = r.count(r.rest() / 6) // a column takes at least 6 bytes
	nrows = r.count(math.MaxInt32)
	nvals := nrows * ncols
	if ncols == 0 && nrows > d.maxRows || ncols > 0 && nrows > r.rest()/ncols {
		return 0, 0, corrupt("%d rows of %d columns cannot fit", nrows, ncols)
	}
	d.counts = kindCounts{r.count(nvals), r.count(nvals), r.count(nvals), r.count(nvals), r.count(nvals)}
	strLen, binLen := r.count(r.rest()), r.count(r.rest())
	if r.bad || strLen+binLen > r.rest() {
		return 0, 0, corrupt("truncated or malformed body")
	}
	heapAt := len(r.b) - strLen - binLen
	d.heaps(r.b[heapAt:], strLen)
	r.b = r.b[:heapAt]
	d.slabs = newSlabs(d.counts)
	return ncols, nrows, nil
}

// heaps copies both heaps into one fresh buffer that no one else holds
// and nobody writes again, which is what makes a string view of it sound.
// bytes.Clone does not zero the memory it is about to fill.
func (d *decoder) heaps(b []byte, strLen int) {
	b = bytes.Clone(b)
	if strLen > 0 {
		d.strs = unsafe.String(&b[0], strLen)
	}
	d.bins = b[strLen:]
}

// str takes the next n bytes of the string heap without allocating.
func (d *decoder) str(n int) string {
	if n > len(d.strs)-d.strOff {
		d.r.bad = true
		return ""
	}
	s := d.strs[d.strOff : d.strOff+n]
	d.strOff += n
	return s
}

// bin takes the next n bytes of the []byte heap, capped so that an append
// by a caller can never reach the next value.
func (d *decoder) bin(n int) []byte {
	if n > len(d.bins)-d.binOff {
		d.r.bad = true
		return []byte{}
	}
	b := d.bins[d.binOff : d.binOff+n : d.binOff+n]
	d.binOff += n
	return b
}

// columns parses ncols column descriptions.
func (d *decoder) columns(ncols int) []column {
	cols := make([]column, ncols)
	for i := range cols {
		d.column(&cols[i])
	}
	return cols
}

func (d *decoder) column(c *column) {
	flags, scan := d.r.byte(), d.r.byte()
	if flags&^colFlagsAll != 0 || scan > byte(scanBytes) {
		d.r.bad = true
		return
	}
	c.scan = scanKind(scan)
	c.name = d.str(d.r.count(len(d.strs)))
	c.hasDBType = flags&colHasDBType != 0
	if c.hasDBType {
		c.dbType = d.str(d.r.count(len(d.strs)))
	}
	c.hasLength = flags&colHasLength != 0
	c.hasDecimal = flags&colHasDecimal != 0
	c.length, c.precision, c.scale = d.r.varint(), d.r.varint(), d.r.varint()
	c.hasNullable, c.nullable = flags&colHasNullable != 0, flags&colNullable != 0
}

// locations parses the location table.
func (d *decoder) locations() error {
	n := d.r.count(d.r.rest() / 2) // a location takes at least 2 bytes
	if n == 0 {
		return nil
	}
	d.locs = make([]*time.Location, n)
	for i := range d.locs {
		code := locCode{kind: d.r.byte()}
		if code.kind == locNamed || code.kind == locFixed {
			code.name = string(d.r.take(d.r.count(d.r.rest())))
		}
		if code.kind == locFixed {
			code.offset = d.r.varint()
		}
		loc, err := code.location()
		if err != nil {
			return err
		}
		d.locs[i] = loc
	}
	return nil
}

// rows parses every value into one slab and slices the rows out of it.
func (d *decoder) rows(ncols, nrows int) [][]driver.Value {
	if nrows == 0 || d.r.bad {
		return nil
	}
	vals := make([]driver.Value, nrows*ncols)
	for i := range vals {
		vals[i] = d.value()
	}
	rows := make([][]driver.Value, nrows)
	for i := range rows {
		rows[i] = vals[i*ncols : (i+1)*ncols : (i+1)*ncols]
	}
	return rows
}

// value parses one tagged value.
func (d *decoder) value() driver.Value {
	switch d.r.byte() {
	case tagNil:
		return nil
	case tagFalse:
		return false
	case tagTrue:
		return true
	case tagInt:
		return d.slabs.int64(d.r.varint(), &d.r)
	case tagFloat:
		return d.slabs.float64(math.Float64frombits(d.r.u64()), &d.r)
	case tagString:
		return d.slabs.string(d.str(d.r.count(len(d.strs))), &d.r)
	case tagBytesNil:
		return []byte(nil)
	case tagBytes:
		return d.slabs.bytes(d.bin(d.r.count(len(d.bins))), &d.r)
	case tagTime:
		return d.time()
	}
	d.r.bad = true
	return nil
}

// time parses a location index, Unix seconds and nanoseconds. Unix seconds
// wrap around int64 for instants far from 1970 on both sides, and
// time.Unix unwraps them the same way, so every time.Time round trips.
func (d *decoder) time() driver.Value {
	idx := d.r.uvarint()
	sec := d.r.varint()
	nsec := d.r.uvarint()
	if idx >= uint64(len(d.locs)) || nsec >= 1e9 {
		d.r.bad = true
		return nil
	}
	return d.slabs.time(time.Unix(sec, int64(nsec)).In(d.locs[idx]), &d.r)
}

// approxSize estimates the memory s holds, for cache accounting: headers
// of every slice, string and interface, and the bytes they point to.
func (s *snapshot) approxSize() int {
	n := 48 + len(s.columns)*int(columnSize)
	for i := range s.columns {
		n += len(s.columns[i].name) + len(s.columns[i].dbType)
	}
	for _, row := range s.rows {
		n += 24 + len(row)*16
		for _, v := range row {
			n += valueSize(v)
		}
	}
	return n
}

// valueSize is the memory a boxed value points to beyond its interface.
func valueSize(v driver.Value) int {
	switch v := v.(type) {
	case int64, float64:
		return 8
	case string:
		return 16 + len(v)
	case []byte:
		return 24 + len(v)
	case time.Time:
		return 24
	}
	return 0
}

// columnSize is the in-memory size of a column description.
const columnSize = unsafe.Sizeof(column{})

// slabs hold the typed values of one decoded snapshot, one array per kind,
// so that boxing a value into a driver.Value allocates nothing. The arrays
// are written once, before their elements are boxed, and never again.
type slabs struct {
	ints   []int64
	floats []float64
	times  []time.Time
	strs   []string
	bins   [][]byte
}

func newSlabs(c kindCounts) slabs {
	return slabs{
		ints:   make([]int64, 0, c.ints),
		floats: make([]float64, 0, c.floats),
		times:  make([]time.Time, 0, c.times),
		strs:   make([]string, 0, c.strs),
		bins:   make([][]byte, 0, c.bins),
	}
}

// used counts the values taken so far, to compare with the declared counts.
func (s *slabs) used() kindCounts {
	return kindCounts{len(s.ints), len(s.floats), len(s.times), len(s.strs), len(s.bins)}
}

// The typed adders append to their slab and box the new element in place.
// A slab that is full means the body holds more values of the kind than
// it declared: the reader is marked bad rather than the slab grown, since
// growing would move elements already boxed.

func (s *slabs) int64(v int64, r *reader) driver.Value {
	if len(s.ints) == cap(s.ints) {
		r.bad = true
		return nil
	}
	s.ints = append(s.ints, v)
	return boxAt(int64Type, unsafe.Pointer(&s.ints[len(s.ints)-1]))
}

func (s *slabs) float64(v float64, r *reader) driver.Value {
	if len(s.floats) == cap(s.floats) {
		r.bad = true
		return nil
	}
	s.floats = append(s.floats, v)
	return boxAt(float64Type, unsafe.Pointer(&s.floats[len(s.floats)-1]))
}

func (s *slabs) time(v time.Time, r *reader) driver.Value {
	if len(s.times) == cap(s.times) {
		r.bad = true
		return nil
	}
	s.times = append(s.times, v)
	return boxAt(timeType, unsafe.Pointer(&s.times[len(s.times)-1]))
}

func (s *slabs) string(v string, r *reader) driver.Value {
	if len(s.strs) == cap(s.strs) {
		r.bad = true
		return nil
	}
	s.strs = append(s.strs, v)
	return boxAt(stringType, unsafe.Pointer(&s.strs[len(s.strs)-1]))
}

func (s *slabs) bytes(v []byte, r *reader) driver.Value {
	if len(s.bins) == cap(s.bins) {
		r.bad = true
		return nil
	}
	s.bins = append(s.bins, v)
	return boxAt(bytesType, unsafe.Pointer(&s.bins[len(s.bins)-1]))
}

// eface is the layout of an empty interface: type word, then a pointer to
// the value for every type that is not pointer-shaped.
type eface struct {
	typ  unsafe.Pointer
	data unsafe.Pointer
}

// Type words of the kinds boxed out of slabs.
var (
	int64Type   = typeWord(int64(0))
	float64Type = typeWord(float64(0))
	timeType    = typeWord(time.Time{})
	stringType  = typeWord("")
	bytesType   = typeWord([]byte(nil))
)

func typeWord(v any) unsafe.Pointer { return (*eface)(unsafe.Pointer(&v)).typ }

// boxAt makes an interface of type typ whose value is the one at data,
// without copying it to a fresh allocation as a conversion would. This is
// how the runtime itself boxes small integers (pointing into a static
// array); it is sound because data is never written again.
func boxAt(typ, data unsafe.Pointer) (v driver.Value) {
	e := (*eface)(unsafe.Pointer(&v))
	e.typ, e.data = typ, data
	return v
}

// Location kinds in the location table.
const (
	locUTC   byte = iota
	locLocal      // time.Local
	locNamed      // a tz database zone, reloaded by name
	locFixed      // time.FixedZone(name, offset)
)

// locCode is how a *time.Location is stored.
type locCode struct {
	kind   byte
	name   string
	offset int64
}

func (c locCode) append(b []byte) []byte {
	b = append(b, c.kind)
	if c.kind == locNamed || c.kind == locFixed {
		b = binary.AppendUvarint(b, uint64(len(c.name)))
		b = append(b, c.name...)
	}
	if c.kind == locFixed {
		b = binary.AppendVarint(b, c.offset)
	}
	return b
}

// location rebuilds the stored location. Only the encoder's canonical
// codes are accepted, so that one location has one encoding.
func (c locCode) location() (*time.Location, error) {
	switch c.kind {
	case locUTC:
		return time.UTC, nil
	case locLocal:
		return time.Local, nil
	case locNamed:
		if c.name == "" || c.name == "UTC" || c.name == "Local" {
			return nil, corrupt("location name %q stored as a zone", c.name)
		}
		if loc, err := loadLocation(c.name); err == nil {
			return loc, nil
		}
		return nil, corrupt("unknown time zone %q", c.name)
	case locFixed:
		if c.offset < -maxZoneOffset || c.offset > maxZoneOffset {
			return nil, corrupt("zone offset %d out of range", c.offset)
		}
		return fixedZone(c.name, int(c.offset)), nil
	}
	return nil, corrupt("unknown location kind %d", c.kind)
}

// maxZoneOffset bounds fixed zone offsets: real ones are within ±16 hours.
const maxZoneOffset = 24 * 60 * 60

// Caches of reloaded locations: loading a zone reads the tz database, and
// every hit with a time value needs one. Both are bounded by what the tz
// database and real offsets hold, since only loadable names are cached.
var (
	namedZones sync.Map // zone name -> *time.Location
	fixedZones sync.Map // locCode{name, offset} -> *time.Location
)

func loadLocation(name string) (*time.Location, error) {
	if loc, ok := namedZones.Load(name); ok {
		return loc.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	namedZones.Store(name, loc)
	return loc, nil
}

func fixedZone(name string, offset int) *time.Location {
	key := locCode{kind: locFixed, name: name, offset: int64(offset)}
	if loc, ok := fixedZones.Load(key); ok {
		return loc.(*time.Location)
	}
	loc := time.FixedZone(name, offset)
	if fixedZoneCount.Add(1) < maxCachedLocations {
		fixedZones.Store(key, loc)
	}
	return loc
}

// Classification of locations met while encoding, by pointer: lib/pq
// loads the session zone once per connection, so pointers repeat. The
// cache is emptied when it grows past maxCachedLocations.
var (
	classified      sync.Map // *time.Location -> locCode, or nil if unholdable
	classifiedCount atomic.Int64
	fixedZoneCount  atomic.Int64
)

const maxCachedLocations = 4096

// classifyLocation finds how loc is stored, and whether it can be: UTC,
// Local, a zone that time.LoadLocation rebuilds with the same rules, or a
// fixed zone (one offset whose abbreviation is the location's name, as
// lib/pq's time.FixedZone("", offset) values are).
func classifyLocation(loc *time.Location) (locCode, bool) {
	switch loc {
	case time.UTC:
		return locCode{kind: locUTC}, true
	case time.Local:
		return locCode{kind: locLocal}, true
	}
	if v, ok := classified.Load(loc); ok {
		code, ok := v.(locCode)
		return code, ok
	}
	code, ok := computeLocCode(loc)
	if classifiedCount.Add(1) > maxCachedLocations {
		classified.Clear()
		classifiedCount.Store(0)
	}
	if ok {
		classified.Store(loc, code)
	} else {
		classified.Store(loc, nil)
	}
	return code, ok
}

// computeLocCode prefers the tz database: a zone lib/pq loaded for the
// session TimeZone must come back as the same zone.
func computeLocCode(loc *time.Location) (locCode, bool) {
	name := loc.String()
	if name != "" && name != "UTC" && name != "Local" {
		if named, err := loadLocation(name); err == nil && sameRules(loc, named) {
			return locCode{kind: locNamed, name: name}, true
		}
	}
	abbr, offset := zoneProbes[0].In(loc).Zone()
	if abbr != name || int64(offset) < -maxZoneOffset || int64(offset) > maxZoneOffset {
		return locCode{}, false
	}
	if !sameRules(loc, time.FixedZone(name, offset)) {
		return locCode{}, false
	}
	return locCode{kind: locFixed, name: name, offset: int64(offset)}, true
}

// zoneProbes are instants at which two locations must agree on zone name
// and offset to be taken as the same: twice a year from 1850 to 2100.
var zoneProbes = func() []time.Time {
	var ps []time.Time
	for y := 1850; y <= 2100; y++ {
		ps = append(ps, time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(y, 7, 1, 0, 0, 0, 0, time.UTC))
	}
	return ps
}()

func sameRules(a, b *time.Location) bool {
	for _, p := range zoneProbes {
		an, ao := p.In(a).Zone()
		bn, bo := p.In(b).Zone()
		if an != bn || ao != bo {
			return false
		}
	}
	return true
}
