package cachedpq

import "testing"

// TestViewRefusal reads view definitions as pg_get_viewdef prints them.
func TestViewRefusal(t *testing.T) {
	cat := &catalog{views: map[string]viewDef{
		"recent": newViewDef(" SELECT users.id\n   FROM users\n  WHERE (users.seen > (now() - '100 years'::interval));"),
		"zoned":  newViewDef(" SELECT set_config('TimeZone'::text, 'UTC'::text, false) AS tz;"),
		"stats":  newViewDef(" SELECT c.relname\n   FROM pg_class c;"),
		"plain":  newViewDef(" SELECT users.id,\n    users.name\n   FROM users;"),
		"sized":  newViewDef(" SELECT pg_relation_size('users'::regclass) AS s;"),
	}}
	cat.fns = newFuncIndex(nil)
	cat.fns.volatile["pg_relation_size"] = true
	for _, tt := range []struct {
		tables   []string
		nondetOK bool
		refused  bool
	}{
		{[]string{"users", "recent"}, false, true},
		{[]string{"users", "recent"}, true, false},
		{[]string{"zoned"}, true, true},
		{[]string{"stats"}, true, true},
		{[]string{"plain", "users"}, false, false},
		{[]string{"sized"}, true, true},
		{[]string{"users"}, false, false},
	} {
		if why := cat.viewRefusal(tt.tables, tt.nondetOK); (why != "") != tt.refused {
			t.Errorf("viewRefusal(%v, %v) = %q, want refused %v", tt.tables, tt.nondetOK, why, tt.refused)
		}
	}
}
