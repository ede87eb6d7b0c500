package integration

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cachedpq/cachedpq"
)

// TestHiddenSessionChange: a DO block, a function or a view that calls
// set_config changes the session as SET does, so its connection must
// neither be served nor fill entries that other connections are served.
func TestHiddenSessionChange(t *testing.T) {
	for _, change := range []string{
		`do $$ begin perform set_config('TimeZone', 'Asia/Tokyo', false); end $$`,
		`select set_tz()`,
		`select * from tz_view`,
	} {
		t.Run(change[:9], func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				mustExec(t, env.raw, `create function set_tz() returns void language plpgsql volatile as
					$$ begin perform set_config('TimeZone', 'Asia/Tokyo', false); end $$;
					create view tz_view as select set_config('TimeZone', 'Asia/Tokyo', false) as tz`)
				q := `select '2024-01-01 00:00+00'::timestamptz::text where $1::int > 0`
				env.register(t, q, cachedpq.Policy{})
				want := env.same(t, q, 1)[0]
				ctx := context.Background()
				c := env.pinned(t)
				if _, err := c.ExecContext(ctx, change); err != nil {
					t.Fatal(err)
				}
				var got string
				if err := c.GetContext(ctx, &got, q, 1); err != nil || got != "2024-01-01 09:00:00+09" {
					t.Fatalf("after %s the connection read %q, %v", change, got, err)
				}
				if got := env.same(t, q, 1); got[0] != want {
					t.Fatalf("after %s another connection read %v, want %v", change, got, want)
				}
			})
		})
	}
}

// hiddenUpdate is, with standard_conforming_strings off, three statements,
// the UPDATE among them; read with it on (as the SQL analysis reads), one
// SELECT of an unterminated string.
const hiddenUpdate = `select '\'' ; update users set name = 'changed' where id = 1; select ''''`

// scsOffFn creates scs_off(), a volatile function that turns
// standard_conforming_strings off.
const scsOffFn = `create function scs_off() returns void language plpgsql volatile as
	$$ begin perform set_config('standard_conforming_strings', 'off', false); end $$`

// refusedSCS fails the test unless err refuses a connection whose
// standard_conforming_strings was turned off.
func refusedSCS(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, driver.ErrBadConn) && (err == nil || !strings.Contains(err.Error(), "standard_conforming_strings")) {
		t.Fatalf("the connection is still used: %v", err)
	}
}

// copyRows copies rows 1 to 3 with copySQL in a transaction begin opens, and
// commits, failing the test at the first error.
func copyRows(t *testing.T, begin func() (*sql.Tx, error), copySQL string) {
	t.Helper()
	tx, err := begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	st, err := tx.Prepare(copySQL)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := st.Exec(i); err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
	}
	if _, err := st.Exec(); err != nil {
		t.Fatalf("end of copy: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// TestSessionSCSOff: a session that turned standard_conforming_strings off
// made the analysis misread its next strings, so a write hidden in one
// went unseen and other connections were served the old row (found by
// review F). Its connection is now closed: every later use fails. (The
// rest of the string that turns it off is parsed before it runs, as the
// analysis reads it.)
func TestSessionSCSOff(t *testing.T) {
	for _, off := range []string{
		`set standard_conforming_strings = off`,
		`select set_config('standard_conforming_strings', 'off', false)`,
	} {
		t.Run(off[:4], func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				env.prime(t, userName, 1)
				c := env.pinned(t)
				execOn(t, c, off)
				_, err := c.ExecContext(context.Background(), hiddenUpdate)
				refusedSCS(t, err)
				env.same(t, userName, 1)
			})
		})
	}
}

