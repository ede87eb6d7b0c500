package cachedpq

// This file analyzes SQL text without a server: its normalized form and
// fingerprint, its kind, the tables it reads and writes, and whether its
// result may be cached. The analysis errs on the side of invalidating too
// much: a missed write table serves stale rows, an extra one costs a miss.
//
// Tags are bare relation names as the server would spell them: unquoted
// names fold to lower case, quoted ones stay exact, and the schema is
// dropped. public.Users, users and "users" are one tag; "Users" is another.
// Dropping the schema means an unqualified write and a qualified read of
// the same table always meet; the price is that a write to a.t also
// invalidates reads of b.t.

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/zeebo/xxh3"
)

// stmtKind is what a statement does, as far as the cache cares.
type stmtKind uint8

const (
	kindEmpty    stmtKind = iota // nothing but whitespace, comments and semicolons
	kindSelect                   // SELECT, TABLE t, WITH ... SELECT, (SELECT ...)
	kindValues                   // VALUES ...
	kindInsert                   // INSERT (with or without WITH)
	kindUpdate                   // UPDATE
	kindDelete                   // DELETE
	kindMerge                    // MERGE
	kindTruncate                 // TRUNCATE
	kindCopyFrom                 // COPY t FROM ...
	kindCopyTo                   // COPY t TO ..., COPY (query) TO ...
	kindDDL                      // CREATE, ALTER, DROP, GRANT, COMMENT, REFRESH, SELECT INTO ...
	kindSession                  // SET, RESET, SET ROLE, SET SESSION AUTHORIZATION, DISCARD
	kindTx                       // BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET TRANSACTION ...
	kindCall                     // CALL
	kindDo                       // DO
	kindLock                     // LOCK
	kindOther                    // SHOW, EXPLAIN, LISTEN, VACUUM, FETCH, PREPARE, ...
)

var kindNames = [...]string{"empty", "select", "values", "insert", "update", "delete", "merge",
	"truncate", "copy from", "copy to", "ddl", "session", "tx", "call", "do", "lock", "other"}

// String names the kind for Explain and logs.
func (k stmtKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// analysis is everything the engine needs to know about one SQL string.
// It is built once per distinct string and then shared read-only.
type analysis struct {
	normalized       string   // tokens joined by single spaces, identifiers and keywords folded, comments and trailing semicolons removed, literals exact
	fingerprint      [16]byte // xxh3-128 of normalized
	check            [16]byte // xxh3-128 of normalized with checkSeed, for entry checks
	kind             stmtKind // of the first statement
	multi            bool     // more than one statement in the string
	reads            []string // tags of tables read, first-seen order, no duplicates
	writes           []string // tags of tables written by any statement, first-seen order
	unknownWrite     bool     // CALL, DO, EXECUTE, DROP ... CASCADE, TRUNCATE ... CASCADE, DDL not scoped to named relations (see unscoped), unrecognized statements
	sessionChange    bool     // SET (also SET LOCAL), RESET, DISCARD, SET ROLE, set_config(), creating a temporary relation
	sessionLasting   bool     // a session change that outlives the transaction: any but SET LOCAL
	discardAll       bool     // a DISCARD ALL: the session is as a new connection's
	txControl        bool     // BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET TRANSACTION, ...
	txEnd            txEffect // what the string's last BEGIN, COMMIT, ROLLBACK ... leaves
	txCommits        bool     // a COMMIT or END (with or without AND CHAIN)
	txRollsBack      bool     // a ROLLBACK or ABORT (not to a savepoint) or PREPARE TRANSACTION
	txPrepares       bool     // a PREPARE TRANSACTION
	commitPrepared   bool     // COMMIT PREPARED: commits writes this connection did not see
	runsCode         bool     // CALL, DO, EXECUTE: code the text does not show, which may change the session too
	commitsMidway    bool     // CALL, DO, DETACH PARTITION ... CONCURRENTLY: may commit part of itself, then fail
	ddl              bool     // the catalog may have changed
	events           bool     // REFRESH MATERIALIZED VIEW: fires event triggers as DDL does
	cascade          bool     // TRUNCATE ... CASCADE
	locking          bool     // FOR UPDATE/SHARE/NO KEY UPDATE/KEY SHARE, or LOCK
	functions        []string // user functions called, each part of the name as a tag, dot-joined; built-ins left out
	attrCalls        []string // names that may call a function in attribute notation (u.order_count is order_count(u)), as tags; most are columns
	attrMany         bool     // more than attrMax of them: any function may be called so
	operators        []string // the operators used, which a user function may implement (a <@> b calls its oprcode)
	opMany           bool     // more than attrMax of them: any operator may be used
	casts            []string // the types cast to (x::t, CAST(x AS t)), bare, which a user function may convert to
	castMany         bool     // more than attrMax of them: any cast may be used
	notCacheable     string   // "" when a cached read may be registered, else why not
	nondeterministic bool     // notCacheable only because of now(), random(), current_user, ...
	scsOff           bool     // may turn standard_conforming_strings off (SET, set_config), after which this lexer would misread the connection's next strings
	scsAsk           bool     // set_config of a setting the text does not name: the session must say whether that was it
}

// txEffect is what transaction control leaves a session in.
type txEffect uint8

const (
	txKept   txEffect = iota // no BEGIN, COMMIT, ROLLBACK ...: as before (savepoints, SET TRANSACTION)
	txOpen                   // in a transaction block: BEGIN, START TRANSACTION, ... AND CHAIN
	txClosed                 // out of one: COMMIT, END, ROLLBACK, ABORT, PREPARE TRANSACTION
)

// memoMaxQuery is the longest SQL string the memo keeps; longer strings
// (bulk inserts with inlined values) are analyzed each time rather than
// pinned in memory.
const memoMaxQuery = 8 << 10

// memoShardCap bounds each shard; with memoShards shards the memo holds at
// most 64K analyses.
const (
	memoShards   = 64
	memoShardCap = 1024
)

// memoShard is one lock's worth of the memo.
type memoShard struct {
	mu sync.RWMutex // guards m
	m  map[string]*analysis
}

// memo caches analyses by raw SQL text. A full shard drops one arbitrary
// entry per insert: statements an application repeats come back at once.
var memo struct {
	seed   maphash.Seed
	shards [memoShards]memoShard
}

func init() { memo.seed = maphash.MakeSeed() }

// analyze returns the analysis of query, from the memo when it has been
// seen before. The result is shared: callers must not modify it. It is
// safe for concurrent use.
func analyze(query string) *analysis {
	if len(query) > memoMaxQuery {
		return analyzeUncached(query)
	}
	sh := &memo.shards[maphash.String(memo.seed, query)%memoShards]
	sh.mu.RLock()
	a, ok := sh.m[query]
	sh.mu.RUnlock()
	if ok {
		return a
	}
	a = analyzeUncached(query)
	sh.store(strings.Clone(query), a)
	return a
}

// store adds a to the shard, evicting one entry if the shard is full.
func (sh *memoShard) store(query string, a *analysis) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil {
		sh.m = make(map[string]*analysis)
	}
	if len(sh.m) >= memoShardCap {
		for k := range sh.m {
			delete(sh.m, k)
			break
		}
	}
	sh.m[query] = a
}

// analyzeUncached analyzes query from scratch.
func analyzeUncached(query string) *analysis {
	p := newParser(query)
	a := p.a
	a.normalized = p.normalize()
	a.fingerprint = fingerprintOf(a.normalized)
	a.check = xxh3.HashString128Seed(a.normalized, checkSeed).Bytes()
	p.statements()
	a.notCacheable, a.nondeterministic = p.cacheability()
	return a
}

// fingerprintOf hashes a normalized statement.
func fingerprintOf(normalized string) [16]byte {
	return xxh3.HashString128(normalized).Bytes()
}

// cte is a WITH name and the token range in which it hides a table.
type cte struct {
	tag        string
	start, end int
}

// parser holds the tokens of one SQL string and the analysis being built.
type parser struct {
	src     string
	toks    []token
	match   []int32 // for each ( or [, the index of its closer; -1 when unclosed
	a       *analysis
	ctes    []cte
	nondet  string // the first non-deterministic built-in seen
	temp    bool   // a pg_temp table is referenced
	catalog bool   // a system catalog is read
	opaque  bool   // a U&"" name has an escape character the analysis cannot read
	unseen  string // the first built-in seen that reads what no tag covers (see unseenBuiltins)
	selInto bool   // SELECT ... INTO creates a table
	junk    bool   // a number or parameter glued to a name: see lexer.junk
}

// newParser lexes query into tokens.
func newParser(query string) *parser {
	p := &parser{src: query, a: &analysis{}}
	l := newLexer(query)
	p.toks = make([]token, 0, len(query)/5+4)
	for t := l.next(); t.kind != tokEOF; t = l.next() {
		p.toks = append(p.toks, t)
	}
	p.junk = l.junk
	p.matchGroups()
	return p
}

