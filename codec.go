package cachedpq

// This file holds the entry codec: the bytes a cache stores for one result.
//
// An encoded entry is
//
//	magic (2) | version (1) | flags (1) | uvarint raw body length | payload | xxh3-64 (8, little endian)
//
// where the xxh3 sum covers every byte before it, so corruption is caught
// before any decompression or parsing. The body is
//
//	prefix:    check (16) | varint created, expires, delta | uvarint #stamps | stamps (8 each)
//	           uvarint #columns, #rows | uvarint count of int64, float64, time, string, []byte values
//	           uvarint string heap length, []byte heap length
//	structure: columns | locations | values (one tag byte each, then its payload)
//	heaps:     string heap | []byte heap
//
// The payload is the prefix as it is, then structure and heaps: as they
// are, or (as flags say) as the compressed length of the structure, the
// structure compressed, and the heaps compressed. Version 1 compressed the
// whole body in one block, and version 2 stored time.Local by name, which
// another process read as its own, other, zone: both are rejected as
// corrupt, so that they are misses.
//
// The prefix tells a decoder, before it decompresses anything, the size of
// everything a snapshot needs: it makes one allocation (see arena) and
// decompresses the heaps straight into it. Strings and byte slices are
// views of the heaps, and typed values are boxed out of slabs in the arena
// (see slabs), so decoding costs two allocations whatever the result.

import (
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"strings"
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
	codecVersion  = 3 // 2: the body prefix is stored uncompressed; 3: time.Local as an offset
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
// size of structure and heaps below which compression does not pay. Both
// were chosen by codec_bench_test.go: on the 350 kB JSON result, s2
// decompresses the 333 kB heap block in about 55 µs against zstd's 110 µs
// (6 GB/s against 3), while zstd stores 21 kB against 50 kB; every hit
// decompresses, so s2. Below about 512 bytes (the 1-row result) neither
// saves anything. decodeEntry reads both kinds, so switching later needs
// no format change.
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
	block                  []byte // the compressed structure block
	locs                   []encLoc
	counts                 kindCounts
}

// encLoc is an entry of the location table being encoded: a location,
// or (code.kind locLocal) time.Local with the offset its values had.
type encLoc struct {
	loc  *time.Location
	code locCode
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
	prefixLen := enc.assemble(e)
	return enc.appendFramed(dst, prefixLen, len(enc.strs)+len(enc.bins))
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
	idx, err := enc.locIndex(t)
	if err != nil {
		return err
	}
	enc.counts.times++
	enc.vals = binary.AppendUvarint(append(enc.vals, tagTime), uint64(idx))
	enc.vals = binary.AppendVarint(enc.vals, t.Unix())
	enc.vals = binary.AppendUvarint(enc.vals, uint64(t.Nanosecond()))
	return nil
}

// locIndex finds or adds t's location in the entry's location table.
// Results hold one or two locations, so a linear scan beats a map.
//
// time.Local is stored as the offset t has in it, never by name: each
// process has its own Local, and lib/pq, through time.Parse, places a
// timetz value in time.Local only when Local has the value's offset at
// its instant, else in a fixed zone. The decoder redoes that choice.
func (enc *encoder) locIndex(t time.Time) (int, error) {
	loc, local := t.Location(), locCode{kind: locLocal}
	if loc == time.Local {
		_, off := t.Zone()
		local.offset = int64(off)
	}
	for i, l := range enc.locs {
		if l.loc == loc && (loc != time.Local || l.code == local) {
			return i, nil
		}
	}
	code, ok := local, true
	if loc != time.Local {
		code, ok = classifyLocation(loc)
	}
	if !ok {
		return 0, fmt.Errorf("%w: time.Location %q is neither UTC, Local, a tz database zone nor a fixed zone", errUncacheable, loc)
	}
	enc.locs = append(enc.locs, encLoc{loc, code})
	return len(enc.locs) - 1, nil
}