// TestRoleSCSOffRefused: a role (or database) whose default turns
// standard_conforming_strings off, which the DSN does not show, is refused
// at connect, as such a DSN is (found by review F: its hidden writes went
// unseen).
func TestRoleSCSOffRefused(t *testing.T) {
	env := newEnv(t, "memory")
	role := fmt.Sprintf("cpq_scs_%d", os.Getpid())
	mustExec(t, env.raw, `create role `+role+` login`)
	t.Cleanup(func() { env.raw.Exec(`drop role ` + role) })
	mustExec(t, env.raw, `alter role `+role+` set standard_conforming_strings = off`)
	db, err := sql.Open(cachedpq.DriverName, fmt.Sprintf("host=127.0.0.1 port=5432 user=%s dbname=test sslmode=disable", role))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Ping(); err == nil || !strings.Contains(err.Error(), "standard_conforming_strings") {
		t.Fatalf("a connection with standard_conforming_strings off: %v", err)
	}
}

// TestSCSOffHidden: standard_conforming_strings turned off where the text
// does not show it (the setting's name as a parameter, a DO block, a
// function, pg_settings) left the connection in use, and a write hidden in
// a string went unseen (found by review G). The session is now asked after
// such statements, and the connection closed.
func TestSCSOffHidden(t *testing.T) {
	for name, off := range map[string][]any{
		"param":       {`select set_config($1, 'off', false)`, "standard_conforming_strings"},
		"do":          {`do $$ begin perform set_config('standard_conforming_strings', 'off', false); end $$`},
		"func":        {`select scs_off()`},
		"pg_settings": {`update pg_settings set setting = 'off' where name = 'standard_conforming_strings'`},
	} {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t, "memory")
			setupUsers(t, env)
			mustExec(t, env.raw, scsOffFn)
			c := env.pinned(t)
			ctx := context.Background()
			if _, err := c.ExecContext(ctx, off[0].(string), off[1:]...); err != nil {
				t.Fatalf("%s: %v", off[0], err)
			}
			env.prime(t, userName, 1) // after it: a DO or a function voids the namespace
			_, err := c.ExecContext(ctx, hiddenUpdate)
			refusedSCS(t, err)
			env.same(t, userName, 1)
		})
	}
}

const volatileFn = `create function vf(int) returns bool language sql volatile as 'select true'`

// TestCopyWithVolatileWhere: a COPY FROM STDIN whose WHERE calls a
// volatile function copies every row, as on lib/pq: asking the session
// about standard_conforming_strings mid-COPY would break it.
func TestCopyWithVolatileWhere(t *testing.T) {
	env := newEnv(t, "memory")
	mustExec(t, env.raw, `create table ct (a int)`)
	mustExec(t, env.raw, volatileFn)
	mustExec(t, env.db, `select vf(1)`) // the catalog is loaded
	copyRows(t, env.db.Begin, `copy ct (a) from stdin where vf(a)`)
}

// TestAbortedStringNoFalseSCS: a string that opens a transaction, calls a
// volatile function and then fails leaves the session in an aborted
// transaction, where the question about standard_conforming_strings
// failed, and the connection was closed with an error claiming the setting
// was turned off (found by review H). It is now asked again before the
// next statement, and ROLLBACK works, as on lib/pq.
func TestAbortedStringNoFalseSCS(t *testing.T) {
	env := newEnv(t, "memory")
	mustExec(t, env.raw, volatileFn)
	c := env.pinned(t)
	ctx := context.Background()
	mustExec(t, env.db, `select vf(1)`) // the catalog is loaded
	if _, err := c.ExecContext(ctx, `begin; select vf(1); select 1/0`); err == nil {
		t.Fatal("no error")
	}
	if _, err := c.ExecContext(ctx, `rollback`); err != nil {
		t.Fatalf("rollback after a failed string: %v", err)
	}
}

