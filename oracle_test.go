//go:build cgo

package cachedpq

// The differential test: the server's own grammar (libpg_query, through
// pg_query_go, which needs cgo) is the oracle for statement kinds and
// written tables. The library never imports it.

import (
	"bufio"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	pgquery "github.com/pganalyze/pg_query_go/v6"
)

// TestOracle requires the same statement kind and the same write tags from
// analyze and from libpg_query, for the corpus and variations of it.
func TestOracle(t *testing.T) {
	for _, q := range readCorpus(t) {
		for name, v := range variations(q) {
			t.Run(name+"/"+q, func(t *testing.T) { compareWithOracle(t, v) })
		}
	}
}

// FuzzOracle holds analyze to libpg_query on whatever parses: a statement
// the oracle sees writing a table must write it here too (or be an unknown
// write, which invalidates everything), and only what the oracle calls a
// read, writing nothing, may be cacheable; a cacheable read must read
// every table the oracle sees it name, and mean what its normal form
// means. Missing a written or read table would serve stale rows; the
// reverse direction only costs invalidations.
func FuzzOracle(f *testing.F) {
	for _, q := range readCorpus(f) {
		f.Add(q)
	}
	for _, q := range fuzzSeeds {
		f.Add(q)
	}
	f.Fuzz(checkWithOracle)
}

// checkWithOracle is FuzzOracle's check of one string.
func checkWithOracle(t *testing.T, q string) {
	if strings.IndexByte(q, 0) >= 0 || !utf8.ValidString(q) {
		return // the server refuses both (lib/pq's client_encoding is UTF8); libpg_query stops at a NUL
	}
	wantKind, wantWrites, tree, err := oracleAnalysis(q)
	if err != nil {
		return
	}
	a := analyzeUncached(q)
	if !a.unknownWrite {
		for _, w := range wantWrites {
			if !slices.Contains(a.writes, w) {
				t.Fatalf("%q: writes %q, oracle says %q", q, a.writes, wantWrites)
			}
		}
	}
	if a.notCacheable == "" && (wantKind != kindSelect && wantKind != kindValues || len(wantWrites) > 0) {
		t.Fatalf("%q: cacheable, oracle says kind %v writing %q", q, wantKind, wantWrites)
	}
	if readKind(a.kind) != readKind(wantKind) {
		t.Fatalf("%q: kind %v, oracle says %v", q, a.kind, wantKind)
	}
	if a.notCacheable == "" {
		sameMeaning(t, q, tree, a.normalized)
		for _, r := range oracleReads(tree) {
			if !slices.Contains(a.reads, r) {
				t.Fatalf("%q: reads %q, oracle says %q too", q, a.reads, r)
			}
		}
	}
}

// oracleReads returns the relations q names, but for names of CTEs in
// scope where they stand (a WITH's statement and, in order, the later
// CTEs of the list, or all of them with RECURSIVE; an inner WITH shadows
// an outer one). A cached read that missed one would not depend on its
// stamp, and would outlive writes to it.
func oracleReads(tree any) []string {
	var out []string
	var walk func(v any, scope []string)
	walk = func(v any, scope []string) {
		switch v := v.(type) {
		case map[string]any:
			if rv, ok := v["RangeVar"].(map[string]any); ok {
				if name := str(rv["relname"]); rv["schemaname"] != nil || !slices.Contains(scope, name) {
					out = append(out, name)
				}
			}
			if with, ok := v["withClause"].(map[string]any); ok {
				var names []string
				for _, c := range asList(with["ctes"]) {
					names = append(names, str(field(c, "CommonTableExpr", "ctename")))
				}
				for i, c := range asList(with["ctes"]) {
					seen := names[:i]
					if with["recursive"] == true {
						seen = names
					}
					walk(field(c, "CommonTableExpr", "ctequery"), append(slices.Clip(scope), seen...))
				}
				scope = append(slices.Clip(scope), names...)
			}
			for k, c := range v {
				if k != "withClause" {
					walk(c, scope)
				}
			}
		case []any:
			for _, c := range v {
				walk(c, scope)
			}
		}
	}
	walk(tree, nil)
	return out
}

// sameMeaning fails unless the oracle parses the normal form n of q to
// q's tree, token positions aside. A cached read's key is built from its
// normal form: were two reads of different meaning to share one, a hit
// would answer one with the other's rows.
func sameMeaning(t *testing.T, q string, tree any, n string) {
	t.Helper()
	got, err := parseTree(n)
	if err != nil {
		t.Fatalf("%q normalizes to %q, which the oracle cannot parse: %v", q, n, err)
	}
	if w, g := withoutPositions(t, tree), withoutPositions(t, got); w != g {
		t.Fatalf("%q normalizes to %q, of another meaning:\n%s\n%s", q, n, w, g)
	}
}