// assemble writes the body: fixed fields, counts, columns, locations,
// values and both heaps. It returns the length of the prefix, the part
// up to the columns that a decoder needs before it can allocate.
func (enc *encoder) assemble(e *entry) (prefixLen int) {
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
	prefixLen = len(b)
	for i := range e.snap.columns {
		b = appendColumn(b, &e.snap.columns[i])
	}
	b = binary.AppendUvarint(b, uint64(len(enc.locs)))
	for _, l := range enc.locs {
		b = l.code.append(b)
	}
	b = append(b, enc.vals...)
	b = append(b, enc.strs...)
	enc.body = append(b, enc.bins...)
	return prefixLen
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

// appendFramed appends header, payload and checksum for enc.body to dst. The
// payload is the body's prefix as it is, then the rest of the body. The
// prefix holds every count a decoder sizes its one allocation by, so it
// must be readable before decompressing. When compressing the rest pays,
// it is stored as two blocks, the structure and the heaps (the last
// heapLen bytes), each compressed on its own so that a decoder can put the
// heaps straight into their final place and the structure in a scratch
// buffer it reuses; the first block's compressed length comes first.
func (enc *encoder) appendFramed(dst []byte, prefixLen, heapLen int) ([]byte, error) {
	body, start := enc.body, len(dst)
	rest := body[prefixLen:]
	kind := byte(compressNone)
	if len(rest) >= codecCompressMin {
		kind = byte(codecCompression)
	}
	dst = append(dst, codecMagic0, codecMagic1, codecVersion, kind)
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	dst = append(dst, body[:prefixLen]...)
	restAt := len(dst)
	if kind != compressNone {
		dst, enc.block = appendBlocks(dst, rest[:len(rest)-heapLen], rest[len(rest)-heapLen:], enc.block, kind)
	}
	if kind == compressNone || len(dst)-restAt >= len(rest) {
		// Incompressible: store raw rather than pay for decompression.
		dst = append(dst[:restAt], rest...)
		dst[start+3] = compressNone
	}
	return binary.LittleEndian.AppendUint64(dst, xxh3.Hash(dst[start:])), nil
}

// appendBlocks appends the compressed length of structure compressed,
// then it, then heaps compressed. structure is compressed into scratch
// first, since its compressed length must precede it.
func appendBlocks(dst, structure, heaps, scratch []byte, kind byte) ([]byte, []byte) {
	scratch = compressInto(scratch[:0], structure, kind)
	dst = binary.AppendUvarint(dst, uint64(len(scratch)))
	dst = append(dst, scratch...)
	return compressInto(dst, heaps, kind), scratch
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
// 64 MiB) is an error wrapping errCorrupt. The entry shares no memory
// with b. It is safe for concurrent use.
//
// A decoded snapshot costs two allocations whatever its size: the entry,
// and one arena (see arena) that holds every value, row, column and
// string of it.
func decodeEntry(b []byte, maxBytes int) (*entry, error) {
	if maxBytes <= 0 {
		maxBytes = codecMaxDefault
	}
	payload, kind, rawLen, err := unframe(b, maxBytes)
	if err != nil {
		return nil, err
	}
	e := new(entry)
	d := decoder{r: reader{b: payload}, rawLen: rawLen, maxRows: maxBytes / 24}
	defer d.release()
	if err := d.entry(e, kind); err != nil {
		return nil, err
	}
	e.size = len(b)
	return e, nil
}

// unframe checks header and checksum and returns the payload, its
// compression kind and the raw body length the header declares.
func unframe(b []byte, maxBytes int) (payload []byte, kind byte, rawLen int, err error) {
	if len(b) < codecHeadLen+1+codecSumLen {
		return nil, 0, 0, corrupt("%d bytes is too short", len(b))
	}
	if b[0] != codecMagic0 || b[1] != codecMagic1 {
		return nil, 0, 0, corrupt("foreign magic %#x %#x", b[0], b[1])
	}
	if b[2] != codecVersion {
		return nil, 0, 0, corrupt("format version %d, want %d", b[2], codecVersion)
	}
	sumAt := len(b) - codecSumLen
	if binary.LittleEndian.Uint64(b[sumAt:]) != xxh3.Hash(b[:sumAt]) {
		return nil, 0, 0, corrupt("checksum mismatch")
	}
	kind = b[3]
	if kind&^compressMask != 0 || kind == compressMask {
		return nil, 0, 0, corrupt("unknown flags %#x", kind)
	}
	n, m := binary.Uvarint(b[codecHeadLen:sumAt])
	if m <= 0 {
		return nil, 0, 0, corrupt("bad body length")
	}
	if n > uint64(maxBytes) {
		return nil, 0, 0, corrupt("body of %d bytes over the limit of %d", n, maxBytes)
	}
	return b[codecHeadLen+m : sumAt], kind, int(n), nil
}

// decompress fills dst, exactly, from payload compressed with kind.
func decompress(dst, payload []byte, kind byte) error {
	var out []byte
	var err error
	switch kind {
	case compressS2:
		out, err = s2Decode(dst, payload)
	case compressZstd:
		out, err = zstdDecode(dst, payload)
	}
	if err != nil {
		return corrupt("decompress: %v", err)
	}
	if len(out) != len(dst) || len(out) > 0 && &out[0] != &dst[0] {
		return corrupt("body is %d bytes, header says %d", len(out), len(dst))
	}
	return nil
}

// s2Decode checks the block's declared length before decoding into dst.
func s2Decode(dst, payload []byte) ([]byte, error) {
	n, err := s2.DecodedLen(payload)
	if err != nil {
		return nil, err
	}
	if n != len(dst) {
		return nil, fmt.Errorf("s2 block says %d bytes, header %d", n, len(dst))
	}
	return s2.Decode(dst, payload)
}

// zstdDecode checks a declared frame size before decoding into dst, so a
// frame cannot make the decoder allocate more than the header allowed.
func zstdDecode(dst, payload []byte) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(payload); err != nil {
		return nil, err
	}
	if h.HasFCS && h.FrameContentSize != uint64(len(dst)) {
		return nil, fmt.Errorf("zstd frame says %d bytes, header %d", h.FrameContentSize, len(dst))
	}
	return zstdDecoder().DecodeAll(payload, dst[:0])
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

// uvarint reads as binary.Uvarint does. Most varints in a body are
// lengths of one byte or times of five, so those take no loop.
func (r *reader) uvarint() uint64 {
	if r.off < len(r.b) && r.b[r.off] < 0x80 {
		r.off++
		return uint64(r.b[r.off-1])
	}
	if r.off+8 <= len(r.b) {
		if v, n := uvarint8(binary.LittleEndian.Uint64(r.b[r.off:])); n > 0 {
			r.off += n
			return v
		}
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

// uvarint8 decodes a uvarint that ends within the eight bytes of x, read
// little endian, and returns it and its length; or 0, 0 if it goes on.
// It merges the 7-bit groups pairwise, in three steps, not one by one.
func uvarint8(x uint64) (uint64, int) {
	if x&0x80 == 0 {
		return x & 0x7f, 1
	}
	ends := ^x & 0x8080808080808080 // the clear continuation bits
	if ends == 0 {
		return 0, 0
	}
	used := bits.TrailingZeros64(ends) + 1 // a multiple of 8
	x &= ends ^ (ends - 1)                 // the bytes up to the end
	x = x&0x007f007f007f007f | x&0x7f007f007f007f00>>1
	x = x&0x00003fff00003fff | x&0x3fff00003fff0000>>2
	x = x&0x000000000fffffff | x&0x0fffffff00000000>>4
	return x, used / 8
}

// varint reads as binary.Varint does: a zig-zag encoded uvarint.
func (r *reader) varint() int64 { return zigzag(r.uvarint()) }

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
	rawLen  int // declared body length
	maxRows int
	strs    string // the string heap, in the arena
	strOff  int
	bins    []byte // the []byte heap, in the arena
	binOff  int
	counts  kindCounts // declared
	slabs   slabs
	locs    locTable
	scratch *[]byte // from scratchPool, if the structure was compressed
}

// shape is what a body's prefix says about the rest of it.
type shape struct {
	ncols, nrows, nvals int
	strLen, binLen      int
	restLen, structLen  int // the body after the prefix; that minus the heaps
}

// entry decodes the body whose framing unframe checked into e: the
// prefix first, then one arena sized by it, then the rest into the arena.
func (d *decoder) entry(e *entry, kind byte) error {
	copy(e.check[:], d.r.take(codecCheckLen))
	e.created, e.expires, e.delta = d.r.varint(), d.r.varint(), d.r.varint()
	stamps := d.r.take(8 * d.r.count(d.r.rest()/8))
	sh, err := d.shape()
	if err != nil {
		return err
	}
	a := newArena(arenaSize(sh, d.counts, len(stamps)/8))
	e.stamps = carve[uint64](&a, len(stamps)/8)
	for i := range e.stamps {
		e.stamps[i] = binary.LittleEndian.Uint64(stamps[8*i:])
	}
	d.slabs = newSlabs(&a, d.counts)
	vals, rows := carve[driver.Value](&a, sh.nvals), carve[[]driver.Value](&a, sh.nrows)
	e.snap.columns = carve[column](&a, sh.ncols)
	if err := d.fill(&a, sh, kind); err != nil {
		return err
	}
	return d.snapshot(&e.snap, &a, vals, rows)
}

// shape reads the dimensions, counts and heap lengths that end the prefix,
// and checks them against the declared body length before anything is
// allocated for them: every column, value and kind of value takes a
// known least number of bytes.
func (d *decoder) shape() (shape, error) {
	r := &d.r
	var sh shape
	sh.ncols, sh.nrows = r.count(math.MaxInt32), r.count(math.MaxInt32)
	c := &d.counts
	c.ints, c.floats, c.times, c.strs, c.bins = r.count(d.rawLen), r.count(d.rawLen), r.count(d.rawLen), r.count(d.rawLen), r.count(d.rawLen)
	sh.strLen, sh.binLen = r.count(d.rawLen), r.count(d.rawLen)
	if r.bad || r.off > d.rawLen {
		return sh, corrupt("truncated or malformed prefix")
	}
	sh.restLen = d.rawLen - r.off
	sh.structLen = sh.restLen - sh.strLen - sh.binLen
	if sh.structLen < 6*sh.ncols {
		return sh, corrupt("heaps of %d and %d bytes and %d columns cannot fit %d bytes", sh.strLen, sh.binLen, sh.ncols, sh.restLen)
	}
	if sh.ncols == 0 && sh.nrows > d.maxRows || sh.ncols > 0 && sh.nrows > sh.structLen/sh.ncols {
		return sh, corrupt("%d rows of %d columns cannot fit", sh.nrows, sh.ncols)
	}
	sh.nvals = sh.nrows * sh.ncols
	least := 2*c.ints + 9*c.floats + 4*c.times + 2*c.strs + 2*c.bins
	if max(c.ints, c.floats, c.times, c.strs, c.bins) > sh.nvals || least > sh.structLen {
		return sh, corrupt("value counts %+v cannot fit %d values in %d bytes", *c, sh.nvals, sh.structLen)
	}
	return sh, nil
}

// fill puts the body after the prefix where parsing reads it: both heaps
// into the arena, and the reader onto the structure between prefix and
// heaps, which is decompressed (if it is compressed) into a scratch
// buffer that release returns to its pool once parsing is done.
func (d *decoder) fill(a *arena, sh shape, kind byte) error {
	payload := d.r.b[d.r.off:]
	heaps := a.bytes(sh.strLen + sh.binLen)
	if kind == compressNone {
		if len(payload) != sh.restLen {
			return corrupt("body is %d bytes, header says %d", d.r.off+len(payload), d.rawLen)
		}
		copy(heaps, payload[sh.structLen:])
		d.r = reader{b: payload[:sh.structLen]}
	} else if err := d.decompressBlocks(payload, heaps, sh.structLen, kind); err != nil {
		return err
	}
	if sh.strLen > 0 {
		d.strs = unsafe.String(&heaps[0], sh.strLen)
	}
	d.bins = heaps[sh.strLen:]
	return nil
}

// decompressBlocks decompresses the structure block of payload into a
// scratch buffer for the reader, and the heap block into heaps.
func (d *decoder) decompressBlocks(payload, heaps []byte, structLen int, kind byte) error {
	r := reader{b: payload}
	block := r.take(r.count(r.rest()))
	if r.bad {
		return corrupt("bad structure block length")
	}
	d.scratch = scratchPool.Get().(*[]byte)
	*d.scratch = growBytes((*d.scratch)[:0], structLen)
	structure := (*d.scratch)[:structLen]
	if err := decompress(structure, block, kind); err != nil {
		return err
	}
	if err := decompress(heaps, r.b[r.off:], kind); err != nil {
		return err
	}
	d.r = reader{b: structure}
	return nil
}

// scratchPool holds the buffers that structure blocks are decompressed
// into: nothing decoded points into them, so they can be reused.
var scratchPool = sync.Pool{New: func() any { return new([]byte) }}

// scratchMax is the largest buffer kept in scratchPool.
const scratchMax = 1 << 20

// release returns the decoder's scratch buffer, if any, to its pool.
func (d *decoder) release() {
	if d.scratch != nil && cap(*d.scratch) <= scratchMax {
		scratchPool.Put(d.scratch)
	}
	d.scratch = nil
}

// snapshot parses columns, locations and values into the arena's slabs,
// and checks that every byte and every declared count was used.
func (d *decoder) snapshot(s *snapshot, a *arena, vals []driver.Value, rows [][]driver.Value) error {
	for i := range s.columns {
		put(&s.columns[i], d.column())
	}
	if err := d.locations(); err != nil {
		return err
	}
	for i := range vals {
		if d.r.rest() < fastValueMax || !d.fastValue(&vals[i]) {
			put(&vals[i], d.value())
		}
	}
	if d.r.bad {
		return corrupt("truncated or malformed body")
	}
	if d.r.rest() != 0 || d.strOff != len(d.strs) || d.binOff != len(d.bins) || d.counts != d.slabs.used() {
		return corrupt("body has unused bytes or values")
	}
	ncols := len(s.columns)
	for i := range rows {
		put(&rows[i], vals[i*ncols:(i+1)*ncols:(i+1)*ncols])
	}
	s.rows = rows
	d.locs.pinMortal(a)
	return nil
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

// column parses one column description.
func (d *decoder) column() (c column) {
	flags, scan := d.r.byte(), d.r.byte()
	if flags&^colFlagsAll != 0 || scan > byte(scanBytes) {
		d.r.bad = true
		return c
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
	return c
}

// locations parses the location table.
func (d *decoder) locations() error {
	n := d.r.count(d.r.rest() / 2) // a location takes at least 2 bytes
	for range n {
		code := locCode{kind: d.r.byte()}
		if code.kind == locNamed || code.kind == locFixed {
			// Only looked up; the caches clone whatever they keep.
			if name := d.r.take(d.r.count(d.r.rest())); len(name) > 0 {
				code.name = unsafe.String(&name[0], len(name))
			}
		}
		if code.kind == locFixed || code.kind == locLocal {
			code.offset = d.r.varint()
		}
		loc, immortal, err := code.location()
		if err != nil {
			return err
		}
		d.locs.add(tableLoc{loc: loc}, immortal)
		if code.kind == locLocal {
			d.locs.addLocal(code.offset)
		}
	}
	return nil
}

// fastValueMax is the most bytes fastValue reads ahead.
const fastValueMax = 1 + 3*8

// fastValue parses the value at the reader into *dst if it is an int, a
// string, a []byte or a time whose varints each end within eight bytes,
// which is most values of most results, and reports whether it did; it
// leaves everything else, untouched, to value. The reader must have
// fastValueMax bytes left. It reads whole words and keeps its offset in
// a local variable, which makes it about twice as fast as value.
func (d *decoder) fastValue(dst *driver.Value) bool {
	b, at := d.r.b[d.r.off:d.r.off+fastValueMax], 1
	u, n := uvarint8(binary.LittleEndian.Uint64(b[at:]))
	if n == 0 {
		return false
	}
	at += n
	switch b[0] {
	case tagInt:
		put(dst, d.slabs.int64(zigzag(u), &d.r))
	case tagString:
		put(dst, d.slabs.string(d.str(lengthOf(u)), &d.r))
	case tagBytes:
		put(dst, d.slabs.bytes(d.bin(lengthOf(u)), &d.r))
	case tagTime:
		sec, n := uvarint8(binary.LittleEndian.Uint64(b[at:]))
		nsec, m := uvarint8(binary.LittleEndian.Uint64(b[at+n:]))
		loc := d.locs.at(u)
		if n == 0 || m == 0 || loc == nil || nsec >= 1e9 {
			return false
		}
		put(dst, d.slabs.time(loc.in(time.Unix(zigzag(sec), int64(nsec))), &d.r))
		at += n + m
	default:
		return false
	}
	d.r.off += at
	return true
}

// zigzag undoes the zig-zag encoding of binary.AppendVarint.
func zigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// lengthOf converts a length read from a body to an int; one that does
// not fit becomes math.MaxInt, which no heap has room for.
func lengthOf(u uint64) int { return int(min(u, math.MaxInt)) }

// value parses one tagged value.
func (d *decoder) value() driver.Value {
	switch d.r.byte() {
	case tagNil:
		return nil
	case tagFalse:
		return boxedFalse
	case tagTrue:
		return boxedTrue
	case tagInt:
		return d.slabs.int64(d.r.varint(), &d.r)
	case tagFloat:
		return d.slabs.float64(math.Float64frombits(d.r.u64()), &d.r)
	case tagString:
		return d.slabs.string(d.str(d.r.count(len(d.strs))), &d.r)
	case tagBytesNil:
		return boxedNilBytes
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
	loc := d.locs.at(idx)
	if loc == nil || nsec >= 1e9 {
		d.r.bad = true
		return nil
	}
	return d.slabs.time(loc.in(time.Unix(sec, int64(nsec))), &d.r)
}

// locTable holds the locations of one body, without allocating for the
// usual one or two, and those of them that nothing keeps alive (see
// arena).
type locTable struct {
	small  [4]tableLoc
	more   []tableLoc
	n      int
	mortal []*time.Location
}

// tableLoc is a decoded location. For a stored time.Local, loc is the
// fixed zone of the stored offset and local is time.Local: a value goes
// to whichever time.Parse would choose in this process.
type tableLoc struct {
	loc, local *time.Location
	offset     int
}

// in returns t in l.
func (l *tableLoc) in(t time.Time) time.Time {
	if l.local != nil {
		if lt := t.In(l.local); zoneOffset(lt) == l.offset {
			return lt
		}
	}
	return t.In(l.loc)
}

func zoneOffset(t time.Time) int {
	_, off := t.Zone()
	return off
}

func (t *locTable) add(l tableLoc, immortal bool) {
	if t.n < len(t.small) {
		t.small[t.n] = l
	} else {
		t.more = append(t.more, l)
	}
	t.n++
	if !immortal {
		t.mortal = append(t.mortal, l.loc)
	}
}

// addLocal makes the last location added time.Local wherever time.Local
// has offset, keeping time.Local alive if it has been replaced since
// start-up.
func (t *locTable) addLocal(offset int64) {
	l := t.at(uint64(t.n - 1))
	l.local, l.offset = time.Local, int(offset)
	if !pinned(time.Local) {
		t.mortal = append(t.mortal, time.Local)
	}
}

// at returns location idx, or nil if there is none.
func (t *locTable) at(idx uint64) *tableLoc {
	switch {
	case idx < uint64(min(t.n, len(t.small))):
		return &t.small[idx]
	case idx < uint64(t.n):
		return &t.more[idx-uint64(len(t.small))]
	}
	return nil
}

// pinMortal keeps the table's mortal locations alive as long as the arena,
// whose time values point to them where the collector cannot see.
func (t *locTable) pinMortal(a *arena) {
	if len(t.mortal) > 0 {
		runtime.AddCleanup(a.base(), func([]*time.Location) {}, t.mortal)
	}
}

// An arena is the one allocation behind a decoded snapshot: stamps, typed
// values, string and []byte headers, boxed values, rows, columns and the
// bytes of both heaps, carved out of a single pointer-free block. The
// collector never scans it, so it costs nothing to mark and no allocation
// beyond itself, however many values it holds.
//
// That is sound because of what the pointers stored in it point to: into
// the arena itself (strings, []byte values, boxed values, rows), to static
// data (type words, boxed booleans and nils), or to a *time.Location kept
// alive by a package-level cache that never forgets it (UTC and Local,
// zones loaded by name, cached fixed zones). Any location not so kept is
// pinned to the arena with runtime.AddCleanup. Whoever can reach a pointer
// stored in the arena has reached the arena, which keeps the rest alive;
// a pointer copied out of it into ordinary memory is seen as usual. So a
// decoded snapshot must never be written: a pointer to anything else
// stored into it would be invisible to the collector. The arena is never
// pooled or reused, which is what makes string views of its bytes sound.
//
// For the same reason the decoder stores into an arena without write
// barriers (see put): a barrier reports pointers to a marking collector,
// and no pointer stored here needs reporting. Nothing then reads an
// arena's old contents as pointers, neither a barrier nor a scan, so a
// large arena is not even zeroed (see newArena): every byte of it that a
// snapshot reads, the decoder wrote first.
type arena struct {
	mem []byte
	off int
}

// newArena allocates size bytes, 8-byte aligned. A large arena is left
// as the allocator finds it, since zeroing it would cost as much as
// decompressing into it: that is sound because every byte of an arena
// that is ever read is written first (a decoded snapshot uses every
// slot entry carved, and a failed one is dropped unread), and because
// nothing is stored into an arena with a write barrier, which would read
// the old contents as pointers (see put).
func newArena(size int) arena {
	if size >= arenaNoZeroMin {
		if mem := uninitialized(size); aligned(mem) {
			return arena{mem: mem}
		}
	}
	if size == 0 {
		return arena{}
	}
	words := make([]uint64, (size+7)/8)
	return arena{mem: unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)}
}

// arenaNoZeroMin is the least size of an unzeroed arena. Below it zeroing
// costs little, and the allocator may hand out memory aligned to less
// than a word.
const arenaNoZeroMin = 32 << 10

// uninitialized allocates n bytes, pointer-free, that the runtime did not
// zero. strings.Builder.Grow is the public route to that allocation; the
// builder and its string are dropped here, so the bytes are the caller's.
func uninitialized(n int) []byte {
	var sb strings.Builder
	sb.Grow(n)
	sb.WriteByte(0) // so that String has a data pointer
	return unsafe.Slice(unsafe.StringData(sb.String()), n)
}

// aligned reports whether b starts on a word boundary, as carve assumes.
func aligned(b []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))%unsafe.Alignof(uint64(0)) == 0
}

// base is the start of the arena's allocation.
func (a *arena) base() *uint64 { return (*uint64)(unsafe.Pointer(&a.mem[0])) }

// carve takes n elements of type T from the arena, which arenaSize sized.
func carve[T any](a *arena, n int) []T {
	if n == 0 {
		return nil
	}
	a.off = alignUp[T](a.off)
	p := unsafe.Pointer(&a.mem[a.off])
	a.off += n * int(unsafe.Sizeof(*new(T)))
	_ = a.mem[a.off-1] // the arena was sized for this
	return unsafe.Slice((*T)(p), n)
}

// bytes takes n bytes from the arena, capped.
func (a *arena) bytes(n int) []byte {
	b := a.mem[a.off : a.off+n : a.off+n]
	a.off += n
	return b
}

func alignUp[T any](off int) int {
	align := int(unsafe.Alignof(*new(T)))
	return (off + align - 1) &^ (align - 1)
}

// room is the arena space of n elements of type T, alignment included.
func room[T any](n int) int {
	return n*int(unsafe.Sizeof(*new(T))) + int(unsafe.Alignof(*new(T))) - 1
}

// arenaSize is the arena space that entry carves, in its order.
func arenaSize(sh shape, c kindCounts, nstamps int) int {
	n := room[uint64](nstamps) + room[int64](c.ints) + room[float64](c.floats) +
		room[time.Time](c.times) + room[string](c.strs) + room[[]byte](c.bins) +
		room[driver.Value](sh.nvals) + room[[]driver.Value](sh.nrows) + room[column](sh.ncols)
	return n + sh.strLen + sh.binLen
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

// newSlabs carves each slab out of the arena, empty, with room for the
// declared count.
func newSlabs(a *arena, c kindCounts) slabs {
	return slabs{
		ints:   carve[int64](a, c.ints)[:0],
		floats: carve[float64](a, c.floats)[:0],
		times:  carve[time.Time](a, c.times)[:0],
		strs:   carve[string](a, c.strs)[:0],
		bins:   carve[[]byte](a, c.bins)[:0],
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
	return boxNext(&s.ints, v, int64Type, r)
}

func (s *slabs) float64(v float64, r *reader) driver.Value {
	return boxNext(&s.floats, v, float64Type, r)
}

func (s *slabs) time(v time.Time, r *reader) driver.Value {
	return boxNext(&s.times, v, timeType, r)
}

func (s *slabs) string(v string, r *reader) driver.Value {
	return boxNext(&s.strs, v, stringType, r)
}

func (s *slabs) bytes(v []byte, r *reader) driver.Value {
	return boxNext(&s.bins, v, bytesType, r)
}

// boxNext appends v to slab (see put) and boxes the new element in place,
// as a value of the type whose type word is typ.
func boxNext[T any](slab *[]T, v T, typ unsafe.Pointer, r *reader) driver.Value {
	n := len(*slab)
	if n == cap(*slab) {
		r.bad = true
		return nil
	}
	*slab = (*slab)[:n+1]
	p := &(*slab)[n]
	put(p, v)
	return boxAt(typ, unsafe.Pointer(p))
}

// put stores v at p, which is in an arena, as plain machine words rather
// than as a T: no write barrier runs. A barrier tells a marking collector
// of the pointer stored and of the one overwritten, and neither matters
// here: the collector never scans an arena, and every pointer stored in
// one is kept alive without it (see arena). Skipping the barrier also
// means the old contents are never read as pointers, which is what lets
// a large arena go unzeroed (see newArena).
//
// The words hide v's pointers from escape analysis as well, so v must
// not point to anything the compiler could have put on the stack: pass
// values boxed by boxAt or held in package variables, never a conversion
// made for the call.
func put[T any](p *T, v T) {
	dst, src := unsafe.Pointer(p), unsafe.Pointer(&v)
	switch unsafe.Sizeof(v) { // a constant: the compiler keeps one case
	case 8:
		*(*uintptr)(dst) = *(*uintptr)(src)
	case 16:
		*(*words2)(dst) = *(*words2)(src)
	case 24:
		*(*words3)(dst) = *(*words3)(src)
	case columnSize:
		*(*columnWords)(dst) = *(*columnWords)(src)
	default:
		panic("cachedpq: put of an unexpected size")
	}
}

// Images of values as plain words, for put: structs, since the compiler
// copies arrays through pointers with memmove, and put must inline.
type (
	words2      struct{ a, b uintptr }
	words3      struct{ a, b, c uintptr }
	columnWords struct{ w [columnSize / 8]uintptr }
)

// Values boxed once, in static data, for put.
var boxedFalse, boxedTrue, boxedNilBytes driver.Value = false, true, []byte(nil)

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
	locLocal      // time.Local where it has the offset stored, else a fixed zone
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
	if c.kind == locFixed || c.kind == locLocal {
		b = binary.AppendVarint(b, c.offset)
	}
	return b
}

// location rebuilds the stored location, and says whether a package-level
// cache keeps it alive for good (see arena). Only the encoder's canonical
// codes are accepted, so that one location has one encoding.
func (c locCode) location() (loc *time.Location, immortal bool, err error) {
	switch c.kind {
	case locUTC:
		return time.UTC, pinned(time.UTC), nil
	case locLocal: // the fixed zone; see locTable.addLocal
		if c.offset < -maxZoneOffset || c.offset > maxZoneOffset {
			return nil, false, corrupt("zone offset %d out of range", c.offset)
		}
		loc, cached := fixedZone("", int(c.offset))
		return loc, cached, nil
	case locNamed:
		if c.name == "" || c.name == "UTC" || c.name == "Local" {
			return nil, false, corrupt("location name %q stored as a zone", c.name)
		}
		if loc, err := loadLocation(c.name); err == nil {
			return loc, true, nil
		}
		return nil, false, corrupt("unknown time zone %q", c.name)
	case locFixed:
		if c.offset < -maxZoneOffset || c.offset > maxZoneOffset {
			return nil, false, corrupt("zone offset %d out of range", c.offset)
		}
		loc, cached := fixedZone(c.name, int(c.offset))
		return loc, cached, nil
	}
	return nil, false, corrupt("unknown location kind %d", c.kind)
}

// maxZoneOffset bounds fixed zone offsets: real ones are within ±16 hours.
const maxZoneOffset = 24 * 60 * 60

// Caches of reloaded locations: loading a zone reads the tz database, and
// every hit with a time value needs one. Entries are never removed, which
// decoded arenas rely on. namedZones is bounded by the tz database, since
// only loadable names are kept; fixedZones by maxCachedLocations.
var (
	namedZones sync.Map // zone name -> *time.Location
	fixedZones sync.Map // locCode{name, offset} -> *time.Location
)

// loadLocation loads a zone by name once. name may alias bytes that are
// about to change: what is kept is a clone.
func loadLocation(name string) (*time.Location, error) {
	if loc, ok := namedZones.Load(name); ok {
		return loc.(*time.Location), nil
	}
	name = strings.Clone(name)
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	// LoadOrStore, not Store: a value replaced in the map would no longer
	// be kept alive for the arenas already pointing to it.
	actual, _ := namedZones.LoadOrStore(name, loc)
	return actual.(*time.Location), nil
}

// fixedZone returns the fixed zone name+offset and whether fixedZones keeps
// it. name may alias bytes that are about to change.
func fixedZone(name string, offset int) (*time.Location, bool) {
	key := locCode{kind: locFixed, name: name, offset: int64(offset)}
	if loc, ok := fixedZones.Load(key); ok {
		return loc.(*time.Location), true
	}
	key.name = strings.Clone(name)
	loc := time.FixedZone(key.name, offset)
	if fixedZoneCount.Add(1) < maxCachedLocations {
		actual, _ := fixedZones.LoadOrStore(key, loc) // see loadLocation
		return actual.(*time.Location), true
	}
	return loc, false
}

// pinnedUTC and pinnedLocal keep the values time.UTC and time.Local had at
// start-up alive for good, whatever a program assigns to them later.
var pinnedUTC, pinnedLocal = time.UTC, time.Local

// pinned reports whether loc is one of the pinned start-up locations; a
// time.Local assigned since is pinned to each arena instead.
func pinned(loc *time.Location) bool { return loc == pinnedUTC || loc == pinnedLocal }

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
		return locCode{}, false // stored by offset: see encoder.locIndex
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
