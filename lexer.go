package cachedpq

// This file holds a small PostgreSQL lexer. It splits SQL text into tokens
// the way the server's scanner (scan.l) does, closely enough to normalize
// statements and to find the tables they touch. It never fails: malformed
// input (an unterminated string or comment) becomes a token that runs to
// the end of the text, because the analysis must stay conservative rather
// than give up.

// tokKind classifies a token.
type tokKind uint8

const (
	tokEOF    tokKind = iota
	tokIdent          // unquoted identifier or keyword; folds to lower case
	tokQIdent         // "quoted" or U&"quoted" identifier; kept exact
	tokString         // '...', E'...', U&'...', B'...', X'...', N'...', $tag$...$tag$
	tokNumber         // 42, 4.2e1, 0x2A, 1_000
	tokParam          // $1
	tokOp             // an operator: + - * / < > = ~ ! @ # % ^ & | ` ? and runs of them
	tokPunct          // ( ) [ ] , ; . : and the two-byte :: and :=
)

// token is a span of the source; it holds no copy of the text, so lexing
// allocates nothing.
type token struct {
	kind       tokKind
	start, end int // byte offsets of the token's text in the source
}

// lexer walks a SQL string. The zero value is not usable; use newLexer.
type lexer struct {
	src string
	pos int
	run opRun // the last operator run scanned, split into several tokens
	// junk is set once a decimal number or a $n parameter has been
	// followed at once by identifier bytes ("1from", "$1limit"): Postgres
	// 15 and later refuse the statement ("trailing junk"), 12 to 14 read
	// two tokens, as this lexer does.
	junk bool
}

// opRun is a run of operator characters without any that let an operator
// end in + or - (see operator): it splits into tokens, each ending at its
// last character that is not + or -. Remembering the run keeps a long one
// from being scanned again for each of its tokens (quadratic time on a
// string of a few thousand +, which FuzzLex found).
type opRun struct {
	start, end int // src[start:end]
	lastKeep   int // index of its last character not + or -, or -1
}

// tokenEnd is the end of the run's token that starts at pos.
func (r opRun) tokenEnd(pos int) int {
	if r.lastKeep >= pos {
		return r.lastKeep + 1
	}
	return pos + 1
}

// newLexer returns a lexer positioned at the start of src.
func newLexer(src string) lexer { return lexer{src: src} }

// next returns the next token, skipping whitespace and comments, or a
// tokEOF token at the end of the text.
func (l *lexer) next() token {
	l.skipSpace()
	if l.pos >= len(l.src) {
		return token{kind: tokEOF, start: len(l.src), end: len(l.src)}
	}
	start := l.pos
	kind := l.scan()
	if l.pos <= start { // defensive: always make progress
		l.pos = start + 1
	}
	return token{kind: kind, start: start, end: l.pos}
}

// skipSpace skips whitespace, -- line comments and nested /* */ comments.
func (l *lexer) skipSpace() {
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		switch {
		case isSpace(c):
			l.pos++
		case c == '-' && l.peek(1) == '-':
			l.skipLineComment()
		case c == '/' && l.peek(1) == '*':
			l.skipBlockComment()
		default:
			return
		}
	}
}

// skipLineComment skips a -- comment up to and including its newline.
func (l *lexer) skipLineComment() {
	for l.pos < len(l.src) && l.src[l.pos] != '\n' && l.src[l.pos] != '\r' {
		l.pos++
	}
}

// skipBlockComment skips a /* */ comment; Postgres lets them nest.
func (l *lexer) skipBlockComment() {
	depth := 0
	for l.pos < len(l.src) {
		switch {
		case l.src[l.pos] == '/' && l.peek(1) == '*':
			depth++
			l.pos += 2
		case l.src[l.pos] == '*' && l.peek(1) == '/':
			depth--
			l.pos += 2
			if depth == 0 {
				return
			}
		default:
			l.pos++
		}
	}
}

// peek returns the byte i positions ahead, or 0 past the end.
func (l *lexer) peek(i int) byte {
	if l.pos+i < len(l.src) {
		return l.src[l.pos+i]
	}
	return 0
}

