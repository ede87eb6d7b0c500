package cachedpq

import (
	"slices"
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
