package cachedpq

// This file builds cache keys. A key must never let one query's rows
// answer another: arguments are hashed with their types and lengths, the
// database identity (host, port, database, user, session settings) is part
// of every key, and each entry carries a second, independent wide hash that
// a hit verifies. Peers that join fmt.Sprint(args) collide on ("a b","c")
// versus ("a","b c") and on int64(1) versus "1"; this encoding cannot.

import (
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
	"github.com/zeebo/xxh3"
)

// Seeds that make the key hash and the entry check independent.
const (
	keySeed   = 0x6b65795f63706771 // "key_cpgq"
	checkSeed = 0x636865636b5f7071 // "check_pq"
)

// identity is the database and role a connection speaks as, and the DSN
// settings that change what a query returns. It never holds the password.
type identity struct {
	str    string   // readable form, also the hashed form
	digest [16]byte // xxh3-128 of str, fed into every key
	check  [16]byte // xxh3-128 of str with checkSeed, fed into every check
}

// newIdentity derives the identity of connections made with cfg: every
// host and port it may reach, the database, the user, the options string,
// TZ, and all runtime parameters (search_path, role, ...) sorted by name.
func newIdentity(cfg pq.Config) identity {
	var b strings.Builder
	writeField(&b, "host", hostList(cfg))
	writeField(&b, "db", cfg.Database)
	writeField(&b, "user", cfg.User)
	writeField(&b, "options", cfg.Options)
	writeField(&b, "tz", cfg.TZ)
	writeField(&b, "datestyle", cfg.Datestyle)
	writeField(&b, "client_encoding", cfg.ClientEncoding)
	if cfg.BinaryParameters {
		// lib/pq then sends []byte arguments in binary: []byte("12345678")
		// is another bigint than in text.
		writeField(&b, "binary_parameters", "yes")
	}
	names := make([]string, 0, len(cfg.Runtime))
	for k := range cfg.Runtime {
		if !strings.Contains(strings.ToLower(k), "password") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		writeField(&b, "runtime."+k, cfg.Runtime[k])
	}
	return identityOf(b.String())
}

// hostList renders the primary host and any others, each with its port.
func hostList(cfg pq.Config) string {
	s := hostPort(cfg.Host, cfg.Hostaddr.String(), cfg.Port)
	for _, m := range cfg.Multi {
		s += "," + hostPort(m.Host, m.Hostaddr.String(), m.Port)
	}
	return s
}

// hostPort renders one host; an address given as hostaddr is kept too,
// since it decides which server answers.
func hostPort(host, addr string, port uint16) string {
	if addr != "" && addr != "invalid IP" {
		host += "/" + addr
	}
	return host + ":" + strconv.Itoa(int(port))
}

// writeField appends name=quoted(value) and a space; quoting keeps
// "a b" "c" apart from "a" "b c".
func writeField(b *strings.Builder, name, value string) {
	b.WriteString(name)
	b.WriteByte('=')
	b.WriteString(strconv.Quote(value))
	b.WriteByte(' ')
}

// identityOf returns the identity whose readable form is s.
func identityOf(s string) identity {
	return identity{
		str:    s,
		digest: xxh3.HashString128Seed(s, keySeed).Bytes(),
		check:  xxh3.HashString128Seed(s, checkSeed).Bytes(),
	}
}

// with returns the identity with one more field.
func (id *identity) with(name, value string) identity {
	var b strings.Builder
	b.WriteString(id.str)
	writeField(&b, name, value)
	return identityOf(b.String())
}

// String returns a stable, readable form of the identity, without secrets.
func (id *identity) String() string { return strings.TrimSuffix(id.str, " ") }

// Type tags of encoded arguments. Each value is written as its tag and a
// fixed-size or length-prefixed payload, so no two argument lists encode
// alike.
const (
	argNil byte = iota + 1
	argInt64
	argFloat64
	argBool
	argBytes
	argString
	argTime
)

