package cachedpq

import (
	"database/sql"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
)

func TestBodyWrites(t *testing.T) {
	volatile := map[string]bool{"log_change": true, "audit.log_change": true}
	known := map[string][]string{"log_row": {"log"}}
	calls := func(name string) ([]string, bool) {
		if tables, ok := known[name]; ok {
			return tables, true
		}
		return nil, !volatile[name]
	}
	tests := []struct {
		name, body string
		want       []string // nil with ok false: opaque
		ok         bool
	}{
		{"updated_at", `begin new.updated_at := now(); return new; end`, nil, true},
		{"audit insert", `begin
			insert into audit (item, op, comment) values (new.id, tg_op, 'changed');
			return new;
		end`, []string{"audit"}, true},
		{"qualified and quoted", `begin insert into history."Log" select new.*; return null; end`, []string{"Log"}, true},
		{"counter", `begin
			if tg_op = 'INSERT' then update counters set n = n + 1 where name = 'items';
			elsif tg_op = 'DELETE' then update only counters set n = n - 1 where name = 'items';
			end if;
			return null;
		end`, []string{"counters"}, true},
		{"delete and merge", `begin delete from cache_rows where id = old.id;
			merge into totals t using (select 1) s on true when matched then update set n = 0; return old; end`,
			[]string{"cache_rows", "totals"}, true},
		{"upsert", `begin insert into stats (k, n) values (new.k, 1) on conflict (k) do update set n = stats.n + 1; return new; end`,
			[]string{"stats"}, true},
		{"locking read", `declare r record; begin select * into r from parents where id = new.parent for no key update;
			perform 1 from parents for update; return new; end`, nil, true},
		{"table named set", `begin update set set x = 1; return new; end`, []string{"set"}, true},
		{"truncate", `begin truncate table a, only b; return null; end`, []string{"a", "b"}, true},
		{"writes in strings and comments", `begin -- insert into x
			/* update y set z = 1 */ raise notice 'delete from w'; return new; end`, nil, true},
		{"cte write", `begin with d as (delete from queue where id = old.id returning *) insert into done select * from d; return old; end`,
			[]string{"queue", "done"}, true},

		{"known volatile helper", `begin insert into audit values (new.id); perform log_row(new.id); return new; end`,
			[]string{"audit", "log"}, true},
		{"dynamic sql", `begin execute format('insert into %I values (1)', tg_argv[0]); return new; end`, nil, false},
		{"for in execute", `declare r record; begin for r in execute 'select 1' loop end loop; return new; end`, nil, false},
		{"volatile helper", `begin perform log_change(new.id); return new; end`, nil, false},
		{"qualified volatile helper", `begin perform audit.log_change(new.id); return new; end`, nil, false},
		{"set_config", `begin perform set_config('app.tenant', new.tenant, false); return new; end`, nil, false},
		{"qualified set_config", `begin perform pg_catalog.set_config('a.b', 'c', false); return new; end`, nil, false},
		{"pg_settings", `begin update pg_catalog.pg_settings set setting = 'UTC' where name = 'TimeZone'; return new; end`, nil, false},
		{"set", `begin set search_path = other; return new; end`, nil, false},
		{"call", `begin if new.x then call refresh_totals(); end if; return new; end`, nil, false},
		{"ddl", `begin create table if not exists side (x int); return new; end`, nil, false},
		{"truncate cascade", `begin truncate parents cascade; return null; end`, nil, false},
		{"unreadable target", `begin insert into (select 1); return new; end`, nil, false},
		{"nested do", `begin do $x$ begin perform 1; end $x$; return new; end`, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := bodyWrites(tt.body, calls, nil)
			if ok != tt.ok || !slices.Equal(got, tt.want) {
				t.Fatalf("bodyWrites = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestBodyWritesHiddenCalls: a function's source calls functions it does
// not name, through an operator, a cast or attribute notation, and writes
// what they write; one that may write what its source does not show makes
// the body opaque. Without the index (nil), such calls go unseen.
func TestBodyWritesHiddenCalls(t *testing.T) {
	ix := newFuncIndex(nil)
	ix.opFuncs = map[string][]string{"==>": {"public.visit"}, "<~>": {"public.dyn"}}
	ix.castFuncs = map[string][]string{"visited": {"public.visited_of"}, "int4": {"public.visited_of"}}
	ix.rowFuncs = map[string]bool{"marked": true}
	known := map[string][]string{"public.visit": {"audit"}, "public.visited_of": {"visits"}, "marked": {"marks"}}
	calls := func(name string) ([]string, bool) {
		tables, ok := known[name]
		return tables, ok || name != "public.dyn"
	}
	tests := []struct {
		body string
		want []string // nil with ok false: opaque
		ok   bool
	}{
		{`begin return u ==> 1; end`, []string{"audit"}, true},
		{`begin return (u::visited).ok; end`, []string{"visits"}, true},
		{`begin return cast(u as visited); end`, []string{"visits"}, true},
		{`begin return u::public.visited; end`, []string{"visits"}, true},
		{`begin return (u).marked; end`, []string{"marks"}, true},
		{`begin return u.marked and x.name = 'a'; end`, []string{"marks"}, true},
		{`begin insert into log values (1); return u ==> 1 and (u).marked; end`, []string{"log", "audit", "marks"}, true},
		{`begin return u <~> 1; end`, nil, false},
		{`begin return u.name; end`, nil, true},
		{`begin return u::integer > 0; end`, []string{"visits"}, true}, // int4's cast
	}
	for _, tt := range tests {
		got, ok := bodyWrites(tt.body, calls, ix)
		if ok != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("%s: bodyWrites = %q, %v; want %q, %v", tt.body, got, ok, tt.want, tt.ok)
		}
	}
	if got, ok := bodyWrites(`begin return u ==> 1 and (u).marked; end`, calls, nil); !ok || got != nil {
		t.Errorf("without an index: %q, %v; want none, true", got, ok)
	}
}

// TestAggregateCalls: a call of a user aggregate writes what its functions
// write, and may write if one may (PostgreSQL makes every aggregate
// IMMUTABLE); a transition function that shares the aggregate's name is
// read once.
func TestAggregateCalls(t *testing.T) {
	funcs := []userFunc{
		{schema: "public", name: "visits", lang: "internal", src: "aggregate_dummy"},
		{schema: "public", name: "visit_sum", lang: "plpgsql", volatile: true},
		{schema: "public", name: "total", lang: "internal", src: "aggregate_dummy"},
		{schema: "public", name: "total", lang: "plpgsql", volatile: true},
		{schema: "public", name: "plain_sum", lang: "internal", src: "aggregate_dummy"},
		{schema: "public", name: "add", lang: "sql"},
	}
	cat := &catalog{
		fns:      newFuncIndex(funcs),
		volatile: map[string]bool{"visit_sum": true, "public.visit_sum": true, "total": true, "public.total": true},
		writers:  map[string]bool{},
		funcWrites: map[string][]string{
			"visit_sum": {"audit"}, "public.visit_sum": {"audit"},
			"total": {"totals"}, "public.total": {"totals"},
		},
	}
	cat.fns.aggFns = map[string][]string{
		"public.visits":    {"public.visit_sum"},
		"public.total":     {"public.total"},
		"public.plain_sum": {"public.add"},
	}
	for _, tt := range []struct {
		name     string
		want     []string
		mayWrite bool
	}{
		{"visits", []string{"audit"}, true},
		{"public.visits", []string{"audit"}, true},
		{"total", []string{"totals", "totals"}, true},
		{"plain_sum", nil, false},
		{"add", nil, false},
	} {
		got, ok := cat.calls(tt.name)
		if !ok || !slices.Equal(got, tt.want) {
			t.Errorf("calls(%s) = %q, %v; want %q, true", tt.name, got, ok, tt.want)
		}
		if m := cat.mayWrite(tt.name); m != tt.mayWrite {
			t.Errorf("mayWrite(%s) = %v, want %v", tt.name, m, tt.mayWrite)
		}
	}
}

// TestReachFollowsTriggers: a write reaches what the triggers and rules of
// its tables write, transitively, and reports an opaque one on the way.
func TestReachFollowsTriggers(t *testing.T) {
	cat := &catalog{
		fired:    map[string][]string{"items": {"audit"}, "audit": {"audit_count"}},
		opaque:   map[string]bool{"orders": true},
		cascades: map[string][]string{"customers": {"orders"}},
	}
	tests := []struct {
		writes []string
		want   []string
		opaque bool
	}{
		{[]string{"items"}, []string{"items", "audit", "audit_count"}, false},
		{[]string{"customers"}, []string{"customers", "orders"}, true},
		{[]string{"other"}, []string{"other"}, false},
	}
	for _, tt := range tests {
		got, opaque := cat.reach(tt.writes, false)
		if !slices.Equal(got, tt.want) || opaque != tt.opaque {
			t.Errorf("reach(%v) = %v, %v; want %v, %v", tt.writes, got, opaque, tt.want, tt.opaque)
		}
	}
}

// FuzzBodyWrites: any function source is read without panicking, and a
// body it can read names only tables it found in the text, or that the
// functions it calls, by name or not, write.
func FuzzBodyWrites(f *testing.F) {
	for _, s := range []string{
		`begin insert into audit values (new.id); return new; end`,
		`begin update only (x) set a = 1; truncate table a, b*; return null; end`,
		`begin execute 'x'; end`, `insert into`, `update`, `truncate table`, `"a".`, `a.b.(`,
		`delete from only (`, `begin set x = 1; end`,
		`begin return u ==> 1 and (u).f and cast(u as t) and u.f and u::integer; end`, `cast(x as`, `(x).`, `a::`,
	} {
		f.Add(s)
	}
	ix := newFuncIndex(nil)
	ix.opFuncs = map[string][]string{"==>": {"public.visit"}}
	ix.castFuncs = map[string][]string{"int4": {"public.visit"}, "t": {"public.visit"}}
	ix.rowFuncs = map[string]bool{"f": true}
	calls := func(name string) ([]string, bool) {
		if name == "public.visit" || name == "f" {
			return []string{"audit"}, true
		}
		return nil, true
	}
	f.Fuzz(func(t *testing.T, src string) {
		for _, ix := range []*funcIndex{nil, ix} {
			tables, ok := bodyWrites(src, calls, ix)
			if !ok && tables != nil {
				t.Fatalf("opaque body with tables %q", tables)
			}
		}
	})
}

// TestStaleCatalogServesWhenReloadFails: a catalog past CatalogRefresh is
// read again by the next statement that needs it; if that fails, the last
// reading serves another period, rather than every statement trying again
// and reads bypassing the cache meanwhile.
func TestStaleCatalogServesWhenReloadFails(t *testing.T) {
	dsn := "cachedpq-" + t.Name()
	raw, mock, err := sqlmock.NewWithDSN(dsn, sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
	if err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry()
	const read = `select n from audit_count`
	if err := reg.Register(read, Policy{TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	const refresh = 50 * time.Millisecond
	db := sql.OpenDB(Wrap(&driverConnector{drv: raw.Driver(), dsn: dsn}, Options{Registry: reg, CatalogRefresh: refresh}))
	db.SetMaxOpenConns(1)
	defer raw.Close()
	defer db.Close()

	// The catalog is read in one round trip, a result set a query; the
	// only row is a trigger of users that writes audit_count.
	var sets []*sqlmock.Rows
	for _, q := range catalogQueries {
		rows := sqlmock.NewRows(strings.Split("abcde"[:q.ncols], ""))
		if q.query == triggerQuery {
			rows.AddRow("users", "plpgsql", false, "begin update audit_count set n = n + 1; return new; end")
		}
		sets = append(sets, rows)
	}
	mock.ExpectQuery(catalogBatch).WillReturnRows(sets...)
	mock.ExpectQuery(read).WillReturnRows(sqlmock.NewRows([]string{"n"}).AddRow(int64(1)))
	mock.ExpectExec(`update users set name = 'x'`).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectQuery(catalogBatch).WillReturnError(errors.New("catalog unreadable"))
	mock.ExpectQuery(read).WillReturnRows(sqlmock.NewRows([]string{"n"}).AddRow(int64(2)))

	count := func() (n int64) {
		t.Helper()
		if err := db.QueryRow(read).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 1 {
		t.Fatalf("miss: %d", n)
	}
	count() // a hit
	time.Sleep(2 * refresh)
	if _, err := db.Exec(`update users set name = 'x'`); err != nil {
		t.Fatal(err)
	}
	// The trigger on users, known from the stale reading, voided the count.
	for range 2 {
		if n := count(); n != 2 {
			t.Fatalf("after the update: %d", n)
		}
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}
