package cachedpq

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestNormalizeSame(t *testing.T) {
	tests := []struct{ name, a, b string }{
		{"whitespace", "select a,b from t where x=$1", "SELECT  a ,\n\tb\nFROM t WHERE x = $1"},
		{"comments", "select a from t", "/* hi */ select a -- cols\n from /* a /* nested */ */ t"},
		{"case", "select A from T", "SELECT a FROM t"},
		{"trailing semicolon", "select 1", "select 1;  ;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := analyzeUncached(tt.a), analyzeUncached(tt.b)
			if a.normalized != b.normalized || a.fingerprint != b.fingerprint {
				t.Errorf("%q and %q normalize to %q and %q", tt.a, tt.b, a.normalized, b.normalized)
			}
		})
	}
}

func TestNormalizeDifferent(t *testing.T) {
	tests := []struct{ name, a, b string }{
		{"string literal", "select * from t where a = 'x'", "select * from t where a = 'X'"},
		{"number literal", "select * from t where a = 1", "select * from t where a = 2"},
		{"quoted ident", `select * from "Users"`, `select * from "users"`},
		{"quoted vs unquoted mixed case", `select * from "Users"`, `select * from Users`},
		{"parameter", "select * from t where a = $1", "select * from t where a = $2"},
		{"structure", "select a from t", "select a from t order by a"},
		{"token boundary", "select a from t where b = 'x y'", "select a from t where b = 'x' y"},
		{"dollar body", "select $$a$$", "select $$b$$"},
		{"comment-like string", "select '--x'", "select '--y'"},
		// A literal continued on the next line keeps E's escapes: \' does
		// not end it, and "--', 2" is inside it, not a comment.
		{"continued E string", "select E'a'\n'\\', 1 --', 2", "select E'a'\n'\\', 1 --', 3"},
		{"continued after a comment", "select 'a' -- c\n'b'", "select 'a' -- c\n'c'"},
		{"junk after a parameter", "select v from t where id = $1 limit 1", "select v from t where id = $1limit 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := analyzeUncached(tt.a), analyzeUncached(tt.b)
			if a.fingerprint == b.fingerprint {
				t.Errorf("%q and %q share fingerprint (normalized %q)", tt.a, tt.b, a.normalized)
			}
		})
	}
}

// long is a name of 63 bytes, the longest the server keeps.
var long = "t" + strings.Repeat("x", 62)

// tableCase is a statement and the tables its analysis must find.
type tableCase struct {
	q             string
	reads, writes []string
}

// checkTables analyzes each case's statement and compares its tables.
func checkTables(t *testing.T, tests []tableCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			a := analyzeUncached(tt.q)
			if !slices.Equal(a.reads, tt.reads) || !slices.Equal(a.writes, tt.writes) {
				t.Errorf("reads %q writes %q, want %q %q", a.reads, a.writes, tt.reads, tt.writes)
			}
		})
	}
}

