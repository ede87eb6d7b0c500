package cachedpq

import (
	"context"
	"database/sql/driver"
	"maps"
	"slices"
	"strings"
)

// A registered read that calls a user function reads what the function
// reads: `select * from orders_of($1)`, a SQL function over orders, names
// no table, yet a write to orders changes its answer. The catalog reads
// the functions' sources, as it does for writes (see triggers.go), and an
// entry depends on every relation its functions name, through the
// functions they call and the views they read, transitively. A function
// whose source cannot show what it reads (PL/pgSQL's EXECUTE, languages
// other than SQL and PL/pgSQL) makes the read uncacheable, as one that may
// write does (see loadWriters, which counts those among the writers). C
// functions, which extensions provide (PostGIS, pg_trgm, citext), are
// taken to read no table.

const (
	// relQuery lists the names of the relations a function may read.
	relQuery = `select distinct c.relname
		from pg_catalog.pg_class c
		join pg_catalog.pg_namespace n on n.oid = c.relnamespace
		where c.relkind in ('r', 'v', 'm', 'p', 'f', 'S')
			and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')`
	// atomicQuery lists what the SQL-standard bodies of SQL functions
	// (BEGIN ATOMIC, RETURN), which have no source text, depend on: the
	// relations they read and the user functions they call.
	atomicQuery = `select n.nspname || '.' || p.proname, coalesce(t.relname, ''),
			coalesce(qn.nspname || '.' || q.proname, '')
		from pg_catalog.pg_depend d
		join pg_catalog.pg_proc p on p.oid = d.objid
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		left join pg_catalog.pg_class t on d.refclassid = 'pg_catalog.pg_class'::regclass and t.oid = d.refobjid
		left join pg_catalog.pg_proc q on d.refclassid = 'pg_catalog.pg_proc'::regclass and q.oid = d.refobjid
		left join pg_catalog.pg_namespace qn on qn.oid = q.pronamespace
			and qn.nspname not in ('pg_catalog', 'information_schema')
		where d.classid = 'pg_catalog.pg_proc'::regclass and p.prosrc = ''
			and (t.oid is not null or qn.oid is not null)`
	// viewCallQuery lists the user functions each view calls, and the
	// built-ins but the immutable ones (see hiddenCall), the user views'.
	viewCallQuery = `select distinct v.relname, n.nspname || '.' || p.proname
		from pg_catalog.pg_rewrite r
		join pg_catalog.pg_class v on v.oid = r.ev_class
		join pg_catalog.pg_namespace vn on vn.oid = v.relnamespace
		join pg_catalog.pg_depend d on d.objid = r.oid
			and d.classid = 'pg_catalog.pg_rewrite'::regclass
			and d.refclassid = 'pg_catalog.pg_proc'::regclass
		join pg_catalog.pg_proc p on p.oid = d.refobjid
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		where v.relkind in ('v', 'm') and (n.nspname not in ('pg_catalog', 'information_schema')
			or p.provolatile <> 'i' and vn.nspname not in ('pg_catalog', 'information_schema'))`
	// builtinQuery lists the volatile built-ins: a read that calls one,
	// through its views and functions too, is not cached (lo_get,
	// nextval, random, pg_read_file ...).
	builtinQuery = `select distinct proname from pg_catalog.pg_proc
		where pronamespace = 'pg_catalog'::regnamespace and provolatile = 'v'`
	// rowFuncQuery lists the user functions that attribute notation may
	// call (u.order_count for order_count(u)): one argument but defaults,
	// of a type that takes a row: composite, a domain over one, a pseudo
	// type (record, anyelement), or variadic.
	rowFuncQuery = `select distinct p.proname
		from pg_catalog.pg_proc p
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		join pg_catalog.pg_type t on t.oid = p.proargtypes[0]
		left join pg_catalog.pg_type b on b.oid = t.typbasetype
		where n.nspname not in ('pg_catalog', 'information_schema')
			and p.pronargs >= 1 and p.pronargs - p.pronargdefaults <= 1
			and (t.typrelid <> 0 or b.typrelid <> 0 or t.typtype = 'p' or p.provariadic <> 0)`
	// opQuery lists the operators that user functions implement, with
	// those functions: a <@> b calls the function of <@>.
	opQuery = `select distinct o.oprname, n.nspname || '.' || p.proname
		from pg_catalog.pg_operator o
		join pg_catalog.pg_proc p on p.oid = o.oprcode
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		where ` + userCode
	// castQuery lists the types that user functions convert to in casts,
	// with those functions: x::t calls the function of the cast to t.
	castQuery = `select distinct t.typname, n.nspname || '.' || p.proname
		from pg_catalog.pg_cast c
		join pg_catalog.pg_type t on t.oid = c.casttarget
		join pg_catalog.pg_proc p on p.oid = c.castfunc
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		where ` + userCode
	// aggQuery lists the user functions that aggregates call (transition,
	// final, combine, serial functions, their moving-aggregate variants):
	// an aggregate's own body is none (internal, aggregate_dummy).
	aggQuery = `select distinct an.nspname || '.' || a.proname, n.nspname || '.' || p.proname
		from pg_catalog.pg_aggregate g
		join pg_catalog.pg_proc a on a.oid = g.aggfnoid
		join pg_catalog.pg_namespace an on an.oid = a.pronamespace
		join pg_catalog.pg_proc p on p.oid in (g.aggtransfn, g.aggfinalfn, g.aggcombinefn,
			g.aggmtransfn, g.aggminvtransfn, g.aggmfinalfn, g.aggserialfn, g.aggdeserialfn)
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		where ` + userCode
	// userCode selects the user functions p (of namespace n) that the
	// queries above list: all but extensions' C code that is not
	// VOLATILE, which reads and writes no table (see loadWriters), so
	// that an extension's operators (citext's =, PostGIS's &&) add no
	// call to every statement that uses one of the same name.
	userCode = `n.nspname not in ('pg_catalog', 'information_schema')
			and (p.provolatile = 'v' or p.prolang not in (select l.oid from pg_catalog.pg_language l
				where l.lanname in ('c', 'internal')))`
)

