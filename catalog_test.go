package cachedpq

import (
	"context"
	"database/sql/driver"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/DATA-DOG/go-sqlmock"
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

// TestReadCatalogShape: the catalog is read in one string of statements;
// an answer with a result set missing, or with other columns, is an error
// (writes then invalidate everything), never a catalog read half.
func TestReadCatalogShape(t *testing.T) {
	for _, tt := range []struct {
		name string
		sets func() []*sqlmock.Rows
	}{
		{"a set missing", func() []*sqlmock.Rows {
			var sets []*sqlmock.Rows
			for _, q := range catalogQueries[:len(catalogQueries)-1] {
				sets = append(sets, sqlmock.NewRows(strings.Split("abcde"[:q.ncols], "")))
			}
			return sets
		}},
		{"other columns", func() []*sqlmock.Rows {
			var sets []*sqlmock.Rows
			for range catalogQueries {
				sets = append(sets, sqlmock.NewRows([]string{"a"}))
			}
			return sets
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db, mock, err := sqlmock.New(sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			mock.ExpectQuery(catalogBatch).WillReturnRows(tt.sets()...)
			conn, err := db.Conn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			err = conn.Raw(func(dc any) error {
				_, err := loadCatalog(context.Background(), dc.(driver.Conn))
				return err
			})
			if !errors.Is(err, errCatalogShape) {
				t.Fatalf("loadCatalog: %v, want errCatalogShape", err)
			}
		})
	}
}
