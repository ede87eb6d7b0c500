package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cachedpq/cachedpq"
)

// Triggers and rules write tables the statement that fires them does not
// name: each test caches a read of such a table, writes the table the
// trigger or rule is on through the driver, and expects the read to
// answer as Postgres does.

// auditSetup adds an audit table, and a count of its rows that a trigger
// on audit itself keeps: a second step for a write to users to reach.
const auditSetup = `create table audit (user_id int8, name text);
	create table audit_count (n int8 not null);
	insert into audit_count values (0);
	create function audit_counted() returns trigger language plpgsql as $$
	begin
		update audit_count set n = n + 1;
		return null;
	end $$;
	create trigger audit_counted after insert on audit for each row execute function audit_counted()`

const (
	auditOf    = `select name from audit where user_id = $1 order by name`
	auditCount = `select n from audit_count`
)

// triggerCase caches the audit reads, updates user 1 through the driver
// and checks both reads.
func triggerCase(t *testing.T, setup string) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, auditSetup)
		mustExec(t, env.raw, setup)
		env.register(t, auditOf, cachedpq.Policy{})
		env.register(t, auditCount, cachedpq.Policy{})
		env.prime(t, auditOf, 1)
		env.prime(t, auditCount)
		mustExec(t, env.db, `update users set name = 'changed' where id = 1`)
		if got := env.same(t, auditOf, 1); len(got) == 0 {
			t.Fatal("the trigger wrote nothing: the test proves nothing")
		}
		env.same(t, auditCount)
	})
}

// TestTriggerWritesInvalidate: a PL/pgSQL trigger on users inserts into
// audit, whose own trigger updates audit_count.
func TestTriggerWritesInvalidate(t *testing.T) {
	triggerCase(t, usersAudit(`insert into audit values (new.id, new.name)`))
}

// TestRuleWritesInvalidate: a rule on users inserts into audit.
func TestRuleWritesInvalidate(t *testing.T) {
	triggerCase(t, `create rule users_audit as on update to users do also insert into audit values (new.id, new.name)`)
}

// TestOpaqueTriggerInvalidatesAll: a trigger whose function writes through
// dynamic SQL, where no table can be read off its text, voids everything.
func TestOpaqueTriggerInvalidatesAll(t *testing.T) {
	triggerCase(t, `create function users_audit() returns trigger language plpgsql as $$
		begin
			execute format('insert into %I values ($1, $2)', tg_argv[0]) using new.id, new.name;
			return new;
		end $$;
		create trigger users_audit after update on users for each row execute function users_audit('audit')`)
}

// TestRuleCallingFunctionInvalidates: a rule whose action calls a user
// function, which may write anything.
func TestRuleCallingFunctionInvalidates(t *testing.T) {
	triggerCase(t, `create function log_user(int8, text) returns void language sql as
			$$ insert into audit values ($1, $2) $$;
		create rule users_audit as on update to users do also select log_user(new.id, new.name)`)
}

// TestRowTriggerKeepsOtherEntries: a trigger that only changes the row it
// fires for (an updated_at column, in PL/pgSQL or with contrib's
// moddatetime) writes no other table: entries of other tables stay valid.
func TestRowTriggerKeepsOtherEntries(t *testing.T) {
	for name, setup := range map[string]string{
		"plpgsql": `create function touch() returns trigger language plpgsql as $$
			begin
				new.updated := clock_timestamp();
				return new;
			end $$;
			create trigger touch before update on users for each row execute function touch()`,
		"moddatetime": `create extension moddatetime schema SCHEMA;
			create trigger touch before update on users for each row execute function SCHEMA.moddatetime(updated)`,
	} {
		t.Run(name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, auditSetup)
				mustExec(t, env.raw, `alter table users add column updated timestamptz;`+strings.ReplaceAll(setup, "SCHEMA", env.schema))
				env.register(t, auditCount, cachedpq.Policy{})
				env.prime(t, auditCount)
				mustExec(t, env.db, `update users set name = 'changed' where id = 1`)
				hits := env.stats().Hits
				env.same(t, auditCount)
				if env.stats().Hits != hits+1 {
					t.Fatalf("an update of users voided an entry of audit_count: %+v", env.stats())
				}
			})
		})
	}
}

