package cachedpq

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// catalog is what cachedpq reads from pg_catalog once per Connector (and
// again after DDL): which tables a write reaches beyond those it names, and
// which user functions are volatile. Tags are bare relation names, folded
// like the SQL analysis folds them.
type catalog struct {
	cascades  map[string][]string // table -> tables whose rows its UPDATE/DELETE changes through ON ... CASCADE/SET NULL/SET DEFAULT
	referrers map[string][]string // table -> every table with a foreign key to it (TRUNCATE ... CASCADE)
	bases     map[string][]string // view or materialized view -> the relations it reads
	policies  map[string][]string // table -> the other relations its row level security policies read
	// policyCalls: table -> the user functions its row level security
	// policies call, schema-qualified
	policyCalls map[string][]string
	views       map[string]viewDef // view -> the built-ins its query calls that a registered query may not (see viewbuiltins.go)
	// sessionViews is set when a view changes its reader's session.
	sessionViews bool
	parents      map[string][]string // partition or inheriting table -> its parents
	children     map[string][]string // partitioned or inherited table -> its partitions and children
	volatile     map[string]bool     // user function name, bare and schema-qualified -> any overload is volatile
	fired        map[string][]string // table -> tables its enabled triggers and rules write (see triggers.go)
	opaque       map[string]bool     // table -> a trigger or rule on it may write what the catalog cannot read
	writers      map[string]bool     // STABLE or IMMUTABLE user function, bare and schema-qualified -> may write all the same (see triggers.go)
	// funcWrites holds what the volatile user functions whose sources
	// show all they write write, by schema-qualified name, and by bare
	// name where every function of that name does (see loadFuncWrites).
	funcWrites map[string][]string
	ddlFired   []string   // tables the enabled event triggers write, on DDL and REFRESH
	ddlOpaque  bool       // an enabled event trigger may write what the catalog cannot read
	fns        *funcIndex // the user functions, for what they read (see funcreads.go)
	// stale is set once the catalog has served Options.CatalogRefresh:
	// the next statement that needs it reads it again.
	stale atomic.Bool

	// readFired holds what a read of a view, or of a table with row level
	// security policies, writes: what the functions they call write;
	// readOpaque, the relations whose functions may write what the catalog
	// cannot read (see noteReadCalls).
	readFired  map[string][]string
	readOpaque map[string]bool
	// sequences holds the sequences' names: nextval and serial columns
	// advance them under no tag, so a read of one is never cached.
	sequences map[string]bool
}

// serveFor marks cat stale after d (never if d is negative).
func (cat *catalog) serveFor(d time.Duration) {
	if d > 0 {
		time.AfterFunc(d, func() { cat.stale.Store(true) })
	}
}

// catalogCache holds the current catalog of a Connector.
type catalogCache struct {
	cur    atomic.Pointer[catalog] // nil until loaded, and after DDL
	gen    atomic.Uint64           // counts resets: a load that spans one is not kept
	loadMu sync.Mutex              // serializes loads, so that one conn loads
}

// reset drops the catalog after DDL; the next write or read reloads it.
func (cc *catalogCache) reset() {
	cc.gen.Add(1)
	cc.cur.Store(nil)
}

// catalog returns the current catalog, loading it on c if needed (none
// yet, DDL, or stale). c is free: the engine calls this between
// statements. On a connection in a transaction the catalog is read on a
// connection of its own: the transaction's snapshot may predate DDL others
// committed, or see its own DDL that may yet roll back, and the catalog is
// shared by every conn. A stale catalog serves while it is read again,
// and for another period if that fails.
func (e *engine) catalog(ctx context.Context, c *conn) (*catalog, error) {
	cat := e.cat.cur.Load()
	switch {
	case cat != nil && !cat.stale.Load():
		return cat, nil
	case cat != nil && !e.cat.loadMu.TryLock():
		return cat, nil // another statement reads it again: serve on meanwhile
	case cat == nil:
		e.cat.loadMu.Lock()
	}
	defer e.cat.loadMu.Unlock()
	old := e.cat.cur.Load()
	if old != nil && !old.stale.Load() {
		return old, nil
	}
	cat, err := e.loadCatalog(ctx, c)
	switch {
	case err != nil && old != nil:
		e.opts.Logger.Warn("cachedpq: cannot read pg_catalog again; the last reading serves on", "err", err)
		old.stale.Store(false)
		old.serveFor(e.opts.CatalogRefresh)
		return old, nil
	case err != nil:
		e.opts.Logger.Warn("cachedpq: cannot read pg_catalog; writes invalidate everything", "err", err)
	}
	return cat, err
}

