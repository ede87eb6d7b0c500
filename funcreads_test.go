package cachedpq

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// testFuncCatalog is a catalog of a few user functions, relations and one
// view, as loadFuncReads would read them.
func testFuncCatalog() *catalog {
	funcs := []userFunc{
		{schema: "public", name: "name_of", lang: "sql", src: `select name from users where id = $1`},
		{schema: "public", name: "outer_name", lang: "plpgsql", src: `begin return upper(name_of($1)); end`},
		{schema: "app", name: "name_of", lang: "sql", src: `select label from labels where id = $1`},
		{schema: "public", name: "ping", lang: "sql", src: `select pong($1)`},
		{schema: "public", name: "pong", lang: "sql", src: `select ping($1) from orders`},
		{schema: "public", name: "atomic", lang: "sql", src: ""},
		{schema: "public", name: "dyn", lang: "plpgsql", src: `begin execute 'select 1'; end`},
		{schema: "public", name: "py", lang: "plpython3u", src: `return 1`},
		{schema: "public", name: "abs2", lang: "c", src: `abs2`},
	}
	cat := &catalog{bases: map[string][]string{"summary": {"orders"}}, fns: newFuncIndex(funcs)}
	for _, r := range []string{"users", "labels", "orders", "items", "summary"} {
		cat.fns.relations[r] = true
	}
	cat.fns.atomic["public.atomic"] = []string{"items"}
	cat.fns.viewCalls["summary"] = []string{"public.outer_name"}
	return cat
}

// TestFuncReads: a read depends on what its functions name, through the
// functions they call (overloads in every schema for a bare name, one
// schema's for a qualified one; cycles end) and the views they read.
func TestFuncReads(t *testing.T) {
	cat := testFuncCatalog()
	for _, tt := range []struct {
		tables, fns []string
		want        []string
		opaque      bool
	}{
		{nil, []string{"public.name_of"}, []string{"users"}, false},
		{nil, []string{"name_of"}, []string{"labels", "users"}, false},
		{nil, []string{"outer_name"}, []string{"labels", "users"}, false},
		{nil, []string{"db.public.name_of"}, []string{"users"}, false},
		{nil, []string{"ping"}, []string{"orders"}, false},
		{nil, []string{"atomic"}, []string{"items"}, false},
		{[]string{"summary"}, nil, []string{"labels", "orders", "summary", "users"}, false},
		{nil, []string{"dyn"}, nil, true},
		{nil, []string{"py"}, nil, true},
		{nil, []string{"abs2"}, nil, false},
		{[]string{"items"}, []string{"unknown"}, []string{"items"}, false},
	} {
		got, opaque := cat.reads(tt.tables, tt.fns)
		slices.Sort(got)
		if !slices.Equal(got, tt.want) || opaque != tt.opaque {
			t.Errorf("reads(%v, %v) = %v, %v; want %v, %v", tt.tables, tt.fns, got, opaque, tt.want, tt.opaque)
		}
	}
}

// FuzzFuncBody: any function source is read without panicking, and names
// only relations and functions the catalog has.
func FuzzFuncBody(f *testing.F) {
	for _, s := range []string{
		`select name from users where id = $1`, `begin return upper(name_of($1)); end`,
		`begin execute 'x'; end`, `select "users".name from "users"`, `name_of(`, `"a".`, `$$`,
		`select $1::regclass`, `select cast($1 as pg_catalog.regtype)`, `select x::`, `cast(x as`,
	} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, src string, plpgsql bool) {
		cat := testFuncCatalog()
		lang := "sql"
		if plpgsql {
			lang = "plpgsql"
		}
		cat.fns.funcs[0] = userFunc{schema: "public", name: "name_of", lang: lang, src: src}
		rels, calls, ok := cat.fns.body(0)
		if !ok && (rels != nil || calls != nil) {
			t.Fatalf("opaque body with %q, %q", rels, calls)
		}
		for _, r := range rels {
			if !cat.fns.relations[r] {
				t.Fatalf("%q is no relation", r)
			}
		}
		for _, c := range calls {
			if _, ok := cat.fns.byName[c]; !ok {
				t.Fatalf("%q is no function", c)
			}
		}
	})
}

