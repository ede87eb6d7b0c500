package cachedpq

import (
	"context"
	"database/sql/driver"
	"fmt"
	"slices"
	"strings"
	"time"
)

// A new lib/pq connection answers one probe before it is handed out, for
// four facts the DSN does not tell:
//
//   - Whether it reached a standby. A standby replays the primary's writes
//     late: a miss read there after a write's invalidation would store rows
//     from before the write under stamps from after it, for every process
//     to be served. Reads on such a connection skip the cache.
//   - How lib/pq decodes infinite times: []byte("infinity"), or, once the
//     process has called pq.EnableInfinityTs, one of the two times it was
//     given. That is the process's choice, and processes sharing a cache
//     may choose differently, so keys must tell them apart: the first
//     probe adds the answer to the identity, unless it is the default.
//   - Whether standard_conforming_strings is on, as the SQL analysis
//     assumes: a role or database may turn it off (ALTER ... SET). Such a
//     connection is refused, as a DSN that turns it off is.
//   - The settings a session starts with that change what a query returns
//     (see settingsQuery). A role or database may set them (ALTER ... SET)
//     where the DSN does not show it, and change them while connections
//     are open. The first probe adds them to the identity; a later
//     connection that starts with others (search_path now names another
//     schema, say) skips the cache, as one that ran SET does: its rows
//     are not the rows the keys stand for.

// settingsQuery reads, as one text, the settings of a new session that
// change what its queries return: the role it acts as, the settings that
// change how values are found, compared and printed, and the settings its
// role and database have of their own (ALTER ROLE/DATABASE ... SET),
// custom ones (app.tenant, say) included, as a query may read those with
// current_setting, but for harmlessSettings.
var settingsQuery = `pg_catalog.concat_ws(E'\n', current_user,
	pg_catalog.current_setting('search_path'), pg_catalog.current_setting('TimeZone'),
	pg_catalog.current_setting('DateStyle'), pg_catalog.current_setting('IntervalStyle'),
	pg_catalog.current_setting('extra_float_digits'), pg_catalog.current_setting('lc_monetary'),
	pg_catalog.current_setting('lc_numeric'), pg_catalog.current_setting('lc_time'),
	pg_catalog.current_setting('row_security'), pg_catalog.current_setting('default_text_search_config'),
	(select pg_catalog.string_agg(u.c, E'\n' order by s.setdatabase, s.setrole, u.o)
		from pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) with ordinality u(c, o)
		where s.setdatabase in (0, (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database()))
			and s.setrole in (0, pg_catalog.quote_ident(session_user)::pg_catalog.regrole)
			and pg_catalog.split_part(u.c, '=', 1) not in ('` + strings.Join(harmlessSettings, "', '") + `')
			and pg_catalog.split_part(u.c, '=', 1) !~ '` + harmlessPattern + `'))`

// harmlessSettings change no query's rows, only how it runs (its plan, the
// time and memory it may take), what is logged or how the session is
// labelled: a role or database that has one of its own keeps the keys, and
// a connection that SETs one still reads from the cache. Poolers and
// frameworks set statement_timeout or application_name on every
// connection, which would otherwise turn the cache off for good. Settings
// that shape results (search_path, TimeZone, DateStyle, extra_float_digits,
// bytea_output, row_security, custom ones that policies read) are not here.
var harmlessSettings = []string{
	"application_name", "client_min_messages", "work_mem", "maintenance_work_mem",
	"hash_mem_multiplier", "temp_buffers", "temp_file_limit", "synchronous_commit",
	"jit", "random_page_cost", "seq_page_cost", "effective_cache_size",
	"cpu_tuple_cost", "cpu_index_tuple_cost", "cpu_operator_cost",
	"parallel_setup_cost", "parallel_tuple_cost", "max_parallel_workers_per_gather",
	"effective_io_concurrency", "plan_cache_mode", "from_collapse_limit",
	"join_collapse_limit", "geqo", "cursor_tuple_fraction",
}

// harmlessPattern matches the other harmless settings by name: the
// planner's enable_* switches, log_* and the *_timeout limits (custom
// settings, whose names have a dot, excepted), as harmlessSetting does.
const harmlessPattern = `^(enable|log)_[^.]*$|^[^.]*_timeout$`