// funcIndex holds the user functions by name, for what they read.
type funcIndex struct {
	funcs     []userFunc
	byName    map[string][]int    // bare and schema-qualified name -> overloads
	relations map[string]bool     // names of the relations a function may read
	atomic    map[string][]string // schema-qualified name of a SQL-standard body -> relations it reads
	atomicFns map[string][]string // schema-qualified name of a SQL-standard body -> user functions it calls
	viewCalls map[string][]string // view -> schema-qualified user functions (and built-ins) it calls
	volatile  map[string]bool     // volatile built-in functions, by name
	rowFuncs  map[string]bool     // bare names of the user functions attribute notation may call
	opFuncs   map[string][]string // operator -> schema-qualified user functions that implement it
	aggFns    map[string][]string // schema-qualified aggregate -> the user functions it calls
	castFuncs map[string][]string // type name -> schema-qualified user functions that casts to it call
}

// newFuncIndex indexes funcs by name; the rest is empty.
func newFuncIndex(funcs []userFunc) *funcIndex {
	ix := &funcIndex{
		funcs:     funcs,
		byName:    map[string][]int{},
		relations: map[string]bool{},
		atomic:    map[string][]string{},
		atomicFns: map[string][]string{},
		viewCalls: map[string][]string{},
		volatile:  map[string]bool{},
		rowFuncs:  map[string]bool{},
		opFuncs:   map[string][]string{},
		aggFns:    map[string][]string{},
		castFuncs: map[string][]string{},
	}
	for i, f := range funcs {
		ix.byName[f.name] = append(ix.byName[f.name], i)
		q := f.schema + "." + f.name
		ix.byName[q] = append(ix.byName[q], i)
	}
	return ix
}