// catalogBefore reads the catalog before a DDL statement runs on c, and
// returns it, or nil for other statements and where none can be read. The
// tables DDL names are reached through it (a partition it drops, an
// inheritance it ends), and through the catalog read after it commits (an
// inheritance it starts, see committed): a reading made after it ran, the
// first since other DDL or once CatalogRefresh passed, would miss the
// former.
func (e *engine) catalogBefore(ctx context.Context, c *conn, a *analysis) *catalog {
	if !a.ddl || e.opts.NoCatalog {
		return nil
	}
	cat, _ := e.catalog(ctx, c)
	return cat
}

// errNoCatalogBefore stands for a catalog catalogBefore could not read.
var errNoCatalogBefore = errors.New("cachedpq: no reading of pg_catalog from before the DDL")

// catalogOf returns the catalog a statement's writes are reached through:
// for DDL, the one read before it ran.
func (e *engine) catalogOf(ctx context.Context, c *conn, a *analysis, before *catalog) (*catalog, error) {
	switch {
	case !a.ddl:
		return e.catalog(ctx, c)
	case before == nil:
		return nil, errNoCatalogBefore
	}
	return before, nil
}

// loadCatalog reads the catalog for e.catalog, which holds loadMu.
func (e *engine) loadCatalog(ctx context.Context, c *conn) (*catalog, error) {
	gen, src := e.cat.gen.Load(), c.inner
	if c.inTx() {
		own, err := e.inner.Connect(ctx)
		if err != nil {
			return nil, err
		}
		defer own.Close()
		src = own
	}
	cat, err := loadCatalog(ctx, src)
	if err != nil {
		return nil, err
	}
	if e.cat.gen.Load() == gen { // else DDL committed while it loaded: it may predate it
		e.cat.cur.Store(cat)
		cat.serveFor(e.opts.CatalogRefresh)
	}
	return cat, nil
}

const (
	fkQuery = `select ch.relname, pa.relname, con.confdeltype, con.confupdtype
		from pg_catalog.pg_constraint con
		join pg_catalog.pg_class ch on ch.oid = con.conrelid
		join pg_catalog.pg_class pa on pa.oid = con.confrelid
		where con.contype = 'f'`
	viewQuery = `select distinct v.relname, t.relname
		from pg_catalog.pg_rewrite r
		join pg_catalog.pg_class v on v.oid = r.ev_class
		join pg_catalog.pg_depend d on d.objid = r.oid
			and d.classid = 'pg_catalog.pg_rewrite'::regclass
			and d.refclassid = 'pg_catalog.pg_class'::regclass
		join pg_catalog.pg_class t on t.oid = d.refobjid
		where v.relkind in ('v', 'm') and t.oid <> v.oid`
	// policyQuery lists what the row level security policies of each
	// table read (in a USING or WITH CHECK expression): the other
	// relations they name, and the user functions they call, schema-
	// qualified. A read of the table reads them too, whoever it is
	// filtered for.
	policyQuery = `select distinct t.relname, coalesce(r.relname, ''), coalesce(n.nspname || '.' || f.proname, '')
		from pg_catalog.pg_policy p
		join pg_catalog.pg_class t on t.oid = p.polrelid
		join pg_catalog.pg_depend d on d.objid = p.oid
			and d.classid = 'pg_catalog.pg_policy'::regclass
		left join pg_catalog.pg_class r on d.refclassid = 'pg_catalog.pg_class'::regclass
			and r.oid = d.refobjid and r.oid <> t.oid
		left join pg_catalog.pg_proc f on d.refclassid = 'pg_catalog.pg_proc'::regclass and f.oid = d.refobjid
		left join pg_catalog.pg_namespace n on n.oid = f.pronamespace
			and n.nspname not in ('pg_catalog', 'information_schema')
		where r.oid is not null or n.oid is not null`
	seqQuery     = `select relname from pg_catalog.pg_class where relkind = 'S'`
	inheritQuery = `select c.relname, p.relname
		from pg_catalog.pg_inherits i
		join pg_catalog.pg_class c on c.oid = i.inhrelid
		join pg_catalog.pg_class p on p.oid = i.inhparent`
	// funcQuery lists the user functions, each overload, with their
	// language, source and volatility: read once for the volatile map and
	// for what their sources write (see triggers.go).
	funcQuery = `select n.nspname, p.proname, l.lanname, p.prosrc, p.provolatile = 'v'
		from pg_catalog.pg_proc p
		join pg_catalog.pg_namespace n on n.oid = p.pronamespace
		join pg_catalog.pg_language l on l.oid = p.prolang
		where n.nspname not in ('pg_catalog', 'information_schema')`
)