// harmlessSetting reports whether the setting name (in lower case) is
// harmless: in harmlessSettings, or matched by harmlessPattern.
func harmlessSetting(name string) bool {
	if slices.Contains(harmlessSettings, name) {
		return true
	}
	plain := !strings.Contains(name, ".")
	return plain && (strings.HasPrefix(name, "enable_") || strings.HasPrefix(name, "log_") ||
		strings.HasSuffix(name, "_timeout"))
}

// probeQuery reads whether the server is a standby, both infinities as
// lib/pq decodes them, standard_conforming_strings and the settings.
var probeQuery = `select pg_catalog.pg_is_in_recovery(), '-infinity'::timestamptz, 'infinity'::timestamptz,
	pg_catalog.current_setting('standard_conforming_strings'), ` + settingsQuery

// probeAnswer is what the probe of a new connection found.
type probeAnswer struct {
	standby bool // it reached a standby
	// otherSettings: it started with other settings than the first
	// connection, whose settings are in the identity.
	otherSettings bool
}

// probe runs probeQuery on ic, a new connection; the first probe also
// settles the identity.
func (c *Connector) probe(ctx context.Context, ic driver.Conn) (probeAnswer, error) {
	if !c.probes {
		return probeAnswer{}, nil
	}
	q, ok := ic.(driver.QueryerContext)
	if !ok {
		return probeAnswer{}, fmt.Errorf("cachedpq: %T cannot run queries", ic)
	}
	vals, err := queryRow(ctx, q, probeQuery, 5)
	if err != nil {
		return probeAnswer{}, fmt.Errorf("cachedpq: probing a new connection: %w", err)
	}
	if scs, _ := vals[3].(string); scs != "on" {
		// Set for the role or the database (ALTER ... SET), which the DSN
		// does not show.
		return probeAnswer{}, fmt.Errorf("%w (the server says %q)", errSCSOff, vals[3])
	}
	settings := textOf(vals[4])
	c.settle(vals[1:3], settings)
	p := probeAnswer{otherSettings: settings != c.settings}
	p.standby, _ = vals[0].(bool)
	if p.otherSettings && c.warnedSettings.CompareAndSwap(false, true) {
		c.opts.Logger.Warn("cachedpq: a new connection started with other settings than the first " +
			"(ALTER ROLE or ALTER DATABASE ... SET?): reads on such connections skip the cache; " +
			"open a new Connector to cache under the new settings")
	}
	return p, nil
}

// queryRow runs query on q and returns its first row, which must have n
// columns.
func queryRow(ctx context.Context, q driver.QueryerContext, query string, n int) ([]driver.Value, error) {
	rows, err := q.QueryContext(ctx, query, nil)
	if err != nil {
		return nil, err
	}
	vals := make([]driver.Value, len(rows.Columns()))
	err = rows.Next(vals)
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	if err == nil && len(vals) != n {
		err = fmt.Errorf("%d columns, want %d", len(vals), n)
	}
	return vals, err
}

// settle adds to the identity how lib/pq decoded the infinities and the
// settings of the first connection, once per Connector. Until then no
// connection is handed out: every key is built with them.
func (c *Connector) settle(infinities []driver.Value, settings string) {
	if c.settled.Load() {
		return
	}
	c.settleMu.Lock()
	defer c.settleMu.Unlock()
	if c.settled.Load() {
		return
	}
	id := c.id
	if setting := infinitySetting(infinities); setting != "" {
		id = id.with("infinity", setting)
	}
	if settings != "" {
		id = id.with("settings", settings)
	}
	c.eng.id.Store(&id)
	c.settings = settings
	c.settled.Store(true)
}

// infinitySetting describes how lib/pq decoded the infinities in vals: ""
// for text (its default), else the two times pq.EnableInfinityTs was given.
func infinitySetting(vals []driver.Value) string {
	s := ""
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
		case time.Time:
			s += v.Format(time.RFC3339Nano) + " " + v.Location().String() + ";"
		default:
			s += fmt.Sprintf("%T;", v)
		}
	}
	return s
}

// settleIdentity probes a connection if none has been yet, for keys built
// without one (InvalidateQuery).
func (c *Connector) settleIdentity(ctx context.Context) error {
	if !c.probes || c.settled.Load() {
		return nil
	}
	conn, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	return conn.Close()
}
