package cachedpq

// The Redis store: entries, tag stamps, tag indexes and fill leases.
//
// Key layout (prefix is the engine's namespace, such as "cachedpq"):
//
//	<entry key>              the encoded entry; the key is built and prefixed by the engine
//	<prefix>:stamp:<tag>     the tag's stamp, a decimal below 10^19 and above 0, without a TTL;
//	                         or, while writes to the tag run, a mark "m<n>:<d>:<old>" with a 1 s PX TTL (see marks.go)
//	<prefix>:idx:<tag>       sorted set: member = entry key, score = the entry's expiry (unix ms)
//	<entry key>:lease        a fill lease: "<token>|<stamps>", with a short PX TTL
//
// Stamps are decimal so that redis-cli shows them and so that a foreign or
// corrupt value is detected: anything that is not a stamp as formatStamp
// writes it (or a value of another type) reads as 0, "missing", and is
// replaced. Go and lookupScript must agree on that exactly, so stamps stay
// below 10^19: their text is at most 19 digits with no leading zero, which
// a Lua pattern checks as surely as strconv does.
//
// No key carries a {hash tag}: on Redis Cluster entries, stamps and indexes
// spread over all masters (one stamp key per table would otherwise pin every
// lookup to one node). Every command therefore names a single key, and
// batches go through pipelines, which go-redis splits per node.
//
// The tag index is a sorted set scored by expiry rather than a plain set, so
// that every fill can trim the members whose entries have expired: an index
// then holds about as many members as there are live entries, even for a
// table that is read for weeks and never written (a plain set, refreshed by
// every fill, would only grow).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// redisClient is every Redis command the store uses. redis.UniversalClient
// satisfies it: *redis.Client, *redis.ClusterClient and the Sentinel
// failover client alike.
type redisClient interface {
	redis.Scripter
	Pipeline() redis.Pipeliner
	TxPipeline() redis.Pipeliner
	Process(ctx context.Context, cmd redis.Cmder) error
	Ping(ctx context.Context) *redis.StatusCmd
	SetArgs(ctx context.Context, key string, value any, a redis.SetArgs) *redis.StatusCmd
	ZCard(ctx context.Context, key string) *redis.IntCmd
	ZPopMin(ctx context.Context, key string, count ...int64) *redis.ZSliceCmd
	MGet(ctx context.Context, keys ...string) *redis.SliceCmd
	Info(ctx context.Context, section ...string) *redis.StringCmd
}

var _ redisClient = redis.UniversalClient(nil)

const (
	// purgeBatch is how many index members one purge step pops and unlinks:
	// large enough to amortise round trips, small enough not to stall Redis.
	purgeBatch = 256
	// indexSlack is added to an index's TTL and subtracted from the trim
	// horizon, so that clock skew between processes neither expires an
	// index before its entries nor trims members of live entries.
	indexSlack = time.Minute
)

// errBadTTL reports a fill or lease asked for with a TTL that is not positive.
var errBadTTL = errors.New("cachedpq: cache TTL must be positive")

// A lease's value is "<token>|<tag>": the holder's random token and the
// stamps of the load it guards (see stampTag). A lease held under other
// stamps is void, as those stamps are: a write came between, and the load
// it guards cannot fill an entry anyone may use.

// acquireScript takes the lease KEYS[1] for tag ARGV[3] with token ARGV[2]
// for ARGV[1] ms, unless it is held under that tag already.
var acquireScript = redis.NewScript(`
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'string' then
	local bar = string.find(v, '|', 1, true)
	if bar and string.sub(v, bar + 1) == ARGV[3] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. ARGV[3], 'PX', ARGV[1])
return 1`)

// releaseScript deletes a lease only if it still holds the caller's token,
// so a holder whose lease expired cannot delete its successor's.
var releaseScript = redis.NewScript(releaseSrc)

const releaseSrc = `
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'string' and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
	return redis.call('DEL', KEYS[1])
end
return 0`