func TestTables(t *testing.T) {
	tests := []tableCase{
		{"select * from users", []string{"users"}, nil},
		{"select * from public.Users", []string{"users"}, nil},
		{`select * from "users"`, []string{"users"}, nil},
		{`select * from "Users"`, []string{"Users"}, nil},
		{`select * from "we""ird"`, []string{`we"ird`}, nil},
		{`select * from U&"d\0061ta"`, []string{"data"}, nil},
		{`insert into U&"!0074!0061!0062" UESCAPE '!' values (2)`, nil, []string{"tab"}},
		{`update U&"!0070ublic" UESCAPE '!' . U&"t!!" UESCAPE '!' set a = 1`, nil, []string{"t!"}},
		{`select * from U&"\D83D\DE00", U&"\+01F601", U&"a\\b"`, []string{"\U0001F600", "\U0001F601", `a\b`}, nil},
		{`select * from U&"#D83D#DE02" uescape '#' x join U&"\D83D" y on true`, []string{"\U0001F602", `\D83D`}, nil},
		{"select * from a join b on true left join c.d on true", []string{"a", "b", "d"}, nil},
		{"select * from a, b x, (select * from c) y", []string{"a", "b", "c"}, nil},
		{"select * from a where id in (select id from b where exists (select 1 from c))", []string{"a", "b", "c"}, nil},
		{"with x as (select * from a) select * from x join b on true", []string{"a", "b"}, nil},
		{"with users as (select * from users) select * from users", []string{"users"}, nil},
		{"with recursive r as (select 1 union select * from r) select * from r", nil, nil},
		{"select * from (with x as (select 1) select * from x) s, x", []string{"x"}, nil},
		{"select * from generate_series(1, 3) g join t on true", []string{"t"}, nil},
		{"select * from f() as x(a int), lateral unnest(x.a)", nil, nil},
		{"select extract(epoch from ts) from t", []string{"t"}, nil},
		{"select * from ((a join b on true) join c on true)", []string{"a", "b", "c"}, nil},
		{"table t", []string{"t"}, nil},
		{"insert into t select * from u", []string{"u"}, []string{"t"}},
		{"insert into t (a) values (1) on conflict (a) do update set a = 1, b = 2", nil, []string{"t"}},
		{"update t set a = 1 from u, v where u.id = t.id", []string{"u", "v"}, []string{"t"}},
		{"delete from t using u, public.V where true", []string{"u", "v"}, []string{"t"}},
		{"merge into t using u on t.id = u.id when matched then delete", []string{"u"}, []string{"t"}},
		{"truncate table only a, b * , public.c cascade", nil, []string{"a", "b", "c"}},
		{"update only (t) set a = 2", nil, []string{"t"}},
		{"update only (public.t) as x set a = 2 from u", []string{"u"}, []string{"t"}},
		{"delete from only (t) using u where true", []string{"u"}, []string{"t"}},
		{"truncate only (t)", nil, []string{"t"}},
		{"truncate table only (a), only b, c *", nil, []string{"a", "b", "c"}},
		{"copy t from stdin", nil, []string{"t"}},
		{"copy t to stdout", []string{"t"}, nil},
		{"copy (select * from t) to stdout", []string{"t"}, nil},
		{"copy (delete from t returning *) to '/dev/null'", nil, []string{"t"}},
		{"copy (with x as (select * from u) update t set a = 1 from x returning *) to stdout", []string{"u"}, []string{"t"}},
		{"copy (insert into t select * from u returning *) to stdout", []string{"u"}, []string{"t"}},
		{"alter table t rename to u", nil, []string{"t", "u"}},
		{"drop table if exists a, b", nil, []string{"a", "b"}},
		{"create index i on t (a)", nil, nil},
		{"drop index i", nil, nil},
		{"create table t as select * from u", []string{"u"}, []string{"t"}},
		{"create materialized view m as select * from u", []string{"u"}, []string{"m"}},
		{"refresh materialized view concurrently m", nil, []string{"m"}},
		{"select * into n from t", []string{"t"}, []string{"n"}},
		{"(select * into n from t)", []string{"t"}, []string{"n"}},
		{"((with x as (select * from t) select * into n from x))", []string{"t"}, []string{"n"}},
		{"with x as (update t set a = 1 returning *) select * from x", nil, []string{"t"}},
		{"with x as (delete from t returning *) insert into u select * from x", nil, []string{"t", "u"}},
		{"with d as (with b as (select 1) delete from t returning *) select count(*) from d", nil, []string{"t"}},
		{"with d as (with b as (select * from u) update t set a = 1 returning *) select * from d", []string{"u"}, []string{"t"}},
		{"select * from (select 1) s where exists (with recursive b(n) as (select 1) insert into t select 1 returning *)", nil, []string{"t"}},
		{"with d as (with b as (with c as (select 1) delete from t returning *) select 1) select * from d", nil, []string{"t"}},
		{"with d as (with b as materialized (select 1), c as (select 2) merge into t using b on true when matched then delete) select 1", nil, []string{"t"}},
		{"insert into a values (1); update b set x = 1; delete from c", nil, []string{"a", "b", "c"}},
		{"explain analyze update t set a = 1", nil, []string{"t"}},
		{"explain update t set a = 1", nil, nil},
		// One literal continued on the next line, in E's mode: \' does not
		// end it, the ' after it does, and a DELETE follows.
		{"select E''\n'\\' '; delete from t; select '1'", nil, []string{"t"}},
		{"select 'a'\n'b'; delete from t", nil, []string{"t"}},
		{"select 'a' 'b'; delete from t", nil, []string{"t"}}, // no continuation within a line (a syntax error)
		// The server keeps 63 bytes of a name, cut at a character's start.
		{"select * from " + long + "_a join public." + long + "_b on true", []string{long}, nil},
		{`update "` + long + `_Q" set a = 1`, nil, []string{long}},
		{`delete from "` + long[:62] + `é"`, nil, []string{long[:62]}},
		{`insert into U&"` + long[:61] + `\00e9x" values (1)`, nil, []string{long[:61] + "é"}},
		// A number or parameter glued to a name: two tokens, as Postgres
		// 12 to 14 read them (15 and later refuse the statement).
		{"select 1from t", []string{"t"}, nil},
		{"select * from t where id = $1or id in (select id from u)", []string{"t", "u"}, nil},
		{"select 1.5e3from t", []string{"t"}, nil},
		{"select 1into n", nil, []string{"n"}},
		{"select 0x1f from t", []string{"t"}, nil},
		// INTO's modifiers may be the new table's name.
		{"select into temp", nil, []string{"temp"}},
		{"select 1 as a into unlogged from t", []string{"t"}, []string{"unlogged"}},
		{"select * into temp unlogged from t", []string{"t"}, []string{"unlogged"}},
		{"select * into local temporary temp from t", []string{"t"}, []string{"temp"}},
	}
	checkTables(t, tests)
}