// scan consumes one token starting at l.pos and reports its kind.
func (l *lexer) scan() tokKind {
	c := l.src[l.pos]
	switch {
	case c == '\'':
		l.quoted('\'', false)
		return tokString
	case c == '"':
		l.quoted('"', false)
		return tokQIdent
	case c == '$':
		return l.dollar()
	case isDigit(c) || (c == '.' && isDigit(l.peek(1))):
		l.number()
		return tokNumber
	case isIdentStart(c):
		return l.word()
	case isOpChar(c):
		l.operator()
		return tokOp
	}
	return l.punct()
}

// word scans an identifier or keyword, or a prefixed literal such as
// E'..', B'..', X'..', N'..', U&'..' or U&"..".
func (l *lexer) word() tokKind {
	c := lower(l.src[l.pos])
	next := l.peek(1)
	switch {
	case next == '\'' && (c == 'e'):
		l.pos++
		l.quoted('\'', true)
		return tokString
	case next == '\'' && (c == 'b' || c == 'x' || c == 'n'):
		l.pos++
		l.quoted('\'', false)
		return tokString
	case c == 'u' && next == '&' && (l.peek(2) == '\'' || l.peek(2) == '"'):
		l.pos += 2
		q := l.src[l.pos]
		l.quoted(q, false)
		if q == '"' {
			return tokQIdent
		}
		return tokString
	}
	for l.pos < len(l.src) && isIdentCont(l.src[l.pos]) {
		l.pos++
	}
	return tokIdent
}

// quoted scans a literal delimited by q (' or "), where a doubled q stands
// for itself and, when backslash is set (E'..'), a backslash escapes the
// next byte. An unterminated literal runs to the end of the text.
func (l *lexer) quoted(q byte, backslash bool) {
	l.pos++ // opening quote
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		switch {
		case backslash && c == '\\':
			l.pos += 2
		case c == q && l.peek(1) == q:
			l.pos += 2
		case c == q:
			l.pos++
			if q == '\'' {
				if i := l.continuation(l.pos); i >= 0 {
					l.pos = i + 1 // the same literal goes on, in the same mode
					continue
				}
			}
			return
		default:
			l.pos++
		}
	}
	l.pos = len(l.src)
}

// continuation returns the index of the quote that continues a string
// literal closed just before i: 'a'<newline>'b' is 'ab' (scan.l's
// quotecontinue: horizontal space and -- comments, a newline, then any
// space and -- comments ending in a newline). It returns -1 when none does.
func (l *lexer) continuation(i int) int {
	newline := false
	for i < len(l.src) {
		c := l.src[i]
		switch {
		case c == '\n' || c == '\r':
			newline = true
			i++
		case c == ' ' || c == '\t' || c == '\f' || c == '\v' && newline:
			i++
		case c == '-' && i+1 < len(l.src) && l.src[i+1] == '-':
			for i < len(l.src) && l.src[i] != '\n' && l.src[i] != '\r' {
				i++
			}
		case c == '\'' && newline:
			return i
		default:
			return -1
		}
	}
	return -1
}

// dollar scans a $n parameter or a $tag$...$tag$ string. A lone $ that
// starts neither is an operator-like byte; Postgres would reject it.
func (l *lexer) dollar() tokKind {
	if isDigit(l.peek(1)) {
		l.pos++
		l.skipWhile(isDigit)
		l.junk = l.junk || l.pos < len(l.src) && isIdentStart(l.src[l.pos])
		return tokParam
	}
	end := l.pos + 1
	for end < len(l.src) && l.src[end] != '$' && isTagByte(l.src[end]) {
		end++
	}
	if end >= len(l.src) || l.src[end] != '$' || (end > l.pos+1 && isDigit(l.src[l.pos+1])) {
		l.pos++
		return tokOp
	}
	tag := l.src[l.pos : end+1]
	l.pos = end + 1
	if i := indexString(l.src[l.pos:], tag); i >= 0 {
		l.pos += i + len(tag)
	} else {
		l.pos = len(l.src)
	}
	return tokString
}

