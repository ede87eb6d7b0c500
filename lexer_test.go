package cachedpq

import (
	"slices"
	"strings"
	"testing"
)

// lexAll returns the kinds and texts of all tokens of src.
func lexAll(src string) (kinds []tokKind, texts []string) {
	l := newLexer(src)
	for t := l.next(); t.kind != tokEOF; t = l.next() {
		kinds = append(kinds, t.kind)
		texts = append(texts, src[t.start:t.end])
	}
	return kinds, texts
}

func TestLexTokens(t *testing.T) {
	tests := []struct {
		name, src string
		kinds     []tokKind
		texts     []string
	}{
		{"ident", "Users", []tokKind{tokIdent}, []string{"Users"}},
		{"ident with $ and digits", "a1$b", []tokKind{tokIdent}, []string{"a1$b"}},
		{"utf8 ident", "größe", []tokKind{tokIdent}, []string{"größe"}},
		{"quoted ident", `"Us""ers"`, []tokKind{tokQIdent}, []string{`"Us""ers"`}},
		{"unicode ident", `U&"d\0061t"`, []tokKind{tokQIdent}, []string{`U&"d\0061t"`}},
		{"string", `'it''s'`, []tokKind{tokString}, []string{`'it''s'`}},
		{"plain string keeps backslash", `'a\' b`, []tokKind{tokString, tokIdent}, []string{`'a\'`, "b"}},
		{"escape string", `E'a\'b'`, []tokKind{tokString}, []string{`E'a\'b'`}},
		{"escape string lower", `e'\\'`, []tokKind{tokString}, []string{`e'\\'`}},
		{"unicode string", `U&'\0041'`, []tokKind{tokString}, []string{`U&'\0041'`}},
		{"bit string", `B'101'`, []tokKind{tokString}, []string{`B'101'`}},
		{"hex string", `X'ff'`, []tokKind{tokString}, []string{`X'ff'`}},
		{"national string", `N'x'`, []tokKind{tokString}, []string{`N'x'`}},
		{"dollar", `$$a'b$$`, []tokKind{tokString}, []string{`$$a'b$$`}},
		{"tagged dollar", `$f$ $$ x $f$`, []tokKind{tokString}, []string{`$f$ $$ x $f$`}},
		{"param", "$1 $23", []tokKind{tokParam, tokParam}, []string{"$1", "$23"}},
		{"numbers", "1 1.5 .5 1e10 1.5E-3 0x1F 1_000",
			[]tokKind{tokNumber, tokNumber, tokNumber, tokNumber, tokNumber, tokNumber, tokNumber},
			[]string{"1", "1.5", ".5", "1e10", "1.5E-3", "0x1F", "1_000"}},
		{"cast", "a::int", []tokKind{tokIdent, tokPunct, tokIdent}, []string{"a", "::", "int"}},
		{"operators", "a>=b <> c->>'k'", []tokKind{tokIdent, tokOp, tokIdent, tokOp, tokIdent, tokOp, tokString},
			[]string{"a", ">=", "b", "<>", "c", "->>", "'k'"}},
		{"trailing minus split", "a*-1", []tokKind{tokIdent, tokOp, tokOp, tokNumber}, []string{"a", "*", "-", "1"}},
		{"special op keeps minus", "a @- b", []tokKind{tokIdent, tokOp, tokIdent}, []string{"a", "@-", "b"}},
		{"op stops at comment", "a+--x\nb", []tokKind{tokIdent, tokOp, tokIdent}, []string{"a", "+", "b"}},
		{"punct", "(a,b);[1]", []tokKind{tokPunct, tokIdent, tokPunct, tokIdent, tokPunct, tokPunct, tokPunct, tokNumber, tokPunct},
			[]string{"(", "a", ",", "b", ")", ";", "[", "1", "]"}},
		{"qualified", "s.t", []tokKind{tokIdent, tokPunct, tokIdent}, []string{"s", ".", "t"}},
		{"line comment", "a -- x\nb", []tokKind{tokIdent, tokIdent}, []string{"a", "b"}},
		{"nested comment", "a /* x /* y */ z */ b", []tokKind{tokIdent, tokIdent}, []string{"a", "b"}},
		{"unterminated string", "'abc", []tokKind{tokString}, []string{"'abc"}},
		{"unterminated comment", "a /* b", []tokKind{tokIdent}, []string{"a"}},
		{"unterminated dollar", "$x$ abc", []tokKind{tokString}, []string{"$x$ abc"}},
		{"lone dollar", "$ a", []tokKind{tokOp, tokIdent}, []string{"$", "a"}},
		{"named arg", "f(a => 1)", []tokKind{tokIdent, tokPunct, tokIdent, tokOp, tokNumber, tokPunct},
			[]string{"f", "(", "a", "=>", "1", ")"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kinds, texts := lexAll(tt.src)
			if !slices.Equal(kinds, tt.kinds) || !slices.Equal(texts, tt.texts) {
				t.Errorf("lex(%q) = %v %q, want %v %q", tt.src, kinds, texts, tt.kinds, tt.texts)
			}
		})
	}
}

// TestLexAllocs keeps the lexer allocation-free.
func TestLexAllocs(t *testing.T) {
	src := "select a, b from t where c = $1 and d = 'x' -- c\n order by 1"
	n := testing.AllocsPerRun(100, func() {
		l := newLexer(src)
		for tok := l.next(); tok.kind != tokEOF; tok = l.next() {
		}
	})
	if n != 0 {
		t.Errorf("lexing allocates %v times", n)
	}
}

// TestLongOperatorRunIsScannedOnce: a run of thousands of + splits into
// as many tokens, all cut from the one scan of the run; scanning the rest
// of the run again for each token took seconds for the 4,000 + that
// FuzzLex found (testdata/fuzz/FuzzLex keeps them).
func TestLongOperatorRunIsScannedOnce(t *testing.T) {
	src := strings.Repeat("+", 1<<12) + "=" + strings.Repeat("+", 1<<12)
	l := newLexer(src)
	var toks []string
	for tok := l.next(); tok.kind != tokEOF; tok = l.next() {
		if l.run.start != 0 || l.run.end != len(src) {
			t.Fatalf("token %d: the run was scanned again from %d", len(toks), l.run.start)
		}
		toks = append(toks, src[tok.start:tok.end])
	}
	// As Postgres reads it: an operator without ~ ! @ # % ^ & | ` ? ends
	// at its last character that is not + or -.
	want := append([]string{src[:1<<12+1]}, slices.Repeat([]string{"+"}, 1<<12)...)
	if !slices.Equal(toks, want) {
		t.Fatalf("%d tokens, want %d", len(toks), len(want))
	}
}