// lookupScript is a lookup that takes the fill lease in the same round
// trip when it finds no current entry (or always, if ARGV[3] is "1"):
// KEYS[1] is the entry, KEYS[2] the lease, KEYS[3:] the stamps; ARGV[1] and
// ARGV[2] are the lease's TTL in ms and token, ARGV[4:] fresh stamps to
// create the missing ones with (a load records its stamps before it runs,
// so they must exist). An entry is current when the stamps its value
// begins with (see redisBackend.decode) are the stamps now; a stale one is
// returned too, with the lease taken. It answers {entry or false, stamps,
// holder}: holder is the token of the lease held under the stamps, ARGV[2]
// if the script took it, or "0" if it asked for none. The stamps are
// checked as readStamp would: a foreign one is replaced; where one is a
// write's mark (see marks.go), the script answers at once, with no entry,
// creating nothing and taking no lease: the reader goes to Postgres.
var lookupScript = redis.NewScript(`
local got = redis.call('MGET', KEYS[1], unpack(KEYS, 3))
local v = got[1]
local stamps, valid, marked = {}, true, false
for i = 3, #KEYS do
	local s = got[i - 1]
	if s and string.match(s, '^m%d+:[01]:%d*$') then
		marked = true
	elseif not s or #s > 19 or not string.match(s, '^[1-9]%d*$') then
		s, valid = false, false
	end
	stamps[i - 2] = s
end
if marked then return {false, stamps, '0'} end
if v and ARGV[3] ~= '1' and valid then
	local tag = table.concat(stamps, ',')
	if string.sub(v, 1, #tag + 1) == tag .. '|' then return {v, stamps, '0'} end
end
for i = 1, #stamps do
	if not stamps[i] then
		redis.call('SET', KEYS[i + 2], ARGV[i + 3])
		stamps[i] = ARGV[i + 3]
	end
end
local tag = table.concat(stamps, ',')
local lease = ARGV[2] .. '|' .. tag
if redis.call('SET', KEYS[2], lease, 'PX', ARGV[1], 'NX') then return {v, stamps, ARGV[2]} end
local l = redis.pcall('GET', KEYS[2])
if type(l) == 'string' then
	local bar = string.find(l, '|', 1, true)
	if bar and string.sub(l, bar + 1) == tag then return {v, stamps, string.sub(l, 1, bar - 1)} end
end
redis.call('SET', KEYS[2], lease, 'PX', ARGV[1])
return {v, stamps, ARGV[2]}`)

// redisStore keeps entries and stamps in Redis. It is safe for concurrent
// use; all state lives in Redis.
type redisStore struct {
	c      redisClient
	prefix string
	// scripts is true when one script may touch an entry, its lease and
	// its stamps: on a single node or behind Sentinel, not on a Cluster,
	// whose nodes hold them apart.
	scripts bool
	// watch checks servers met on new connections (see restarts.go); nil
	// but on a single node, Sentinel or a Cluster.
	watch *serverWatch
	// cluster is the Cluster client whose masters a check reads one by
	// one (see restarts_cluster.go); nil elsewhere.
	cluster clusterNodes
	// stampSlots holds a *stampSlot by tag (see slot).
	stampSlots sync.Map
	// background runs work off the caller's path, and reports false if it
	// cannot (the engine is closing); nil runs it at once.
	background func(func()) bool
	// step bounds each command of a purge (0: only the purge's context):
	// a stalled server must not hold a purge, and Close, for purgeTimeout.
	step time.Duration
	// landed, if not nil, is closed whenever marks this process took back
	// have landed (see awaitUnmarked).
	landedMu sync.Mutex
	landed   chan struct{}
}

// stepCtx bounds one command of a purge by s.step.
func (s *redisStore) stepCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.step <= 0 {
		return ctx, func() {}
	}
	return withCacheTimeout(ctx, s.step)
}

// newRedisStore returns a store over c whose stamp and index keys start
// with prefix.
func newRedisStore(c redis.UniversalClient, prefix string) *redisStore {
	s := &redisStore{c: c, prefix: prefix}
	switch c := c.(type) {
	case *redis.Client:
		s.scripts, s.watch = true, newServerWatch(c)
	case *redis.ClusterClient:
		s.cluster, s.watch = c, newClusterWatch(c)
	}
	return s
}

// stampKey is the key of tag's stamp.
func (s *redisStore) stampKey(tag string) string { return s.prefix + ":stamp:" + tag }

// stampSlot is a tag's stamp key as a command argument, boxed once, and
// the stamp this store last read or wrote under it: what leaseByGuess
// guesses the stamp is now.
type stampSlot struct {
	key  any
	seen atomic.Uint64
	// unmarking counts this process's writes to the tag whose mark is
	// being taken back, which its readers wait for (see awaitUnmarked).
	unmarking atomic.Int32
}

// slot returns tag's stampSlot, kept from one lookup to the next: a hit
// then builds no key of a stamp, nor boxes one. Lookups, stamp reads and
// bumps use it; the tags of registered reads and of writes, which the
// schema and the registry bound, are what it holds.
func (s *redisStore) slot(tag string) *stampSlot {
	if v, ok := s.stampSlots.Load(tag); ok {
		return v.(*stampSlot)
	}
	v, _ := s.stampSlots.LoadOrStore(tag, &stampSlot{key: s.stampKey(tag)})
	return v.(*stampSlot)
}