func TestFlags(t *testing.T) {
	tests := []struct {
		q     string
		check func(a *analysis) bool
	}{
		{"call p()", func(a *analysis) bool { return a.unknownWrite && a.kind == kindCall }},
		{"do $$ begin end $$", func(a *analysis) bool { return a.unknownWrite && a.kind == kindDo }},
		{"execute p(1)", func(a *analysis) bool { return a.unknownWrite }},
		{"frobnicate t", func(a *analysis) bool { return a.unknownWrite && a.kind == kindOther }},
		{"drop schema s cascade", func(a *analysis) bool { return a.unknownWrite && a.ddl }},
		{"truncate t cascade", func(a *analysis) bool { return a.cascade && a.unknownWrite }},
		{"truncate t", func(a *analysis) bool { return !a.cascade && !a.unknownWrite }},
		{`update U&"!0074" UESCAPE E'\041' set a = 1`, func(a *analysis) bool { return a.unknownWrite }},
		{`select * from U&"t" UESCAPE $$!$$`, func(a *analysis) bool {
			return !a.unknownWrite && a.notCacheable == "" && slices.Equal(a.reads, []string{"t"})
		}},
		{`select U&"!0062ump" UESCAPE '!'(1)`, func(a *analysis) bool { return slices.Equal(a.functions, []string{"bump"}) }},
		{"set search_path = x", func(a *analysis) bool { return a.sessionChange && a.kind == kindSession }},
		{"set local role bob", func(a *analysis) bool { return a.sessionChange }},
		{"set statement_timeout = '5s'", func(a *analysis) bool { return !a.sessionChange && a.kind == kindSession }},
		{"set session lock_timeout to 0", func(a *analysis) bool { return !a.sessionChange }},
		{`SET "Application_Name" = 'x'; reset work_mem`, func(a *analysis) bool { return !a.sessionChange }},
		{"set enable_seqscan = off", func(a *analysis) bool { return !a.sessionChange }},
		{"set statement_timeout = 0; set search_path = x", func(a *analysis) bool { return a.sessionLasting }},
		{"set time zone 'UTC'", func(a *analysis) bool { return a.sessionLasting }},
		{"set extra_float_digits = 0", func(a *analysis) bool { return a.sessionLasting }},
		{"set app.request_timeout = 1", func(a *analysis) bool { return a.sessionLasting }},
		{"set enable_seqscan.x = 1", func(a *analysis) bool { return a.sessionLasting }},
		{"reset statement_timeout, search_path", func(a *analysis) bool { return a.sessionChange }},
		{"set session authorization bob", func(a *analysis) bool { return a.sessionChange }},
		{"reset all", func(a *analysis) bool { return a.sessionChange }},
		{"discard all", func(a *analysis) bool { return a.sessionChange && a.discardAll }},
		{"discard plans", func(a *analysis) bool { return a.sessionChange && !a.discardAll }},
		{"set transaction read only", func(a *analysis) bool { return a.txControl && !a.sessionChange }},
		{"select set_config('search_path', 'x', false)", func(a *analysis) bool { return a.sessionChange }},
		{"begin; select 1; commit", func(a *analysis) bool { return a.txControl && a.multi && a.kind == kindTx }},
		{"savepoint s", func(a *analysis) bool { return a.txControl }},
		{"alter table t add c int", func(a *analysis) bool { return a.ddl }},
		{"create index on t(a)", func(a *analysis) bool { return a.ddl && len(a.writes) == 0 }},
		{"select * from t for no key update", func(a *analysis) bool { return a.locking }},
		{"lock table t", func(a *analysis) bool { return a.locking && a.kind == kindLock }},
		{"select my_fn(a), public.other(b), count(*), pg_catalog.lower(c) from t", func(a *analysis) bool {
			return slices.Equal(a.functions, []string{"my_fn", "public.other"})
		}},
		{`select "myschema"."bump"(), myschema . other(), "S".F(), a.b.c()`, func(a *analysis) bool {
			return slices.Equal(a.functions, []string{"myschema.bump", "myschema.other", "S.f", "a.b.c"})
		}},
		{"select * from t tablesample system (1) repeatable (2)", func(a *analysis) bool { return a.functions == nil }},
		{"  ;; -- nothing\n", func(a *analysis) bool { return a.kind == kindEmpty && !a.multi }},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			if a := analyzeUncached(tt.q); !tt.check(a) {
				t.Errorf("unexpected analysis: %+v", *a)
			}
		})
	}
}

