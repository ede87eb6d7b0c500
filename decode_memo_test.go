package cachedpq

import (
	"bytes"
	"database/sql/driver"
	"errors"
	"testing"

	"github.com/zeebo/xxh3"
)

// countingDecode decodes like a Redis lookup and counts its calls.
func countingDecode(n *int) func([]byte) (*entry, error) {
	b := &redisBackend{maxBytes: maxDecodeSize}
	return func(val []byte) (*entry, error) {
		*n++
		return b.decodeValue(val)
	}
}

// redisValue is a Redis value holding an entry of one row with v.
func redisValue(t *testing.T, v string) []byte {
	t.Helper()
	e := &entry{stamps: []uint64{7, 9}, expires: 1, snap: snapshot{
		columns: []column{{name: "v", dbType: "TEXT"}},
		rows:    [][]driver.Value{{v}},
	}}
	val, err := encodeEntry(append(appendStampTag(nil, e.stamps), '|'), e)
	must(t, err)
	return val
}

func TestDecodeMemo(t *testing.T) {
	m := newDecodeMemo(1 << 20)
	calls := 0
	decode := countingDecode(&calls)
	val := redisValue(t, "a")

	// A value is kept the second time it is decoded: a key read once pays
	// for no copy. From then on it is not decoded again.
	once, err := m.decode(bytes.Clone(val), decode)
	must(t, err)
	if calls != 1 || m.c.EstimatedSize() != 0 {
		t.Fatalf("after one decode: %d decodes, %d kept", calls, m.c.EstimatedSize())
	}
	first, err := m.decode(bytes.Clone(val), decode)
	must(t, err)
	again, err := m.decode(bytes.Clone(val), decode)
	must(t, err)
	if calls != 2 || again != first || once == first {
		t.Fatalf("the same bytes decoded %d times (shared: %v)", calls, again == first)
	}
	if got := first.snap.rows[0][0]; got != "a" {
		t.Fatalf("decoded %v", got)
	}

	// The memo keeps its own copy: the client reuses its buffers.
	fresh, freshCalls := newDecodeMemo(1<<20), 0
	_, err = fresh.decode(bytes.Clone(val), countingDecode(&freshCalls))
	must(t, err)
	buf := bytes.Clone(val)
	_, err = fresh.decode(buf, countingDecode(&freshCalls)) // kept now
	must(t, err)
	clear(buf)
	if _, err := fresh.decode(bytes.Clone(val), countingDecode(&freshCalls)); err != nil || freshCalls != 2 {
		t.Fatalf("after the caller's buffer changed: %d decodes, %v", freshCalls, err)
	}

	// Other bytes under the same hash (a collision) are decoded, not
	// answered with the memoized entry.
	other := redisValue(t, "b")
	m.c.Set(xxh3.Hash128(other).Bytes(), &memoized{val: val, e: first})
	e, err := m.decode(other, decode)
	must(t, err)
	if calls != 3 || e == first || e.snap.rows[0][0] != "b" {
		t.Fatalf("a colliding value got %v after %d decodes", e.snap.rows[0][0], calls)
	}

	// What does not decode is not kept: it fails every time.
	bad := []byte("1,2|not an entry")
	for range 2 {
		if _, err := m.decode(bad, decode); !errors.As(err, new(errCorruptEntry)) {
			t.Fatalf("corrupt value: %v", err)
		}
	}
	if calls != 5 {
		t.Fatalf("%d decodes, want 5: a corrupt value was memoized", calls)
	}
}

func TestDecodeMemoTooSmall(t *testing.T) {
	if newDecodeMemo(memoMinBytes-1) != nil {
		t.Fatal("a memo below the minimum was made")
	}
	b := &redisBackend{maxBytes: maxDecodeSize} // no memo: decodes every time
	if e, err := b.decode(redisValue(t, "a")); err != nil || e.snap.rows[0][0] != "a" {
		t.Fatalf("decode without a memo = %v, %v", e, err)
	}
}