// number scans a numeric literal: decimal with optional fraction and
// exponent, 0x/0o/0b integers and _ separators. Identifier bytes after a
// decimal number start the next token and set junk; after 0x, 0o or 0b
// they are swallowed (Postgres before 16 reads "0x1f" as 0 AS x1f, which
// names no table either way).
func (l *lexer) number() {
	if l.src[l.pos] == '0' && isRadix(lower(l.peek(1))) {
		l.pos += 2
		l.skipWhile(isIdentCont)
		return
	}
	l.skipWhile(isDigitOrUnderscore)
	if l.pos < len(l.src) && l.src[l.pos] == '.' && l.peek(1) != '.' {
		l.pos++
		l.skipWhile(isDigitOrUnderscore)
	}
	if lower(l.peek(0)) == 'e' {
		n := 1
		if c := l.peek(1); c == '+' || c == '-' {
			n = 2
		}
		if isDigit(l.peek(n)) {
			l.pos += n
			l.skipWhile(isDigitOrUnderscore)
		}
	}
	l.junk = l.junk || l.pos < len(l.src) && isIdentStart(l.src[l.pos])
}

// skipWhile advances over bytes for which f holds.
func (l *lexer) skipWhile(f func(byte) bool) {
	for l.pos < len(l.src) && f(l.src[l.pos]) {
		l.pos++
	}
}

// operator scans an operator by the server's rules: a run of operator
// bytes that stops before a comment start, and loses a trailing + or -
// unless it contains one of ~ ! @ # % ^ & | ` ?.
func (l *lexer) operator() {
	start := l.pos
	if start > l.run.start && start < l.run.end { // the rest of a run already scanned
		l.pos = l.run.tokenEnd(start)
		return
	}
	for l.pos < len(l.src) && isOpChar(l.src[l.pos]) {
		if l.pos > start && (l.src[l.pos] == '-' && l.peek(1) == '-' ||
			l.src[l.pos] == '/' && l.peek(1) == '*') {
			break
		}
		l.pos++
	}
	if hasSpecialOp(l.src[start:l.pos]) {
		return // one operator, whatever it ends in
	}
	l.run = opRun{start: start, end: l.pos, lastKeep: -1}
	for i := l.pos - 1; i >= start; i-- {
		if l.src[i] != '+' && l.src[i] != '-' {
			l.run.lastKeep = i
			break
		}
	}
	l.pos = l.run.tokenEnd(start)
}

// punct scans punctuation; :: (cast) and := are single tokens. (=> is an
// operator run and comes out of operator.)
func (l *lexer) punct() tokKind {
	if l.src[l.pos] == ':' && (l.peek(1) == ':' || l.peek(1) == '=') {
		l.pos += 2
	} else {
		l.pos++
	}
	return tokPunct
}

// hasSpecialOp reports whether an operator may end in + or -.
func hasSpecialOp(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '~', '!', '@', '#', '%', '^', '&', '|', '`', '?':
			return true
		}
	}
	return false
}

// indexString is strings.Index without the import, kept here so the lexer
// file stands alone.
func indexString(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}
func isDigit(c byte) bool             { return c >= '0' && c <= '9' }
func isDigitOrUnderscore(c byte) bool { return isDigit(c) || c == '_' }
func isRadix(c byte) bool             { return c == 'x' || c == 'o' || c == 'b' }

// isIdentStart: letters, underscore and any non-ASCII byte (UTF-8).
func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}
func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// isTagByte: a dollar-quote tag is an identifier without $.
func isTagByte(c byte) bool { return isIdentStart(c) || isDigit(c) }

func isOpChar(c byte) bool {
	switch c {
	case '+', '-', '*', '/', '<', '>', '=', '~', '!', '@', '#', '%', '^', '&', '|', '`', '?':
		return true
	}
	return false
}

// lower folds ASCII letters only, as the server does for identifiers in
// multi-byte encodings.
func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
