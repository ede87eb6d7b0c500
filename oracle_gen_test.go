//go:build cgo

package cachedpq

import (
	"strings"
	"testing"
)

// FuzzOracleGrammar is FuzzOracle on statements built from a small SQL
// grammar, the fuzzer's bytes choosing each production: writable CTEs,
// subqueries, joins, TABLE, TABLESAMPLE, window and filtered aggregates,
// MERGE, RETURNING, quoted and qualified names, every kind of literal and
// comments between tokens, nested as deep as the bytes go. Byte mutations of text rarely reach such shapes; choices do.
func FuzzOracleGrammar(f *testing.F) {
	for _, seed := range []string{"", "\x00", "\x01\x02\x03", "\x02\x01\x05\x07\x03", "\x05\x05\x05\x05",
		"\x03\x01\x02\x03\x04\x05\x06", "\xff\xfe\xfd\xfc\xfb\xfa", "\x04\x02\x06\x01\x00\x03\x07\x02"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, choices []byte) {
		g := &sqlGen{b: choices}
		g.stmt(0)
		if g.stmts < 3 && g.one(4) {
			g.word(";")
			g.stmt(0)
		}
		checkWithOracle(t, g.out.String())
	})
}

// sqlGen writes SQL as its choices say. Once they run out every choice is
// 0, which always ends the recursion.
type sqlGen struct {
	b     []byte
	i     int
	out   strings.Builder
	stmts int
}

// pick returns the next choice in [0, n).
func (g *sqlGen) pick(n int) int {
	if g.i >= len(g.b) {
		return 0
	}
	c := int(g.b[g.i]) % n
	g.i++
	return c
}

// one reports a choice that is taken one time in n.
func (g *sqlGen) one(n int) bool { return g.pick(n) == n-1 }

// word writes a token, sometimes in upper case or after a comment.
func (g *sqlGen) word(w string) {
	switch g.pick(8) {
	case 6:
		w = strings.ToUpper(w)
	case 7:
		g.out.WriteString([]string{"/* c */", "--c\n", "/* a /* b */ */"}[g.pick(3)])
	}
	g.out.WriteString(w)
	g.out.WriteByte(' ')
}

// words writes several tokens.
func (g *sqlGen) words(ws ...string) {
	for _, w := range ws {
		g.word(w)
	}
}

var genNames = []string{"t", "u", "orders", `"T"`, `"a b"`, `U&"\0061x"`, `"select"`, "x9", `"Ünï"`, "über", `"q""t"`}

// table writes a relation name, maybe qualified.
func (g *sqlGen) table() {
	switch g.pick(4) {
	case 1:
		g.word("s.")
	case 2:
		g.word(`"S".`)
	}
	g.word(genNames[g.pick(len(genNames))])
}

// tablesCascade writes one or two relation names, maybe with CASCADE.
func (g *sqlGen) tablesCascade() {
	g.table()
	if g.one(2) {
		g.word(",")
		g.table()
	}
	if g.one(3) {
		g.word("cascade")
	}
}

// alias writes nothing or an alias.
func (g *sqlGen) alias() {
	switch g.pick(4) {
	case 1:
		g.word("a")
	case 2:
		g.words("as", `"al"`)
	}
}

// subquery writes words, then a query in parentheses.
func (g *sqlGen) subquery(depth int, words ...string) {
	g.words(words...)
	g.word("(")
	g.query(depth + 1)
	g.word(")")
}

// expr writes a value expression.
func (g *sqlGen) expr(depth int) {
	if depth > 4 {
		g.word("1")
		return
	}
	switch g.pick(14) {
	case 0:
		g.word("1")
	case 1:
		g.word("c")
	case 2:
		g.word("$1")
	case 3:
		g.word([]string{`'s'`, `E'\''`, `$$d$$`, `$q$x$q$`, `B'1'`, `X'ff'`, `1.5e3`, `'a'::text`, `array[1,2]`, `U&'\0061'`}[g.pick(10)])
	case 4:
		g.subquery(depth)
	case 5:
		g.subquery(depth, "exists")
	case 6:
		g.expr(depth + 1)
		g.word([]string{"+", "=", "<>", "and", "or", "||", "is distinct from"}[g.pick(7)])
		g.expr(depth + 1)
	case 7:
		g.words("lower", "(")
		g.expr(depth + 1)
		g.word(")")
	case 8:
		g.words("case", "when")
		g.expr(depth + 1)
		g.word("then")
		g.expr(depth + 1)
		g.word("end")
	case 9:
		g.words("a", ".", "c")
	case 10:
		g.expr(depth + 1)
		g.subquery(depth, "in")
	case 11:
		g.words("count", "(", "*", ")")
		switch g.pick(4) {
		case 1:
			g.words("filter", "(", "where")
			g.expr(depth + 1)
			g.word(")")
		case 2:
			g.words("over", "(", "partition", "by", "c", "order", "by", "c", ")")
		case 3:
			g.word("+")
			g.subquery(depth, "cardinality", "(", "array")
			g.word(")")
		}
	case 12:
		g.words("cast", "(")
		g.expr(depth + 1)
		g.words("as", "int", ")")
	default:
		g.words("coalesce", "(")
		g.expr(depth + 1)
		g.word(",")
		g.expr(depth + 1)
		g.word(")")
	}
}

