package cachedpq

import (
	"database/sql/driver"
	"strings"
)

// A view's query may call built-ins that a registered query may not call:
// now() or random(), whose answers change under unchanged stamps; a
// volatile one such as pg_relation_size; set_config, which changes the
// reader's session. Postgres records no dependency on a built-in
// (pg_depend has no rows for pinned objects), so the catalog reads the
// calls from the views' stored query trees instead: pg_rewrite.ev_action
// as text names each function, operator, aggregate and window function
// by OID. Reading it takes no lock, where pg_get_viewdef takes a share
// lock on every relation the view reads and waits behind any DDL on one.

// viewBuiltinQuery lists, for each user view, the built-ins its query
// calls (schema-qualified, volatile or not, with their argument counts),
// a row naming sql_value_function for each CURRENT_TIMESTAMP,
// CURRENT_USER or other SQL value function it uses, and a row naming each
// OID type (regclass, regtype, ...) it casts to at run time, with -1
// arguments (a cast of a constant is resolved when the view is created,
// and depends on what it names), in one scan of the query trees. The user
// views come first, materialized: converting every system view's tree to
// text as well took 26 ms of an empty database's catalog reading.
const viewBuiltinQuery = `with v as materialized (
			select c.relname, r.ev_action
			from pg_catalog.pg_rewrite r
			join pg_catalog.pg_class c on c.oid = r.ev_class
			join pg_catalog.pg_namespace n on n.oid = c.relnamespace
			where c.relkind = 'v' and n.nspname not in ('pg_catalog', 'information_schema'))
		select distinct v.relname,
			case when m[2] is not null then 'pg_catalog.' || t.typname
				when m[1] is null then 'pg_catalog.sql_value_function'
				else n2.nspname || '.' || p.proname end,
			coalesce(p.provolatile = 'v', false), case when m[2] is not null then -1 else coalesce(p.pronargs::int8, 0) end
		from v
		cross join lateral pg_catalog.regexp_matches(v.ev_action::text,
			':(?:funcid|opfuncid|aggfnoid|winfnoid) (\d+)|\{SQLVALUEFUNCTION |:resulttype (\d+)', 'g') m
		left join pg_catalog.pg_proc p on p.oid = m[1]::oid
		left join pg_catalog.pg_namespace n2 on n2.oid = p.pronamespace
		left join pg_catalog.pg_type t on t.oid = m[2]::oid
		where (m[1] is null or n2.nspname = 'pg_catalog')
			and (m[2] is null or t.typnamespace = 'pg_catalog'::regnamespace and t.typname like 'reg%')`

// viewDef is why a registered query may not read a view, for the
// built-ins its query calls.
type viewDef struct {
	refusal string // why, or ""
	nondet  bool   // refused only for a non-deterministic call (now(), random()), which AllowNondeterministic lifts
	session bool   // it calls set_config: reading it changes the reader's session
}

// noteViewBuiltin records a row of viewBuiltinQuery.
func (cat *catalog) noteViewBuiltin(r []driver.Value) {
	view := textOf(r[0])
	volatile, _ := r[2].(bool)
	nargs, _ := r[3].(int64)
	v := cat.views[view]
	v.note(textOf(r[1]), volatile, nargs)
	cat.views[view] = v
	cat.sessionViews = cat.sessionViews || v.session
}

// note judges a call of the built-in fn (schema-qualified) as the analysis
// judges one in a registered query.
func (v *viewDef) note(fn string, volatile bool, nargs int64) {
	name := fn[strings.LastIndexByte(fn, '.')+1:]
	switch {
	case nargs < 0 && unseenBuiltins[name] == catalogByName:
		v.refuse("casts to "+name+", which reads the system catalog by the name or OID it converts", false)
	case name == "set_config":
		v.session = true
		v.refuse("calls set_config, which changes its reader's session", false)
	case unseenBuiltins[name] != 0:
		v.refuse("calls "+name+", which reads what writes do not invalidate ("+unseenWhat[unseenBuiltins[name]]+")", false)
	case name == "sql_value_function":
		v.refuse("uses CURRENT_TIMESTAMP, CURRENT_USER or another such SQL value function", true)
	case nondetBuiltins[name] || strings.HasPrefix(name, "uuid_generate_") || name == "age" && nargs == 1:
		v.refuse("calls non-deterministic or session-dependent "+name, true)
	case volatile:
		v.refuse("calls the volatile "+name, false)
	}
}

// refuse records why, unless a refusal that AllowNondeterministic cannot
// lift is recorded already.
func (v *viewDef) refuse(why string, nondet bool) {
	if v.refusal == "" || v.nondet && !nondet {
		v.refusal, v.nondet = why, nondet
	}
}

// viewRefusal returns why a read of tables (the views among them, and
// their bases) may not be cached for the built-ins a view calls (but
// non-deterministic ones, with nondetOK), or "".
func (cat *catalog) viewRefusal(tables []string, nondetOK bool) string {
	for _, t := range tables {
		if v, ok := cat.views[t]; ok && v.refusal != "" && !(nondetOK && v.nondet) {
			return "view " + t + " " + v.refusal
		}
	}
	return ""
}