// matchGroups pairs every ( or [ with its closer once, so that skipping a
// group costs O(1) and nested subqueries cannot make analysis quadratic.
func (p *parser) matchGroups() {
	p.match = make([]int32, len(p.toks))
	var open []int32
	for i := range p.toks {
		p.match[i] = -1
		switch {
		case p.isPunct(i, '(') || p.isPunct(i, '['):
			open = append(open, int32(i))
		case (p.isPunct(i, ')') || p.isPunct(i, ']')) && len(open) > 0:
			p.match[open[len(open)-1]] = int32(i)
			open = open[:len(open)-1]
		}
	}
}

// normalize joins the tokens with single spaces, folding unquoted
// identifiers and keywords, and drops trailing semicolons.
func (p *parser) normalize() string {
	n := len(p.toks)
	for n > 0 && p.isPunct(n-1, ';') {
		n--
	}
	var b strings.Builder
	b.Grow(len(p.src))
	for i := 0; i < n; i++ {
		t := p.toks[i]
		if i > 0 && !p.glued(i) {
			b.WriteByte(' ')
		}
		if t.kind != tokIdent {
			b.WriteString(p.src[t.start:t.end])
			continue
		}
		for j := t.start; j < t.end; j++ {
			b.WriteByte(lower(p.src[j]))
		}
	}
	return b.String()
}

// intoNameAfter reports whether a name follows the word at i in SELECT
// INTO, so that the word is a modifier (INTO TEMP t) rather than the new
// table's name (INTO temp, which creates "temp"): the words that may follow
// the name are reserved.
func (p *parser) intoNameAfter(i int) bool {
	return p.isName(i+1) && !p.isAny(i+1, "from", "where", "group", "having", "window",
		"union", "intersect", "except", "order", "limit", "offset", "fetch", "for")
}

// glued reports whether token i is a name that follows a number or a
// parameter without a break ("$1limit"), which normalization keeps: the
// junk is an error on Postgres 15 and later, "$1 limit" is not.
func (p *parser) glued(i int) bool {
	prev := p.toks[i-1]
	return p.junk && p.toks[i].kind == tokIdent && prev.end == p.toks[i].start &&
		(prev.kind == tokNumber || prev.kind == tokParam)
}

// text returns the raw text of token i.
func (p *parser) text(i int) string {
	t := p.toks[i]
	return p.src[t.start:t.end]
}

// is reports whether token i is the unquoted keyword kw (given in lower
// case). Out-of-range indexes are never a keyword.
func (p *parser) is(i int, kw string) bool {
	if i < 0 || i >= len(p.toks) || p.toks[i].kind != tokIdent {
		return false
	}
	t := p.toks[i]
	if t.end-t.start != len(kw) {
		return false
	}
	for j := 0; j < len(kw); j++ {
		if lower(p.src[t.start+j]) != kw[j] {
			return false
		}
	}
	return true
}

// isAny reports whether token i is one of the keywords.
func (p *parser) isAny(i int, kws ...string) bool {
	for _, kw := range kws {
		if p.is(i, kw) {
			return true
		}
	}
	return false
}

// isPunct reports whether token i is the one-byte punctuation or operator c.
func (p *parser) isPunct(i int, c byte) bool {
	if i < 0 || i >= len(p.toks) {
		return false
	}
	t := p.toks[i]
	return t.end-t.start == 1 && p.src[t.start] == c && (t.kind == tokPunct || t.kind == tokOp)
}

// isName reports whether token i can be (part of) a relation name.
func (p *parser) isName(i int) bool {
	return i >= 0 && i < len(p.toks) && (p.toks[i].kind == tokIdent || p.toks[i].kind == tokQIdent)
}

// closing returns the index of the ) that closes the ( at i, or end when
// the group is not closed before end.
func (p *parser) closing(i, end int) int {
	if i < 0 || i >= len(p.match) || p.match[i] < 0 || int(p.match[i]) > end {
		return end
	}
	return int(p.match[i])
}

// statements splits the tokens on top-level semicolons and analyzes each.
// The semicolons of a BEGIN ATOMIC ... END function body do not split: the
// body is part of its CREATE FUNCTION, and its END is no COMMIT.
func (p *parser) statements() {
	start, depth, count := 0, 0, 0
	atomic, cases := false, 0 // in a BEGIN ATOMIC body, and its open CASEs
	for i := 0; i <= len(p.toks); i++ {
		switch {
		case i < len(p.toks) && (p.isPunct(i, '(') || p.isPunct(i, '[')):
			depth++
		case i < len(p.toks) && (p.isPunct(i, ')') || p.isPunct(i, ']')):
			depth--
		case !atomic && i > start && p.is(i, "begin") && p.is(i+1, "atomic") && p.createsRoutine(start):
			atomic, cases = true, 0
		case atomic && p.is(i, "case"):
			cases++
		case atomic && p.is(i, "end"):
			if cases--; cases < 0 {
				atomic = false
			}
		case atomic && i < len(p.toks):
			// inside the body: no split
		case i == len(p.toks) || (depth <= 0 && p.isPunct(i, ';')):
			if i > start {
				k := p.statement(start, i)
				if count == 0 {
					p.a.kind = k
				}
				count++
			}
			start, depth = i+1, 0
		}
	}
	p.a.multi = count > 1
}

// createsRoutine reports whether the statement at s is CREATE [OR
// REPLACE] FUNCTION or PROCEDURE, the only ones with a BEGIN ATOMIC body.
func (p *parser) createsRoutine(s int) bool {
	if !p.is(s, "create") {
		return false
	}
	if p.is(s+1, "or") && p.is(s+2, "replace") {
		s += 2
	}
	return p.isAny(s+1, "function", "procedure")
}

// tagOf returns the tag of the name token i: unquoted names fold to lower
// case, quoted names lose their quotes and doubled quotes, U&"" names have
// their escapes decoded, and all are cut to the length the server keeps.
func (p *parser) tagOf(i int) string {
	s := p.text(i)
	if p.toks[i].kind == tokIdent {
		return clipName(asciiLower(s))
	}
	uni := false
	if len(s) > 2 && (s[0] == 'u' || s[0] == 'U') {
		s, uni = s[2:], true
	}
	s = strings.TrimPrefix(s, `"`)
	s = strings.TrimSuffix(s, `"`)
	s = strings.ReplaceAll(s, `""`, `"`)
	if uni {
		s = decodeUnicodeEscapes(s, p.uescape(i))
	}
	return clipName(s)
}

// maxNameLen is the longest identifier the server keeps, in bytes
// (NAMEDATALEN - 1).
const maxNameLen = 63

// clipName cuts a name as the server does (truncate_identifier): to
// maxNameLen bytes, at a UTF-8 character's start. "t…x_a" and "t…x_b"
// that differ after that byte name one table, and must have one tag.
func clipName(s string) string {
	if len(s) <= maxNameLen {
		return s
	}
	n := maxNameLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// uescape returns the escape character of the U&"" name at i: \ unless a
// UESCAPE 'c' clause follows. A clause spelled otherwise (E'\041') makes
// the statement opaque, and the name keeps its raw text.
func (p *parser) uescape(i int) byte {
	if !p.is(i+1, "uescape") || i+2 >= len(p.toks) {
		return '\\'
	}
	s := p.text(i + 2)
	switch {
	case len(s) == 3 && s[0] == '\'' && s[2] == '\'' && s[1] != '\'':
		return s[1]
	case len(s) == 5 && s[:2] == "$$" && s[3:] == "$$":
		return s[2]
	}
	p.opaque, p.a.unknownWrite = true, true
	return 0
}

// asciiLower folds ASCII letters, leaving other bytes (UTF-8) alone as the
// server does.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lower(b[j])
			}
			return string(b)
		}
	}
	return s
}

// decodeUnicodeEscapes decodes a U&"" name as the server does
// (str_udeescape): the escape byte esc followed by esc, by XXXX or by
// +XXXXXX, UTF-16 surrogate pairs joined. A name the server rejects keeps
// its raw text (also when esc is 0): the statement fails anyway.
func decodeUnicodeEscapes(s string, esc byte) string {
	var b strings.Builder
	var high rune // a first surrogate waiting for its second
	for i := 0; i < len(s); i++ {
		r, n := rune(s[i]), 0
		if esc != 0 && s[i] == esc {
			if r, n = unicodeEscape(s, i, esc); n == 0 {
				return s
			}
		}
		switch {
		case high != 0 && !utf16.IsSurrogate(r):
			return s
		case high != 0 && r >= 0xDC00:
			r, high = utf16.DecodeRune(high, r), 0
		case high != 0 || r >= 0xDC00 && r <= 0xDFFF:
			return s // a second surrogate alone
		case utf16.IsSurrogate(r):
			high, i = r, i+n
			continue
		}
		if n == 0 {
			b.WriteByte(s[i])
		} else {
			b.WriteRune(r)
		}
		i += n
	}
	if high != 0 {
		return s
	}
	return b.String()
}