// TestSCSOffNarrowedFunction: a volatile function whose writes
// Options.UnknownWrites names is still code the text does not show: the
// session is asked about standard_conforming_strings after it, as after
// any other (the question was skipped for narrowed functions).
func TestSCSOffNarrowedFunction(t *testing.T) {
	env := newEnv(t, "memory")
	setupUsers(t, env)
	mustExec(t, env.raw, scsOffFn)
	conn, err := cachedpq.NewConnector(baseDSN()+" search_path="+env.schema, cachedpq.Options{
		Registry:      env.reg,
		UnknownWrites: func(string) ([]string, bool) { return []string{"users"}, true },
	})
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.ExecContext(ctx, `select scs_off()`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, hiddenUpdate); err == nil || !strings.Contains(err.Error(), "standard_conforming_strings") {
		t.Fatalf("the connection is still used: %v", err)
	}
}

// TestCopyAfterAbort: a connection that could not be asked about
// standard_conforming_strings (an aborted string), rolled back, then used
// for a COPY asked in the midst of the COPY, at its first row, and was
// closed with a false error (found by review J): it now asks when the
// COPY is prepared.
func TestCopyAfterAbort(t *testing.T) {
	env := newEnv(t, "memory")
	mustExec(t, env.raw, `create table ct (a int)`)
	mustExec(t, env.raw, volatileFn)
	mustExec(t, env.db, `select vf(1)`) // the catalog is loaded
	c := env.pinned(t)
	ctx := context.Background()
	if _, err := c.ExecContext(ctx, `begin; select vf(1); select 1/0`); err == nil {
		t.Fatal("no error")
	}
	if _, err := c.ExecContext(ctx, `rollback`); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	copyRows(t, func() (*sql.Tx, error) { return c.BeginTx(ctx, nil) }, `copy ct (a) from stdin`)
}

// TestSCSOffAbortedColdCatalog: with the catalog not loaded (it loads on
// the aborted connection itself, and fails), the volatile function of an
// aborted string was never asked about, and the setting it turned off
// before a savepoint survived ROLLBACK TO (found by review J): a statement
// that calls functions the catalog cannot judge now counts as code.
func TestSCSOffAbortedColdCatalog(t *testing.T) {
	env := newEnv(t, "memory")
	setupUsers(t, env)
	mustExec(t, env.raw, scsOffFn)
	c := env.pinned(t)
	ctx := context.Background()
	if _, err := c.ExecContext(ctx, `begin; select scs_off(); savepoint s; select 1/0`); err == nil {
		t.Fatal("no error")
	}
	_, err := c.ExecContext(ctx, `rollback to savepoint s`)
	if err == nil {
		_, err = c.ExecContext(ctx, `commit`)
	}
	if err == nil {
		_, err = c.ExecContext(ctx, hiddenUpdate)
	}
	if err == nil || !strings.Contains(err.Error(), "standard_conforming_strings") {
		t.Fatalf("the connection is still used with standard_conforming_strings off: %v", err)
	}
}