// testRowFuncCatalog adds to testFuncCatalog functions of a users row,
// which attribute notation may call (u.order_count), as loadFuncReads
// would read them.
func testRowFuncCatalog() *catalog {
	cat := testFuncCatalog()
	funcs := append(cat.fns.funcs,
		userFunc{schema: "public", name: "order_count", lang: "sql", src: `select count(*) from orders o where o.user_id = $1.id`},
		userFunc{schema: "public", name: "labelled", lang: "sql", src: `select $1.order_count, l.label from labels l`},
		userFunc{schema: "public", name: "dyn_count", lang: "plpgsql", src: `begin execute 'select 1'; end`},
		userFunc{schema: "public", name: "bump", lang: "sql", src: `update items set n = n + 1 returning n`, volatile: true},
	)
	ix := newFuncIndex(funcs)
	ix.relations, ix.atomic, ix.viewCalls = cat.fns.relations, cat.fns.atomic, cat.fns.viewCalls
	for _, f := range []string{"order_count", "labelled", "dyn_count", "bump"} {
		ix.rowFuncs[f] = true
	}
	cat.fns, cat.volatile = ix, map[string]bool{"bump": true, "public.bump": true}
	return cat
}

// readCase is a read, the tables it reads through the catalog's
// functions, and whether it is opaque (may write, or read what no source
// shows).
type readCase struct {
	q      string
	want   []string
	opaque bool
}

// checkReads holds each case's analysis to what cat says it reads.
func checkReads(t *testing.T, cat *catalog, cases []readCase) {
	t.Helper()
	for _, tt := range cases {
		a := analyzeUncached(tt.q)
		fns := cat.callsOf(a)
		got, opaque := cat.reads(a.reads, fns)
		opaque = opaque || cat.anyMayWrite(fns)
		slices.Sort(got)
		if !slices.Equal(got, tt.want) || opaque != tt.opaque {
			t.Errorf("%s: reads %v, opaque %v; want %v, %v", tt.q, got, opaque, tt.want, tt.opaque)
		}
	}
}

// TestAttrCallReads: a read that names a function of a row in attribute
// notation depends on what the function reads, and is opaque as a call
// of it would be; names that are no such function (columns, other
// functions) change nothing.
func TestAttrCallReads(t *testing.T) {
	cat := testRowFuncCatalog()
	checkReads(t, cat, []readCase{
		{"select u.id, u.order_count from users u where u.id = $1", []string{"orders", "users"}, false},
		{"select (u).order_count from users u", []string{"orders", "users"}, false},
		{"select u.labelled from users u", []string{"labels", "orders", "users"}, false},
		{"select u.id, u.name, u.name_of from users u", []string{"users"}, false},
		{"select u.dyn_count from users u", []string{"users"}, true},
		{"select u.bump from users u", []string{"items", "users"}, true},
		{"select order_count from users", []string{"users"}, false},
	})
}

// TestCallsOfLeavesTheAnalysis: the calls a catalog adds to an analysis's
// do not reach the shared analysis, and past attrMax names every function
// of a row counts as called.
func TestCallsOfLeavesTheAnalysis(t *testing.T) {
	cat := testRowFuncCatalog()
	a := &analysis{functions: make([]string, 1, 4), attrCalls: []string{"order_count"}}
	a.functions[0] = "name_of"
	if got := cat.callsOf(a); !slices.Equal(got, []string{"name_of", "order_count"}) {
		t.Fatalf("callsOf = %q", got)
	}
	if a.functions[:2][1] != "" {
		t.Fatalf("callsOf wrote into the analysis: %q", a.functions[:2])
	}
	got := cat.callsOf(&analysis{attrMany: true})
	slices.Sort(got)
	if want := []string{"bump", "dyn_count", "labelled", "order_count"}; !slices.Equal(got, want) {
		t.Fatalf("callsOf with attrMany = %q, want %q", got, want)
	}
}

