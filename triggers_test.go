package cachedpq

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"slices"
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
			got, ok := bodyWrites(tt.body, calls)
			if ok != tt.ok || !slices.Equal(got, tt.want) {
				t.Fatalf("bodyWrites = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
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
// body it can read names only tables it found in the text.
func FuzzBodyWrites(f *testing.F) {
	for _, s := range []string{
		`begin insert into audit values (new.id); return new; end`,
		`begin update only (x) set a = 1; truncate table a, b*; return null; end`,
		`begin execute 'x'; end`, `insert into`, `update`, `truncate table`, `"a".`, `a.b.(`,
		`delete from only (`, `begin set x = 1; end`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tables, ok := bodyWrites(src, func(string) ([]string, bool) { return nil, true })
		if !ok && tables != nil {
			t.Fatalf("opaque body with tables %q", tables)
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

	for _, q := range []struct {
		sql  string
		cols []string
		row  []driver.Value
	}{
		{fkQuery, []string{"a", "b", "c", "d"}, nil},
		{viewQuery, []string{"a", "b"}, nil},
		{policyQuery, []string{"a", "b", "c"}, nil},
		{viewBuiltinQuery, []string{"a", "b", "c", "d"}, nil},
		{inheritQuery, []string{"a", "b"}, nil},
		{seqQuery, []string{"a"}, nil},
		{funcQuery, []string{"a", "b", "c", "d", "e"}, nil},
		{relQuery, []string{"a"}, nil},
		{atomicQuery, []string{"a", "b", "c"}, nil},
		{viewCallQuery, []string{"a", "b"}, nil},
		{builtinQuery, []string{"a"}, nil},
		{rowFuncQuery, []string{"a"}, nil},
		{opQuery, []string{"a", "b"}, nil},
		{castQuery, []string{"a", "b"}, nil},
		{aggQuery, []string{"a", "b"}, nil},
		{triggerQuery, []string{"a", "b", "c", "d"}, []driver.Value{"users", "plpgsql", false,
			"begin update audit_count set n = n + 1; return new; end"}},
		{whenQuery, []string{"a", "b", "c"}, nil},
		{defaultQuery, []string{"a", "b", "c"}, nil},
		{domainQuery, []string{"a", "b", "c"}, nil},
		{ruleQuery, []string{"a", "b"}, nil},
		{ruleCallQuery, []string{"a"}, nil},
		{eventQuery, []string{"a", "b", "c"}, nil},
	} {
		rows := sqlmock.NewRows(q.cols)
		if q.row != nil {
			rows.AddRow(q.row...)
		}
		mock.ExpectQuery(q.sql).WillReturnRows(rows)
	}
	mock.ExpectQuery(read).WillReturnRows(sqlmock.NewRows([]string{"n"}).AddRow(int64(1)))
	mock.ExpectExec(`update users set name = 'x'`).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectQuery(fkQuery).WillReturnError(errors.New("catalog unreadable"))
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