// unicodeEscape reads the escape at s[i] (which is esc) and returns its
// code point and how many bytes follow esc, or 0 bytes when it is invalid.
func unicodeEscape(s string, i int, esc byte) (r rune, n int) {
	if i+1 < len(s) && s[i+1] == esc {
		return rune(esc), 1
	}
	n = 4
	if i+1 < len(s) && s[i+1] == '+' {
		n = 7
	}
	r, ok := parseHexRune(s, i+1, n)
	if !ok || r == 0 || r > unicode.MaxRune {
		return 0, 0
	}
	return r, n
}

// parseHexRune reads n bytes at s[i:] as hex ('+' first when n is 7).
func parseHexRune(s string, i, n int) (rune, bool) {
	if i+n > len(s) {
		return 0, false
	}
	var r rune
	for j := i; j < i+n; j++ {
		c := lower(s[j])
		switch {
		case j == i && n == 7 && c == '+':
		case isDigit(c):
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// qualifiedName reads name(.name)* at i and returns the index of its last
// part, the index after it, and whether the name had a schema.
func (p *parser) qualifiedName(i, end int) (last, next int, qualified bool) {
	last, next = i, p.afterName(i)
	for next+1 < end && p.isPunct(next, '.') && p.isName(next+1) {
		last, next = next+1, p.afterName(next+1)
	}
	return last, next, last > i
}

// afterName returns the index after the name token i and its UESCAPE
// clause, if any.
func (p *parser) afterName(i int) int {
	if p.toks[i].kind == tokQIdent && p.is(i+1, "uescape") && i+2 < len(p.toks) &&
		p.toks[i+2].kind == tokString {
		return i + 3
	}
	return i + 1
}

// addUnique appends s to list unless present.
func addUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// addWrite records a written relation named at i (possibly qualified).
func (p *parser) addWrite(i, end int) (next int) {
	if !p.isName(i) {
		return i + 1
	}
	last, next, _ := p.qualifiedName(i, end)
	p.a.writes = addUnique(p.a.writes, p.tagOf(last))
	return next
}

// addTarget records the written relation at i, written name, ONLY name or
// ONLY ( name ), and returns the index after it.
func (p *parser) addTarget(i, e int) (next int) {
	if !p.is(i, "only") {
		return p.addWrite(i, e)
	}
	if !p.isPunct(i+1, '(') {
		return p.addWrite(i+1, e)
	}
	next = p.addWrite(i+2, e)
	if p.isPunct(next, ')') {
		next++
	}
	return next
}

// addRead records a read relation named at i unless a CTE of the same name
// is in scope, and notes temporary and catalog tables.
func (p *parser) addRead(i, last int, qualified bool) {
	tag := p.tagOf(last)
	if qualified {
		schema := p.tagOf(i)
		p.temp = p.temp || strings.HasPrefix(schema, "pg_temp")
		p.catalog = p.catalog || schema == "pg_catalog" || schema == "information_schema"
	} else {
		if p.inCTE(tag, i) {
			return
		}
		p.catalog = p.catalog || strings.HasPrefix(tag, "pg_")
	}
	p.a.reads = addUnique(p.a.reads, tag)
}

// inCTE reports whether a WITH name tag is visible at token i.
func (p *parser) inCTE(tag string, i int) bool {
	for _, c := range p.ctes {
		if c.tag == tag && i >= c.start && i < c.end {
			return true
		}
	}
	return false
}

// statement analyzes tokens [s, e) as one statement and returns its kind.
func (p *parser) statement(s, e int) stmtKind {
	main := p.skipWith(s, e)
	switch {
	case main >= e:
		return kindSelect
	case p.isPunct(main, '(') || p.isAny(main, "select", "table"):
		p.queryRefs(s, e)
		return p.selectInto(main, e)
	case p.is(main, "values"):
		p.queryRefs(s, e)
		return kindValues
	case p.isAny(main, "insert", "update", "delete", "merge"):
		p.queryRefs(s, e) // first, so that writes come in text order
		p.dml(main, e)
		return dmlKind(p, main)
	}
	return p.utility(s, e)
}

// dmlKind maps a DML keyword to its kind.
func dmlKind(p *parser, i int) stmtKind {
	switch {
	case p.is(i, "insert"):
		return kindInsert
	case p.is(i, "update"):
		return kindUpdate
	case p.is(i, "delete"):
		return kindDelete
	}
	return kindMerge
}

// skipWith returns the index of the main statement after a WITH clause,
// or s when there is none. The CTE bodies are analyzed by queryRefs. The
// clause is read by its shape, as any non-reserved keyword (UPDATE,
// DELETE, VALUES, ...) may name a CTE; a clause of another shape falls
// back to the first statement keyword outside parentheses.
func (p *parser) skipWith(s, e int) int {
	if !p.is(s, "with") {
		return s
	}
	if main := p.withEnd(s, e); main >= 0 {
		return main
	}
	for i := s + 1; i < e; i++ {
		switch {
		case p.isPunct(i, '('):
			afterAS := p.is(i-1, "as") || p.is(i-1, "materialized")
			if !afterAS && p.isPunct(i-1, ')') {
				return i // WITH x AS (...) (SELECT ...)
			}
			i = p.closing(i, e)
		case p.isAny(i, "select", "insert", "update", "delete", "merge", "values", "table"):
			return i
		}
	}
	return e
}

// withEnd reads WITH [RECURSIVE] name [(columns)] AS [NOT] [MATERIALIZED]
// (body) [SEARCH ...] [CYCLE ...] [, ...] at s and returns the index of
// the statement after it, or -1 when the clause has another shape.
func (p *parser) withEnd(s, e int) int {
	i := s + 1
	if p.is(i, "recursive") {
		i++
	}
	for i < e && p.isName(i) {
		i = p.afterName(i)
		if p.isPunct(i, '(') {
			i = p.closing(i, e) + 1
		}
		if !p.is(i, "as") {
			return -1
		}
		for i++; p.isAny(i, "not", "materialized"); i++ {
		}
		if !p.isPunct(i, '(') || p.closing(i, e) >= e {
			return -1
		}
		i = p.searchCycle(p.closing(i, e)+1, e)
		switch {
		case p.isPunct(i, ','):
			i++
		case p.isPunct(i, '(') || p.isAny(i, "select", "insert", "update", "delete", "merge", "values", "table"):
			return i
		default:
			return -1
		}
	}
	return -1
}

// searchCycle returns the index after the SEARCH and CYCLE clauses of a
// CTE at i, if any: SEARCH ... BY a, b SET c and CYCLE a, b SET c
// [TO v DEFAULT d] USING p, whose column names may be keywords too.
func (p *parser) searchCycle(i, e int) int {
	if p.is(i, "search") {
		for i++; i < e && !p.is(i, "by"); i++ {
		}
		i = p.setColumn(i+1, e)
	}
	if p.is(i, "cycle") {
		for i = p.setColumn(i+1, e); i < e && !p.is(i, "using"); i++ { // USING is reserved
		}
		i += 2
	}
	return min(i, e)
}

// setColumn skips the column list a, b at i and SET c after it, and
// returns the index after c.
func (p *parser) setColumn(i, e int) int {
	for p.isName(i) && p.isPunct(i+1, ',') {
		i += 2
	}
	return i + 3 // the last column, SET and c
}

// selectInto handles SELECT ... INTO t, which creates a table: a DDL
// statement that writes t. Otherwise it is a plain SELECT.
func (p *parser) selectInto(main, e int) stmtKind {
	if p.isPunct(main, '(') { // (SELECT ... INTO t ...)
		end := p.closing(main, e)
		return p.selectInto(p.skipWith(main+1, end), end)
	}
	for i := main; i < e; i++ {
		switch {
		case p.isPunct(i, '('):
			i = p.closing(i, e)
		case p.isAny(i, "from", "union", "intersect", "except"):
			return kindSelect
		case p.is(i, "into"):
			j, temp := i+1, false
			for p.isAny(j, "temp", "temporary", "unlogged", "table", "local", "global") && p.intoNameAfter(j) {
				temp = temp || p.isAny(j, "temp", "temporary")
				j++
			}
			p.created(j, e, temp)
			p.addWrite(j, e)
			p.selInto, p.a.ddl = true, true
			return kindDDL
		}
	}
	return kindSelect
}

// dml records the target of INSERT/UPDATE/DELETE/MERGE starting at i, and
// the USING sources of DELETE and MERGE.
func (p *parser) dml(i, e int) {
	j := i + 1
	if p.isAny(i, "insert", "merge") || p.is(i, "delete") {
		j++ // INTO / FROM
	}
	next := p.addTarget(j, e)
	if !p.isAny(i, "delete", "merge") {
		return
	}
	for k := next; k < e; k++ {
		switch {
		case p.isPunct(k, '('):
			k = p.closing(k, e)
		case p.is(k, "using") && p.is(i, "delete"):
			p.fromList(k+1, e)
			return
		case p.is(k, "using"):
			p.tableRef(k+1, e)
			return
		case p.isAny(k, "where", "returning", "on"):
			return
		}
	}
}

// queryRefs scans the tokens of a query for table references, WITH names,
// data-modifying CTEs, locking clauses and function calls.
func (p *parser) queryRefs(s, e int) {
	var groups []int // indexes of the open parentheses around i
	for i := s; i < e; i++ {
		switch {
		case p.isPunct(i, '('):
			groups = append(groups, i)
			if p.isAny(i+1, "insert", "update", "delete", "merge") {
				p.dml(i+1, p.closing(i, e))
			}
		case p.isPunct(i, ')'):
			if len(groups) > 0 {
				groups = groups[:len(groups)-1]
			}
		case p.is(i, "with"):
			p.withNames(i, p.scopeEnd(groups, e))
			p.nestedDML(i, p.scopeEnd(groups, e))
		case p.is(i, "from") && p.tableFrom(i, s, e, groups):
			p.fromList(i+1, e)
		case p.isAny(i, "join", "table"):
			p.tableRef(i+1, e)
		case p.is(i, "for"):
			p.lockingClause(i)
		case p.is(i, "as") && p.castAs(i+1, e): // CAST(x AS t), or an alias before )
			p.castTo(i + 1)
		case p.isName(i):
			p.call(i, e)
		case p.toks[i].kind == tokString:
			p.timeLiteral(i)
		case p.toks[i].kind == tokOp:
			p.operator(i)
		case p.toks[i].kind == tokPunct && p.text(i) == "::":
			p.castTo(i + 1)
		}
	}
}

// castAs reports whether the name at i, after AS, is followed by ): the
// type of CAST(x AS t), or an alias, which castTo takes for a type too.
func (p *parser) castAs(i, e int) bool {
	if !p.isName(i) {
		return false
	}
	_, next, _ := p.qualifiedName(i, e)
	return p.isPunct(next, ')')
}

// castTo notes a cast to the type named at i (its last part): a user
// function may convert to it (see funcIndex.castFuncs), and a cast to one
// of the OID types (regclass, regtype, ...) reads the catalog by the name
// or number it is given.
func (p *parser) castTo(i int) {
	if !p.isName(i) {
		return
	}
	if name, ok := p.regType(i); ok {
		p.noteUnseen(name)
	}
	for _, n := range p.castNames(i) {
		p.a.casts, p.a.castMany = addCapped(p.a.casts, p.a.castMany, n)
	}
}

// regType returns the type named at i, which is a name, and whether it
// is one of the OID types (regclass, regtype, ...): a cast to one reads
// the catalog by the name or number it converts.
func (p *parser) regType(i int) (string, bool) {
	last, _, _ := p.qualifiedName(i, len(p.toks))
	name := p.tagOf(last)
	return name, strings.HasPrefix(name, "reg") && unseenBuiltins[name] == catalogByName
}

// castNames returns the catalog's names of the type named at i, which is
// a name.
func (p *parser) castNames(i int) []string {
	last, _, _ := p.qualifiedName(i, len(p.toks))
	name := p.tagOf(last)
	if names, ok := typeAliases[name]; ok {
		return names
	}
	return []string{name}
}

// typeAliases are the catalog's names (pg_type.typname) of the built-in
// types SQL spells otherwise, by the first word of that spelling.
var typeAliases = map[string][]string{
	"bigint": {"int8"}, "int": {"int4"}, "integer": {"int4"}, "smallint": {"int2"},
	"real": {"float4"}, "double": {"float8"}, "float": {"float8", "float4"}, "boolean": {"bool"},
	"decimal": {"numeric"}, "dec": {"numeric"}, "character": {"bpchar", "varchar"}, "char": {"bpchar"},
	"timestamp": {"timestamp", "timestamptz"}, "time": {"time", "timetz"}, "bit": {"bit", "varbit"},
}

// operator notes the operator at i: a user-defined one calls its function
// (see funcIndex.opFuncs). Most are built-in; only the catalog can tell.
func (p *parser) operator(i int) {
	p.a.operators, p.a.opMany = addCapped(p.a.operators, p.a.opMany, p.text(i))
}

// addCapped adds s to list, once, unless many is set: past attrMax
// entries the list goes and many is set (any may be there).
func addCapped(list []string, many bool, s string) ([]string, bool) {
	switch {
	case many:
	case len(list) < attrMax:
		list = addUnique(list, s)
	case !slices.Contains(list, s):
		list, many = nil, true
	}
	return list, many
}

// hiddenCalls reports names in a that may call user functions the text
// does not name: attribute notation, operators, casts (see callsOf).
func (a *analysis) hiddenCalls() bool {
	return len(a.attrCalls) > 0 || a.attrMany || len(a.operators) > 0 || a.opMany ||
		len(a.casts) > 0 || a.castMany
}

// nestedDML records the target of a data-modifying statement that follows
// the WITH at i inside parentheses: (WITH b AS (...) DELETE FROM t ...)
// writes t as much as (DELETE FROM t ...). It runs after withNames, so
// that the statement's USING sees the WITH names.
func (p *parser) nestedDML(i, scope int) {
	if !p.isPunct(i-1, '(') {
		return
	}
	main := p.skipWith(i, scope)
	if p.isAny(main, "insert", "update", "delete", "merge") {
		p.dml(main, scope)
	}
}

// scopeEnd is where the innermost group around a WITH ends.
func (p *parser) scopeEnd(groups []int, e int) int {
	if len(groups) == 0 {
		return e
	}
	return p.closing(groups[len(groups)-1], e)
}

// tableFrom tells a FROM that starts a table list from the FROM of
// IS DISTINCT FROM, of the DELETE FROM that starts a statement, and of
// function arguments such as extract(year FROM x) or substring(s FROM 2).
// A DELETE or ROWS before any other FROM is a column alias
// (count(*) AS rows FROM t); the FROM of ROWS FROM (f(), ...) may pass for
// a table list, as its items are calls.
func (p *parser) tableFrom(i, s, e int, groups []int) bool {
	if p.is(i-1, "distinct") {
		return false
	}
	start := s
	if len(groups) > 0 {
		start = groups[len(groups)-1] + 1
		e = p.closing(start-1, e)
	}
	if p.is(i-1, "delete") && p.skipWith(start, e) == i-1 {
		return false
	}
	return len(groups) == 0 || p.isPunct(start, '(') ||
		p.isAny(start, "select", "with", "values", "table", "insert", "update", "delete", "merge")
}

// withNames records the names a WITH clause at i defines. A name hides a
// table of the same name from the end of its own body (from the name on,
// if RECURSIVE) to the end of the enclosing query, as in the server.
func (p *parser) withNames(i, scope int) {
	j := i + 1
	recursive := p.is(j, "recursive")
	if recursive {
		j++
	}
	for p.isName(j) {
		tag, nameAt := p.tagOf(j), j
		j++
		if p.isPunct(j, '(') {
			j = p.closing(j, scope) + 1
		}
		if !p.is(j, "as") {
			return
		}
		for j++; p.isAny(j, "not", "materialized"); j++ {
		}
		if !p.isPunct(j, '(') {
			return
		}
		j = p.closing(j, scope) + 1
		start := j
		if recursive {
			start = nameAt
		}
		p.ctes = append(p.ctes, cte{tag: tag, start: start, end: scope})
		if j = p.nextCTE(j, scope); j < 0 {
			return
		}
	}
}

// nextCTE skips a SEARCH or CYCLE clause and returns the index after the
// comma that starts the next CTE, or -1 when the list has ended.
func (p *parser) nextCTE(j, scope int) int {
	for ; j < scope; j++ {
		switch {
		case p.isPunct(j, ','):
			return j + 1
		case !p.isAny(j, "search", "cycle", "depth", "breadth", "first", "by", "set", "to", "default", "using") &&
			!p.isName(j) && !p.isPunct(j, '.'):
			return -1
		case p.isAny(j, "select", "insert", "update", "delete", "merge", "values", "table"):
			return -1
		}
	}
	return -1
}

// fromEnd lists the keywords that end a FROM list. All are reserved: a
// non-reserved one (SET) may be an alias or a column name in the list.
var fromEnd = []string{"where", "group", "having", "window", "order", "limit", "offset", "fetch",
	"for", "union", "intersect", "except", "returning", "do", "when", "into", "then"}

// fromList reads a comma-separated list of table references at i.
func (p *parser) fromList(i, e int) {
	for i >= 0 && i < e {
		i = p.tableRef(i, e)
		i = p.afterComma(i, e)
	}
}

// afterComma skips the rest of one FROM item (aliases, joins and their
// conditions; joined tables are found by queryRefs) and returns the index
// after the comma that starts the next item, or -1 at the end of the list.
func (p *parser) afterComma(i, e int) int {
	for j := i; j < e; j++ {
		switch {
		case p.isPunct(j, '(') || p.isPunct(j, '['):
			j = p.closing(j, e)
		case p.is(j, "case"): // in a join condition: its WHEN and THEN end nothing
			j = p.caseEnd(j, e)
		case p.isPunct(j, ')') || p.isPunct(j, ';'):
			return -1
		case p.isPunct(j, ','):
			return j + 1
		case p.is(j, "on") && p.is(j+1, "conflict"):
			return -1
		case p.isAny(j, fromEnd...):
			return -1
		}
	}
	return -1
}

// caseEnd returns the index of the END that closes the CASE at i, or e
// when it is not closed.
func (p *parser) caseEnd(i, e int) int {
	open := 0
	for j := i; j < e; j++ {
		switch {
		case p.isPunct(j, '(') || p.isPunct(j, '['):
			j = p.closing(j, e)
		case p.is(j, "case"):
			open++
		case p.is(j, "end"):
			if open--; open == 0 {
				return j
			}
		}
	}
	return e
}

// tableRef reads one table reference at i and returns the index after
// its name. Subqueries and functions in FROM are not tables; queryRefs
// finds the tables inside subqueries and records the functions.
func (p *parser) tableRef(i, e int) int {
	for p.isAny(i, "lateral", "only") {
		i++
	}
	if p.isPunct(i, '(') {
		if !p.isAny(i+1, "select", "with", "values", "table") {
			p.tableRef(i+1, e) // a parenthesized join
		}
		return i
	}
	if !p.isName(i) || p.is(i, "rows") && p.is(i+1, "from") {
		return i
	}
	last, next, qualified := p.qualifiedName(i, e)
	if p.isPunct(next, '(') {
		return next
	}
	p.addRead(i, last, qualified)
	return next
}

// lockingClause notes FOR UPDATE, FOR SHARE, FOR NO KEY UPDATE and
// FOR KEY SHARE at i.
func (p *parser) lockingClause(i int) {
	if p.isAny(i+1, "update", "share") || p.is(i+1, "no") && p.is(i+2, "key") ||
		p.is(i+1, "key") && p.is(i+2, "share") {
		p.a.locking = true
	}
}

// nondetBuiltins are built-ins whose result changes between calls or
// depends on the session; a query that uses one is not cached unless its
// policy allows it. Written without parentheses, the keyword forms
// (current_user, current_timestamp, ...) are functions too.
var nondetBuiltins = map[string]bool{
	"now": true, "random": true, "random_normal": true, "setseed": true,
	"clock_timestamp": true, "statement_timestamp": true, "transaction_timestamp": true,
	"timeofday": true, "current_timestamp": true, "current_time": true, "current_date": true,
	"localtime": true, "localtimestamp": true, "nextval": true, "currval": true, "setval": true,
	"lastval": true, "txid_current": true, "txid_current_if_assigned": true,
	"txid_current_snapshot": true, "pg_current_xact_id": true, "pg_current_xact_id_if_assigned": true,
	"pg_current_snapshot": true, "pg_sleep": true, "pg_sleep_for": true, "pg_sleep_until": true,
	"gen_random_uuid": true, "uuidv4": true, "uuidv7": true, "current_user": true,
	"session_user": true, "user": true, "current_role": true, "current_schema": true,
	"current_schemas": true, "current_setting": true, "inet_client_addr": true,
	"inet_client_port": true, "inet_server_addr": true, "inet_server_port": true,
	"pg_backend_pid": true, "pg_postmaster_start_time": true, "pg_conf_load_time": true,
	"pg_my_temp_schema": true, "pg_trigger_depth": true, "pg_stat_get_activity": true,
}

// unseenKind is why a built-in reads what no tag covers.
type unseenKind uint8

const (
	runsSQL       unseenKind = iota + 1 // runs SQL of its own: a query given as text, or over the tables an argument names
	largeObject                         // reads large objects, which lo_put and the like write under no tag
	sequenceState                       // reads a sequence, which nextval and serial columns advance under no tag
	catalogByName                       // reads the system catalog by a name or number it is given, which DDL changes under no tag of the read
)

var unseenWhat = [...]string{runsSQL: "it runs SQL the analysis does not see",
	largeObject: "large objects", sequenceState: "a sequence",
	catalogByName: "the system catalog, by a name or OID it is given"}

// unseenBuiltins are the built-ins that read what no write's tag covers: a
// read that calls one is never cached, and a statement that calls one that
// runs SQL (which may call a volatile function, or set_config) is an
// unknown write that runs code. The xml functions over a table, a schema
// or the database read them through SQL of their own, as ts_stat and
// ts_rewrite run the query they are given (ts_rewrite's form of three
// tsquery arguments runs none, but is counted all the same).
var unseenBuiltins = map[string]unseenKind{
	"query_to_xml": runsSQL, "query_to_xmlschema": runsSQL, "query_to_xml_and_xmlschema": runsSQL,
	"cursor_to_xml": runsSQL, "cursor_to_xmlschema": runsSQL, "table_to_xml": runsSQL,
	"table_to_xmlschema": runsSQL, "table_to_xml_and_xmlschema": runsSQL, "schema_to_xml": runsSQL,
	"schema_to_xmlschema": runsSQL, "schema_to_xml_and_xmlschema": runsSQL, "database_to_xml": runsSQL,
	"database_to_xmlschema": runsSQL, "database_to_xml_and_xmlschema": runsSQL, "ts_stat": runsSQL,
	"ts_rewrite": runsSQL, "lo_get": largeObject, "loread": largeObject, "lo_open": largeObject,
	"pg_sequence_last_value": sequenceState,
	// A read of the catalog through these names no table its DDL tags:
	// to_regclass('t') is stale once t is created, pg_get_viewdef('v')
	// once v is replaced, obj_description once COMMENT runs.
	"to_regclass": catalogByName, "to_regcollation": catalogByName, "to_regnamespace": catalogByName,
	"to_regoper": catalogByName, "to_regoperator": catalogByName, "to_regproc": catalogByName,
	"to_regprocedure": catalogByName, "to_regrole": catalogByName, "to_regtype": catalogByName,
	"to_regtypemod": catalogByName, "pg_get_viewdef": catalogByName, "pg_get_functiondef": catalogByName,
	"pg_get_function_arguments": catalogByName, "pg_get_function_identity_arguments": catalogByName,
	"pg_get_function_result": catalogByName, "pg_get_function_sqlbody": catalogByName,
	"pg_get_indexdef": catalogByName, "pg_get_constraintdef": catalogByName,
	"pg_get_triggerdef": catalogByName, "pg_get_ruledef": catalogByName, "pg_get_expr": catalogByName,
	"pg_get_partkeydef": catalogByName, "pg_get_statisticsobjdef": catalogByName,
	"pg_get_serial_sequence": catalogByName, "pg_get_userbyid": catalogByName,
	"pg_describe_object": catalogByName, "pg_identify_object": catalogByName,
	"pg_identify_object_as_address": catalogByName, "pg_get_object_address": catalogByName,
	"obj_description": catalogByName, "col_description": catalogByName,
	"shobj_description": catalogByName, "format_type": catalogByName,
	"pg_table_is_visible": catalogByName, "pg_type_is_visible": catalogByName,
	"pg_function_is_visible": catalogByName, "pg_relation_filenode": catalogByName,
	"pg_relation_filepath": catalogByName,
	// So do casts to the OID types, and their functions of text:
	// 'users'::regclass names another table once users is dropped and
	// created again (see parser.regType).
	"regclass": catalogByName, "regcollation": catalogByName, "regconfig": catalogByName,
	"regdictionary": catalogByName, "regnamespace": catalogByName, "regoper": catalogByName,
	"regoperator": catalogByName, "regproc": catalogByName, "regprocedure": catalogByName,
	"regrole": catalogByName, "regtype": catalogByName,
}

// nondetKeywords may appear without parentheses; as keywords they are
// reserved, so an unquoted one is always the function.
var nondetKeywords = map[string]bool{
	"current_timestamp": true, "current_time": true, "current_date": true, "localtime": true,
	"localtimestamp": true, "current_user": true, "session_user": true, "user": true,
	"current_role": true, "current_schema": true,
}

// builtinFuncs are deterministic built-ins (and type names that take a
// modifier) left out of analysis.functions, so the engine looks up only
// what may be a user function.
var builtinFuncs = map[string]bool{
	"count": true, "sum": true, "avg": true, "min": true, "max": true, "coalesce": true,
	"nullif": true, "greatest": true, "least": true, "lower": true, "upper": true,
	"length": true, "char_length": true, "octet_length": true, "substring": true, "substr": true,
	"trim": true, "btrim": true, "ltrim": true, "rtrim": true, "concat": true, "concat_ws": true,
	"replace": true, "position": true, "strpos": true, "split_part": true, "left": true,
	"right": true, "lpad": true, "rpad": true, "abs": true, "round": true, "ceil": true,
	"ceiling": true, "floor": true, "trunc": true, "mod": true, "power": true, "sqrt": true,
	"extract": true, "date_part": true, "date_trunc": true, "to_char": true, "to_date": true,
	"to_number": true, "to_timestamp": true, "array_agg": true, "string_agg": true,
	"json_agg": true, "jsonb_agg": true, "json_build_object": true, "jsonb_build_object": true,
	"json_build_array": true, "jsonb_build_array": true, "json_object_agg": true,
	"jsonb_object_agg": true, "row_to_json": true, "to_json": true, "to_jsonb": true,
	"jsonb_set": true, "array_length": true, "unnest": true, "generate_series": true,
	"cardinality": true, "format": true, "md5": true, "encode": true, "decode": true,
	"row_number": true, "rank": true, "dense_rank": true, "lag": true, "lead": true,
	"first_value": true, "last_value": true, "ntile": true, "bool_and": true, "bool_or": true,
	"every": true, "array_to_string": true, "string_to_array": true, "regexp_replace": true,
	"regexp_matches": true, "regexp_split_to_array": true, "jsonb_array_elements": true,
	"json_array_elements": true, "jsonb_each": true, "json_each": true, "jsonb_object_keys": true,
	"array_position": true, "array_remove": true, "array_append": true, "exp": true, "ln": true,
	"log": true, "sign": true, "initcap": true, "reverse": true, "repeat": true, "starts_with": true,
	"numeric": true, "decimal": true, "varchar": true, "char": true, "character": true,
	"timestamp": true, "timestamptz": true, "time": true, "interval": true, "bit": true,
	"varbit": true, "float": true, "grouping": true, "percentile_cont": true,
	"percentile_disc": true, "mode": true, "stddev": true, "variance": true, "int4range": true,
	"int8range": true, "numrange": true, "tstzrange": true, "daterange": true,
}

// notCalls are keywords that may be followed by a parenthesis without
// being a function call.
var notCalls = map[string]bool{
	"in": true, "exists": true, "any": true, "all": true, "some": true, "values": true,
	"array": true, "row": true, "cast": true, "as": true, "over": true, "filter": true,
	"within": true, "using": true, "on": true, "and": true, "or": true, "not": true,
	"select": true, "where": true, "when": true, "then": true, "else": true, "is": true,
	"between": true, "like": true, "ilike": true, "lateral": true, "from": true, "join": true,
	"by": true, "set": true, "conflict": true, "do": true, "into": true, "table": true,
	"rollup": true, "cube": true, "sets": true, "distinct": true, "returning": true,
	"with": true, "materialized": true, "recursive": true, "only": true, "case": true,
	"update": true, "insert": true, "delete": true, "merge": true, "union": true,
	"intersect": true, "except": true, "limit": true, "offset": true, "having": true,
	"group": true, "order": true, "window": true, "partition": true, "return": true,
	"xmltable": true, "json_table": true, "treat": true, "overlay": true, "collate": true,
	"search": true, "cycle": true, "ordinality": true, "nulls": true, "default": true,
}

// timeTypes are the types before a literal (date 'today', timestamp(3)
// with time zone 'now') that read the special values below.
var timeTypes = map[string]bool{"date": true, "time": true, "timetz": true, "timestamp": true,
	"timestamptz": true, "zone": true, "daterange": true, "tsrange": true, "tstzrange": true,
	"datemultirange": true, "tsmultirange": true, "tstzmultirange": true}

// specialTimes are the date/time inputs the server reads as of the moment
// it parses them.
var specialTimes = []string{"now", "today", "tomorrow", "yesterday"}

// timeLiteral notes the string literal at i as non-deterministic when it
// holds a special time value and is cast ('now'::date, CAST('now' AS
// date), ('now')::date) or typed (date 'today'). An untyped comparison
// (status = 'today') is left alone.
func (p *parser) timeLiteral(i int) {
	value, known := p.stringValue(i)
	if known && !hasSpecialTime(value) {
		return
	}
	prev, next := i-1, i+1
	for p.isPunct(prev, '(') && p.isPunct(next, ')') {
		prev, next = prev-1, next+1
	}
	cast := next < len(p.toks) && p.text(next) == "::" ||
		p.is(next, "as") && p.isPunct(prev, '(') && p.is(prev-1, "cast")
	if !(cast && !p.castsToText(next)) && !p.typedLiteral(i) {
		return // 'today'::text is only text
	}
	if known {
		p.noteNondet("'" + strings.ToLower(strings.TrimSpace(value)) + "'")
	} else {
		p.noteNondet(p.text(i))
	}
}

// castsToText reports whether the chain of casts starting at the :: or AS
// at j converts only to types that read no date or time: 'today'::text is
// text, but 'now'::text::timestamptz and '[now,)'::tstzrange read the
// clock.
func (p *parser) castsToText(j int) bool {
	for j+1 < len(p.toks) && (p.text(j) == "::" || p.is(j, "as")) {
		if !p.isName(j + 1) {
			return false
		}
		last, next, _ := p.qualifiedName(j+1, len(p.toks)) // pg_catalog.timestamptz
		if !textTypes[p.tagOf(last)] {
			return false
		}
		j = next
	}
	return true
}

// textTypes are the cast targets that keep 'now' a plain string.
var textTypes = map[string]bool{"text": true, "varchar": true, "char": true, "character": true,
	"bpchar": true, "name": true, "json": true, "jsonb": true, "citext": true, "bytea": true}

// typedLiteral reports whether a date/time type name comes before the
// literal at i.
func (p *parser) typedLiteral(i int) bool {
	j := i - 1
	if p.isPunct(j, ')') && p.isPunct(j-2, '(') {
		j -= 3 // timestamp(3) 'now'
	}
	return p.isName(j) && timeTypes[p.tagOf(j)]
}

// stringValue returns the content of the string literal at i, and false
// when escapes hide it (E'\x6eow', U&'...').
func (p *parser) stringValue(i int) (string, bool) {
	s := p.text(i)
	if s[0] != '$' && strings.ContainsAny(s, "\n\r") {
		return s, false // maybe continued on another line: 'no'<newline>'w' is 'now'
	}
	switch lower(s[0]) {
	case 'e':
		return s, !strings.Contains(s, "\\") && len(s) >= 3
	case 'u':
		return s, false
	case 'n':
		s = s[1:]
	case '$':
		tag := s[:strings.IndexByte(s[1:], '$')+2]
		return strings.TrimSuffix(s[len(tag):], tag), true
	}
	return strings.Trim(s, "'"), true
}

// hasSpecialTime reports whether a date/time input holds a word the
// server reads as of now; words are runs of letters, as its parser splits
// them ('tomorrow 10:00', ' Today ').
func hasSpecialTime(value string) bool {
	words := strings.FieldsFunc(value, func(r rune) bool { return !unicode.IsLetter(r) })
	for _, w := range words {
		for _, t := range specialTimes {
			if strings.EqualFold(w, t) {
				return true
			}
		}
	}
	return false
}

// notCallAfter are tokens after which a name followed by ( is a relation,
// alias or type, not a call.
var notCallAfter = []string{"::", "as", "into", "table", "only", "references", "."}

// call checks the name at i for a function call or a non-deterministic
// keyword such as current_user.
func (p *parser) call(i, e int) {
	if p.is(i-1, "tablesample") || p.is(i, "repeatable") && p.isPunct(i-1, ')') {
		p.tableSample(i, e)
		return
	}
	if p.isPunct(i-1, '.') {
		p.fieldSelection(i, e)
		return
	}
	if i > 0 {
		for _, t := range notCallAfter {
			if strings.EqualFold(p.text(i-1), t) {
				return
			}
		}
	}
	if p.toks[i].kind == tokIdent && nondetKeywords[p.tagOf(i)] {
		p.noteNondet(p.tagOf(i))
	}
	last, next, qualified := p.qualifiedName(i, e)
	if qualified && !p.isPunct(next, '(') {
		p.attrCall(last)
	}
	if !p.isPunct(next, '(') || p.toks[i].kind == tokIdent && notCalls[p.tagOf(i)] && !qualified {
		return
	}
	if p.is(p.closing(next, e)+1, "as") && (p.isPunct(p.closing(next, e)+2, '(') ||
		p.isAny(p.closing(next, e)+2, "not", "materialized")) {
		return // WITH x(a, b) AS (...): column names, not a call
	}
	p.function(i, last, qualified, next, e)
}

// attrMax bounds analysis.attrCalls, whose entries are told apart by
// comparison.
const attrMax = 64

// attrCall notes the name at i, the last part of a qualified name or a
// field selected from a value, as a possible call in attribute notation:
// Postgres reads u.order_count as order_count(u) when u has no such
// column. Only the catalog can tell (see funcIndex.rowFuncs).
func (p *parser) attrCall(i int) {
	p.a.attrCalls, p.a.attrMany = addCapped(p.a.attrCalls, p.a.attrMany, p.tagOf(i))
}

// fieldSelection notes the names at i of a field selection from a value,
// (u).order_count, $1.f, a[1].f.g, each of which may call a function on
// the value before it. A later part of a qualified name (t.c at c) is
// its first part's to note.
func (p *parser) fieldSelection(i, e int) {
	if p.isName(i - 2) {
		return
	}
	for k := i; p.isName(k); {
		next := p.afterName(k)
		if p.isPunct(next, '(') {
			return
		}
		p.attrCall(k)
		if next+1 >= e || !p.isPunct(next, '.') {
			return
		}
		k = next + 1
	}
}

// tableSample notes TABLESAMPLE method(...) at i, which picks other rows
// at each execution unless REPEATABLE (seed) follows. Neither the method
// nor REPEATABLE is a function call.
func (p *parser) tableSample(i, e int) {
	if p.is(i, "repeatable") {
		return
	}
	_, next, _ := p.qualifiedName(i, e)
	if !p.is(p.closing(next, e)+1, "repeatable") {
		p.noteNondet("tablesample " + p.tagOf(i))
	}
}

// function records a call of the function named by tokens i..last.
func (p *parser) function(i, last int, qualified bool, open, e int) {
	name := p.tagOf(last)
	catalog := qualified && last == i+2 && p.tagOf(i) == "pg_catalog"
	if !qualified || catalog {
		p.builtinCall(name, open, e)
		if catalog || builtinFuncs[name] || nondetBuiltins[name] {
			return
		}
	}
	p.a.functions = addUnique(p.a.functions, p.funcName(i, last))
}

// funcName returns the name of the function named by tokens i..last as
// the catalog spells it: each part a tag, joined by dots.
func (p *parser) funcName(i, last int) string {
	if i == last {
		return p.tagOf(i)
	}
	parts := make([]string, 0, 3)
	for k := i; k <= last; k = p.afterName(k) + 1 {
		parts = append(parts, p.tagOf(k))
	}
	return strings.Join(parts, ".")
}

// builtinCall notes calls of built-ins that make a query uncacheable.
func (p *parser) builtinCall(name string, open, e int) {
	switch {
	case name == "set_config":
		p.a.sessionChange = true
		p.a.sessionLasting = true // is_local may be any expression: assume not
		if a := open + 1; a < len(p.toks) && p.toks[a].kind == tokString && p.isPunct(a+1, ',') {
			v, ok := p.stringValue(a)
			p.a.scsOff = p.a.scsOff || !ok || strings.EqualFold(strings.TrimSpace(v), "standard_conforming_strings")
		} else {
			p.a.scsAsk = true // a name the text does not show ($1, an expression) may be it
		}
	case nondetBuiltins[name] || strings.HasPrefix(name, "uuid_generate_"):
		p.noteNondet(name)
	case unseenBuiltins[name] != 0:
		p.noteUnseen(name)
	case name == "age" && !p.hasTopComma(open, e):
		p.noteNondet("age") // age(x) is measured from current_date
	}
}

// hasTopComma reports whether the group opened at open has a comma at
// its own depth.
func (p *parser) hasTopComma(open, e int) bool {
	end := p.closing(open, e)
	for j := open + 1; j < end; j++ {
		if p.isPunct(j, '(') || p.isPunct(j, '[') {
			j = p.closing(j, end)
		} else if p.isPunct(j, ',') {
			return true
		}
	}
	return false
}

// noteUnseen notes a call of a built-in that reads what no tag covers: the
// statement is not cacheable, and one that runs SQL it is given writes
// what the text does not show.
func (p *parser) noteUnseen(name string) {
	if p.unseen == "" {
		p.unseen = name
	}
	if unseenBuiltins[name] == runsSQL {
		p.a.unknownWrite, p.a.runsCode = true, true
	}
}

// noteNondet remembers the first non-deterministic built-in seen.
func (p *parser) noteNondet(name string) {
	if p.nondet == "" {
		p.nondet = name
	}
}

// utility analyzes a statement that is not a query or DML.
func (p *parser) utility(s, e int) stmtKind {
	switch {
	case p.is(s, "truncate"):
		p.truncate(s+1, e)
		return kindTruncate
	case p.is(s, "copy"):
		return p.copyStmt(s+1, e)
	case p.is(s, "create"):
		return p.create(s+1, e)
	case p.is(s, "alter"):
		return p.alter(s+1, e)
	case p.is(s, "drop"):
		return p.drop(s+1, e)
	case p.is(s, "refresh"):
		p.refresh(s+1, e)
		return kindDDL
	case p.is(s, "comment"):
		p.a.ddl = true
		return kindDDL
	case p.isAny(s, "grant", "revoke", "security", "import", "reassign"):
		p.a.ddl, p.a.unknownWrite = true, true // privileges, labels, new foreign tables: see unscoped
		return kindDDL
	case p.isAny(s, "set", "reset", "discard"):
		return p.session(s, e)
	}
	return p.control(s, e)
}

// control analyzes transaction control, CALL, DO, LOCK and the rest.
func (p *parser) control(s, e int) stmtKind {
	a := p.a
	switch {
	case p.isAny(s, "begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release") ||
		p.is(s, "prepare") && p.is(s+1, "transaction"):
		a.txControl = true
		p.txStatement(s, e)
		return kindTx
	case p.is(s, "call"):
		a.unknownWrite, a.runsCode, a.commitsMidway = true, true, true
		return kindCall
	case p.is(s, "do"):
		a.unknownWrite, a.runsCode, a.commitsMidway = true, true, true
		return kindDo
	case p.is(s, "lock"):
		a.locking = true
		return kindLock
	case p.is(s, "explain"):
		p.explain(s+1, e)
	case p.is(s, "declare"):
		p.declare(s+1, e)
	case p.is(s, "execute"):
		a.unknownWrite, a.runsCode = true, true // a prepared statement the text does not show
	case !p.isAny(s, "show", "listen", "notify", "unlisten", "checkpoint", "load", "vacuum",
		"analyze", "analyse", "cluster", "reindex", "fetch", "move", "close", "prepare", "deallocate"):
		a.unknownWrite = true // not recognized: assume the worst
	}
	return kindOther
}

// txStatement records what one transaction-control statement does to the
// session's transaction: the last such statement of a string decides the
// state the string leaves behind.
func (p *parser) txStatement(s, e int) {
	a := p.a
	switch {
	case p.isAny(s, "begin", "start"):
		a.txEnd = txOpen
	case p.isAny(s, "commit", "end") && p.is(s+1, "prepared"):
		a.commitPrepared = true
	case p.isAny(s, "commit", "end"):
		a.txCommits = true
		a.txEnd = p.chainEnd(s, e)
	case p.isAny(s, "rollback", "abort") && (p.isAny(s+1, "to", "prepared") ||
		p.isAny(s+1, "work", "transaction") && p.is(s+2, "to")):
		// to a savepoint, or a prepared transaction: the session's is untouched
	case p.isAny(s, "rollback", "abort"):
		a.txRollsBack = true
		a.txEnd = p.chainEnd(s, e)
	case p.is(s, "prepare"):
		a.txRollsBack, a.txPrepares = true, true // its writes land at COMMIT PREPARED, which invalidates everything
		a.txEnd = txClosed
	}
}

// chainEnd is the state a COMMIT or ROLLBACK leaves: AND CHAIN opens a new
// transaction at once.
func (p *parser) chainEnd(s, e int) txEffect {
	for j := s + 1; j+1 < e; j++ {
		if p.is(j, "and") && p.is(j+1, "chain") {
			return txOpen
		}
	}
	return txClosed
}

// session analyzes SET, RESET and DISCARD. SET TRANSACTION, SET SESSION
// CHARACTERISTICS and SET CONSTRAINTS only shape the transaction, so they
// count as transaction control. SET LOCAL does change what later queries
// in the transaction see (search_path, role), so it counts as a session
// change like any SET; the engine may end its effect at commit.
func (p *parser) session(s, e int) stmtKind {
	j := s + 1
	if p.is(s, "set") && p.isAny(j, "local", "session") && !p.is(j+1, "characteristics") &&
		!p.is(j+1, "authorization") {
		j++
	}
	if p.is(s, "set") && (p.isAny(j, "transaction", "constraints") ||
		p.is(j, "session") && p.is(j+1, "characteristics")) {
		p.a.txControl = true
		return kindTx
	}
	if p.harmless(s, j, e) {
		return kindSession
	}
	p.a.sessionChange = true
	p.a.discardAll = p.a.discardAll || p.is(s, "discard") && p.is(s+1, "all") && s+2 == e
	if !p.is(s, "set") || !p.is(s+1, "local") {
		p.a.sessionLasting = true
	}
	if p.is(s, "set") && p.isName(j) && p.tagOf(j) == "standard_conforming_strings" {
		v := j + 1
		if p.isAny(v, "to") || p.isPunct(v, '=') {
			v++
		}
		val, ok := "", false
		switch {
		case v < len(p.toks) && p.toks[v].kind == tokString:
			val, ok = p.stringValue(v)
		case p.isName(v):
			val, ok = p.tagOf(v), true
		}
		p.a.scsOff = p.a.scsOff || !ok || !pgTrue(val)
	}
	return kindSession
}

// harmless reports whether the SET or RESET at s changes only a harmless
// setting, named at j.
func (p *parser) harmless(s, j, e int) bool {
	if !p.isName(j) || !harmlessSetting(asciiLower(p.tagOf(j))) {
		return false
	}
	if p.is(s, "reset") {
		return j+1 == e
	}
	return p.is(j+1, "to") || p.isPunct(j+1, '=')
}

// truncate records TRUNCATE [TABLE] [ONLY] name [*] [, ...] [CASCADE].
func (p *parser) truncate(i, e int) {
	if p.is(i, "table") {
		i++
	}
	for i < e {
		i = p.addTarget(i, e)
		if p.isPunct(i, '*') {
			i++
		}
		if !p.isPunct(i, ',') {
			break
		}
		i++
	}
	for ; i < e; i++ {
		if p.is(i, "cascade") {
			p.a.cascade, p.a.unknownWrite = true, true // referencing tables are emptied too
		}
	}
}

// copyStmt analyzes COPY [BINARY] t FROM (a write), COPY t TO (a read) and
// COPY (statement) TO, which runs the statement: a query reads, and
// INSERT/UPDATE/DELETE ... RETURNING writes.
func (p *parser) copyStmt(i, e int) stmtKind {
	if p.isPunct(i, '(') {
		p.statement(i+1, p.closing(i, e))
		return kindCopyTo
	}
	if p.is(i, "binary") {
		i++ // COPY BINARY t, the old spelling of FORMAT binary; BINARY is reserved
	}
	if !p.isName(i) {
		return kindOther
	}
	last, next, qualified := p.qualifiedName(i, e)
	if p.isPunct(next, '(') {
		next = p.closing(next, e) + 1
	}
	if p.is(next, "from") {
		p.addWrite(i, e)
		return kindCopyFrom
	}
	p.addRead(i, last, qualified)
	return kindCopyTo
}

// relationObject returns the index after TABLE, VIEW, MATERIALIZED VIEW
// or FOREIGN TABLE at i, or -1 when the object is something else.
func (p *parser) relationObject(i int) int {
	switch {
	case p.isAny(i, "table", "view"):
		return i + 1
	case p.is(i, "materialized") && p.is(i+1, "view"), p.is(i, "foreign") && p.is(i+1, "table"):
		return i + 2
	}
	return -1
}

// unscoped marks DDL on the object at i (after CREATE's modifiers, or
// after ALTER or DROP) that names no table, view or materialized view
// whose tag could be written instead. It is the one rule for such DDL:
// unless the object only guides the planner (an index or extended
// statistics), it may change what any cached read returns without naming
// a table (a type's labels, a function's body, a schema's name on the
// search_path, privileges, policies, a role's settings), so it is an
// unknown write.
func (p *parser) unscoped(i int) {
	if !p.isAny(i, "index", "statistics") && !(p.is(i, "unique") && p.is(i+1, "index")) {
		p.a.unknownWrite = true
	}
}

// create analyzes CREATE. Creating a table or view writes its name: a new
// relation can shadow another of the same name on the search_path.
func (p *parser) create(i, e int) stmtKind {
	p.a.ddl = true
	temp := false
	for p.isAny(i, "or", "replace", "global", "local", "temp", "temporary", "unlogged", "recursive") {
		temp = temp || p.isAny(i, "temp", "temporary")
		i++
	}
	j := p.relationObject(i)
	if j < 0 {
		p.created(-1, e, temp)
		p.unscoped(i)
		return kindDDL
	}
	if p.is(j, "if") {
		j += 3 // IF NOT EXISTS
	}
	p.created(j, e, temp)
	p.addWrite(j, e)
	for k := j; k < e; k++ {
		if p.isPunct(k, '(') {
			k = p.closing(k, e)
		} else if p.is(k, "as") && p.is(k+1, "execute") {
			p.a.unknownWrite, p.a.runsCode = true, true // CREATE TABLE t AS EXECUTE p, as EXECUTE p
			break
		} else if p.is(k, "as") {
			p.queryRefs(k+1, e)
			break
		}
	}
	return kindDDL
}

// created notes a relation created by CREATE or SELECT INTO, named at i
// (-1 for no name), temporary if its statement said so or its schema is
// pg_temp. A temporary relation shadows a permanent one of the same name
// on its own connection only, while the cache is shared by all: that
// connection must not use the cache again, as after SET search_path.
func (p *parser) created(i, e int, temp bool) {
	if p.isName(i) {
		_, _, qualified := p.qualifiedName(i, e)
		temp = temp || qualified && strings.HasPrefix(p.tagOf(i), "pg_temp")
	}
	if temp {
		p.a.sessionChange = true
		// ON COMMIT DROP ends with its transaction, like SET LOCAL.
		p.a.sessionLasting = p.a.sessionLasting || !p.onCommitDrop(i, e)
	}
}

// onCommitDrop reports whether ON COMMIT DROP follows i in the statement.
func (p *parser) onCommitDrop(i, e int) bool {
	for k := max(i, 0); k+2 < e; k++ {
		if p.is(k, "on") && p.is(k+1, "commit") && p.is(k+2, "drop") {
			return true
		}
	}
	return false
}

// alter analyzes ALTER; on a table or view it writes the relation (and
// the new name of RENAME TO), and calls the functions its expressions do.
func (p *parser) alter(i, e int) stmtKind {
	p.a.ddl = true
	j := p.relationObject(i)
	if j < 0 {
		p.unscoped(i)
		return kindDDL
	}
	if p.is(j, "all") {
		p.a.unknownWrite = true // ALTER TABLE ALL IN TABLESPACE
		return kindDDL
	}
	if p.is(j, "if") {
		j += 2 // IF EXISTS
	}
	if p.is(j, "only") {
		j++
	}
	for k := p.addWrite(j, e); k < e; k++ {
		switch {
		case p.is(k, "rename") && p.is(k+1, "to"):
			p.addWrite(k+2, e)
		case p.is(k, "detach") && p.is(k+1, "partition") && p.is(e-1, "concurrently"):
			// Its first transaction commits the partition's leaving, and
			// its second may yet be cancelled.
			p.a.commitsMidway = true
		case p.isName(k):
			// A column default, a USING or CHECK expression: evaluated on
			// every row, they may call a function that writes.
			p.call(k, e)
		}
	}
	return kindDDL
}

// drop analyzes DROP; dropping tables or views writes each of them, and
// CASCADE drops what the text cannot show.
func (p *parser) drop(i, e int) stmtKind {
	p.a.ddl = true
	if p.is(i, "owned") || p.is(e-1, "cascade") {
		p.a.unknownWrite = true
	}
	j := p.relationObject(i)
	if j < 0 {
		p.unscoped(i)
		return kindDDL
	}
	if p.is(j, "if") {
		j += 2
	}
	for j < e {
		j = p.addWrite(j, e)
		if !p.isPunct(j, ',') {
			break
		}
		j++
	}
	return kindDDL
}

// refresh analyzes REFRESH MATERIALIZED VIEW [CONCURRENTLY] name: a data
// change, not a schema change.
func (p *parser) refresh(i, e int) {
	p.a.events = true
	i += 2
	if p.is(i, "concurrently") {
		i++
	}
	p.addWrite(i, e)
}

// explain analyzes the statement under EXPLAIN ANALYZE, which runs it.
func (p *parser) explain(i, e int) {
	analyzeOpt := false
	if p.isPunct(i, '(') {
		end := p.closing(i, e)
		for k := i + 1; k < end; k++ {
			if p.isAny(k, "analyze", "analyse") && !p.isAny(k+1, "false", "off", "0") &&
				!(k+1 < end && p.text(k+1) == "0") {
				analyzeOpt = true
			}
		}
		i = end + 1
	}
	for ; p.isAny(i, "analyze", "analyse", "verbose"); i++ {
		analyzeOpt = analyzeOpt || !p.is(i, "verbose")
	}
	if analyzeOpt && i < e {
		p.statement(i, e)
	}
}

// declare analyzes the query of DECLARE name ... CURSOR FOR query.
func (p *parser) declare(i, e int) {
	for ; i < e; i++ {
		if p.is(i, "for") {
			p.queryRefs(i+1, e)
			return
		}
	}
}

// cacheability decides whether the statement may be registered as a
// cached read, and if not, why not.
func (p *parser) cacheability() (reason string, nondet bool) {
	a := p.a
	switch {
	case a.kind == kindEmpty:
		return "empty statement", false
	case a.multi:
		return "more than one statement", false
	case p.selInto:
		return "SELECT INTO creates a table", false
	case a.kind != kindSelect && a.kind != kindValues:
		return "not a read-only query: " + a.kind.String(), false
	case len(a.writes) > 0:
		return "writes tables: " + strings.Join(a.writes, ", "), false
	case a.locking:
		return "locking clause (FOR UPDATE/SHARE)", false
	case a.sessionChange:
		return "changes session state (set_config)", false
	case p.temp:
		return "reads a temporary table", false
	case p.catalog:
		return "reads a system catalog", false
	case p.opaque:
		return "a U&\"\" name the analysis cannot decode", false
	case p.junk:
		return "a number or parameter glued to a name (1from, $1limit): Postgres 15 and later refuse it, earlier ones read two tokens", false
	case p.unseen != "":
		return "calls " + p.unseen + ", which reads what writes do not invalidate (" +
			unseenWhat[unseenBuiltins[p.unseen]] + ")", false
	case p.nondet != "":
		return "calls non-deterministic or session-dependent " + p.nondet, true
	}
	return "", false
}