// TestOtherProcessDDLFollowed: a trigger another process creates (a
// migration) after the catalog was read is followed once the reading has
// served Options.CatalogRefresh; it was never seen before a restart.
func TestOtherProcessDDLFollowed(t *testing.T) {
	const refresh = 200 * time.Millisecond
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			schema := newSchema(t)
			env := newEnvDSN(t, redisFor(t, store), schema, baseDSN()+" search_path="+schema,
				func(o *cachedpq.Options) { o.CatalogRefresh = refresh })
			setupUsers(t, env)
			mustExec(t, env.raw, auditSetup)
			env.register(t, auditOf, cachedpq.Policy{})
			env.prime(t, auditOf, 1)
			mustExec(t, env.db, `update users set name = 'before' where id = 2`) // the catalog is read, without the trigger
			mustExec(t, env.raw, usersAudit(`insert into audit values (new.id, new.name)`))
			time.Sleep(2 * refresh)
			mustExec(t, env.db, `update users set name = 'changed' where id = 1`)
			if got := env.same(t, auditOf, 1); len(got) != 1 {
				t.Fatalf("audit of user 1: %v", got)
			}
		})
	}
}

// TestUnknownWritesKeepsReach: a write that an opaque trigger hands to
// Options.UnknownWrites still reaches what the catalog shows (here the
// partition's parent); only the tables the callback names came back.
func TestUnknownWritesKeepsReach(t *testing.T) {
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			schema := newSchema(t)
			env := newEnvDSN(t, redisFor(t, store), schema, baseDSN()+" search_path="+schema,
				func(o *cachedpq.Options) {
					o.UnknownWrites = func(string) ([]string, bool) { return []string{"audit"}, true }
				})
			mustExec(t, env.raw, `create table audit (id int8);
				create table events (id int8, at int) partition by range (at);
				create table events_1 partition of events for values from (0) to (10);
				insert into events values (1, 1);
				create function events_audit() returns trigger language plpgsql as $$
				begin
					execute 'insert into audit values ($1)' using new.id;
					return new;
				end $$;
				create trigger events_audit after update on events_1 for each row execute function events_audit()`)
			const q = `select id from events order by id`
			env.register(t, q, cachedpq.Policy{})
			env.prime(t, q)
			mustExec(t, env.db, `update events_1 set id = 2`)
			env.same(t, q)
		})
	}
}

// TestStableWrapperTriggerInvalidates: a trigger calls a function declared
// STABLE, in PL/pgSQL or SQL, that calls a volatile one that writes audit.
// PostgreSQL refuses an INSERT in a STABLE function, not that call.
func TestStableWrapperTriggerInvalidates(t *testing.T) {
	for lang, wrapper := range map[string]string{
		"plpgsql": `create function log_it(int8, text) returns void stable language plpgsql as $$
			begin perform really_log($1, $2); end $$`,
		"sql": `create function log_it(int8, text) returns void stable language sql as $$
			select really_log($1, $2) $$`,
	} {
		t.Run(lang, func(t *testing.T) {
			triggerCase(t, `create function really_log(int8, text) returns void language sql as $$
					insert into audit values ($1, $2) $$;
				`+wrapper+`;
				`+usersAudit(`perform log_it(new.id, new.name)`))
		})
	}
}

// TestTriggerWhenInvalidates: the WHEN condition of a trigger calls a
// volatile function that writes audit; the trigger's own function writes
// nothing.
func TestTriggerWhenInvalidates(t *testing.T) {
	triggerCase(t, `create function really_log(int8, text) returns bool language plpgsql as $$
			begin insert into audit values ($1, $2); return true; end $$;
		create function noop() returns trigger language plpgsql as $$ begin return new; end $$;
		create trigger users_audit before update on users for each row
			when (really_log(new.id, new.name)) execute function noop()`)
}