// saw notes stamps, read or written under tags, for leaseByGuess.
func (s *redisStore) saw(tags []string, stamps []uint64) {
	for i, v := range stamps {
		s.slot(tags[i]).note(v)
	}
}

// note records v as the stamp last seen. A missing stamp (0) is not
// noted: it says nothing of the next one.
func (sl *stampSlot) note(v uint64) {
	if v != 0 && sl.seen.Load() != v {
		sl.seen.Store(v)
	}
}

// guess returns the tag of the stamps last seen under tags (see saw), or
// false if one was never seen.
func (s *redisStore) guess(tags []string) ([]byte, bool) {
	var sb [stampBufCap]uint64
	stamps, ok := s.guessStamps(tags, sb[:0])
	if !ok {
		return nil, false
	}
	return appendStampTag(nil, stamps), true
}

// guessStamps appends to buf the stamps last seen under tags (see saw), or
// reports false if one was never seen. Each was the tag's stamp in the
// cache at some time before the call.
func (s *redisStore) guessStamps(tags []string, buf []uint64) ([]uint64, bool) {
	for _, tag := range tags {
		v := s.slot(tag).seen.Load()
		if v == 0 || v == markedStamp {
			return nil, false
		}
		buf = append(buf, v)
	}
	return buf, true
}

// indexKey is the key of tag's index of entry keys.
func (s *redisStore) indexKey(tag string) string { return s.prefix + ":idx:" + tag }

// leaseKey is the key of the fill lease on an entry key.
func leaseKey(key string) string { return key + ":lease" }

// stampLimit bounds stamps (and lease tokens): at most 19 digits.
const stampLimit = 10_000_000_000_000_000_000

// newStamp returns a fresh random stamp in [1, stampLimit); 0 is reserved
// for "missing".
func newStamp() uint64 { return 1 + rand.Uint64N(stampLimit-1) }

// readStamp decodes what a stamp key holds: a stamp (see parseStamp), or
// markedStamp for a write's mark (see isMark).
func readStamp(s string) uint64 {
	if isMark(s) {
		return markedStamp
	}
	return parseStamp(s)
}

// isMark reports a write's mark, "m<n>:<d>:<old>" (see marks.go), as the
// Lua pattern ^m%d+:[01]:%d*$ of the scripts judges it.
func isMark(s string) bool {
	if len(s) < 5 || s[0] != 'm' {
		return false
	}
	n := digits(s[1:])
	if n == 0 || len(s) < 1+n+3 || s[1+n] != ':' || s[2+n] != '0' && s[2+n] != '1' || s[3+n] != ':' {
		return false
	}
	rest := s[4+n:]
	return digits(rest) == len(rest)
}

// digits counts the ASCII digits s begins with.
func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

// sawValues notes the values scripts left under the stamps of tags.
func (s *redisStore) sawValues(tags []string, vals []string) {
	for i, v := range vals {
		s.slot(tags[i]).note(readStamp(v))
	}
}