// TestSchemaChanges: DDL either writes the relations it names, changes
// no result (indexes, statistics, comments), or may change any result
// without naming a table and is an unknown write. Each is DDL.
func TestSchemaChanges(t *testing.T) {
	tests := []struct {
		q       string
		unknown bool
		writes  []string
	}{
		{q: "create table t (a int)", writes: []string{"t"}},
		{q: "alter table t enable row level security", writes: []string{"t"}},
		{q: "alter table t force row level security", writes: []string{"t"}},
		{q: "drop view if exists v", writes: []string{"v"}},
		{q: "create unique index concurrently i on t (a)"},
		{q: "alter index i rename to j"},
		{q: "drop index i"},
		{q: "create statistics s on a, b from t"},
		{q: "comment on table t is 'x'"},
		{q: "alter type mood rename value 'sad' to 'unhappy'", unknown: true},
		{q: "alter type mood add value 'meh'", unknown: true},
		{q: "create type mood as enum ('a')", unknown: true},
		{q: "drop type mood", unknown: true},
		{q: "create domain pos as int check (value > 0)", unknown: true},
		{q: "alter domain pos add check (value < 10)", unknown: true},
		{q: "create or replace function f(int) returns int language sql as $$ select 2 $$", unknown: true},
		{q: "alter function f(int) immutable", unknown: true},
		{q: "drop function f(int)", unknown: true},
		{q: "create or replace procedure p() language sql as $$ select 1 $$", unknown: true},
		{q: "drop procedure p", unknown: true},
		{q: "create schema s", unknown: true},
		{q: "alter schema a rename to z", unknown: true},
		{q: "drop schema s", unknown: true},
		{q: "grant select on t to r", unknown: true},
		{q: "revoke select on t from r", unknown: true},
		{q: "grant r to s", unknown: true},
		{q: "create policy p on t using (true)", unknown: true},
		{q: "alter policy p on t using (id > 1)", unknown: true},
		{q: "drop policy p on t", unknown: true},
		{q: "create cast (int as mood) with function f(int)", unknown: true},
		{q: "create operator === (leftarg = int, rightarg = int, function = f)", unknown: true},
		{q: "create collation c (locale = 'C')", unknown: true},
		{q: "create extension citext", unknown: true},
		{q: "alter extension citext update", unknown: true},
		{q: "alter default privileges grant select on tables to r", unknown: true},
		{q: "security label on table t is 'x'", unknown: true},
		{q: "alter role r set search_path = b", unknown: true},
		{q: "alter user r set search_path = b", unknown: true},
		{q: "create rule r as on select to t do instead select 1", unknown: true},
		{q: "create trigger tr after insert on t execute function f()", unknown: true},
		{q: "alter sequence s restart", unknown: true},
		{q: "reassign owned by a to b", unknown: true},
		{q: "import foreign schema s from server x into public", unknown: true},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			a := analyzeUncached(tt.q)
			if !a.ddl || a.unknownWrite != tt.unknown || !slices.Equal(a.writes, tt.writes) {
				t.Errorf("ddl %v unknownWrite %v writes %q, want true %v %q", a.ddl, a.unknownWrite, a.writes, tt.unknown, tt.writes)
			}
		})
	}
}

