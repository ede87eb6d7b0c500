package cachedpq

import (
	"context"
	"database/sql/driver"
	"slices"
	"strings"
)

// Triggers and rules write tables that the statement firing them does not
// name: an audit row, a counter, a denormalized copy. The catalog reads
// them once per load, so that a write to a table also invalidates what its
// enabled triggers and rules write, transitively, as it does foreign-key
// cascades. A trigger whose function the text cannot show is opaque: a
// write to its table invalidates the whole namespace, as a call of a
// volatile function does.

const (
	// triggerQuery lists the enabled user triggers (not the internal ones
	// that enforce foreign keys) with their functions' language and source.
	// A function in pg_catalog is built in (tsvector_update_trigger,
	// suppress_redundant_updates_trigger): it changes the row only.
	triggerQuery = `select c.relname, l.lanname, n.nspname = 'pg_catalog', p.prosrc
		from pg_catalog.pg_trigger tg
		join pg_catalog.pg_class c on c.oid = tg.tgrelid
		join pg_catalog.pg_proc p on p.oid = tg.tgfoid
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		join pg_catalog.pg_language l on l.oid = p.prolang
		where not tg.tgisinternal and tg.tgenabled <> 'D'`
	// whenQuery lists the user functions that the WHEN conditions of the
	// enabled user triggers call: the condition runs as the row is
	// written, whether or not the trigger then fires.
	whenQuery = `select distinct c.relname, n.nspname, p.proname
		from pg_catalog.pg_trigger tg
		join pg_catalog.pg_class c on c.oid = tg.tgrelid
		join pg_catalog.pg_depend d on d.objid = tg.oid
			and d.classid = 'pg_catalog.pg_trigger'::regclass
			and d.refclassid = 'pg_catalog.pg_proc'::regclass
		join pg_catalog.pg_proc p on p.oid = d.refobjid
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		where not tg.tgisinternal and tg.tgenabled <> 'D' and p.oid <> tg.tgfoid
			and n.nspname not in ('pg_catalog', 'information_schema')`
	// defaultQuery lists the user functions that the column defaults and
	// CHECK constraints of a table call: they run as its rows are written,
	// and what they write is written with them.
	defaultQuery = `select distinct c.relname, n.nspname, p.proname
		from pg_catalog.pg_depend d
		join pg_catalog.pg_proc p on p.oid = d.refobjid
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		left join pg_catalog.pg_attrdef ad on d.classid = 'pg_catalog.pg_attrdef'::regclass and ad.oid = d.objid
		left join pg_catalog.pg_constraint con on d.classid = 'pg_catalog.pg_constraint'::regclass
			and con.oid = d.objid and con.contype = 'c'
		join pg_catalog.pg_class c on c.oid = coalesce(ad.adrelid, con.conrelid)
		where d.refclassid = 'pg_catalog.pg_proc'::regclass
			and n.nspname not in ('pg_catalog', 'information_schema')`
	// domainQuery lists the user functions that the defaults and CHECK
	// constraints of the domains a table's columns are of call: directly,
	// through the domains those are over, or as an array's elements.
	domainQuery = `with recursive cols(relname, typ) as (
			select c.relname, a.atttypid
			from pg_catalog.pg_attribute a
			join pg_catalog.pg_class c on c.oid = a.attrelid
			where a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'p', 'f')
		union
			select cols.relname, case t.typtype when 'd' then t.typbasetype else t.typelem end
			from cols
			join pg_catalog.pg_type t on t.oid = cols.typ
			where t.typtype = 'd' or t.typcategory = 'A' and t.typelem <> 0
		)
		select distinct cols.relname, n.nspname, p.proname
		from cols
		join pg_catalog.pg_type t on t.oid = cols.typ and t.typtype = 'd'
		left join pg_catalog.pg_constraint con on con.contypid = t.oid and con.contype = 'c'
		join pg_catalog.pg_depend d on d.refclassid = 'pg_catalog.pg_proc'::regclass
			and (d.classid = 'pg_catalog.pg_type'::regclass and d.objid = t.oid
				or d.classid = 'pg_catalog.pg_constraint'::regclass and d.objid = con.oid)
		join pg_catalog.pg_proc p on p.oid = d.refobjid
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		where n.nspname not in ('pg_catalog', 'information_schema')`
	// eventQuery lists the enabled event triggers' functions, as
	// triggerQuery does: they run on DDL and REFRESH, on no table.
	eventQuery = `select l.lanname, n.nspname = 'pg_catalog', p.prosrc
		from pg_catalog.pg_event_trigger et
		join pg_catalog.pg_proc p on p.oid = et.evtfoid
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		join pg_catalog.pg_language l on l.oid = p.prolang
		where et.evtenabled <> 'D'`
	// ruleQuery lists the relations that the INSERT, UPDATE and DELETE
	// rules of a relation refer to: their actions may write any of them.
	ruleQuery = `select distinct c.relname, t.relname
		from pg_catalog.pg_rewrite r
		join pg_catalog.pg_class c on c.oid = r.ev_class
		join pg_catalog.pg_depend d on d.objid = r.oid
			and d.classid = 'pg_catalog.pg_rewrite'::regclass
			and d.refclassid = 'pg_catalog.pg_class'::regclass
		join pg_catalog.pg_class t on t.oid = d.refobjid
		where r.ev_type <> '1' and r.ev_enabled <> 'D' and t.oid <> c.oid`
	// ruleCallQuery lists the relations whose INSERT, UPDATE or DELETE
	// rules call a user function: opaque, as the function may write.
	ruleCallQuery = `select distinct c.relname
		from pg_catalog.pg_rewrite r
		join pg_catalog.pg_class c on c.oid = r.ev_class
		join pg_catalog.pg_depend d on d.objid = r.oid
			and d.classid = 'pg_catalog.pg_rewrite'::regclass
			and d.refclassid = 'pg_catalog.pg_proc'::regclass
		join pg_catalog.pg_proc p on p.oid = d.refobjid
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		where r.ev_type <> '1' and r.ev_enabled <> 'D'
			and n.nspname not in ('pg_catalog', 'information_schema')`
)