// from writes one from item.
func (g *sqlGen) from(depth int) {
	if depth > 6 {
		g.table()
		return
	}
	switch g.pick(7) {
	case 0, 1:
		if g.one(5) {
			g.word("only")
		}
		g.table()
		g.alias()
	case 2:
		if g.one(2) {
			g.word("lateral")
		}
		g.word("(")
		g.query(depth + 1)
		g.words(")", "as", "sq")
	case 3:
		g.from(depth + 1)
		g.word([]string{"join", "left join", "full join", "cross join"}[g.pick(4)])
		g.from(depth + 1)
		g.word("on")
		g.expr(depth + 1)
	case 4:
		switch g.pick(4) {
		case 0:
			g.words("generate_series", "(", "1", ",", "2", ")", "g")
		case 1:
			g.words("rows", "from", "(", "generate_series", "(", "1", ",", "2", ")", ")", "g")
		case 2:
			g.table()
			g.words("tablesample", "system", "(", "10", ")")
		default:
			g.words("(", "values", "(", "1", ")", ")", "as", "v", "(", "c", ")")
		}
	case 5:
		g.from(depth + 1)
		g.word([]string{"join", "left join", "natural join", "join"}[g.pick(4)])
		g.from(depth + 1)
		if g.one(2) {
			g.words("using", "(", "c", ")")
		} else {
			g.words("on", "true")
		}
	default:
		g.from(depth + 1)
		g.word(",")
		g.from(depth + 1)
	}
}

// where writes nothing or a WHERE clause.
func (g *sqlGen) where(depth int) {
	if g.one(2) {
		g.word("where")
		g.expr(depth + 1)
	}
}

// returning writes nothing or a RETURNING clause.
func (g *sqlGen) returning(depth int) {
	if g.one(2) {
		g.word("returning")
		if g.one(2) {
			g.word("*")
		} else {
			g.expr(depth + 1)
		}
	}
}

// query writes a SELECT, VALUES or set operation.
func (g *sqlGen) query(depth int) {
	if depth > 5 {
		g.words("select", "1")
		return
	}
	switch g.pick(5) {
	case 0, 1:
		g.word("select")
		if g.one(4) {
			g.word("distinct")
		}
		g.expr(depth + 1)
		if g.one(2) {
			g.word("from")
			g.from(depth + 1)
		}
		g.where(depth)
		if g.one(4) {
			g.words("group", "by", "1")
		}
		switch g.pick(4) {
		case 1:
			g.words("order", "by", "1", "limit", "$1", "offset", "2")
		case 2:
			g.words("order", "by", "c", "desc", "nulls", "last", "fetch", "first", "3", "rows", "only")
		}
		if g.one(5) {
			g.words("for", []string{"update", "share", "no key update"}[g.pick(3)])
		}
	case 2:
		if g.one(2) {
			g.word("table")
			g.table()
			break
		}
		g.words("values", "(")
		g.expr(depth + 1)
		g.word(")")
	case 3:
		g.query(depth + 1)
		g.word([]string{"union", "union all", "intersect", "except"}[g.pick(4)])
		g.query(depth + 1)
	default:
		g.with(depth)
		g.query(depth + 1)
	}
}

// with writes a WITH clause whose CTEs may write.
func (g *sqlGen) with(depth int) {
	g.word("with")
	if g.one(4) {
		g.word("recursive")
	}
	for n := 0; ; n++ {
		g.words([]string{"w", "t", `"W"`}[g.pick(3)], "as")
		if g.one(4) {
			g.word("materialized")
		}
		g.word("(")
		if g.one(2) {
			g.write(depth + 1)
		} else {
			g.query(depth + 1)
		}
		g.word(")")
		if n > 2 || !g.one(3) {
			return
		}
		g.word(",")
	}
}