// TestLostConnNoFalseSCS: a connection waiting to be asked whose backend
// is then terminated reported that standard_conforming_strings was turned
// off (found by review J); it is now a bad connection, as it is.
func TestLostConnNoFalseSCS(t *testing.T) {
	env := newEnv(t, "memory")
	mustExec(t, env.raw, volatileFn)
	mustExec(t, env.db, `select vf(1)`)
	c := env.pinned(t)
	ctx := context.Background()
	var pid int
	if err := c.QueryRowContext(ctx, `select pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, `begin; select vf(1); select 1/0`); err == nil {
		t.Fatal("no error")
	}
	mustExec(t, env.raw, `select pg_terminate_backend($1)`, pid)
	_, err := c.ExecContext(ctx, `rollback`)
	if err != nil && strings.Contains(err.Error(), "standard_conforming_strings") {
		t.Fatalf("a lost connection reported as: %v", err)
	}
}

// TestRoleSettingsChange: a role's own settings (ALTER ROLE ... SET: a
// search_path naming another schema, a custom setting that a row security
// policy reads) change while the pool holds connections. A connection opened after the
// change was served the rows cached under the old settings, which the DSN
// does not show; now each new connection reports the settings it starts
// with, one whose settings differ from the first connection's skips the
// cache, the connection opened before the change is still served, and a
// process started after the change caches under keys of its own. The
// role's name needs quoting: the first version of the probe refused every
// connection of such a role.
func TestRoleSettingsChange(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		name := env.schema + " Role"
		role := `"` + name + `"`
		mustExec(t, env.raw, `create role `+role+` login`)
		t.Cleanup(func() { env.raw.Exec(`drop owned by ` + role + `; drop role ` + role) })
		for _, s := range []string{"a", "b"} {
			schema := env.schema + "_" + s
			mustExec(t, env.raw, `create schema `+schema+`; create table `+schema+`.rs (tenant text, v text);
				insert into `+schema+`.rs values ('one', '`+s+`/one'), ('two', '`+s+`/two');
				alter table `+schema+`.rs enable row level security;
				create policy tenant on `+schema+`.rs using (tenant = current_setting('cpq.tenant'));
				grant usage on schema `+schema+` to `+role+`; grant select on `+schema+`.rs to `+role)
			t.Cleanup(func() { env.raw.Exec(`drop schema ` + schema + ` cascade`) })
		}
		alter := func(schema, tenant string) {
			mustExec(t, env.raw, `alter role `+role+` set search_path = `+schema)
			mustExec(t, env.raw, `alter role `+role+` set cpq.tenant = '`+tenant+`'`)
		}
		alter(env.schema+"_a", "one")
		dsn := baseDSN() + " user='" + name + "'"
		prefix := func(o *cachedpq.Options) { o.Prefix = env.prefix + "_role" }
		proc := newEnvDSN(t, env.rdb, env.schema, dsn, prefix)
		const q = `select v from rs`
		proc.register(t, q, cachedpq.Policy{})
		ctx := context.Background()
		read := func(c *sql.Conn) string {
			t.Helper()
			var v string
			if err := c.QueryRowContext(ctx, q).Scan(&v); err != nil {
				t.Fatal(err)
			}
			return v
		}
		before, err := proc.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer before.Close()
		read(before)
		proc.waitFills(t, 1)
		if got := read(before); got != "a/one" || proc.stats().Hits != 1 {
			t.Fatalf("before the change: %q, %+v", got, proc.stats().Counters)
		}

		// A setting that changes no rows leaves the keys: a new connection
		// is served.
		mustExec(t, env.raw, `alter role `+role+` set statement_timeout = '1min'`)
		mustExec(t, env.raw, `alter role `+role+` set application_name = 'renamed'`)
		harmless, err := proc.db.Conn(ctx) // held, so that the next is new too
		if err != nil {
			t.Fatal(err)
		}
		defer harmless.Close()
		if got := read(harmless); got != "a/one" || proc.stats().Hits != 2 {
			t.Fatalf("after a harmless change: %q, %+v", got, proc.stats().Counters)
		}

		alter(env.schema+"_b", "two")
		after, err := proc.db.Conn(ctx) // a new connection: before is in use
		if err != nil {
			t.Fatal(err)
		}
		defer after.Close()
		for range 2 {
			if got := read(after); got != "b/two" {
				t.Fatalf("a connection opened after the change read %q, the rows of the old settings", got)
			}
		}
		if got := read(before); got != "a/one" {
			t.Fatalf("the connection opened before the change read %q", got)
		}
		if s := proc.stats(); s.Bypass["server_settings"] != 2 || s.Hits != 3 {
			t.Errorf("want 2 reads skipping the cache for their settings and 3 hits: %+v", s.Counters)
		}

		// A process started after the change, sharing the cache.
		later := newEnvDSN(t, env.rdb, env.schema, dsn, prefix)
		later.register(t, q, cachedpq.Policy{})
		for i := range 2 {
			if got := later.same(t, q)[0]; got != "[b/two]" {
				t.Fatalf("read %d of a process started after the change: %q", i, got)
			}
			later.waitFills(t, 1)
		}
		if s := later.stats(); s.Misses != 1 || s.Hits != 1 {
			t.Errorf("a process started after the change: want a miss, then a hit: %+v", s.Counters)
		}
	})
}