// loadFuncReads reads what reads needs besides funcs, the user functions
// funcQuery listed.
func (cat *catalog) loadFuncReads(ctx context.Context, ci driver.Conn, funcs []userFunc) error {
	ix := newFuncIndex(funcs)
	err := catalogRows(ctx, ci, relQuery, 1, func(r []driver.Value) {
		ix.relations[textOf(r[0])] = true
	})
	if err == nil {
		err = catalogRows(ctx, ci, atomicQuery, 3, func(r []driver.Value) {
			f := textOf(r[0])
			if t := textOf(r[1]); t != "" {
				ix.atomic[f] = appendNew(ix.atomic[f], t)
			}
			if g := textOf(r[2]); g != "" {
				ix.atomicFns[f] = appendNew(ix.atomicFns[f], g)
			}
		})
	}
	if err == nil {
		err = catalogRows(ctx, ci, viewCallQuery, 2, appendTo(ix.viewCalls))
	}
	if err == nil {
		err = catalogRows(ctx, ci, builtinQuery, 1, func(r []driver.Value) {
			ix.volatile[textOf(r[0])] = true
		})
	}
	if err == nil {
		err = catalogRows(ctx, ci, rowFuncQuery, 1, func(r []driver.Value) {
			ix.rowFuncs[textOf(r[0])] = true
		})
	}
	if err == nil {
		err = catalogRows(ctx, ci, opQuery, 2, appendTo(ix.opFuncs))
	}
	if err == nil {
		err = catalogRows(ctx, ci, castQuery, 2, appendTo(ix.castFuncs))
	}
	if err == nil {
		err = catalogRows(ctx, ci, aggQuery, 2, appendTo(ix.aggFns))
	}
	cat.fns = ix
	return err
}

// reads returns tables with what a read of them that calls fns (user
// functions, as the analysis names them) also reads: the base relations
// of views, the relations row level security policies read, and the
// relations the functions, the views' functions and the policies'
// functions name, transitively. opaque reports a function that may read what its
// source does not show, or that may write, or a built-in whose reads no
// tag covers (see hiddenCall).
func (cat *catalog) reads(tables, fns []string) (out []string, opaque bool) {
	out = append([]string(nil), tables...)
	pending := append([]string(nil), fns...)
	seen := map[int]bool{} // overloads read
	for i := 0; i < len(out) || len(pending) > 0; {
		if i < len(out) {
			t := out[i]
			i++
			for _, b := range cat.bases[t] {
				out = appendNew(out, b)
			}
			for _, b := range cat.policies[t] {
				out = appendNew(out, b)
			}
			pending = append(pending, cat.policyCalls[t]...)
			if cat.fns != nil {
				pending = append(pending, cat.fns.viewCalls[t]...)
			}
			continue
		}
		name := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		opaque = opaque || cat.mayWrite(name)
		if cat.fns == nil {
			continue
		}
		opaque = opaque || cat.fns.hiddenCall(name)
		for _, k := range cat.fns.overloads(name) {
			if seen[k] {
				continue
			}
			seen[k] = true
			rels, calls, ok := cat.fns.body(k)
			opaque = opaque || !ok
			for _, r := range rels {
				out = appendNew(out, r)
			}
			pending = append(pending, calls...)
		}
	}
	return out, opaque
}

// callsOf returns the functions a statement calls: those the analysis
// saw called, those it saw in attribute notation (u.order_count) that
// the catalog knows may be called so (the other names are columns, which
// cost nothing), and those that implement the operators and the casts it
// uses.
func (cat *catalog) callsOf(a *analysis) []string {
	if cat.fns == nil {
		return a.functions
	}
	fns, own := a.functions, false
	more := func(names ...string) {
		if len(names) == 0 {
			return
		}
		if !own { // a.functions is shared: appends must not reach its array
			fns, own = slices.Clip(fns), true
		}
		fns = append(fns, names...)
	}
	for _, name := range a.attrCalls {
		if cat.fns.rowFuncs[name] {
			more(name)
		}
	}
	if a.attrMany {
		more(slices.Collect(maps.Keys(cat.fns.rowFuncs))...)
	}
	hidden := func(used []string, many bool, impl map[string][]string) {
		if len(impl) == 0 {
			return
		}
		for _, u := range used {
			more(impl[u]...)
		}
		if many {
			for _, names := range impl {
				more(names...)
			}
		}
	}
	hidden(a.operators, a.opMany, cat.fns.opFuncs)
	hidden(a.casts, a.castMany, cat.fns.castFuncs)
	return fns
}

