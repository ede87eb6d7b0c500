package cachedpq

import (
	"database/sql/driver"
	"testing"
)

// TestViewRefusal judges the built-ins of views as viewBuiltinQuery lists
// them.
func TestViewRefusal(t *testing.T) {
	cat := &catalog{views: map[string]viewDef{}}
	for _, r := range [][]driver.Value{
		{"recent", "pg_catalog.now", false, int64(0)},
		{"recent", "pg_catalog.timestamptz_gt", false, int64(2)},
		{"zoned", "pg_catalog.set_config", true, int64(3)},
		{"lucky", "pg_catalog.random", true, int64(0)},
		{"sized", "pg_catalog.pg_relation_size", true, int64(1)},
		{"sized", "pg_catalog.now", false, int64(0)},
		{"stamped", "pg_catalog.sql_value_function", false, int64(0)},
		{"aged", "pg_catalog.age", false, int64(1)},
		{"spans", "pg_catalog.age", false, int64(2)},
		{"plain", "pg_catalog.int4pl", false, int64(2)},
		{"named", "pg_catalog.to_regclass", false, int64(1)},
		{"relabelled", "pg_catalog.regclass", false, int64(-1)},
		{"typed", "pg_catalog.regtype", false, int64(-1)},
	} {
		cat.noteViewBuiltin(r)
	}
	for _, tt := range []struct {
		tables   []string
		nondetOK bool
		refused  bool
	}{
		{[]string{"users", "recent"}, false, true},
		{[]string{"users", "recent"}, true, false},
		{[]string{"lucky"}, true, false}, // random() is non-deterministic, as in a query
		{[]string{"zoned"}, true, true},
		{[]string{"sized"}, true, true}, // volatile, whatever else it calls
		{[]string{"stamped"}, false, true},
		{[]string{"stamped"}, true, false},
		{[]string{"aged"}, false, true},
		{[]string{"spans"}, false, false},
		{[]string{"plain", "users"}, false, false},
		{[]string{"named"}, true, true},
		{[]string{"relabelled"}, true, true},
		{[]string{"typed"}, true, true},
		{[]string{"users"}, false, false},
	} {
		if why := cat.viewRefusal(tt.tables, tt.nondetOK); (why != "") != tt.refused {
			t.Errorf("viewRefusal(%v, %v) = %q, want refused %v", tt.tables, tt.nondetOK, why, tt.refused)
		}
	}
	_, _, zoned := cat.readWrites([]string{"zoned"})
	_, _, recent := cat.readWrites([]string{"recent"})
	if !cat.sessionViews || !zoned || recent {
		t.Error("set_config's view does not change the session, or another does")
	}
}