func loadCatalog(ctx context.Context, ci driver.Conn) (*catalog, error) {
	cat := &catalog{
		cascades:    map[string][]string{},
		referrers:   map[string][]string{},
		bases:       map[string][]string{},
		policies:    map[string][]string{},
		policyCalls: map[string][]string{},
		views:       map[string]viewDef{},
		parents:     map[string][]string{},
		children:    map[string][]string{},
		volatile:    map[string]bool{},
		fired:       map[string][]string{},
		opaque:      map[string]bool{},
		writers:     map[string]bool{},
		funcWrites:  map[string][]string{},
		sequences:   map[string]bool{},
	}
	ci, err := readCatalog(ctx, ci)
	if err != nil {
		return nil, err
	}
	var funcs []userFunc
	err = catalogRows(ctx, ci, fkQuery, 4, func(r []driver.Value) {
		child, parent := textOf(r[0]), textOf(r[1])
		cat.referrers[parent] = appendNew(cat.referrers[parent], child)
		if changesChild(textOf(r[2])) || changesChild(textOf(r[3])) {
			cat.cascades[parent] = appendNew(cat.cascades[parent], child)
		}
	})
	if err == nil {
		err = catalogRows(ctx, ci, viewQuery, 2, appendTo(cat.bases))
	}
	if err == nil {
		err = catalogRows(ctx, ci, policyQuery, 3, func(r []driver.Value) {
			t := textOf(r[0])
			if rel := textOf(r[1]); rel != "" {
				cat.policies[t] = appendNew(cat.policies[t], rel)
			}
			if fn := textOf(r[2]); fn != "" {
				cat.policyCalls[t] = appendNew(cat.policyCalls[t], fn)
			}
		})
	}
	if err == nil {
		err = catalogRows(ctx, ci, viewBuiltinQuery, 4, cat.noteViewBuiltin)
	}
	if err == nil {
		err = catalogRows(ctx, ci, inheritQuery, 2, func(r []driver.Value) {
			child, parent := textOf(r[0]), textOf(r[1])
			cat.parents[child] = appendNew(cat.parents[child], parent)
			cat.children[parent] = appendNew(cat.children[parent], child)
		})
	}
	if err == nil {
		err = catalogRows(ctx, ci, seqQuery, 1, func(r []driver.Value) { cat.sequences[textOf(r[0])] = true })
	}
	if err == nil {
		err = catalogRows(ctx, ci, funcQuery, 5, func(r []driver.Value) {
			f := userFunc{schema: textOf(r[0]), name: textOf(r[1]), lang: textOf(r[2]), src: textOf(r[3])}
			f.volatile, _ = r[4].(bool)
			funcs = append(funcs, f)
			q := f.schema + "." + f.name // any overload volatile makes the name so
			cat.volatile[f.name] = cat.volatile[f.name] || f.volatile
			cat.volatile[q] = cat.volatile[q] || f.volatile
		})
	}
	if err == nil {
		err = cat.loadFuncReads(ctx, ci, funcs)
	}
	if err == nil {
		err = cat.loadTriggers(ctx, ci, funcs)
	}
	return cat, err
}

// changesChild reports a referential action that writes the referencing
// rows: cascade, set null, set default (not no action or restrict).
func changesChild(action string) bool { return action == "c" || action == "n" || action == "d" }

// textOf returns a text value as lib/pq returns it, string or []byte.
func textOf(v driver.Value) string {
	switch s := v.(type) {
	case string:
		return s
	case []byte:
		return string(s)
	}
	return ""
}