// TestTemporaryRelations: a temporary relation shadows a permanent one
// on its connection only, so creating one is a lasting session change;
// a permanent one is not.
func TestTemporaryRelations(t *testing.T) {
	tests := []struct {
		q    string
		temp bool
	}{
		{"create temp table users (id int)", true},
		{"create temporary table users (id int) on commit drop", false}, // lasts as long as SET LOCAL
		{"create local temp table users (id int)", true},
		{"create global temporary table users (id int)", true},
		{"create temp table if not exists users as select * from base", true},
		{"create or replace temp view users as select 1", true},
		{"create temp sequence s", true},
		{"create table pg_temp.users (id int)", true},
		{"create view pg_temp_3.users as select 1", true},
		{"select * into temp users from base", true},
		{"select * into temporary table users from base", true},
		{"select * into local temp users from base", true},
		{"select * into pg_temp.users from base", true},
		{"(select * into temp users from base)", true},
		{"with b as (select 1) select * into temp users from b", true},
		{"create table users (id int)", false},
		{"create unlogged table users (id int)", false},
		{"create view users as select 1", false},
		{"select * into users from base", false},
		{"(select * into users from base)", false},
		{"select * from pg_temp.users", false},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			a := analyzeUncached(tt.q)
			onCommitDrop := strings.HasSuffix(tt.q, "on commit drop")
			if a.sessionChange != (tt.temp || onCommitDrop) || a.sessionLasting != tt.temp {
				t.Errorf("sessionChange %v sessionLasting %v, want %v", a.sessionChange, a.sessionLasting, tt.temp)
			}
			if strings.Contains(tt.q, " into ") {
				if a.kind != kindDDL || !a.ddl || !slices.Equal(a.writes, []string{"users"}) || a.notCacheable == "" {
					t.Errorf("SELECT INTO: kind %v ddl %v writes %q notCacheable %q", a.kind, a.ddl, a.writes, a.notCacheable)
				}
			}
		})
	}
}

func TestCacheability(t *testing.T) {
	tests := []struct {
		q      string
		reason string // substring; "" means cacheable
		nondet bool
	}{
		{"select * from t where id = $1", "", false},
		{"values (1)", "", false},
		{"with x as (select * from t) select * from x", "", false},
		{"select * from t where x.user_id = $1", "", false},
		{"select * from t for update", "locking", false},
		{"select * from t for share", "locking", false},
		{"with x as (delete from t returning *) select * from x", "writes", false},
		{"with d as (with b as (select 1) delete from t returning *) select count(*) from d", "writes", false},
		{"select 1; select 2", "more than one", false},
		{`select * from U&"!0074" UESCAPE E'\041'`, "cannot decode", false},
		{"insert into t values (1)", "not a read-only query", false},
		{"select * into n from t", "SELECT INTO", false},
		{"select * from pg_temp.x", "temporary", false},
		{"select * from pg_catalog.pg_class", "catalog", false},
		{"select * from information_schema.tables", "catalog", false},
		{"select * from pg_stat_activity", "catalog", false},
		{"select 1from t", "glued", false},
		{"select * from t where id = $1limit 1", "glued", false},
		{"select * from t where id = 1e5x", "glued", false},
		{"select 0x1f, 1_000, 1.5e-3, $1 from t", "", false},
		{"", "empty", false},
		{"select set_config('a.b', '1', false)", "session", false},
		{"select now()", "now", true},
		{"select * from t where ts > CURRENT_TIMESTAMP", "current_timestamp", true},
		{"select localtimestamp", "localtimestamp", true},
		{"select random()", "random", true},
		{"select clock_timestamp()", "clock_timestamp", true},
		{"select statement_timestamp()", "statement_timestamp", true},
		{"select timeofday()", "timeofday", true},
		{"select nextval('s')", "nextval", true},
		{"select currval('s')", "currval", true},
		{"select txid_current()", "txid_current", true},
		{"select pg_current_xact_id()", "pg_current_xact_id", true},
		{"select pg_sleep(1)", "pg_sleep", true},
		{"select gen_random_uuid()", "gen_random_uuid", true},
		{"select uuid_generate_v4()", "uuid_generate_v4", true},
		{"select current_user", "current_user", true},
		{"select session_user", "session_user", true},
		{"select user", "user", true},
		{"select current_role", "current_role", true},
		{"select current_setting('x')", "current_setting", true},
		{"select inet_client_addr()", "inet_client_addr", true},
		{"select pg_backend_pid()", "pg_backend_pid", true},
		{"select age(ts) from t", "age", true},
		{"select age(a, b) from t", "", false},
		{"select pg_catalog.now()", "now", true},
		{`select "user" from t`, "", false},
		{"select 'now'::timestamptz::text", "'now'", true},
		{"select date 'today'", "'today'", true},
		{"select timestamp 'tomorrow'", "'tomorrow'", true},
		{"select * from t where d > 'yesterday'::date", "'yesterday'", true},
		{"select CAST(' Now ' AS timestamptz)", "'now'", true},
		{"select cast(('now') as date), 1", "'now'", true},
		{"select ('today')::date", "'today'", true},
		{"select timestamp(3) with time zone 'now'", "'now'", true},
		{"select pg_catalog.timestamptz 'tomorrow 10:00'", "'tomorrow 10:00'", true},
		{"select timestamptz $$now$$", "'now'", true},
		{`select E'\x6eow'::date`, `E'\x6eow'`, true},
		{"select * from t where status = 'today'", "", false},
		{"select * from t where name like 'today' and a = 'now'", "", false},
		{"select 'now' as x, date '2024-01-01', 'snowy'::text", "", false},
		{"select * from t tablesample system(10)", "tablesample", true},
		{"select * from t tablesample bernoulli (10) where a = 1", "tablesample", true},
		{"select * from t tablesample bernoulli (10) repeatable (7)", "", false},
		{"select t.user from t", "", false},
		{"select 'no'\n'w'::date", "'no'", true}, // one literal: 'now'
		{"select E''\n'\\' '; delete from t; select '1'", "more than one", false},
		{"select 'a'\n  -- note\n'b' from t", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			a := analyzeUncached(tt.q)
			if tt.reason == "" && a.notCacheable != "" || !strings.Contains(a.notCacheable, tt.reason) {
				t.Errorf("notCacheable %q, want it to contain %q", a.notCacheable, tt.reason)
			}
			if a.nondeterministic != tt.nondet {
				t.Errorf("nondeterministic %v, want %v", a.nondeterministic, tt.nondet)
			}
		})
	}
}

