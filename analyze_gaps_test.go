package cachedpq

import (
	"slices"
	"testing"
)

// TestKeywordAliasTables: non-reserved keywords used as column aliases,
// table aliases and column names, which ended or hid a FROM list and so
// lost its tables.
func TestKeywordAliasTables(t *testing.T) {
	tests := []tableCase{
		// A select item named rows or delete is no ROWS FROM or DELETE FROM.
		{"select count(*) as rows from users", []string{"users"}, nil},
		{"select count(*) rows from users", []string{"users"}, nil},
		{"select rows from t", []string{"t"}, nil},
		{"select 1 as delete from t", []string{"t"}, nil},
		{"select x.delete from t x, u", []string{"t", "u"}, nil},
		{"select * from t where a = (select delete from u limit 1)", []string{"t", "u"}, nil},
		{"insert into w select rows from t", []string{"t"}, []string{"w"}},
		{"update w set a = delete from t", []string{"t"}, []string{"w"}},
		{"select * from rows from (generate_series(1, 2), unnest(array[1])) as x(a, b), t", []string{"t"}, nil},
		// A DELETE FROM that starts a statement still reads nothing.
		{"delete from t where a in (select a from u)", []string{"u"}, []string{"t"}},
		{"with x as (select 1) delete from t", nil, []string{"t"}},
		{"select * from (with x as (select 1) delete from t returning 1) d", nil, []string{"t"}},
		{"explain analyze delete from t using u", []string{"u"}, []string{"t"}},
		// SET as an alias or column name, and a CASE in a join condition,
		// ended the FROM list: the tables after the next comma were lost.
		{"select * from a set, b", []string{"a", "b"}, nil},
		{"select set.x from a set, b", []string{"a", "b"}, nil},
		{"select * from a set(c), b", []string{"a", "b"}, nil},
		{"select * from a join b set on true, c", []string{"a", "c", "b"}, nil},
		{"select * from a join b on a.set = b.x, c", []string{"a", "c", "b"}, nil},
		{"select * from a join b on a.x = set, c", []string{"a", "c", "b"}, nil},
		{"delete from w using a set, b", []string{"a", "b"}, []string{"w"}},
		{"select * from a join b on case when a.x = b.x then true else false end, c", []string{"a", "c", "b"}, nil},
		{"select * from a join b on case when case when true then a.x end = b.x then true end, c", []string{"a", "c", "b"}, nil},
		{"update w set a = 1 from a join b on case a.x when 1 then true end, c where true", []string{"a", "c", "b"}, []string{"w"}},
		{"insert into w select * from a on conflict (x) do update set a = 1, b = 2", []string{"a"}, []string{"w"}},
	}
	checkTables(t, tests)
}

// TestKeywordCTENames: WITH names that are keywords (UPDATE, INSERT,
// DELETE, MERGE, VALUES) were taken for the main statement, which hid its
// target, also in a nested WITH.
func TestKeywordCTENames(t *testing.T) {
	tests := []struct {
		q             string
		reads, writes []string
		kind          stmtKind
	}{
		{"with update as (select 1) update w set a = 1", nil, []string{"w"}, kindUpdate},
		{"with update as (select 1) delete from w", nil, []string{"w"}, kindDelete},
		{"with insert as (select 1 as id) update w set a = 1 from insert where w.id = insert.id", nil, []string{"w"}, kindUpdate},
		{"with a as (select 1), merge as (select 1 as id) delete from w where id in (select id from merge)", nil, []string{"w"}, kindDelete},
		{"with values as (select 1) insert into w values (1)", nil, []string{"w"}, kindInsert},
		{"with recursive delete(n) as (select 1 union all select n from delete) delete from w", nil, []string{"w"}, kindDelete},
		{"with d as (with update as (select 1) delete from w returning 1) select * from d", nil, []string{"w"}, kindSelect},
		{"with delete as materialized (select * from t) select * from delete, u", []string{"t", "u"}, nil, kindSelect},
		{"with x as (select 1) (select * from t)", []string{"t"}, nil, kindSelect},
		// SEARCH and CYCLE clauses, whose column names may be keywords too.
		{"with recursive x(a, update) as (select 1, 2 union all select a, update from x) search depth first by a, update set delete update w set a = 1", nil, []string{"w"}, kindUpdate},
		{"with recursive x(a, update) as (select 1, 2 union all select a, update from x) cycle a, update set delete to 'y' default 'n' using insert, merge as (select 1) delete from w", nil, []string{"w"}, kindDelete},
		{"with recursive x(a) as (select 1 union all select a from x) search breadth first by a set o cycle a set c using p insert into w select * from t", []string{"t"}, []string{"w"}, kindInsert},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			a := analyzeUncached(tt.q)
			if !slices.Equal(a.reads, tt.reads) || !slices.Equal(a.writes, tt.writes) || a.kind != tt.kind {
				t.Errorf("reads %q writes %q kind %v, want %q %q %v", a.reads, a.writes, a.kind, tt.reads, tt.writes, tt.kind)
			}
		})
	}
}

// TestCopyBinary: COPY BINARY t FROM was read as a read of a table named
// binary.
func TestCopyBinary(t *testing.T) {
	for q, want := range map[string]stmtKind{
		"copy binary w from '/tmp/f'":         kindCopyFrom,
		"copy binary public.w (a) from stdin": kindCopyFrom,
		"copy binary w to stdout":             kindCopyTo,
	} {
		a := analyzeUncached(q)
		if want == kindCopyFrom && !slices.Equal(a.writes, []string{"w"}) || want == kindCopyTo && !slices.Equal(a.reads, []string{"w"}) || a.kind != want {
			t.Errorf("%s: reads %q writes %q kind %v, want %v of w", q, a.reads, a.writes, a.kind, want)
		}
	}
}

// TestCreateTableAsExecute: CREATE TABLE t AS EXECUTE p runs a prepared
// statement the text does not show, as EXECUTE p does.
func TestCreateTableAsExecute(t *testing.T) {
	for _, q := range []string{"create table t2 as execute p", "create temp table if not exists t2 (a) as execute p (1)"} {
		a := analyzeUncached(q)
		if !a.unknownWrite || !a.runsCode || !slices.Contains(a.writes, "t2") {
			t.Errorf("%s: unknown write %v runs code %v writes %q", q, a.unknownWrite, a.runsCode, a.writes)
		}
	}
}

// TestBeginAtomicOnlyInRoutines: BEGIN ATOMIC was taken for a function
// body in any CREATE, and the statements after it were swallowed.
func TestBeginAtomicOnlyInRoutines(t *testing.T) {
	a := analyzeUncached(`create view v as select x.begin atomic from (select 1 as begin) x; update w set a = 1`)
	if !a.multi || !slices.Equal(a.writes, []string{"v", "w"}) {
		t.Errorf("CREATE VIEW: multi %v writes %q", a.multi, a.writes)
	}
	a = analyzeUncached(`create or replace procedure p() language sql begin atomic update w set a = 1; end; update u set a = 1`)
	if !a.multi || !slices.Equal(a.writes, []string{"u"}) {
		t.Errorf("CREATE PROCEDURE: multi %v writes %q", a.multi, a.writes)
	}
}