// parseStamp decodes a stored stamp: the exact text formatStamp writes for
// a stamp newStamp can return. Anything else (a leading zero, a sign, 20
// digits) is 0, as lookupScript judges it.
func parseStamp(s string) uint64 {
	if len(s) == 0 || len(s) > 19 || s[0] == '0' {
		return 0
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// isWrongType reports a command that met a key of another type: a foreign
// value under one of our keys, which the store treats as absent.
func isWrongType(err error) bool {
	// HasErrorPrefix allocates even for nil: keep it off the hit path.
	return err != nil && err != redis.Nil && redis.HasErrorPrefix(err, "WRONGTYPE")
}

// lookup returns the bytes under key (nil if absent) and the current stamps
// of tags (0 where missing or unreadable), appended to buf[:0], in one
// round trip.
func (s *redisStore) lookup(ctx context.Context, key string, tags []string, buf []uint64) ([]byte, []uint64, error) {
	if s.scripts {
		return s.mget(ctx, key, tags, buf)
	}
	pipe := s.c.Pipeline()
	get := pipe.Get(ctx, key)
	for _, tag := range tags {
		pipe.Get(ctx, s.stampKey(tag))
	}
	expectAnswers(ctx, 1+len(tags))
	cmds, _ := pipe.Exec(ctx) // errors are read per command below
	val, err := entryBytes(get)
	if err != nil {
		return nil, nil, err
	}
	buf = buf[:0]
	for _, cmd := range cmds[1:] {
		v, err := stampOf(cmd.(*redis.StringCmd))
		if err != nil {
			return nil, nil, err
		}
		buf = append(buf, v)
	}
	return val, buf, nil
}

// mget is lookup in one command, where the entry and its stamps may be
// read together (not on a Cluster). MGET answers nil for a key of another
// type, as lookup reads it.
func (s *redisStore) mget(ctx context.Context, key string, tags []string, buf []uint64) ([]byte, []uint64, error) {
	var sb [stampBufCap]*stampSlot
	cmd, slots := s.lookupCmd(ctx, key, tags, sb[:0])
	_ = s.c.Process(ctx, cmd)
	return readLookup(cmd, slots, buf)
}

// lookupCmd is the MGET of key and of the stamps of tags, whose slots it
// appends to slots.
func (s *redisStore) lookupCmd(ctx context.Context, key string, tags []string, slots []*stampSlot) (*redis.SliceCmd, []*stampSlot) {
	args := make([]any, 2, 2+len(tags))
	args[0], args[1] = "mget", key
	for _, tag := range tags {
		sl := s.slot(tag)
		args = append(args, sl.key)
		slots = append(slots, sl)
	}
	return redis.NewSliceCmd(ctx, args...), slots
}

// readLookup reads lookupCmd's answer: the value (nil if absent) and the
// stamps (0 where missing or unreadable), appended to buf[:0]. It notes
// the stamps in their slots (see saw).
func readLookup(cmd *redis.SliceCmd, slots []*stampSlot, buf []uint64) ([]byte, []uint64, error) {
	vals, err := cmd.Result()
	if err != nil {
		return nil, nil, err
	}
	if len(vals) != len(slots)+1 {
		return nil, nil, fmt.Errorf("cachedpq: MGET of %d keys answered %d values", len(slots)+1, len(vals))
	}
	buf = buf[:0]
	for i, v := range vals[1:] {
		str, _ := v.(string)
		buf = append(buf, readStamp(str))
		slots[i].note(buf[i])
	}
	return stringBytes(vals[0]), buf, nil
}

// stringBytes views a string answer as bytes (nil if it is not a string).
// A view, not a copy: decoding only reads it, and copies what it keeps.
// An empty value is present (and foreign), so it is not nil.
func stringBytes(v any) []byte {
	str, ok := v.(string)
	switch {
	case !ok:
		return nil
	case str == "":
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(str), len(str))
}

// entryBytes reads an entry GET: absent and foreign-typed keys are nil.
func entryBytes(cmd *redis.StringCmd) ([]byte, error) {
	val, err := cmd.Bytes()
	switch {
	case err == redis.Nil || isWrongType(err):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return val, nil
}

// stampOf reads a stamp GET: absent, foreign or corrupt stamps are 0.
func stampOf(cmd *redis.StringCmd) (uint64, error) {
	err := cmd.Err()
	switch {
	case err == redis.Nil || isWrongType(err):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return readStamp(cmd.Val()), nil
}

// readStamps returns the current stamps of tags, creating the missing ones
// with fresh values (SET NX GET, Redis >= 7) in one round trip. A corrupt or
// foreign stamp costs a second round trip that overwrites it with a fresh
// value; overwriting with a fresh value is always safe, it only voids
// entries.
func (s *redisStore) readStamps(ctx context.Context, tags []string) ([]uint64, error) {
	out := make([]uint64, len(tags))
	cmds := make([]*redis.StatusCmd, len(tags))
	pipe := s.c.Pipeline()
	for i, tag := range tags {
		out[i] = newStamp()
		cmds[i] = pipe.SetArgs(ctx, s.stampKey(tag), formatStamp(out[i]), redis.SetArgs{Mode: "NX", Get: true})
	}
	_, _ = pipe.Exec(ctx)
	var bad []int
	for i, cmd := range cmds {
		old, err := cmd.Result()
		switch {
		case err == redis.Nil: // created: out[i] is now the stamp
		case err != nil && !isWrongType(err):
			return nil, err
		case err == nil && readStamp(old) != 0:
			out[i] = readStamp(old) // an existing stamp (or mark) wins over ours
		default: // foreign or corrupt: replace it
			bad = append(bad, i)
		}
	}
	if err := s.overwriteStamps(ctx, tags, out, bad); err != nil {
		return nil, err
	}
	s.saw(tags, out)
	return out, nil
}

// overwriteStamps sets the stamps of tags[i] for i in idx to out[i].
func (s *redisStore) overwriteStamps(ctx context.Context, tags []string, out []uint64, idx []int) error {
	if len(idx) == 0 {
		return nil
	}
	pipe := s.c.Pipeline()
	for _, i := range idx {
		pipe.Set(ctx, s.stampKey(tags[i]), formatStamp(out[i]), 0)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// formatStamp encodes a stamp as stored.
func formatStamp(v uint64) string { return strconv.FormatUint(v, 10) }

// bump replaces the stamps of tags with fresh random values in one round
// trip: every entry that recorded an old stamp is void from then on. A
// Redis over its maxmemory under noeviction (the default policy) refuses
// the SETs, but not UNLINK: the stamps are then deleted, which voids the
// entries as surely (a missing stamp matches none), in a second round trip.
func (s *redisStore) bump(ctx context.Context, tags []string) error {
	err := s.replaceStamps(ctx, tags)
	if !isOOM(err) {
		return err
	}
	keys := make([]string, len(tags))
	for i, tag := range tags {
		keys[i] = s.stampKey(tag)
	}
	return s.remove(ctx, keys...)
}

// isOOM reports a command a full Redis refused (maxmemory, noeviction).
func isOOM(err error) bool {
	return err != nil && err != redis.Nil && redis.HasErrorPrefix(err, "OOM")
}

// replaceStamps is bump's first try: new stamps for tags, except where a
// write's mark is (see bumpScript).
func (s *redisStore) replaceStamps(ctx context.Context, tags []string) error {
	if len(tags) == 0 {
		return nil
	}
	stamps := make([]string, len(tags))
	for i := range stamps {
		stamps[i] = formatStamp(newStamp())
	}
	left, err := s.runEach(ctx, bumpScript, tags, func(i int) []any { return []any{stamps[i]} })
	if err != nil {
		return err
	}
	s.sawValues(tags, left)
	return nil
}

// runEach runs sc once for the stamp key of each tag, with args(i) for
// tags[i], in one round trip, and returns the strings it answered. A
// script the server does not know (NOSCRIPT: restarted, flushed) is sent
// again in full, in a second round trip, for the keys that answered so:
// their command did not run. args must answer the same for each call.
func (s *redisStore) runEach(ctx context.Context, sc *redis.Script, tags []string, args func(i int) []any) ([]string, error) {
	out := make([]string, len(tags))
	if len(tags) == 1 {
		v, err := sc.Run(ctx, s.c, []string{s.stampKey(tags[0])}, args(0)...).Text()
		out[0] = v
		return out, err
	}
	cmds := make([]*redis.Cmd, len(tags))
	pipe := s.c.Pipeline()
	for i, tag := range tags {
		cmds[i] = sc.EvalSha(ctx, pipe, []string{s.stampKey(tag)}, args(i)...)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	var again redis.Pipeliner
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if again == nil {
				again = s.c.Pipeline()
			}
			cmds[i] = sc.Eval(ctx, again, []string{s.stampKey(tags[i])}, args(i)...)
		}
	}
	if again != nil {
		_, _ = again.Exec(ctx)
	}
	var first error
	for i, cmd := range cmds {
		v, err := cmd.Text()
		if err != nil && first == nil {
			first = err
		}
		out[i] = v
	}
	return out, first
}

// fill stores val under key for ttl and indexes key under each tag, in one
// round trip. Each index's TTL is raised (never lowered) to outlive the
// entry, and members whose entries have expired are trimmed.
func (s *redisStore) fill(ctx context.Context, key string, val []byte, ttl time.Duration, tags []string) error {
	return s.fillReleasing(ctx, key, val, ttl, tags, 0)
}

// fillReleasing is fill that also releases the lease on key that token
// holds (if not 0), in the same round trip.
func (s *redisStore) fillReleasing(ctx context.Context, key string, val []byte, ttl time.Duration, tags []string, token uint64) error {
	if ttl <= 0 {
		return errBadTTL
	}
	ix := newIndexing(key, ttl)
	pipe := s.c.Pipeline()
	pipe.Set(ctx, key, val, ttl)
	for _, tag := range tags {
		ix.add(ctx, pipe, s.indexKey(tag))
	}
	if token != 0 {
		// EVAL, not EVALSHA: a pipeline cannot retry a script the server
		// has forgotten, and the server caches it by its hash anyway.
		pipe.Eval(ctx, releaseSrc, []string{leaseKey(key)}, formatStamp(token))
	}
	foreign, err := execIndexing(ctx, pipe)
	if err != nil || len(foreign) == 0 {
		return err
	}
	return s.reindex(ctx, ix, foreign)
}

// indexing is what a fill writes to the indexes of its entry's tags.
type indexing struct {
	key     string        // the entry key
	expiry  float64       // the entry's expiry, unix ms: its score
	horizon string        // members scored before it are trimmed
	ttl     time.Duration // the least TTL the index keeps
}

func newIndexing(key string, ttl time.Duration) indexing {
	now := time.Now()
	return indexing{
		key:     key,
		expiry:  float64(now.Add(ttl).UnixMilli()),
		horizon: strconv.FormatInt(now.Add(-indexSlack).UnixMilli(), 10),
		ttl:     ttl.Truncate(time.Second) + time.Second + indexSlack,
	}
}

// add queues the indexing of the entry under idx.
func (ix *indexing) add(ctx context.Context, pipe redis.Pipeliner, idx string) {
	pipe.ZAdd(ctx, idx, redis.Z{Score: ix.expiry, Member: ix.key})
	pipe.ZRemRangeByScore(ctx, idx, "-inf", "("+ix.horizon)
	pipe.ExpireNX(ctx, idx, ix.ttl) // a new index has no TTL yet
	pipe.ExpireGT(ctx, idx, ix.ttl) // an old one may expire too soon
}

// reindex replaces the foreign values found under the indexes idxs with
// indexes of the entry alone. Members another fill added in between are
// lost with them: their entries are not purged early, which costs memory
// until they expire, never a stale hit (their stamps see to that).
func (s *redisStore) reindex(ctx context.Context, ix indexing, idxs []string) error {
	pipe := s.c.Pipeline()
	for _, idx := range idxs {
		pipe.Unlink(ctx, idx)
		ix.add(ctx, pipe, idx)
	}
	return execIgnoring(ctx, pipe)
}

// execIndexing is execIgnoring for a fill: it also returns, rather than
// fail on, the keys of the commands that met a value of another type, which
// can only be foreign values under indexes (SET and EVAL take any key).
func execIndexing(ctx context.Context, pipe redis.Pipeliner) (foreign []string, err error) {
	cmds, _ := pipe.Exec(ctx)
	for _, cmd := range cmds {
		err := cmd.Err()
		switch {
		case isWrongType(err):
			if k, _ := cmd.Args()[1].(string); !slices.Contains(foreign, k) {
				foreign = append(foreign, k)
			}
		case err != nil && err != redis.Nil:
			return nil, err
		}
	}
	return foreign, nil
}

// execIgnoring runs pipe and returns its first error, except the "not
// applied" answers of conditional commands, which are not errors.
func execIgnoring(ctx context.Context, pipe redis.Pipeliner) error {
	cmds, _ := pipe.Exec(ctx)
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil && err != redis.Nil {
			return err
		}
	}
	return nil
}

// purge deletes the entries indexed under tags, and so the indexes, in
// batches of purgeBatch. It pops at most as many members as an index held
// when purge reached it, so fills that keep indexing new entries cannot keep
// it running; an entry filled meanwhile and popped is merely deleted early.
func (s *redisStore) purge(ctx context.Context, tags []string) error {
	for _, tag := range tags {
		if err := s.purgeTag(ctx, s.indexKey(tag)); err != nil {
			return err
		}
	}
	return nil
}

// purgeTag empties one index, unlinking the entries it names. A foreign
// value under idx names none: it is unlinked, as an emptied index would be.
func (s *redisStore) purgeTag(ctx context.Context, idx string) error {
	sctx, cancel := s.stepCtx(ctx)
	left, err := s.c.ZCard(sctx, idx).Result()
	cancel()
	if err != nil {
		return s.unlinkForeign(ctx, idx, err)
	}
	for left > 0 {
		sctx, cancel := s.stepCtx(ctx)
		members, err := s.c.ZPopMin(sctx, idx, min(left, purgeBatch)).Result()
		cancel()
		if err != nil || len(members) == 0 {
			return s.unlinkForeign(ctx, idx, err)
		}
		left -= int64(len(members))
		sctx, cancel = s.stepCtx(ctx)
		err = s.unlinkMembers(sctx, members)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// unlinkForeign unlinks idx if err says it holds a value of another type,
// and returns any other err.
func (s *redisStore) unlinkForeign(ctx context.Context, idx string, err error) error {
	if isWrongType(err) {
		return s.remove(ctx, idx)
	}
	return err
}

// unlinkMembers unlinks the entry keys named by index members.
func (s *redisStore) unlinkMembers(ctx context.Context, members []redis.Z) error {
	keys := make([]string, 0, len(members))
	for _, m := range members {
		if k, ok := m.Member.(string); ok {
			keys = append(keys, k)
		}
	}
	return s.remove(ctx, keys...)
}

// remove unlinks keys, one command per key in one pipeline, since the keys
// of a multi-key UNLINK must share a slot on Redis Cluster.
func (s *redisStore) remove(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	pipe := s.c.Pipeline()
	for _, k := range keys {
		pipe.Unlink(ctx, k)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// acquireLease tries to take the exclusive right to fill key for ttl, for
// loads under the stamps tag names. ok is false if another holder has it
// under the same tag; the token releases it.
func (s *redisStore) acquireLease(ctx context.Context, key, tag string, ttl time.Duration) (uint64, bool, error) {
	if ttl <= 0 {
		return 0, false, errBadTTL
	}
	token := newStamp()
	ok, err := acquireScript.Run(ctx, s.c, []string{leaseKey(key)}, ttl.Milliseconds(), formatStamp(token), tag).Int()
	if err != nil || ok == 0 {
		return 0, false, err
	}
	return token, true, nil
}

// releaseLease gives the lease on key back if token still holds it.
func (s *redisStore) releaseLease(ctx context.Context, key string, token uint64) error {
	return releaseScript.Run(ctx, s.c, []string{leaseKey(key)}, formatStamp(token)).Err()
}

// lookupLease is lookup and, when it finds no current entry under key (or
// always), acquireLease with token for the stamps it read, in one round
// trip. Missing stamps are created. holder is the token of the lease held
// under those stamps: token if the lookup took it, another holder's, or 0
// if it asked for none (the entry is current) or the holder's token is
// unreadable. Only for a store with scripts.
func (s *redisStore) lookupLease(ctx context.Context, key string, tags []string, ttl time.Duration, always bool, token uint64) (val []byte, stamps []uint64, holder uint64, err error) {
	val, stamps, holder, upkeep, err := s.lookupLeaseUpkeep(ctx, key, tags, ttl, always, token)
	if upkeep != nil {
		s.later(upkeep)
	}
	return val, stamps, holder, err
}

// lookupLeaseUpkeep is lookupLease, but leaves to the caller the upkeep
// of the lease (see leaseByGuess), which must run after the lookup, off
// the caller's path. A lookup that is then repeated (see lookupChecked)
// makes its own: only the last one's must run.
func (s *redisStore) lookupLeaseUpkeep(ctx context.Context, key string, tags []string, ttl time.Duration, always bool, token uint64) (val []byte, stamps []uint64, holder uint64, upkeep func(context.Context), err error) {
	if ttl <= 0 {
		return nil, nil, 0, nil, errBadTTL
	}
	var giveBack func(context.Context)
	if guess, ok := s.guess(tags); ok {
		val, stamps, holder, upkeep, done, err := s.leaseByGuess(ctx, key, tags, ttl, always, token, guess)
		if err != nil || done {
			return val, stamps, holder, upkeep, err
		}
		giveBack = upkeep
	}
	keys := make([]string, 0, 2+len(tags))
	keys = append(keys, key, leaseKey(key))
	args := make([]any, 0, 3+len(tags))
	args = append(args, ttl.Milliseconds(), formatStamp(token), boolArg(always))
	for _, tag := range tags {
		keys = append(keys, s.stampKey(tag))
		args = append(args, formatStamp(newStamp()))
	}
	res, err := lookupScript.Run(ctx, s.c, keys, args...).Slice()
	if err != nil {
		return nil, nil, 0, nil, err
	}
	val, stamps, holder, err = parseLookupLease(res, len(tags))
	if err != nil {
		return nil, nil, 0, nil, err
	}
	s.saw(tags, stamps)
	if holder == token { // the script replaced the lease the pipeline took
		giveBack = nil
	}
	return val, stamps, holder, giveBack, nil
}

// leaseByGuess does lookupScript's work with a pipeline of MGET and SET NX
// GET, which costs Redis far less than the script: on the 2-vCPU VM of
// November 2026, right after a Postgres query, a round trip took 111µs
// (in MULTI/EXEC) against the script's 152µs and a GET's 87µs (medians of
// BenchmarkLeaseTrips, -count 6). A lease's value names the stamps it was
// taken under, which only the MGET of the same round trip reads: the SET
// names guess, the stamps last seen under tags, which change only when
// the tables are written.
//
// done is false when the answer does not settle the lookup as the script
// would, which then runs: the guess was wrong (another process wrote since
// this one last read the stamps), a stamp is missing or foreign, or the
// lease is held under other stamps (or its key holds something else). A
// lease taken here under a wrong guess names stamps that are not current:
// it is void to every reader, and the script replaces it; if the script
// takes none (the entry is current), upkeep gives it back.
//
// Unlike the script it takes the lease also when it finds a current entry
// (unless another holds it). The lease is then given back by upkeep, which
// the caller runs off its path, and the answer is the script's: nobody
// holds it.
func (s *redisStore) leaseByGuess(ctx context.Context, key string, tags []string, ttl time.Duration, always bool, token uint64, guess []byte) (val []byte, stamps []uint64, holder uint64, upkeep func(context.Context), done bool, err error) {
	var sb [stampBufCap]*stampSlot
	mget, slots := s.lookupCmd(ctx, key, tags, sb[:0])
	lease := make([]byte, 0, 20+1+len(guess))
	lease = append(strconv.AppendUint(lease, token, 10), '|')
	lease = append(lease, guess...)
	// MULTI/EXEC, in the same round trip: another client's commands
	// between the MGET and the SET could fill the entry and let its lease
	// go, and the SET would then take the lease beside an entry the MGET
	// saw stale, for a second load.
	pipe := s.c.TxPipeline()
	_ = pipe.Process(ctx, mget)
	set := pipe.SetArgs(ctx, leaseKey(key), lease, redis.SetArgs{Mode: "NX", Get: true, TTL: ttl})
	_, _ = pipe.Exec(ctx) // errors are read per command below
	val, stamps, err = readLookup(mget, slots, make([]uint64, 0, len(tags)))
	switch {
	case err != nil:
		return nil, nil, 0, nil, false, err
	case slices.Contains(stamps, markedStamp):
		// A write runs: no lease, as the script would take none. One
		// taken here (or by a previous try) is given back.
		if set.Err() != nil && set.Err() != redis.Nil {
			return val, stamps, 0, nil, true, nil
		}
		return val, stamps, 0, func(ctx context.Context) { _ = s.releaseLease(ctx, key, token) }, true, nil
	case slices.Contains(stamps, 0):
		return nil, nil, 0, nil, false, nil // the script creates it
	}
	tag := appendStampTag(nil, stamps)
	current := !always && len(val) > len(tag) && val[len(tag)] == '|' && bytes.HasPrefix(val, tag)
	prev, err := set.Result()
	switch {
	case err == redis.Nil:
		prev = string(lease) // taken
	case err != nil:
		return nil, nil, 0, nil, false, nil // not a string: the script replaces it
	}
	bar := strings.IndexByte(prev, '|')
	held := parseStamp(prev[:max(bar, 0)])
	switch {
	case bar < 0 || held == 0:
		return nil, nil, 0, nil, false, nil // foreign: the script replaces it
	case held == token && current:
		// Taken (here, or by this lookup's previous try), as the script
		// would not have: give it back.
		return val, stamps, 0, func(ctx context.Context) { _ = s.releaseLease(ctx, key, token) }, true, nil
	case current:
		return val, stamps, 0, nil, true, nil
	case prev[bar+1:] == string(tag):
		return val, stamps, held, nil, true, nil
	}
	// Taken under a wrong guess, or held under older stamps: the script
	// replaces it. If the entry is current after all, the script takes
	// none, and the lease taken here, void as it is, is given back.
	if held == token {
		return nil, nil, 0, func(ctx context.Context) { _ = s.releaseLease(ctx, key, token) }, false, nil
	}
	return nil, nil, 0, nil, false, nil
}

// later runs a lease's upkeep off the caller's path (at once without a
// background), each command bounded as a purge's are. After close it is
// dropped, and the lease left to expire.
func (s *redisStore) later(fn func(ctx context.Context)) {
	run := func() {
		ctx, cancel := s.stepCtx(context.Background())
		defer cancel()
		fn(ctx)
	}
	if s.background == nil {
		run()
		return
	}
	s.background(run)
}

// parseLookupLease reads lookupScript's answer.
func parseLookupLease(res []any, n int) ([]byte, []uint64, uint64, error) {
	if len(res) != 3 {
		return nil, nil, 0, fmt.Errorf("cachedpq: unexpected lookup answer %v", res)
	}
	raw, _ := res[1].([]any)
	if len(raw) > n {
		return nil, nil, 0, fmt.Errorf("cachedpq: unexpected lookup answer %v", res)
	}
	stamps := make([]uint64, n)
	for i, v := range raw {
		if str, ok := v.(string); ok {
			stamps[i] = readStamp(str)
		}
	}
	holder, _ := res[2].(string)
	return stringBytes(res[0]), stamps, parseStamp(holder), nil
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// ping checks that Redis answers.
func (s *redisStore) ping(ctx context.Context) error {
	return s.c.Ping(ctx).Err()
}