// testOpCatalog is testRowFuncCatalog with operators that user functions
// implement, a function whose body uses one, and an aggregate.
func testOpCatalog() *catalog {
	cat := testRowFuncCatalog()
	funcs := append(cat.fns.funcs,
		userFunc{schema: "public", name: "has_orders", lang: "sql", src: `select $1 >>> 0`},
		userFunc{schema: "public", name: "order_total", lang: "internal", src: "aggregate_dummy"},
		userFunc{schema: "public", name: "tallied", lang: "sql", src: `select ($1::public.tally).n`},
		userFunc{schema: "public", name: "tallied_as", lang: "sql", src: `select cast($1 as tally)`},
		userFunc{schema: "public", name: "counted", lang: "sql", src: `select $1::integer`},
		userFunc{schema: "public", name: "rel_oid", lang: "sql", src: `select $1::regclass::oid`},
		userFunc{schema: "public", name: "type_oid", lang: "plpgsql", src: `begin return cast($1 as pg_catalog.regtype); end`},
	)
	ix := newFuncIndex(funcs)
	ix.relations, ix.atomic, ix.viewCalls, ix.rowFuncs = cat.fns.relations, cat.fns.atomic, cat.fns.viewCalls, cat.fns.rowFuncs
	ix.opFuncs = map[string][]string{">>>": {"public.order_count"}, "==>": {"public.bump"}, "<->": {"public.dyn_count"}}
	ix.aggFns = map[string][]string{"public.order_total": {"public.order_count"}}
	ix.castFuncs = map[string][]string{"tally": {"public.order_count"}, "int4": {"public.order_count"}}
	cat.fns = ix
	return cat
}

// TestOperatorReads: a read that uses an operator a user function
// implements, directly or in a function it calls, depends on what the
// function reads, and is opaque as a call of it would be; built-in
// operators, and operators of functions that read nothing, change nothing.
// A user aggregate reads what its functions read, and a cast what its
// function reads.
func TestOperatorReads(t *testing.T) {
	cat := testOpCatalog()
	checkReads(t, cat, []readCase{
		{"select u.id from users u where u >>> 1", []string{"orders", "users"}, false},
		{"select u.id from users u where u.id = $1 and u.id >= 0", []string{"users"}, false},
		{"select u.id from users u where u ==> 1", []string{"items", "users"}, true},
		{"select u <-> u from users u", []string{"users"}, true},
		{"select u.id from users u where u.id > $1 and (u)>>>2", []string{"orders", "users"}, false},
		{"select has_orders(u) from users u", []string{"orders", "users"}, false},
		{"select order_total(u.id) from users u", []string{"orders", "users"}, false},
		{"select (u::tally).n from users u", []string{"orders", "users"}, false},
		{"select cast(u as public.tally) from users u", []string{"orders", "users"}, false},
		{"select tallied(u) from users u", []string{"orders", "users"}, false},
		{"select tallied_as(u) from users u", []string{"orders", "users"}, false},
		{"select counted(u) from users u", []string{"orders", "users"}, false},
		{"select rel_oid($1)", nil, true},
		{"select type_oid($1)", nil, true},
		{"select u.id::text from users u", []string{"users"}, false},
	})
	a := &analysis{opMany: true}
	if got := cat.callsOf(a); len(got) != 3 {
		t.Errorf("past attrMax operators, callsOf = %q, want every operator's function", got)
	}
}

// TestOperatorsNoted: the analysis notes each operator once, and past
// attrMax of them, that any may be used.
func TestOperatorsNoted(t *testing.T) {
	a := analyzeUncached("select a <@> b, c || d, e <@> f from t where g = $1 and h >= -1")
	slices.Sort(a.operators)
	if want := []string{"-", "<@>", "=", ">=", "||"}; !slices.Equal(a.operators, want) || a.opMany {
		t.Errorf("operators %q (many %v), want %q", a.operators, a.opMany, want)
	}
	var b strings.Builder
	b.WriteString("select 1")
	for i := range attrMax + 1 {
		fmt.Fprintf(&b, " + 1 %s 1", strings.Repeat("<", i+1)+"@")
	}
	if a := analyzeUncached(b.String()); !a.opMany || a.operators != nil {
		t.Errorf("%d operators: many %v, %d noted", attrMax+2, a.opMany, len(a.operators))
	}
}