func TestKinds(t *testing.T) {
	tests := map[string]stmtKind{
		"select 1": kindSelect, "(select 1)": kindSelect, "values (1)": kindValues,
		"with x as (select 1) insert into t select * from x": kindInsert,
		"update t set a = 1": kindUpdate, "delete from t": kindDelete,
		"merge into t using u on true when matched then delete": kindMerge,
		"truncate t": kindTruncate, "copy t from stdin": kindCopyFrom, "copy t to stdout": kindCopyTo,
		"copy (delete from t returning *) to stdout": kindCopyTo, "commit": kindTx,
		"create table t (a int)": kindDDL, "set x = 1": kindSession,
		"call p()": kindCall, "do $$ $$": kindDo, "lock t": kindLock, "show all": kindOther,
		"": kindEmpty,
	}
	for q, want := range tests {
		t.Run(q, func(t *testing.T) {
			if got := analyzeUncached(q).kind; got != want {
				t.Errorf("kind %v, want %v", got, want)
			}
		})
	}
}

func TestAnalyzeMemo(t *testing.T) {
	q := "select * from memo_test where id = $1"
	a := analyze(q)
	if b := analyze(q); a != b {
		t.Error("second analyze did not come from the memo")
	}
	if n := testing.AllocsPerRun(100, func() { analyze(q) }); n != 0 {
		t.Errorf("memoized analyze allocates %v times", n)
	}
}