// TestEventTriggerWritesInvalidate: an event trigger logs DDL into a
// table; CREATE TABLE through the driver names no such table. (Event
// triggers are database-wide: this one fires on CREATE TABLE only, logs
// only tables created in the test's schema, so that other sessions' DDL,
// perhaps by roles that may not write the log, neither fails nor counts,
// and is dropped before its schema.)
func TestEventTriggerWritesInvalidate(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table ddl_log (tag text);
			create function `+env.schema+`.log_ddl() returns event_trigger language plpgsql as $$
			begin
				if exists (select 1 from pg_event_trigger_ddl_commands() where schema_name = '`+env.schema+`') then
					insert into `+env.schema+`.ddl_log values (tg_tag);
				end if;
			end $$;
			create event trigger `+env.schema+`_log on ddl_command_end when tag in ('CREATE TABLE')
				execute function `+env.schema+`.log_ddl()`)
		t.Cleanup(func() { mustExec(t, env.raw, `drop event trigger if exists `+env.schema+`_log`) })
		const q = `select tag from ddl_log order by tag`
		env.register(t, q, cachedpq.Policy{})
		env.prime(t, q)
		mustExec(t, env.db, `create table other (x int)`)
		if got := env.same(t, q); len(got) != 1 {
			t.Fatalf("the event trigger logged %v", got)
		}
	})
}

// logUser is a volatile helper whose source shows all it writes: audit.
const logUser = `create function log_user(id int8, name text) returns void language plpgsql as $$
	begin
		insert into audit values (id, name);
	end $$`

// TestTriggerCallingVolatileHelperInvalidates: a trigger whose function
// calls a volatile helper writes what the helper's source names.
func TestTriggerCallingVolatileHelperInvalidates(t *testing.T) {
	triggerCase(t, logUser+`;
		`+usersAudit(`perform log_user(new.id, new.name)`))
}

// TestVolatileCallNarrowed: a call of a volatile function whose source
// shows all it writes invalidates those tables only, and leaves its
// connection using the cache: it used to void the whole namespace and
// stop the connection from using the cache, as code it could not see.
func TestVolatileCallNarrowed(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, auditSetup)
		mustExec(t, env.raw, logUser)
		env.register(t, auditOf, cachedpq.Policy{})
		env.prime(t, auditOf, 7)
		env.prime(t, userName, 1)
		c := env.pinned(t)
		if _, err := c.ExecContext(context.Background(), `select log_user(7, 'logged')`); err != nil {
			t.Fatal(err)
		}
		if got := env.same(t, auditOf, 7); len(got) != 1 {
			t.Fatalf("audit of 7: %v", got)
		}
		env.hitsOn(t, c, "a call of log_user")
	})
}

// bump is a volatile function writing users, and quietBump a STABLE one
// calling it: it writes users all the same.
const bumpFuncs = `create function bump() returns int volatile language sql as
		$$ update users set name = name || '+' where id = 1; select 1 $$;
	create function quiet_bump() returns int stable language sql as $$ select bump() $$`

// TestVolatileCallingStableWriterInvalidates: a volatile function calling
// a STABLE function that calls one writing users writes users.
func TestVolatileCallingStableWriterInvalidates(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, bumpFuncs+`;
			create function outer_bump() returns int volatile language sql as $$ select quiet_bump() $$`)
		env.prime(t, userName, 1)
		mustExec(t, env.db, `select outer_bump()`)
		if got := env.same(t, userName, 1); got[0] != "[user1+]" {
			t.Fatalf("outer_bump wrote nothing: %v", got)
		}
	})
}

// TestOverloadStableWriterInvalidates: of two overloads of tag, one a
// volatile function writing audit, the other a STABLE one that calls a
// function writing users, a call may write users.
func TestOverloadStableWriterInvalidates(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, auditSetup)
		mustExec(t, env.raw, bumpFuncs+`;
			create function tag(id int8) returns int volatile language sql as $$ insert into audit values (id, 'x'); select 1 $$;
			create function tag(s text) returns int stable language sql as $$ select quiet_bump() $$`)
		env.prime(t, userName, 1)
		mustExec(t, env.db, `select tag('x'::text)`)
		if got := env.same(t, userName, 1); got[0] != "[user1+]" {
			t.Fatalf("tag wrote nothing: %v", got)
		}
	})
}

// TestVolatileCallWritingSettingsLeavesCache: a function that updates
// pg_settings, whose rule calls set_config, changes the session: its
// connection stops using the cache.
func TestVolatileCallWritingSettingsLeavesCache(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create function set_tenant(v text) returns void language plpgsql as $$
			begin
				update pg_settings set setting = v where name = 'application_name';
			end $$`)
		env.prime(t, userName, 1)
		c := env.pinned(t)
		execOn(t, c, `select set_tenant('tenant7')`)
		hits := env.stats().Hits
		var name string
		if err := c.GetContext(context.Background(), &name, userName, 1); err != nil {
			t.Fatal(err)
		}
		if env.stats().Hits != hits {
			t.Fatalf("a read after set_tenant used the cache: %+v", env.stats())
		}
	})
}