// loadTriggers adds the writes of functions, triggers and rules to cat;
// funcs are the user functions funcQuery read, whose volatility cat holds.
func (cat *catalog) loadTriggers(ctx context.Context, ci driver.Conn, funcs []userFunc) error {
	// The writers first: a volatile function calling a STABLE one that
	// calls a writer must see it as one. Read before funcWrites, a STABLE
	// function calling any volatile one counts as a writer.
	cat.loadWriters(funcs)
	cat.loadFuncWrites(funcs)
	err := catalogRows(ctx, ci, triggerQuery, 4, func(r []driver.Value) {
		table := textOf(r[0])
		if builtin, _ := r[2].(bool); builtin {
			return
		}
		tables, ok := []string(nil), false
		switch lang, src := textOf(r[1]), textOf(r[3]); {
		case lang == "plpgsql":
			tables, ok = cat.bodyWrites(src)
		case lang == "c":
			ok = rowOnlyC[src] // a C function's source is its symbol
		}
		cat.note(table, tables, ok)
	})
	if err == nil {
		err = catalogRows(ctx, ci, whenQuery, 3, func(r []driver.Value) {
			cat.note(textOf(r[0]), nil, !cat.mayWrite(textOf(r[1])+"."+textOf(r[2])))
		})
	}
	// Only what a source shows: a default calling a volatile C function
	// (uuid_generate_v4, pgcrypto's gen_random_uuid) is the rule, and
	// voiding the namespace at every insert into its table would cost more
	// than such a default ever writes.
	noteCalled := func(r []driver.Value) {
		if tables, ok := cat.calls(textOf(r[1]) + "." + textOf(r[2])); ok {
			cat.note(textOf(r[0]), tables, true)
		}
	}
	for _, q := range []string{defaultQuery, domainQuery} {
		if err == nil {
			err = catalogRows(ctx, ci, q, 3, noteCalled)
		}
	}
	if err == nil {
		err = catalogRows(ctx, ci, ruleQuery, 2, func(r []driver.Value) {
			cat.note(textOf(r[0]), []string{textOf(r[1])}, true)
		})
	}
	if err == nil {
		err = catalogRows(ctx, ci, ruleCallQuery, 1, func(r []driver.Value) {
			cat.note(textOf(r[0]), nil, false)
		})
	}
	if err == nil {
		err = catalogRows(ctx, ci, eventQuery, 3, func(r []driver.Value) {
			if builtin, _ := r[1].(bool); !builtin {
				cat.noteEvent(textOf(r[0]), textOf(r[2]))
			}
		})
	}
	if err == nil {
		cat.noteReadCalls()
	}
	return err
}