// hiddenAt returns the user functions that token i of a function's
// source calls without naming them: an operator's (a >>> b) and a
// cast's (x::t, CAST(x AS t)), as the analysis reads them. ix may be nil.
func (ix *funcIndex) hiddenAt(p *parser, i int) []string {
	switch {
	case ix == nil:
	case p.toks[i].kind == tokOp:
		return ix.opFuncs[p.text(i)]
	case p.castAt(i):
		var impl []string
		for _, t := range p.castNames(i + 1) {
			impl = append(impl, ix.castFuncs[t]...)
		}
		return impl
	}
	return nil
}

// castAt reports whether token i casts to the type named after it: the
// :: of x::t, or the AS of CAST(x AS t) (or of an alias before a ")",
// which the analysis takes for one too).
func (p *parser) castAt(i int) bool {
	return p.toks[i].kind == tokPunct && p.text(i) == "::" && p.isName(i+1) ||
		p.is(i, "as") && p.castAs(i+1, len(p.toks))
}

// hiddenCall reports a call, named as the analysis or viewCallQuery names
// it, of a built-in whose answer no tag covers: a volatile one (lo_get,
// nextval, random), or one that reads what the analysis cannot see (see
// unseenBuiltins). A user function of that name in another schema counts
// too, as a call of its bare name may reach the built-in.
func (ix *funcIndex) hiddenCall(name string) bool {
	bare := name[strings.LastIndexByte(name, '.')+1:]
	return ix.volatile[bare] || unseenBuiltins[bare] != 0
}

// overloads returns the functions a call of name may reach: those of its
// schema-qualified name, or of its bare name in any schema.
func (ix *funcIndex) overloads(name string) []int {
	if ks, ok := ix.byName[name]; ok || strings.Count(name, ".") < 2 {
		return ks
	}
	// database.schema.function
	return ix.byName[name[strings.IndexByte(name, '.')+1:]]
}

// body returns the relations function k's source names and the user
// functions it calls, or false if it may read what its source does not
// show.
func (ix *funcIndex) body(k int) (rels, calls []string, ok bool) {
	f := &ix.funcs[k]
	switch {
	case f.lang == "internal":
		return nil, ix.aggFns[f.schema+"."+f.name], true // an aggregate calls its functions
	case f.lang == "c":
		return nil, nil, true
	case f.lang == "sql" && f.src == "":
		q := f.schema + "." + f.name
		return ix.atomic[q], ix.atomicFns[q], true
	case f.lang != "sql" && f.lang != "plpgsql":
		return nil, nil, false
	}
	p := newParser(f.src)
	for i := range p.toks {
		if f.lang == "plpgsql" && p.is(i, "execute") {
			return nil, nil, false // dynamic SQL
		}
		if p.castAt(i) {
			if _, reg := p.regType(i + 1); reg {
				return nil, nil, false // x::regclass reads the catalog by name, under no tag
			}
		}
		for _, g := range ix.hiddenAt(p, i) {
			calls = appendNew(calls, g)
		}
		if !p.isName(i) {
			continue
		}
		name := p.tagOf(i)
		if ix.relations[name] {
			rels = appendNew(rels, name)
		}
		if _, fn := ix.byName[name]; fn && p.isPunct(i+1, '(') || ix.rowFuncs[name] && p.isPunct(i-1, '.') {
			calls = appendNew(calls, name) // f(x), or x.f in attribute notation
		}
		if p.isPunct(i+1, '(') && unseenBuiltins[name] != 0 {
			// Not every volatile built-in (see hiddenCall): a function may
			// sleep, take an advisory lock or count its calls in a sequence.
			return nil, nil, false
		}
	}
	return rels, calls, true
}
