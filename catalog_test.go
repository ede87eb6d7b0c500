package cachedpq

import (
	"context"
	"database/sql/driver"
	"slices"
	"strings"
	"testing"
)

// TestReachFollowsHierarchies: a write to a partition changes what its
// ancestors read, and a write to a parent may change every descendant's
// rows, but a partition's write leaves its siblings alone.
func TestReachFollowsHierarchies(t *testing.T) {
	cat := &catalog{
		parents:  map[string][]string{"m1": {"m"}, "m2": {"m"}, "m11": {"m1"}, "c": {"p"}},
		children: map[string][]string{"m": {"m1", "m2"}, "m1": {"m11"}, "p": {"c"}},
		cascades: map[string][]string{"m11": {"orders"}},
	}
	tests := []struct {
		writes []string
		want   []string
	}{
		{[]string{"m11"}, []string{"m11", "orders", "m1", "m"}},
		{[]string{"m1"}, []string{"m1", "m", "m11", "orders"}},
		{[]string{"m"}, []string{"m", "m1", "m2", "m11", "orders"}},
		{[]string{"c"}, []string{"c", "p"}},
		{[]string{"x"}, []string{"x"}},
	}
	for _, tt := range tests {
		got, _ := cat.reach(tt.writes, false)
		slices.Sort(got)
		want := slices.Sorted(slices.Values(tt.want))
		if !slices.Equal(got, want) {
			t.Errorf("reach(%v) = %v, want %v", tt.writes, got, want)
		}
	}
}

// TestCatalogLeavesOutExtensionCode: the catalog lists the operators,
// casts and aggregates of user functions in SQL and PL/pgSQL, but not
// those of an extension's C functions that are not VOLATILE (citext's =,
// its min and max), which read and write no table: with them, every
// statement that used = gained a list of calls to check, allocated.
func TestCatalogLeavesOutExtensionCode(t *testing.T) {
	_, _, raw := engineDB(t, nil)
	var schema string
	if err := raw.QueryRow(`select current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`create extension citext schema ` + schema + `;
		create function same_len(int8, text) returns boolean language sql immutable as 'select length($2) = $1';
		create operator === (leftarg = int8, rightarg = text, function = same_len)`); err != nil {
		t.Fatal(err)
	}
	conn, err := raw.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var cat *catalog
	err = conn.Raw(func(dc any) error {
		cat, err = loadCatalog(context.Background(), dc.(driver.Conn))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	own := func(fns []string) []string {
		return slices.DeleteFunc(slices.Clone(fns), func(f string) bool { return !strings.HasPrefix(f, schema+".") })
	}
	if got := own(cat.fns.opFuncs["="]); len(got) != 0 {
		t.Errorf("= calls %q, want none of the extension's", got)
	}
	if got := own(cat.fns.aggFns[schema+".min"]); len(got) != 0 {
		t.Errorf("min calls %q, want none of the extension's", got)
	}
	for typ, fns := range cat.fns.castFuncs {
		if got := own(fns); len(got) != 0 {
			t.Errorf("casts to %s call %q, want none of the extension's", typ, got)
		}
	}
	if got := own(cat.fns.opFuncs["==="]); !slices.Equal(got, []string{schema + ".same_len"}) {
		t.Errorf("=== calls %q, want %s.same_len", got, schema)
	}
	if fns := cat.callsOf(analyzeUncached(`select k from kv where k = $1 and v = 'a'`)); len(own(fns)) != 0 {
		t.Errorf("callsOf = %q", fns)
	}
}