// noteReadCalls records what the functions that views and row level
// security policies call write (an audit on read). A read of a view runs
// its functions, and so do a read of a view over it, REFRESH of a
// materialized view and a write through a view, which evaluate its
// query; a read of a table with policies runs theirs, and so does a write
// to it (USING, WITH CHECK). Policies that do not apply (row level
// security off, a role that bypasses it) count too.
func (cat *catalog) noteReadCalls() {
	cat.readFired, cat.readOpaque = map[string][]string{}, map[string]bool{}
	for _, calls := range []map[string][]string{cat.fns.viewCalls, cat.policyCalls} {
		for rel, fns := range calls {
			for _, f := range fns {
				tables, ok := cat.calls(f)
				ok = ok && unseenBuiltins[f[strings.LastIndexByte(f, '.')+1:]] != runsSQL
				cat.note(rel, tables, ok)
				for _, t := range tables {
					cat.readFired[rel] = appendNew(cat.readFired[rel], t)
				}
				if !ok {
					cat.readOpaque[rel] = true
				}
			}
		}
	}
}

// readWrites returns what a read of tables writes (see noteReadCalls),
// through the views they read too; opaque if that may be what the catalog
// cannot read; session if such a view changes the reader's session (see
// viewDef.session).
func (cat *catalog) readWrites(tables []string) (out []string, opaque, session bool) {
	if len(cat.readFired) == 0 && len(cat.readOpaque) == 0 && !cat.sessionViews {
		return nil, false, false
	}
	seen := slices.Clone(tables)
	for i := 0; i < len(seen); i++ {
		t := seen[i]
		for _, w := range cat.readFired[t] {
			out = appendNew(out, w)
		}
		opaque = opaque || cat.readOpaque[t]
		session = session || cat.views[t].session
		for _, b := range cat.bases[t] {
			seen = appendNew(seen, b)
		}
	}
	return out, opaque, session
}

// noteEvent records what an event trigger's function writes.
func (cat *catalog) noteEvent(lang, src string) {
	tables, ok := []string(nil), false
	if lang == "plpgsql" {
		tables, ok = cat.bodyWrites(src)
	}
	for _, t := range tables {
		cat.ddlFired = appendNew(cat.ddlFired, t)
	}
	cat.ddlOpaque = cat.ddlOpaque || !ok
}

// rowOnlyC names the C trigger functions of PostgreSQL's contrib modules
// that change only the row they fire for: moddatetime (an updated_at
// column), autoinc (a column from a sequence), insert_username.
var rowOnlyC = map[string]bool{"moddatetime": true, "autoinc": true, "insert_username": true}

// note records that a write to table also writes tables, and, if known is
// false, what the catalog cannot read.
func (cat *catalog) note(table string, tables []string, known bool) {
	for _, t := range tables {
		if t != table {
			cat.fired[table] = appendNew(cat.fired[table], t)
		}
	}
	if !known {
		cat.opaque[table] = true
	}
}

// mayWrite reports whether a function, named as the analysis names
// functions, is a user function that may write: a volatile one, or a
// STABLE or IMMUTABLE one that calls one (see loadWriters), or a user
// aggregate whose functions may write.
func (cat *catalog) mayWrite(name string) bool {
	return cat.plainMayWrite(name) || slices.ContainsFunc(cat.aggSupport(name), cat.plainMayWrite)
}

// plainMayWrite is mayWrite but for the aggregates name may call.
func (cat *catalog) plainMayWrite(name string) bool {
	bare := name[strings.LastIndexByte(name, '.')+1:]
	return cat.anyVolatile([]string{name}) || cat.writers[name] || cat.writers[bare]
}

// aggSupport returns the functions called by the user aggregates that a
// call of name may reach (see aggQuery): PostgreSQL makes every aggregate
// IMMUTABLE, whatever its transition function does.
func (cat *catalog) aggSupport(name string) []string {
	if cat.fns == nil || len(cat.fns.aggFns) == 0 {
		return nil
	}
	var out []string
	for _, k := range cat.fns.overloads(name) {
		if f := &cat.fns.funcs[k]; f.lang == "internal" {
			out = append(out, cat.fns.aggFns[f.schema+"."+f.name]...)
		}
	}
	return out
}