// TestAnalyzeMemoBounded fills the memo past its cap concurrently.
func TestAnalyzeMemoBounded(t *testing.T) {
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < memoShards*memoShardCap/2; i++ {
				analyze("select " + strings.Repeat("x", g) + itoa(i))
			}
		}()
	}
	wg.Wait()
	for i := range memo.shards {
		sh := &memo.shards[i]
		sh.mu.RLock()
		n := len(sh.m)
		sh.mu.RUnlock()
		if n > memoShardCap {
			t.Fatalf("shard %d holds %d entries, cap %d", i, n, memoShardCap)
		}
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestExplain(t *testing.T) {
	e := Explain("SELECT * FROM Users WHERE id = $1")
	if !e.Cacheable || e.Reason != "" || e.Kind != "select" || !slices.Equal(e.ReadTables, []string{"users"}) ||
		e.Normalized != "select * from users where id = $1" || len(e.Fingerprint) != 32 {
		t.Errorf("Explain = %+v", e)
	}
	e = Explain("update t set a = 1")
	if e.Cacheable || e.Reason == "" || !slices.Equal(e.WriteTables, []string{"t"}) {
		t.Errorf("Explain = %+v", e)
	}
	e.WriteTables[0] = "changed"
	if analyze("update t set a = 1").writes[0] != "t" {
		t.Error("Explain shares its slices with the memo")
	}
}

// TestTransactionEffects: what a string's transaction control leaves the
// session in, and whether it commits or rolls back, decides when its writes
// are invalidated; only a SET LOCAL ends with the transaction.
func TestTransactionEffects(t *testing.T) {
	tests := []struct {
		sql                string
		end                txEffect
		commits, rollsBack bool
		lasting            bool
	}{
		{sql: `begin`, end: txOpen},
		{sql: `start transaction isolation level serializable`, end: txOpen},
		{sql: `commit`, end: txClosed, commits: true},
		{sql: `END`, end: txClosed, commits: true},
		{sql: `commit and chain`, end: txOpen, commits: true},
		{sql: `commit and no chain`, end: txClosed, commits: true},
		{sql: `rollback`, end: txClosed, rollsBack: true},
		{sql: `abort and chain`, end: txOpen, rollsBack: true},
		{sql: `rollback to savepoint s`, end: txKept},
		{sql: `rollback prepared 'x'`, end: txKept},
		{sql: `savepoint s; release s`, end: txKept},
		{sql: `prepare transaction 'x'`, end: txClosed, rollsBack: true},
		{sql: `begin; update t set a = 1; commit`, end: txClosed, commits: true},
		{sql: `commit; begin; update t set a = 1`, end: txOpen, commits: true},
		{sql: `set local work_mem = '1MB'`, end: txKept},
		{sql: `set local work_mem = '1MB'; set search_path = x`, end: txKept, lasting: true},
		{sql: `select set_config('a.b', 'c', true)`, end: txKept, lasting: true},
		{sql: `reset all`, end: txKept, lasting: true},
	}
	for _, tt := range tests {
		a := analyze(tt.sql)
		if a.txEnd != tt.end || a.txCommits != tt.commits || a.txRollsBack != tt.rollsBack || a.sessionLasting != tt.lasting {
			t.Errorf("%s: end %d commits %v rolls back %v lasting %v; want %d %v %v %v", tt.sql,
				a.txEnd, a.txCommits, a.txRollsBack, a.sessionLasting, tt.end, tt.commits, tt.rollsBack, tt.lasting)
		}
	}
	if a := analyze(`commit prepared 'x'`); !a.commitPrepared || a.txCommits || a.txEnd != txKept {
		t.Errorf("commit prepared: %+v", a)
	}
}

// TestReviewedAnalysis: a BEGIN ATOMIC body is one statement with its
// CREATE FUNCTION (its END is no COMMIT), and only a date/time cast of
// 'now' or 'today' is non-deterministic.
func TestReviewedAnalysis(t *testing.T) {
	a := analyzeUncached(`create function f() returns int language sql begin atomic select case when true then 1 end; select 2; end`)
	if a.multi || a.txControl || a.txCommits || a.txEnd != txKept {
		t.Errorf("BEGIN ATOMIC: multi %v txControl %v commits %v end %v", a.multi, a.txControl, a.txCommits, a.txEnd)
	}
	a = analyzeUncached(`begin; update t set a = 1; select begin atomic from r; commit`)
	if a.txEnd != txClosed || !a.txCommits {
		t.Errorf("a column named begin, aliased atomic: end %v commits %v", a.txEnd, a.txCommits)
	}
	if a := analyzeUncached(`rollback work to savepoint s`); a.txRollsBack || a.txEnd != txKept {
		t.Errorf("ROLLBACK WORK TO: rolls back %v end %v", a.txRollsBack, a.txEnd)
	}
	a = analyzeUncached(`begin; create function f() returns int language sql begin atomic select 1; end; update t set a = 1`)
	if !a.multi || a.txEnd != txOpen || a.txCommits || !slices.Contains(a.writes, "t") {
		t.Errorf("BEGIN ATOMIC in a transaction: multi %v end %v commits %v writes %v", a.multi, a.txEnd, a.txCommits, a.writes)
	}
	for q, nondet := range map[string]bool{
		`select 'today'::text from t`:                false,
		`select '{"when":"now"}'::jsonb from t`:      false,
		`select cast('now' as text) from t`:          false,
		`select 'now'::timestamptz from t`:           true,
		`select cast('today' as date) from t`:        true,
		`select 'now'::timestamp with time zone`:     true,
		`select * from t where d > date 'tomorrow'`:  true,
		`select * from t where status = 'yesterday'`: false,
		`select 'now'::pg_catalog.timestamptz`:       true,
		`select cast('now' as pg_catalog.timestamp)`: true,
		`select '[today,)'::daterange`:               true,
		`select '[now,)'::tstzrange`:                 true,
		`select 'now'::text::timestamptz`:            true,
		`select 'now'::character varying`:            false,
		`select 'now'::pg_catalog.text`:              false,
	} {
		if got := analyzeUncached(q).nondeterministic; got != nondet {
			t.Errorf("%s: nondeterministic %v, want %v", q, got, nondet)
		}
	}
}

// TestSCSOff: statements that may turn standard_conforming_strings off,
// after which the analysis would misread the connection's strings.
func TestSCSOff(t *testing.T) {
	for q, want := range map[string]bool{
		"set standard_conforming_strings = off":                                       true,
		"SET SESSION Standard_Conforming_Strings TO 'false'":                          true,
		"set local standard_conforming_strings to default":                            true, // the default is on, but say so
		"select set_config('standard_conforming_strings', 'off', false)":              true,
		"select pg_catalog.set_config(E'standard\\_conforming_strings', 'off', true)": true,
		"set standard_conforming_strings to on":                                       false,
		"set standard_conforming_strings = 'yes'":                                     false,
		"select set_config('app.tenant', $1, false)":                                  false,
		"set search_path = x":                                                         false,
		"reset all":                                                                   false,
		`set "standard_conforming_strings" = off`:                                     true,
		`select "set_config"('standard_conforming_strings', 'off', false)`:            true,
		`select set_config($$standard_conforming_strings$$, 'off', false)`:            true,
	} {
		if got := analyzeUncached(q).scsOff; got != want {
			t.Errorf("%q: scsOff %v, want %v", q, got, want)
		}
	}
}

// TestSCSAsk: set_config of a setting the text does not name may turn
// standard_conforming_strings off; the session is asked after it ran
// (found by review G: the analysis marked none of these).
func TestSCSAsk(t *testing.T) {
	for _, q := range []string{
		`select set_config($1, 'off', false)`,
		`select set_config(('standard_conforming_strings'), 'off', false)`,
		`select set_config(lower('STANDARD_CONFORMING_STRINGS'), 'off', false)`,
		`select set_config(name, 'off', false) from (values ('standard_conforming_strings')) v(name)`,
	} {
		if a := analyzeUncached(q); !a.scsAsk || a.scsOff {
			t.Errorf("%q: scsAsk %v, scsOff %v", q, a.scsAsk, a.scsOff)
		}
	}
	if a := analyzeUncached(`select set_config('app.tenant', $1, false)`); a.scsAsk || a.scsOff {
		t.Error("a set_config that names its setting asks")
	}
}

// TestAttrCalls: the names that may call a function in attribute notation
// (u.order_count is order_count(u) when users has no such column) are the
// last parts of qualified names and the fields selected from a value, not
// calls, casts, stars or bare columns.
func TestAttrCalls(t *testing.T) {
	cols := func(n int) (q string, names []string) {
		for i := range n {
			names = append(names, fmt.Sprintf("c%d", i))
		}
		return "select t." + strings.Join(names, ", t.") + " from t", names
	}
	full, fullNames := cols(attrMax)
	over, _ := cols(attrMax + 1)
	for _, tt := range []struct {
		q    string
		want []string
		many bool
	}{
		{"select u.id, u.order_count from users u where u.id = $1", []string{"id", "order_count"}, false},
		{"select (u).order_count, (u.*).Total from users u", []string{"order_count", "total"}, false},
		{`select $1.f, a[1].g.h, s.t.c, "DB".s.t."Oc" from x`, []string{"f", "g", "h", "c", "Oc"}, false},
		{"select id, name, count(*) from users group by 1, 2", nil, false},
		{"select x::s.typ, cast(y as s.t2), s.f(1), u.* from users u", nil, false},
		{"select u.order_count(1) from users u", nil, false},
		{"update t set n = u.bump from users u where t.id = u.id", []string{"bump", "id"}, false},
		{"select " + strings.Repeat("t.c, ", 2*attrMax) + "t.d from t", []string{"c", "d"}, false},
		{full, fullNames, false},
		{over, nil, true},
	} {
		t.Run(tt.q[:min(len(tt.q), 60)], func(t *testing.T) {
			a := analyzeUncached(tt.q)
			if !slices.Equal(a.attrCalls, tt.want) || a.attrMany != tt.many {
				t.Errorf("attrCalls %q, many %v; want %q, %v", a.attrCalls, a.attrMany, tt.want, tt.many)
			}
		})
	}
}
