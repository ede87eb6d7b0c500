package cachedpq

import (
	"slices"
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