// anyMayWrite reports whether one of the functions, as the analysis wrote
// them, may write (see mayWrite): a statement calling it writes what the
// text cannot show, and a read calling it is not cached.
func (cat *catalog) anyMayWrite(fns []string) bool {
	for _, f := range fns {
		if cat.mayWrite(f) {
			return true
		}
	}
	return false
}

// calls tells what a call of the function name, as the analysis names
// functions, writes: nothing for a function that may not write (built in,
// or a user function neither volatile nor calling one), the tables a
// volatile function's source names (see loadFuncWrites), and what the
// functions of an aggregate of that name write; false if it may write
// what its source does not show.
func (cat *catalog) calls(name string) ([]string, bool) {
	tables, ok := cat.plainCalls(name)
	for _, f := range cat.aggSupport(name) {
		t, known := cat.plainCalls(f) // no aggregate, even under the aggregate's name
		tables, ok = slices.Concat(tables, t), ok && known
	}
	if !ok {
		return nil, false
	}
	return tables, true
}

// plainCalls is calls but for the aggregates name may call.
func (cat *catalog) plainCalls(name string) ([]string, bool) {
	if !cat.plainMayWrite(name) {
		return nil, true
	}
	// A STABLE or IMMUTABLE overload, or one in another schema, that may
	// write is not among funcWrites' sources.
	if bare := name[strings.LastIndexByte(name, '.')+1:]; cat.writers[name] || cat.writers[bare] {
		return nil, false
	}
	tables, ok := cat.funcWrites[name]
	return tables, ok
}

// anyCallWrites returns what calls of fns write, and false if one may
// write what its source does not show.
func (cat *catalog) anyCallWrites(fns []string) (tables []string, ok bool) {
	for _, f := range fns {
		t, ok := cat.calls(f)
		if !ok {
			return nil, false
		}
		tables = slices.Concat(tables, t)
	}
	return tables, true
}

// userFunc is one overload of a user function, as funcQuery reads it.
type userFunc struct {
	schema, name, lang, src string
	volatile                bool
}

// loadFuncWrites fills cat.funcWrites with what the volatile user
// functions in SQL and PL/pgSQL write, read off their sources as trigger
// functions' are, under their schema-qualified names and, where every
// function of that name in every schema is known, their bare ones. A
// function that calls one not yet known is read again once that one is
// (until no more are found): one in a cycle of calls stays unknown, and
// a call of it writes what the text cannot show.
func (cat *catalog) loadFuncWrites(all []userFunc) {
	var funcs []userFunc
	for _, f := range all {
		if f.volatile {
			funcs = append(funcs, f)
		}
	}
	for cat.readFuncs(funcs) {
	}
}

// readFuncs reads the functions not known yet, once, and reports whether
// it came to know any.
func (cat *catalog) readFuncs(funcs []userFunc) bool {
	writes := map[string][]string{} // by qualified name, over its overloads
	opaque := map[string]bool{}
	for _, f := range funcs {
		q := f.schema + "." + f.name
		if _, known := cat.funcWrites[q]; known || opaque[q] {
			continue
		}
		tables, ok := []string(nil), false
		if (f.lang == "plpgsql" || f.lang == "sql" && !sqlSelectInto(f.src)) && f.src != "" {
			tables, ok = cat.bodyWrites(f.src)
		}
		if !ok {
			opaque[q] = true
			continue
		}
		writes[q] = slices.Concat(writes[q], tables)
	}
	found := false
	for q, tables := range writes {
		if !opaque[q] {
			cat.funcWrites[q], found = slices.Compact(slices.Sorted(slices.Values(tables))), true
		}
	}
	if found {
		cat.knowBareNames(funcs)
	}
	return found
}

// sqlSelectInto reports an INTO of a SQL function's source but INSERT
// INTO and MERGE INTO: SELECT INTO, which creates a table (a temporary
// one shadows a table on its connection), not PL/pgSQL's variables.
func sqlSelectInto(src string) bool {
	p := newParser(src)
	for i := range p.toks {
		if p.is(i, "into") && !p.isAny(i-1, "insert", "merge") {
			return true
		}
	}
	return false
}