// withoutPositions encodes a copy of a parse tree without the fields that
// only say where a token was.
func withoutPositions(t *testing.T, tree any) string {
	b, err := json.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var strip func(any)
	strip = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			delete(v, "location")
			delete(v, "stmt_location")
			delete(v, "stmt_len")
			for _, c := range v {
				strip(c)
			}
		case []any:
			for _, c := range v {
				strip(c)
			}
		}
	}
	strip(v)
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// readKind folds VALUES into SELECT: the two are treated alike, and the
// kind of a set operation (VALUES ... UNION SELECT ...) is only a name.
func readKind(k stmtKind) stmtKind {
	if k == kindValues {
		return kindSelect
	}
	return k
}

// compareWithOracle checks one SQL string.
func compareWithOracle(t *testing.T, q string) {
	t.Helper()
	wantKind, wantWrites, _, err := oracleAnalysis(q)
	if err != nil && !strings.HasPrefix(t.Name(), "TestOracle/plain/") {
		t.Skipf("oracle cannot parse this respelling of %q: %v", q, err)
	}
	if err != nil {
		t.Fatalf("oracle cannot parse %q: %v", q, err)
	}
	a := analyzeUncached(q)
	if a.kind != wantKind {
		t.Errorf("%q: kind %v, oracle says %v", q, a.kind, wantKind)
	}
	got := slices.Sorted(slices.Values(a.writes))
	if !slices.Equal(got, wantWrites) {
		t.Errorf("%q: writes %q, oracle says %q", q, got, wantWrites)
	}
}

// oracleAnalysis returns the kind of q's first statement, the sorted,
// distinct relations q writes and its parse tree, as libpg_query parses
// it.
func oracleAnalysis(q string) (kind stmtKind, writes []string, tree any, err error) {
	tree, err = parseTree(q)
	if err != nil {
		return kindEmpty, nil, nil, err
	}
	kind = kindEmpty
	for i, s := range asList(field(tree, "stmts")) {
		stmt, _ := field(s, "stmt").(map[string]any)
		if i == 0 {
			kind = oracleKind(stmt)
		}
		addSelectInto(stmt, &writes)
		oracleWrites(stmt, &writes)
	}
	return kind, slices.Compact(slices.Sorted(slices.Values(writes))), tree, nil
}

// parseTree is libpg_query's parse tree of q, decoded from JSON.
func parseTree(q string) (any, error) {
	raw, err := pgquery.ParseToJSON(q)
	if err != nil {
		return nil, err
	}
	var tree any
	return tree, json.Unmarshal([]byte(raw), &tree)
}

