package cachedpq

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestUnseenBuiltins: a read that calls a built-in reading what no tag
// covers (SQL of its own, large objects, a sequence) is refused even when
// non-deterministic reads are allowed; a statement calling one that runs
// SQL is an unknown write that runs code.
func TestUnseenBuiltins(t *testing.T) {
	for _, c := range []struct {
		sql     string
		reason  string // in notCacheable; "" for cacheable
		runsSQL bool
	}{
		{`select table_to_xml('users', true, false, '')`, "runs SQL", true},
		{`select pg_catalog.query_to_xml($1, true, false, '')`, "runs SQL", true},
		{`select * from ts_stat('select v from docs')`, "runs SQL", true},
		{`select database_to_xml(true, false, '')`, "runs SQL", true},
		{`insert into t select query_to_xml('select bump()', true, false, '')`, "not a read-only", true},
		{`select lo_get($1)`, "large objects", false},
		{`select pg_sequence_last_value('s')`, "a sequence", false},
		{`select to_regclass($1)`, "system catalog", false},
		{`select pg_get_viewdef('v'::regclass)`, "system catalog", false},
		{`select obj_description(oid) from t`, "system catalog", false},
		{`select $1::regclass::oid`, "system catalog", false},
		{`select * from t where tableoid = 'public.t'::pg_catalog.regclass`, "system catalog", false},
		{`select cast($1 as regtype)`, "system catalog", false},
		{`select regclass('users')`, "system catalog", false},
		{`select x::text, count(*) as regular from t group by x`, "", false},
		{`select x::regular from t`, "", false}, // a user type
		{`select x::double precision, cast(y as bigint) from t`, "", false},
		{`select myschema.table_to_xml('users')`, "", false}, // a user function
		{`select xmlparse(content '<a/>')`, "", false},
	} {
		a := analyzeUncached(c.sql)
		if c.reason == "" && a.notCacheable != "" || !strings.Contains(a.notCacheable, c.reason) {
			t.Errorf("%s: notCacheable %q, want %q", c.sql, a.notCacheable, c.reason)
		}
		if a.nondeterministic || a.unknownWrite != c.runsSQL || a.runsCode != c.runsSQL {
			t.Errorf("%s: nondeterministic %v, unknownWrite %v, runsCode %v", c.sql, a.nondeterministic,
				a.unknownWrite, a.runsCode)
		}
	}
}

// TestBodyRunsSQL: a function body that calls a built-in running SQL of
// its own (which may call a writer) writes what its text does not show.
func TestBodyRunsSQL(t *testing.T) {
	none := func(string) ([]string, bool) { return nil, true }
	for _, src := range []string{
		`select query_to_xml('select bump()', true, false, '')`,
		`begin perform pg_catalog.table_to_xml('users', true, false, ''); end`,
	} {
		if tables, ok := bodyWrites(src, none, nil); ok {
			t.Errorf("%s: writes %v, want opaque", src, tables)
		}
	}
}

// TestRegisterRefusesRegCasts: a read that casts to an OID type is refused
// at registration, with the reason.
func TestRegisterRefusesRegCasts(t *testing.T) {
	err := NewRegistry().Register(`select u.name from users u where u.tableoid = $1::regclass`, Policy{TTL: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "regclass") {
		t.Fatalf("Register: %v", err)
	}
}

// TestCastsNoted: the analysis notes the types cast to, by their catalog
// names, for the casts user functions implement.
func TestCastsNoted(t *testing.T) {
	a := analyzeUncached(`select x::public.tally, cast(y as bigint), z::double precision, (w)::character varying(3) from t`)
	slices.Sort(a.casts)
	if want := []string{"bpchar", "float8", "int8", "tally", "varchar"}; !slices.Equal(a.casts, want) {
		t.Errorf("casts %q, want %q", a.casts, want)
	}
}
