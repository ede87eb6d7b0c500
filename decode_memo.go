package cachedpq

import (
	"bytes"
	"encoding/binary"
	"math"
	"sync/atomic"

	"github.com/maypok86/otter/v2"
	"github.com/zeebo/xxh3"
)

// decodeMemo keeps recently decoded Redis values, so that the hits of a hot
// key, which fetch the same bytes round trip after round trip, decode them
// once: a hit then costs its round trip, a hash and a comparison. A value
// is found by the hash of its bytes and served only if the bytes are equal,
// so a memo hit is exactly what decoding would give. Decoded entries are
// never modified, so readers share them.
//
// A value is kept only the second time it is decoded, so that a key read
// once (most keys, where many are read) does not pay for a copy and an
// insertion that nothing will use: seen remembers, lossily, the hashes of
// the values decoded once.
type decodeMemo struct {
	c    *otter.Cache[[16]byte, *memoized]
	seen [memoSeenSlots]atomic.Uint64
}

// memoSeenSlots is the size of decodeMemo's seen filter.
const memoSeenSlots = 4096

// memoized is one decoded value and the bytes it was decoded from.
type memoized struct {
	val []byte
	e   *entry
}

// memoMinBytes is the smallest memo worth keeping.
const memoMinBytes = 64 << 10

// memoMinWeight is the least weight charged for a memoized value: its
// bytes, its decoded entry and the cache's own overhead.
const memoMinWeight = 256

// newDecodeMemo returns a memo holding about maxBytes of decoded entries
// and the values they came from; nil, no memo, below memoMinBytes.
func newDecodeMemo(maxBytes int64) *decodeMemo {
	if maxBytes < memoMinBytes {
		return nil
	}
	return &decodeMemo{c: otter.Must(&otter.Options[[16]byte, *memoized]{
		MaximumWeight: uint64(maxBytes),
		Weigher: func(_ [16]byte, m *memoized) uint32 {
			w := int64(len(m.val)) + int64(m.e.snap.approxSize()) + memoMinWeight
			return uint32(min(w, math.MaxUint32))
		},
		Executor: callerRuns,
	})}
}

// decode returns the entry val decodes to, through the memo.
func (m *decodeMemo) decode(val []byte, decode func([]byte) (*entry, error)) (*entry, error) {
	h := xxh3.Hash128(val).Bytes()
	if got, ok := m.c.GetIfPresent(h); ok && bytes.Equal(got.val, val) {
		return got.e, nil
	}
	e, err := decode(val)
	if err != nil {
		return nil, err
	}
	id := binary.LittleEndian.Uint64(h[:8])
	if m.seen[id%memoSeenSlots].Swap(id) == id {
		// val may view a buffer of the Redis client: keep a copy.
		m.c.Set(h, &memoized{val: bytes.Clone(val), e: e})
	}
	return e, nil
}