// readCorpus reads testdata/oracle_corpus.txt, one statement per line.
func readCorpus(t testing.TB) []string {
	t.Helper()
	f, err := os.Open("testdata/oracle_corpus.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

// variations returns q as written and respelled: keywords and unquoted
// names in upper case, comments and line breaks between tokens, a leading
// line comment and a trailing semicolon. The lexer only finds token
// boundaries here; the oracle judges the result.
func variations(q string) map[string]string {
	l := newLexer(q)
	var upper, spaced strings.Builder
	for tok := l.next(); tok.kind != tokEOF; tok = l.next() {
		text := q[tok.start:tok.end]
		if tok.kind == tokIdent {
			upper.WriteString(strings.ToUpper(text))
		} else {
			upper.WriteString(text)
		}
		upper.WriteByte(' ')
		spaced.WriteString(text)
		spaced.WriteString(" /* c /* nested */ */\n\t")
	}
	return map[string]string{
		"plain":   q,
		"upper":   upper.String(),
		"spaced":  spaced.String(),
		"comment": "-- leading comment\n" + q + ";",
	}
}

// tableish are the object types whose DDL changes a relation's rows or
// resolution.
var tableish = map[string]bool{"OBJECT_TABLE": true, "OBJECT_VIEW": true,
	"OBJECT_MATVIEW": true, "OBJECT_FOREIGN_TABLE": true}

// oracleKind maps a parse tree node to a statement kind.
func oracleKind(stmt map[string]any) stmtKind {
	for name, v := range stmt {
		n, _ := v.(map[string]any)
		return oracleKindOf(name, n)
	}
	return kindEmpty
}

// oracleKindOf maps one node type (and its fields) to a kind.
func oracleKindOf(name string, n map[string]any) stmtKind {
	switch name {
	case "SelectStmt":
		var into []string
		addSelectInto(map[string]any{name: n}, &into)
		switch {
		case into != nil:
			return kindDDL
		case n["valuesLists"] != nil:
			return kindValues
		}
		return kindSelect
	case "InsertStmt":
		return kindInsert
	case "UpdateStmt":
		return kindUpdate
	case "DeleteStmt":
		return kindDelete
	case "MergeStmt":
		return kindMerge
	case "TruncateStmt":
		return kindTruncate
	case "CopyStmt":
		if n["is_from"] == true {
			return kindCopyFrom
		}
		return kindCopyTo
	case "VariableSetStmt":
		if n["name"] == "TRANSACTION" || n["name"] == "SESSION CHARACTERISTICS" {
			return kindTx
		}
		return kindSession
	}
	return oracleUtilityKind(name)
}

// oracleUtilityKind maps the remaining node types.
func oracleUtilityKind(name string) stmtKind {
	switch name {
	case "DiscardStmt":
		return kindSession
	case "TransactionStmt", "ConstraintsSetStmt":
		return kindTx
	case "CallStmt":
		return kindCall
	case "DoStmt":
		return kindDo
	case "LockStmt":
		return kindLock
	case "RefreshMatViewStmt", "IndexStmt", "ViewStmt", "GrantStmt", "CommentStmt", "RenameStmt",
		"DefineStmt", "DropOwnedStmt", "ReassignOwnedStmt", "GrantRoleStmt", "SecLabelStmt",
		"ImportForeignSchemaStmt", "RuleStmt":
		return kindDDL
	}
	for _, p := range []string{"Create", "Alter", "Drop", "Composite"} {
		if strings.HasPrefix(name, p) {
			return kindDDL
		}
	}
	return kindOther
}

// oracleWrites collects the relations a parse tree writes into out.
func oracleWrites(node any, out *[]string) {
	switch n := node.(type) {
	case []any:
		for _, v := range n {
			oracleWrites(v, out)
		}
	case map[string]any:
		for name, v := range n {
			m, _ := v.(map[string]any)
			if m == nil || !oracleNode(name, m, out) {
				oracleWrites(v, out)
			}
		}
	}
}

// oracleNode handles one named node; it reports whether it consumed the
// subtree (true) or the walk should descend into it (false).
func oracleNode(name string, n map[string]any, out *[]string) bool {
	switch name {
	case "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "RefreshMatViewStmt", "CreateStmt":
		addRangeVar(n["relation"], out)
	case "TruncateStmt":
		for _, r := range asList(n["relations"]) {
			addRangeVar(r.(map[string]any)["RangeVar"], out)
		}
	case "CopyStmt":
		if n["is_from"] == true {
			addRangeVar(n["relation"], out)
		}
	case "CreateTableAsStmt":
		addRangeVar(field(n, "into", "rel"), out)
	case "CreateForeignTableStmt":
		addRangeVar(field(n, "base", "relation"), out)
	case "ViewStmt":
		addRangeVar(n["view"], out)
		return true
	case "AlterTableStmt", "AlterObjectSchemaStmt":
		if tableish[str(n["objtype"])] || tableish[str(n["objectType"])] {
			addRangeVar(n["relation"], out)
		}
	case "RenameStmt":
		oracleRename(n, out)
	case "DropStmt":
		oracleDrop(n, out)
	case "ExplainStmt":
		if !explainAnalyze(n) {
			return true
		}
		addSelectInto(n["query"], out)
	case "PrepareStmt", "RuleStmt", "CreateFunctionStmt", "CreateTrigStmt":
		return true
	}
	return false
}

// addSelectInto appends the table a SELECT INTO creates, if stmt is one:
// the INTO of the set operation's leftmost SELECT. Only a statement's own
// SELECT (or EXPLAIN ANALYZE's) may have one; the server refuses it
// anywhere else, where the grammar takes it.
func addSelectInto(stmt any, out *[]string) {
	n, _ := field(stmt, "SelectStmt").(map[string]any)
	for n != nil && n["op"] != "SETOP_NONE" {
		n, _ = n["larg"].(map[string]any)
	}
	addRangeVar(field(n, "intoClause", "rel"), out)
}

// oracleRename: renaming a table writes the old and the new name; renaming
// a column of a table writes the table.
func oracleRename(n map[string]any, out *[]string) {
	if tableish[str(n["renameType"])] {
		addRangeVar(n["relation"], out)
		*out = append(*out, str(n["newname"]))
	} else if tableish[str(n["relationType"])] {
		addRangeVar(n["relation"], out)
	}
}

// oracleDrop: dropping relations writes each (the last part of its name).
func oracleDrop(n map[string]any, out *[]string) {
	if !tableish[str(n["removeType"])] {
		return
	}
	for _, o := range asList(n["objects"]) {
		items := asList(field(o.(map[string]any), "List", "items"))
		last := items[len(items)-1].(map[string]any)
		*out = append(*out, str(field(last, "String", "sval")))
	}
}

// explainAnalyze reports whether EXPLAIN runs its statement.
func explainAnalyze(n map[string]any) bool {
	for _, o := range asList(n["options"]) {
		d, _ := field(o.(map[string]any), "DefElem").(map[string]any)
		if d["defname"] != "analyze" {
			continue
		}
		arg, _ := json.Marshal(d["arg"])
		return !strings.Contains(string(arg), "false") && !strings.Contains(string(arg), `"off"`)
	}
	return false
}

// addRangeVar appends the relname of a RangeVar, if v is one.
func addRangeVar(v any, out *[]string) {
	if m, ok := v.(map[string]any); ok && m["relname"] != nil {
		*out = append(*out, str(m["relname"]))
	}
}

// field walks nested objects by key.
func field(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func asList(v any) []any { l, _ := v.([]any); return l }
func str(v any) string   { s, _ := v.(string); return s }
