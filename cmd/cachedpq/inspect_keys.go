package main

import "strings"

// keyKind is what a key in a cachedpq namespace holds (see the key layout
// in store_redis.go).
type keyKind uint8

const (
	kindOther keyKind = iota
	kindEntry         // {prefix}:{name}:{32 hex}
	kindStamp         // {prefix}:stamp:{tag}
	kindIndex         // {prefix}:idx:{tag}
	kindLease         // {entry key}:lease
)

// classify tells what key holds under prefix, with the query name of an
// entry or the tag of a stamp or index. A key such as "p:stamp:<32 hex>"
// reads as an entry of a query named "stamp"; the caller settles such
// cases by the value's type and size (see ambiguous).
func classify(prefix, key string) (keyKind, string) {
	rest, ok := strings.CutPrefix(key, prefix+":")
	if !ok {
		return kindOther, ""
	}
	if strings.HasSuffix(rest, ":lease") {
		return kindLease, ""
	}
	if name, ok := entryName(rest); ok {
		return kindEntry, name
	}
	if tag, ok := strings.CutPrefix(rest, "stamp:"); ok && tag != "" {
		return kindStamp, tag
	}
	if tag, ok := strings.CutPrefix(rest, "idx:"); ok && tag != "" {
		return kindIndex, tag
	}
	return kindOther, ""
}

// entryName splits "{name}:{32 hex}" and returns the name.
func entryName(rest string) (string, bool) {
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 || len(rest)-i-1 != 32 || !isLowerHex(rest[i+1:]) {
		return "", false
	}
	return rest[:i], true
}

// ambiguous reports whether an entry key could also be a stamp or an index
// whose tag happens to be 32 hex digits.
func ambiguous(name string) bool { return name == "stamp" || name == "idx" }

// reclassify settles an ambiguous key by what Redis holds under it: a sorted
// set is an index; a string short enough to be a decimal stamp is a stamp,
// since every encoded entry is longer than 20 bytes.
func reclassify(name, rest string, isZSet bool, strlen int64) (keyKind, string) {
	tag := rest[strings.IndexByte(rest, ':')+1:]
	switch {
	case name == "idx" && isZSet:
		return kindIndex, tag
	case name == "stamp" && !isZSet && strlen <= 20:
		return kindStamp, tag
	}
	return kindEntry, name
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// globEscape escapes the characters SCAN's MATCH pattern treats specially,
// so that a prefix matches only itself.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
