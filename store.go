package cachedpq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// backend is what the engine needs of a cache: the stamp protocol over
// decoded entries. memStore serves it directly; Redis through redisBackend,
// which encodes and decodes.
type backend interface {
	// lookup returns the entry under key (nil if absent) and the current
	// stamps of tags (0 where missing), appended to buf[:0].
	lookup(ctx context.Context, key string, tags []string, buf []uint64) (*entry, []uint64, error)
	// readStamps returns the stamps of tags, creating missing ones.
	readStamps(ctx context.Context, tags []string) ([]uint64, error)
	// fill stores e under key for ttl, indexed under tags.
	fill(ctx context.Context, key string, e *entry, ttl time.Duration, tags []string) error
	// bump gives tags fresh stamps: the invalidation itself.
	bump(ctx context.Context, tags []string) error
	// purge deletes the entries indexed under tags, to reclaim memory.
	purge(ctx context.Context, tags []string) error
	remove(ctx context.Context, keys ...string) error
	// acquireLease takes the right to fill key for loads under the stamps
	// tag names, unless another holder has it under that tag; a lease under
	// another tag is void and is taken over.
	acquireLease(ctx context.Context, key, tag string, ttl time.Duration) (uint64, bool, error)
	releaseLease(ctx context.Context, key string, token uint64) error
}

// releasingFiller is a backend that can fill an entry and release its
// fill lease in one round trip.
type releasingFiller interface {
	fillReleasing(ctx context.Context, key string, e *entry, ttl time.Duration, tags []string, token uint64) error
}

// leaser is a backend that can look up an entry and take its fill lease in
// one round trip (see redisStore.lookupLease).
type leaser interface {
	lookupLease(ctx context.Context, key string, tags []string, ttl time.Duration, always bool, token uint64) (*entry, []uint64, uint64, error)
}

var (
	_ backend = (*memStore)(nil)
	_ backend = (*redisBackend)(nil)
)

// appendStampTag appends stamps as lookupScript joins them: decimal, comma
// separated.
func appendStampTag(dst []byte, stamps []uint64) []byte {
	for i, s := range stamps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendUint(dst, s, 10)
	}
	return dst
}

// errTooLarge reports an encoded entry over the decode limit.
var errTooLarge = errors.New("cachedpq: entry over MaxBytes")

// errCorruptEntry reports bytes under an entry key that do not decode; the
// engine treats them as a miss.
type errCorruptEntry struct{ err error }

func (e errCorruptEntry) Error() string { return e.err.Error() }
func (e errCorruptEntry) Unwrap() error { return e.err }

// redisBackend encodes entries for Redis and decodes them on lookup.
type redisBackend struct {
	*redisStore
	maxBytes int         // decode limit, the largest MaxBytes a policy may have
	memo     *decodeMemo // nil: every lookup decodes
	// unclaimed, if set, withdraws the lease asked for under token, and
	// reports false if a load here claimed it first: that load holds it
	// now, and a lookup's upkeep must not give it back.
	unclaimed func(token uint64) bool
}

func (b *redisBackend) lookup(ctx context.Context, key string, tags []string, buf []uint64) (*entry, []uint64, error) {
	type answer struct {
		val    []byte
		stamps []uint64
	}
	a, err := lookupChecked(ctx, b.redisStore, func(ctx context.Context) (answer, error) {
		val, stamps, err := b.redisStore.lookup(ctx, key, tags, buf)
		return answer{val, stamps}, err
	})
	val, stamps := a.val, a.stamps
	if err != nil || val == nil {
		return nil, stamps, err
	}
	e, err := b.decode(val)
	return e, stamps, err
}

// decode reads a Redis value: the stamps its entry was loaded under, as
// text (see appendStampTag), '|' and the encoded entry. The text lets the
// lookup script tell a stale entry from a current one; the entry's own
// copy of the stamps is what a hit is checked against.
func (b *redisBackend) decode(val []byte) (*entry, error) {
	if b.memo != nil {
		return b.memo.decode(val, b.decodeValue)
	}
	return b.decodeValue(val)
}

// decodeValue is decode without the memo.
func (b *redisBackend) decodeValue(val []byte) (*entry, error) {
	bar := bytes.IndexByte(val, '|') // the tag holds digits and commas only
	if bar < 0 {
		return nil, errCorruptEntry{fmt.Errorf("%w: no stamps before the entry", errCorrupt)}
	}
	e, err := decodeEntry(val[bar+1:], b.maxBytes)
	if err != nil {
		return nil, errCorruptEntry{err}
	}
	return e, nil
}

// leasing reports whether lookupLease works on this Redis.
func (b *redisBackend) leasing() bool { return b.scripts }

func (b *redisBackend) lookupLease(ctx context.Context, key string, tags []string, ttl time.Duration, always bool, token uint64) (*entry, []uint64, uint64, error) {
	type answer struct {
		val    []byte
		stamps []uint64
		holder uint64
		upkeep func(context.Context)
	}
	a, err := lookupChecked(ctx, b.redisStore, func(ctx context.Context) (answer, error) {
		val, stamps, holder, upkeep, err := b.redisStore.lookupLeaseUpkeep(ctx, key, tags, ttl, always, token)
		return answer{val, stamps, holder, upkeep}, err
	})
	// Not while lookupChecked tries: its dials would call for more tries.
	// A load here told by its own lookup that token holds the lease may
	// have claimed it while this answer was on its way: it is then that
	// load's to give back.
	upkeep := a.upkeep
	if err != nil || upkeep != nil && b.unclaimed != nil && !b.unclaimed(token) {
		upkeep = nil
	}
	val, stamps, holder := a.val, a.stamps, a.holder
	if err != nil || val == nil {
		if upkeep != nil {
			b.later(upkeep)
		}
		return nil, stamps, holder, err
	}
	e, err := b.decode(val)
	switch {
	case upkeep == nil:
	case err == nil && time.Now().UnixNano() >= e.expires:
		// The entry is current but expired: its reader reloads it, and
		// asks for the lease at once. Given back in the background, the
		// lease would still be held then, by nobody's load.
		ctx, cancel := b.stepCtx(ctx)
		upkeep(ctx)
		cancel()
	default:
		b.later(upkeep)
	}
	return e, stamps, holder, err
}

// bump gives tags fresh stamps, then checks the server if a check is due,
// as a lookup does (see verifyBump).
func (b *redisBackend) bump(ctx context.Context, tags []string) error {
	if err := b.redisStore.bump(ctx, tags); err != nil {
		return err
	}
	return b.verifyBump(ctx)
}

// fill encodes e; an entry larger than maxBytes is not stored. (Policies
// bound what is recorded by MaxBytes; this bounds what a lookup decodes.)
func (b *redisBackend) fill(ctx context.Context, key string, e *entry, ttl time.Duration, tags []string) error {
	return b.fillReleasing(ctx, key, e, ttl, tags, 0)
}

// fillReleasing is fill that also releases the lease token holds.
func (b *redisBackend) fillReleasing(ctx context.Context, key string, e *entry, ttl time.Duration, tags []string, token uint64) error {
	if hasMark(e.stamps) { // never recorded: a reader that met a mark stores nothing (see marks.go)
		return errMarked
	}
	val := append(appendStampTag(nil, e.stamps), '|')
	tagLen := len(val)
	val, err := encodeEntry(val, e)
	if err != nil {
		return err
	}
	if len(val)-tagLen > b.maxBytes {
		return errTooLarge
	}
	e.size = len(val)
	return b.redisStore.fillReleasing(ctx, key, val, ttl, tags, token)
}