// knowBareNames records what a function called by its bare name writes,
// where every function of that name is known.
func (cat *catalog) knowBareNames(funcs []userFunc) {
	bare, unknown := map[string][]string{}, map[string]bool{}
	for _, f := range funcs {
		tables, ok := cat.funcWrites[f.schema+"."+f.name]
		if !ok {
			unknown[f.name] = true
		}
		bare[f.name] = slices.Concat(bare[f.name], tables)
	}
	for name, tables := range bare {
		if !unknown[name] {
			cat.funcWrites[name] = slices.Compact(slices.Sorted(slices.Values(tables)))
		}
	}
}

// quietFunc is the language and source of a STABLE or IMMUTABLE user
// function, under its bare and schema-qualified names.
type quietFunc struct{ names, lang, src string }

// loadWriters fills cat.writers with the STABLE and IMMUTABLE user
// functions that may write all the same: in another language than SQL
// and PL/pgSQL, or whose source the trigger scan cannot read, or that
// call a function that may write, transitively (until no more are found:
// calls may form cycles).
func (cat *catalog) loadWriters(all []userFunc) {
	var quiet []quietFunc
	for _, f := range all {
		// C and internal ones are extensions' code, trusted as built-in
		// functions are. PostgreSQL refuses a write among a STABLE
		// function's own statements, not a call of a volatile one.
		if !f.volatile && f.lang != "c" && f.lang != "internal" {
			quiet = append(quiet, quietFunc{f.schema + "." + f.name, f.lang, f.src})
		}
	}
	for found := true; found; {
		found = false
		for _, f := range quiet {
			if !cat.writers[f.names] && cat.quietWrites(f) {
				bare := f.names[strings.LastIndexByte(f.names, '.')+1:]
				cat.writers[f.names], cat.writers[bare], found = true, true, true
			}
		}
	}
}

// quietWrites reports whether a STABLE or IMMUTABLE function may write.
// A SQL function with a SQL-standard body (BEGIN ATOMIC, RETURN) has no
// source to scan, but the functions it calls are known (see
// funcreads.go), and PostgreSQL refuses a write among its own statements.
func (cat *catalog) quietWrites(f quietFunc) bool {
	if f.lang == "sql" && f.src == "" && cat.fns != nil {
		return slices.ContainsFunc(cat.fns.atomicFns[f.names], cat.mayWrite)
	}
	if f.lang != "plpgsql" && f.lang != "sql" || f.src == "" {
		return true
	}
	tables, ok := cat.bodyWrites(f.src)
	return !ok || len(tables) > 0
}

// bodyWrites is bodyWrites with what cat knows of calls.
func (cat *catalog) bodyWrites(src string) (tables []string, ok bool) {
	return bodyWrites(src, cat.calls, cat.fns)
}

// bodyWrites reads the source of a PL/pgSQL trigger function and returns
// the tables its statements write, and those the functions it calls write
// as calls tells: the functions it calls by name, and those ix (which may
// be nil) shows it calls unnamed, through an operator, a cast or
// attribute notation. ok is false when it may write tables, or change
// the session, in ways its text does not show: dynamic SQL (EXECUTE),
// CALL, DO, DDL, COPY, TRUNCATE ... CASCADE, SET or set_config, a call of
// a function that may write what calls cannot tell, or a write whose
// target it cannot read. Only the patterns it knows count as harmless: it
// errs towards ok false, which costs invalidations, never stale data.
func bodyWrites(src string, calls func(string) ([]string, bool), ix *funcIndex) (tables []string, ok bool) {
	p := newParser(src)
	for i := 0; i < len(p.toks); i++ {
		for _, f := range ix.hiddenAt(p, i) {
			if !p.bodyCall(f, calls) {
				return nil, false
			}
		}
		next, known := p.bodyToken(i, calls, ix)
		if !known {
			return nil, false
		}
		i = max(i, next-1)
	}
	if slices.Contains(p.a.writes, "pg_settings") {
		return nil, false // its rule calls set_config
	}
	return p.a.writes, true
}