// write writes an INSERT, UPDATE, DELETE or MERGE.
func (g *sqlGen) write(depth int) {
	switch g.pick(4) {
	case 0:
		g.words("insert", "into")
		g.table()
		if g.one(3) {
			g.words("as", "a")
		}
		switch g.pick(3) {
		case 0:
			g.words("values", "(")
			g.expr(depth + 1)
			g.word(")")
		case 1:
			g.query(depth + 1)
		default:
			g.words("default", "values")
		}
		switch g.pick(3) {
		case 1:
			g.words("on", "conflict", "do", "nothing")
		case 2:
			g.words("on", "conflict", "(", "c", ")", "do", "update", "set", "c", "=", "excluded", ".", "c")
		}
	case 1:
		g.word("update")
		if g.one(4) {
			g.word("only")
		}
		g.table()
		g.alias()
		g.words("set", "c", "=")
		g.expr(depth + 1)
		if g.one(2) {
			g.word("from")
			g.from(depth + 1)
		}
		g.where(depth)
	case 2:
		g.words("delete", "from")
		g.table()
		g.alias()
		if g.one(2) {
			g.word("using")
			g.from(depth + 1)
		}
		g.where(depth)
	default:
		g.words("merge", "into")
		g.table()
		g.alias()
		g.word("using")
		g.from(depth + 1)
		g.word("on")
		g.expr(depth + 1)
		g.word([]string{"when matched then update set c = 1", "when matched then delete",
			"when not matched then insert values ( 1 )", "when matched then do nothing"}[g.pick(4)])
		return // MERGE has no RETURNING before PostgreSQL 17
	}
	g.returning(depth)
}

// stmt writes one statement of any kind the grammar has.
func (g *sqlGen) stmt(depth int) {
	g.stmts++
	switch g.pick(8) {
	case 0, 1:
		g.query(depth)
	case 2:
		g.write(depth)
	case 3:
		g.with(depth)
		g.write(depth)
	case 4:
		g.word("truncate")
		if g.one(3) {
			g.word("table")
		}
		g.tablesCascade()
	case 5:
		g.words("explain", []string{"", "analyze", "( analyze )", "( analyze false )", "( costs off )"}[g.pick(5)])
		g.stmt(depth + 1)
	case 6:
		g.words("copy", "(")
		g.query(depth + 1)
		g.words(")", "to", "stdout")
	default:
		g.ddl(depth)
	}
}

// ddl writes a statement that changes the catalog, the session or the
// transaction, or locks or copies into a table.
func (g *sqlGen) ddl(depth int) {
	switch g.pick(12) {
	case 0:
		g.words("select", "1", "into")
		if g.one(2) {
			g.word("temp")
		}
		g.table()
		if g.one(2) {
			g.word("from")
			g.from(depth + 1)
		}
	case 1:
		g.words("create", []string{"table", "view", "materialized view"}[g.pick(3)])
		g.table()
		g.word("as")
		g.query(depth + 1)
	case 2:
		g.words("alter", "table")
		if g.one(3) {
			g.words("if", "exists")
		}
		g.table()
		g.word([]string{"add column d int", "drop column c", "rename to n", "rename column c to d",
			"set schema s", "alter column c type text"}[g.pick(6)])
	case 3:
		g.words("drop", []string{"table", "view", "materialized view"}[g.pick(3)])
		g.tablesCascade()
	case 4:
		g.words("create", "table")
		g.table()
		g.words("(", "c", "int", ")")
	case 5:
		g.words("refresh", "materialized", "view")
		g.table()
	case 6:
		g.words("create", "index", "on")
		g.table()
		g.words("(", "c", ")")
	case 7:
		g.words("lock", "table")
		g.table()
	case 8:
		g.word("copy")
		g.table()
		g.words("from", "stdin")
	case 9:
		g.word([]string{"set search_path = s", "reset all", "discard all", "set role r", "set local x.y = 1"}[g.pick(5)])
	case 10:
		g.word([]string{"begin", "commit", "rollback", "savepoint p", "release p", "start transaction"}[g.pick(6)])
	default:
		g.words("alter", []string{"view", "materialized view", "foreign table"}[g.pick(3)])
		g.table()
		g.word([]string{"rename to n", "set schema s", "owner to r"}[g.pick(3)])
	}
}