// TestVolatileSelectIntoTempShadows: a SQL function whose SELECT INTO
// creates a temporary users shadows the table on its connection, which
// must then read its own rows, not the cache's.
func TestVolatileSelectIntoTempShadows(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create table base as select 1::int8 as id, 'temp'::text as name;
			create function shadow_users() returns void language sql as $$ select * into temp users from base $$`)
		env.prime(t, userName, 1)
		c := env.pinned(t)
		execOn(t, c, `select shadow_users()`)
		var name string
		if err := c.GetContext(context.Background(), &name, userName, 1); err != nil || name != "temp" {
			t.Fatalf("read after shadow_users(): %q, %v; want the temporary row", name, err)
		}
	})
}

// TestDefaultAndCheckCallsInvalidate: a column default or a CHECK
// constraint of the written table, or of the domain a column is of,
// calls a function that writes: what it writes is written with the row.
// It went unseen (found by review D); the domains' too, until the catalog
// read them.
func TestDefaultAndCheckCallsInvalidate(t *testing.T) {
	for name, side := range map[string]string{
		"default":        `create table side (x int default bump())`,
		"check":          `create table side (x int check (bump() = 1))`,
		"domain-default": `create domain bumped as int default bump(); create table side (x bumped)`,
		"domain-check":   `create domain bumped as int check (bump() = 1); create table side (x bumped)`,
		"domain-over":    `create domain bumped as int check (bump() = 1); create domain outer_d as bumped; create table side (x outer_d default 1)`,
		"domain-array":   `create domain bumped as int check (bump() = 1); create table side (x bumped[] default array[1])`,
	} {
		t.Run(name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, `create function bump() returns int volatile language sql as
					$$ update users set name = name || '+' where id = 1; select 1 $$;`+side)
				env.prime(t, userName, 1)
				mustExec(t, env.db, `insert into side values (default)`)
				env.same(t, userName, 1)
			})
		})
	}
	// A default calling a volatile function whose source cannot be read
	// (C, as uuid-ossp's) keeps other tables' entries.
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create extension "uuid-ossp" schema `+env.schema+`;
			create table side (id uuid default `+env.schema+`.uuid_generate_v4())`)
		env.prime(t, userName, 1)
		mustExec(t, env.db, `insert into side default values`)
		hits := env.stats().Hits
		env.same(t, userName, 1)
		if env.stats().Hits != hits+1 {
			t.Fatalf("an insert with a uuid default voided users' entry: %+v", env.stats())
		}
	})
}

// usersAudit creates a trigger after each update of a users row whose
// function runs stmt.
func usersAudit(stmt string) string {
	return `create function users_audit() returns trigger language plpgsql as $$
		begin
			` + stmt + `;
			return new;
		end $$;
		create trigger users_audit after update on users for each row execute function users_audit()`
}