// appendTo reads the rows of a two-column catalog query into m: the
// second column's values listed under the first's, once each.
func appendTo(m map[string][]string) func([]driver.Value) {
	return func(r []driver.Value) {
		k := textOf(r[0])
		m[k] = appendNew(m[k], textOf(r[1]))
	}
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

var (
	errNoQueryer    = errors.New("cachedpq: inner connection cannot run catalog queries")
	errCatalogShape = errors.New("cachedpq: catalog query answered with unexpected columns")
)

// catalogQueries are the queries loadCatalog runs, in its order, with
// their columns.
var catalogQueries = []struct {
	query string
	ncols int
}{
	{fkQuery, 4}, {viewQuery, 2}, {policyQuery, 3}, {viewBuiltinQuery, 4}, {inheritQuery, 2},
	{seqQuery, 1}, {funcQuery, 5}, {relQuery, 1}, {atomicQuery, 3}, {viewCallQuery, 2},
	{builtinQuery, 1}, {rowFuncQuery, 1}, {opQuery, 2}, {castQuery, 2}, {aggQuery, 2},
	{triggerQuery, 4}, {whenQuery, 3}, {defaultQuery, 3}, {domainQuery, 3}, {ruleQuery, 2},
	{ruleCallQuery, 1}, {eventQuery, 3},
}

// catalogBatch is catalogQueries as one string of statements.
var catalogBatch = func() string {
	qs := make([]string, len(catalogQueries))
	for i, q := range catalogQueries {
		qs[i] = q.query
	}
	return strings.Join(qs, ";\n")
}()

// readCatalog runs every catalog query on ci in one round trip, as one
// string of statements, and returns a connection that answers each from
// what it read (see catalogRows): one by one, the 22 round trips took
// 16 ms of an empty database's catalog reading, on loopback.
func readCatalog(ctx context.Context, ci driver.Conn) (driver.Conn, error) {
	q, ok := ci.(driver.QueryerContext)
	if !ok {
		return nil, errNoQueryer
	}
	rows, err := q.QueryContext(ctx, catalogBatch, nil)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	sets, _ := rows.(driver.RowsNextResultSet)
	read := readCatalogConn{Conn: ci, results: make(map[string][][]driver.Value, len(catalogQueries))}
	for i, cq := range catalogQueries {
		if i > 0 && (sets == nil || sets.NextResultSet() != nil) {
			return nil, errCatalogShape
		}
		if len(rows.Columns()) != cq.ncols {
			return nil, errCatalogShape
		}
		all, err := readResult(rows, cq.ncols)
		if err != nil {
			return nil, err
		}
		read.results[cq.query] = all
	}
	return read, nil
}

// readResult reads the rows of rows' current result set, of ncols values
// each, to its end, as readRows replays them.
func readResult(rows driver.Rows, ncols int) ([][]driver.Value, error) {
	var all [][]driver.Value
	for {
		r := make([]driver.Value, ncols)
		if err := rows.Next(r); err == io.EOF {
			return all, nil
		} else if err != nil {
			return nil, err
		}
		for j, v := range r {
			if b, ok := v.([]byte); ok {
				r[j] = bytes.Clone(b) // the driver may reuse its buffer
			}
		}
		all = append(all, r)
	}
}

// readCatalogConn answers the catalog queries from what readCatalog read.
type readCatalogConn struct {
	driver.Conn
	results map[string][][]driver.Value
}

func (c readCatalogConn) QueryContext(_ context.Context, query string, _ []driver.NamedValue) (driver.Rows, error) {
	rows, ok := c.results[query]
	if !ok {
		return nil, fmt.Errorf("cachedpq: %q is not a catalog query", query)
	}
	return &readRows{cols: make([]string, catalogCols(query)), rows: rows}, nil
}

// catalogCols returns how many columns a catalog query has.
func catalogCols(query string) int {
	for _, cq := range catalogQueries {
		if cq.query == query {
			return cq.ncols
		}
	}
	return 0
}

// readRows replays rows read beforehand: readCatalog's, and test doubles'.
type readRows struct {
	cols []string
	rows [][]driver.Value
}

func (r *readRows) Columns() []string { return r.cols }
func (r *readRows) Close() error      { return nil }

func (r *readRows) Next(dest []driver.Value) error {
	if len(r.rows) == 0 {
		return io.EOF
	}
	copy(dest, r.rows[0])
	r.rows = r.rows[1:]
	return nil
}

// catalogRows runs a catalog query on ci: the connection readCatalog
// returns, which answers from what it read.
func catalogRows(ctx context.Context, ci driver.Conn, query string, ncols int, each func([]driver.Value)) error {
	q, ok := ci.(driver.QueryerContext)
	if !ok {
		return errNoQueryer
	}
	rows, err := q.QueryContext(ctx, query, nil)
	if err != nil {
		return err
	}
	defer rows.Close()
	if len(rows.Columns()) != ncols {
		return errCatalogShape
	}
	dest := make([]driver.Value, ncols)
	for {
		if err := rows.Next(dest); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		each(dest)
	}
}

// reach returns tags with every table a write to them also changes:
// foreign-key cascades (all referencing tables for TRUNCATE ... CASCADE),
// what their triggers and rules write, for writes through a view its base
// tables, and for a table in a hierarchy of partitions or inheritance its
// ancestors, whose reads see its rows, and its descendants, whose rows a
// write to it may change (not its siblings); transitively. opaque reports
// a table among them whose triggers or rules may write what the catalog
// cannot read.
func (cat *catalog) reach(tags []string, truncateCascade bool) (out []string, opaque bool) {
	out = slices.Clone(tags)
	dirs := make([]direction, len(out)) // how out[i] was reached
	add := func(t string, d direction) {
		if !slices.Contains(out, t) {
			out, dirs = append(out, t), append(dirs, d)
		}
	}
	for i := 0; i < len(out); i++ {
		t, d := out[i], dirs[i]
		next := cat.cascades[t]
		if truncateCascade {
			next = cat.referrers[t]
		}
		for _, n := range slices.Concat(next, cat.bases[t], cat.fired[t]) {
			add(n, anyWay)
		}
		opaque = opaque || cat.opaque[t]
		if d != down {
			for _, p := range cat.parents[t] {
				add(p, up)
			}
		}
		if d != up {
			for _, c := range cat.children[t] {
				add(c, down)
			}
		}
	}
	return out, opaque
}

// direction is how reach came to a table in a hierarchy: from a descendant
// (up), from an ancestor (down), or otherwise.
type direction uint8

const (
	anyWay direction = iota
	up
	down
)

// anyVolatile reports whether one of the functions, as the analysis wrote
// them (tags, schema-qualified if written so), is a volatile user
// function.
func (cat *catalog) anyVolatile(fns []string) bool {
	for _, f := range fns {
		if cat.volatile[f] {
			return true
		}
		if i := strings.LastIndexByte(f, '.'); i >= 0 && cat.volatile[f[i+1:]] {
			return true
		}
	}
	return false
}

// regState is what an engine keeps per registered query: its counters and
// its tags as resolved against the current catalog.
type regState struct {
	c        counters
	resolved atomic.Pointer[regTags]
	warned   atomic.Bool // the log has said why reg is not cached (bypassView)
	// load is how long reg's last load took, in nanoseconds (0: none yet);
	// see earlyLookupWait.
	load atomic.Int64
}

// regTags is a registration's tags resolved against one catalog.
type regTags struct {
	cat  *catalog
	tags []string // read tables, views' bases, what its functions read, Policy.Tags, then the epoch
	// skip, unless 0, is why reg must not be cached: it calls a user
	// function that may write, or read what its source does not show.
	skip bypassReason
}

// state returns the engine's state for reg, creating it on first use.
func (e *engine) state(reg *registration) *regState {
	if v, ok := e.regs.Load(reg); ok {
		return v.(*regState)
	}
	v, _ := e.regs.LoadOrStore(reg, &regState{})
	return v.(*regState)
}

// tagsFor returns the tags an entry of reg depends on, the epoch last, or
// why reg must not be cached: it reads a sequence (through its views and
// functions too), it calls a function that may write, or read what its
// source does not show, or a volatile built-in, or the catalog cannot be
// read to see what its views and functions read.
func (e *engine) tagsFor(ctx context.Context, c *conn, reg *registration, rs *regState) ([]string, bypassReason, bool) {
	if e.opts.NoCatalog {
		return reg.epochTags, 0, true
	}
	if rt := rs.resolved.Load(); rt != nil && rt.cat == e.cat.cur.Load() && !rt.cat.stale.Load() {
		return rt.tags, rt.skip, rt.skip == 0
	}
	cat, err := e.catalog(ctx, c)
	if err != nil {
		return nil, bypassVolatile, false
	}
	fns := cat.callsOf(reg.a)
	tags, opaque := cat.reads(reg.tags, fns)
	rt := &regTags{cat: cat, tags: append(tags, epochTag)}
	switch {
	case slices.ContainsFunc(tags, func(t string) bool { return cat.sequences[t] }):
		rt.skip = bypassSequence
	case opaque || cat.anyMayWrite(fns):
		rt.skip = bypassVolatile
	default:
		if why := cat.viewRefusal(tags, reg.policy.AllowNondeterministic); why != "" {
			rt.skip = bypassView
			if rs.warned.CompareAndSwap(false, true) {
				e.opts.Logger.Warn("cachedpq: a registered query is not cached", "query", reg.name, "why", why)
			}
		}
	}
	rs.resolved.Store(rt)
	return rt.tags, rt.skip, rt.skip == 0
}
