package cachedpq

import (
	"strings"
	"testing"
)

// fuzzSeeds are starting points for both fuzz targets.
var fuzzSeeds = []string{
	"select * from t where a = $1",
	`select 'x''y', E'\'', $$a$$, $t$b$t$, U&"a\0061", B'1', X'f' from "T"`,
	"with x as (update t set a=1 returning *) select * from x for update",
	"/* a /* b */ c */ -- d\n insert into t values (1) on conflict do nothing; truncate a, b cascade",
	"copy (select 1) to stdout", "alter table t rename to u", "explain (analyze) delete from t",
	"'unterminated", "$tag$ unterminated", "/* unterminated", `"unterminated`, "E'\\",
	"select ((((", "))))", "with with with", "from from from", "select 1e", "0x", "$", "::", "U&",
	`select (u).f.g, $1.h, a[1].i, s.t."C", x::s.y from s.t u`, "select (u).", "select a.b.",
}

// FuzzLex checks that the lexer never panics, always makes progress, and
// covers the input with ordered, non-overlapping tokens.
func FuzzLex(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		l := newLexer(src)
		prev := 0
		for n := 0; ; n++ {
			tok := l.next()
			if tok.start < prev || tok.end < tok.start || tok.end > len(src) {
				t.Fatalf("token %+v out of order after %d in %q", tok, prev, src)
			}
			if tok.kind == tokEOF {
				return
			}
			if tok.end == tok.start || n > len(src) {
				t.Fatalf("no progress at %d in %q", tok.start, src)
			}
			prev = tok.end
		}
	})
}

// FuzzAnalyze checks that analysis never panics and that normalization is
// idempotent for text without comments-in-disguise: normalizing a
// normalized form gives it back, with the same tables.
func FuzzAnalyze(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		a := analyzeUncached(q)
		if a.kind > kindOther {
			t.Fatalf("kind %d", a.kind)
		}
		if a.notCacheable == "" && a.kind != kindSelect && a.kind != kindValues {
			t.Fatalf("kind %v cacheable", a.kind)
		}
		if a.nondeterministic && a.notCacheable == "" {
			t.Fatal("nondeterministic but cacheable")
		}
		if len(a.attrCalls) > attrMax || a.attrMany && a.attrCalls != nil {
			t.Fatalf("attrCalls unbounded: %d, many %v", len(a.attrCalls), a.attrMany)
		}
		if !normalFormStable(q) {
			return
		}
		b := analyzeUncached(a.normalized)
		if b.normalized != a.normalized {
			t.Fatalf("normalize not idempotent:\n%q\n%q", a.normalized, b.normalized)
		}
		if strings.Join(b.writes, ",") != strings.Join(a.writes, ",") || b.kind != a.kind {
			t.Fatalf("normal form changes the analysis: %v %q vs %v %q", a.kind, a.writes, b.kind, b.writes)
		}
	})
}

// normalFormStable reports whether re-lexing the normalized text is
// expected to give the same tokens. Joining tokens with spaces can create
// a comment or merge tokens when the input glued them in odd ways (a
// string ending in a backslash before another quote, an operator next to
// "-" or "/*"), and unterminated literals swallow what follows; such
// inputs are skipped.
func normalFormStable(q string) bool {
	l := newLexer(q)
	for tok := l.next(); tok.kind != tokEOF; tok = l.next() {
		text := q[tok.start:tok.end]
		switch tok.kind {
		case tokOp:
			if strings.ContainsAny(text, "-/*") {
				return false
			}
		case tokString, tokQIdent:
			if !terminated(text) {
				return false
			}
		case tokIdent, tokNumber, tokParam:
			if strings.ContainsAny(text, "'\"&$") || tok.kind == tokNumber {
				return false
			}
		default:
			if text == "$" {
				return false
			}
		}
	}
	return true
}

// terminated reports whether a quoted token ends with its closing quote.
func terminated(s string) bool {
	if len(s) < 2 {
		return false
	}
	last := s[len(s)-1]
	return last == '\'' || last == '"' || last == '$'
}