// appendKey appends the cache key of a registered query with args to dst
// and returns it with the check the entry stores and a hit verifies. The
// key reads "{prefix}:{name}:{32 hex digits}"; an empty name becomes the
// first table read, or "q". ok is false when an argument's type cannot be
// keyed safely; the engine then does not cache.
func appendKey(dst []byte, prefix, name string, id *identity, a *analysis, args []driver.NamedValue) (key []byte, check [16]byte, ok bool) {
	var scratch [256]byte
	enc := append(scratch[:0], id.digest[:]...)
	enc = append(enc, a.fingerprint[:]...)
	enc, ok = appendArgs(enc, args)
	if !ok {
		return dst, check, false
	}
	sum := xxh3.Hash128Seed(enc, keySeed).Bytes()
	// The check hashes the same arguments behind digests of the identity
	// and the SQL taken with another seed, so it is independent of the key.
	copy(enc, id.check[:])
	copy(enc[16:], a.check[:])
	check = xxh3.Hash128Seed(enc, checkSeed).Bytes()
	name = keyName(name, a)
	key = grow(dst, len(prefix)+len(name)+2+2*len(sum))
	key = append(key, prefix...)
	key = append(key, ':')
	key = append(key, name...)
	key = append(key, ':')
	return hex.AppendEncode(key, sum[:]), check, true
}

// keyName is the readable middle part of a key.
func keyName(name string, a *analysis) string {
	switch {
	case name != "":
		return name
	case len(a.reads) > 0:
		return a.reads[0]
	}
	return "q"
}

// grow makes room for n more bytes with at most one allocation.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

// appendArgs encodes the arguments: count, then for each its ordinal, its
// name and its typed value.
func appendArgs(b []byte, args []driver.NamedValue) ([]byte, bool) {
	b = binary.AppendUvarint(b, uint64(len(args)))
	for i := range args {
		b = binary.AppendUvarint(b, uint64(args[i].Ordinal))
		b = appendString(b, args[i].Name)
		var ok bool
		if b, ok = appendValue(b, args[i].Value); !ok {
			return b, false
		}
	}
	return b, true
}

// appendValue encodes one value as database/sql hands it to the driver.
// time.Time keeps its instant and its zone offset, which lib/pq sends;
// the zone's name is not sent, so it is left out.
func appendValue(b []byte, v driver.Value) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(b, argNil), true
	case int64:
		return binary.LittleEndian.AppendUint64(append(b, argInt64), uint64(v)), true
	case float64:
		return binary.LittleEndian.AppendUint64(append(b, argFloat64), math.Float64bits(v)), true
	case bool:
		if v {
			return append(b, argBool, 1), true
		}
		return append(b, argBool, 0), true
	case []byte:
		return appendBytes(append(b, argBytes), v), true
	case string:
		return appendString(append(b, argString), v), true
	case time.Time:
		return appendTime(append(b, argTime), v), true
	}
	return b, false
}

// appendTime encodes seconds, nanoseconds and zone offset: what lib/pq
// sends of a time from year 1 on. A time before it is sent as the date of
// year 1-y in the time's own Location, followed by " BC", and a zone such
// as America/New_York gives that other date another offset than a fixed
// zone equal at the instant itself: two such times are other timestamps
// for Postgres, so the text lib/pq sends is kept too.
func appendTime(b []byte, t time.Time) []byte {
	_, offset := t.Zone()
	b = binary.LittleEndian.AppendUint64(b, uint64(t.Unix()))
	b = binary.LittleEndian.AppendUint32(b, uint32(t.Nanosecond()))
	b = binary.LittleEndian.AppendUint32(b, uint32(int32(offset)))
	if t.Year() <= 0 {
		b = appendBytes(b, pq.FormatTimestamp(t))
	}
	return b
}

// appendString appends a length-prefixed string.
func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// appendBytes appends a length-prefixed byte slice.
func appendBytes(b []byte, p []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(p))), p...)
}