// bodyToken reads the function body's token i: a write adds its target to
// p.a.writes, and so does a call, by name or in attribute notation (x.f
// calls f(x) where ix knows such an f), of a function that writes. It
// returns the index of the next token to read, and false if the token
// makes the body opaque.
func (p *parser) bodyToken(i int, calls func(string) ([]string, bool), ix *funcIndex) (next int, ok bool) {
	switch {
	case p.is(i, "execute"): // EXECUTE 'sql', FOR ... IN EXECUTE, RETURN QUERY EXECUTE
		return i, false
	case p.statementStart(i) && p.isAny(i, "call", "do", "copy", "create", "alter", "drop", "grant",
		"revoke", "comment", "security", "refresh", "reindex", "cluster", "vacuum", "import",
		"reassign", "discard", "set", "reset", "listen", "unlisten", "load", "prepare", "deallocate"):
		// Commands, not the column names (comment, load) or clauses
		// (UPDATE ... SET, ON CONFLICT DO) these words also are. SET
		// outlives the function, as set_config does.
		return i, false
	case p.isAny(i, "insert", "merge") && p.is(i+1, "into"),
		p.is(i, "delete") && p.is(i+1, "from"):
		return p.bodyTarget(i + 2)
	case p.is(i, "update"):
		// FOR [NO KEY] UPDATE, ON CONFLICT DO UPDATE, MERGE's WHEN ...
		// THEN UPDATE SET: no table of their own (UPDATE set SET ... is
		// one, named set).
		if p.isAny(i-1, "for", "key", "do") || p.is(i+1, "set") && !p.is(i+2, "set") {
			return i + 1, true
		}
		return p.bodyTarget(i + 1)
	case p.is(i, "truncate"):
		return p.bodyTruncate(i + 1)
	case p.isName(i) && p.isPunct(i+1, '('):
		name := p.tagOf(i)
		return i + 1, p.bodyCall(name, calls)
	case p.isName(i) && p.isPunct(i+1, '.'):
		last, after, _ := p.qualifiedName(i, len(p.toks))
		if p.isPunct(after, '(') {
			return after, p.tagOf(last) != "set_config" && p.bodyCall(p.tagOf(i)+"."+p.tagOf(last), calls)
		}
		for j := i + 1; j < after; j++ {
			if p.isName(j) && !p.rowCall(j, calls, ix) {
				return after, false
			}
		}
		return after, true
	case p.isName(i) && p.isPunct(i-1, '.'): // (x).f
		return i + 1, p.rowCall(i, calls, ix)
	}
	return i + 1, true
}

// rowCall records what a call of token i's name in attribute notation
// writes, if ix knows a function attribute notation may call by that
// name; false if the call makes the body opaque.
func (p *parser) rowCall(i int, calls func(string) ([]string, bool), ix *funcIndex) bool {
	if ix == nil || !ix.rowFuncs[p.tagOf(i)] {
		return true
	}
	return p.bodyCall(p.tagOf(i), calls)
}

// bodyCall records what a call of the function name writes, as calls
// tells it; false if the call makes the body opaque (set_config, a
// built-in that runs SQL of its own, or a function that may write what
// calls cannot tell).
func (p *parser) bodyCall(name string, calls func(string) ([]string, bool)) bool {
	tables, ok := calls(name)
	if name == "set_config" || unseenBuiltins[name[strings.LastIndexByte(name, '.')+1:]] == runsSQL || !ok {
		return false
	}
	for _, t := range tables {
		p.a.writes = addUnique(p.a.writes, t)
	}
	return true
}

// bodyTarget records the table a write names at i; a target it cannot read
// makes the body opaque.
func (p *parser) bodyTarget(i int) (next int, ok bool) {
	if !p.isName(i) && !(p.is(i, "only") && (p.isName(i+1) || p.isPunct(i+1, '('))) {
		return i, false
	}
	return p.addTarget(i, len(p.toks)), true
}

// bodyTruncate records the tables of TRUNCATE [TABLE] name [, ...];
// CASCADE makes the body opaque (the catalog's referrers are not at hand).
func (p *parser) bodyTruncate(i int) (next int, ok bool) {
	if p.is(i, "table") {
		i++
	}
	for {
		if i = p.addTarget(i, len(p.toks)); p.isPunct(i, '*') {
			i++
		}
		if !p.isPunct(i, ',') {
			break
		}
		i++
	}
	for ; i < len(p.toks) && !p.isPunct(i, ';'); i++ {
		if p.is(i, "cascade") {
			return i, false
		}
	}
	return i, true
}

// statementStart reports whether token i begins a PL/pgSQL statement.
func (p *parser) statementStart(i int) bool {
	return i == 0 || p.isPunct(i-1, ';') || p.isAny(i-1, "begin", "then", "else", "loop")
}
