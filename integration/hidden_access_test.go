package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cachedpq/cachedpq"
)

// Reads and writes the SQL analysis cannot see: sequences and large
// objects, which their writers change under no tag; built-ins that run SQL
// of their own; views whose functions write as they are read.

// uncached reads q twice, checks that cachedpq answers as Postgres does,
// and that neither read was a hit but both skipped the cache for reason.
func (env *cacheEnv) uncached(t *testing.T, reason, q string, args ...any) {
	t.Helper()
	before := env.stats()
	env.same(t, q, args...)
	env.same(t, q, args...)
	after := env.stats()
	if after.Hits != before.Hits || after.Bypass[reason] != before.Bypass[reason]+2 {
		t.Fatalf("%s: hits %d -> %d, bypass %q %d -> %d", q, before.Hits, after.Hits, reason,
			before.Bypass[reason], after.Bypass[reason])
	}
}

// refused checks that q cannot be registered, for a reason that names what.
func (env *cacheEnv) refused(t *testing.T, q, what string) {
	t.Helper()
	err := env.reg.Register(q, cachedpq.Policy{TTL: 60e9, AllowNondeterministic: true})
	if err == nil || !strings.Contains(err.Error(), what) {
		t.Fatalf("Register(%s) = %v, want a refusal naming %s", q, err, what)
	}
}

// TestSequenceReadNotCached guards against serving a sequence's old value:
// nextval, setval and serial inserts advance it under no tag, so a
// registered read of a sequence, directly, through a view or through a
// function, is never cached.
func TestSequenceReadNotCached(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create sequence s; select nextval('s');
			create view s_now as select last_value from s;
			create function s_last() returns int8 stable language sql as $$ select last_value from s $$`)
		reads := []string{`select last_value from s`, `select last_value from s_now`, `select s_last()`}
		for _, q := range reads {
			env.register(t, q, cachedpq.Policy{})
			env.uncached(t, "sequence", q)
		}
		mustExec(t, env.db, `select nextval('s')`)
		for _, q := range reads {
			env.same(t, q)
		}
		env.refused(t, `select pg_sequence_last_value('s')`, "pg_sequence_last_value")
	})
}

// TestLargeObjectReadNotCached guards against serving a large object's old
// bytes after lo_put: lo_get is refused at registration, and a read that
// reaches it through a function is not cached.
func TestLargeObjectReadNotCached(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		var oid int64
		if err := env.raw.QueryRow(`select lo_from_bytea(0, 'aaaa')`).Scan(&oid); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { env.raw.Exec(`select lo_unlink($1)`, oid) })
		env.refused(t, `select lo_get($1)`, "large objects")
		mustExec(t, env.raw, `create function lo_of(oid) returns bytea stable language sql as $$ select lo_get($1) $$`)
		q := `select lo_of($1)`
		env.register(t, q, cachedpq.Policy{})
		env.uncached(t, "volatile", q, oid)
		mustExec(t, env.db, `select lo_put($1, 0, 'bbbb')`, oid)
		env.same(t, q, oid)
	})
}

// TestVolatileBuiltinNotCached: a volatile built-in that no static list
// names (pg_catalog says so) keeps a registered read out of the cache.
func TestVolatileBuiltinNotCached(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		q := `select pg_relation_size('users') > 0`
		env.register(t, q, cachedpq.Policy{})
		env.uncached(t, "volatile", q)
	})
}

// TestXMLBuiltinsRefused guards against caching built-ins that read the
// tables an argument names, or run a query given as text: their tables are
// not the read's tags.
func TestXMLBuiltinsRefused(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		for _, q := range []string{
			`select md5(table_to_xml('users', true, false, '')::text)`,
			`select md5(query_to_xml('select name from users where id = 1', true, false, '')::text)`,
			`select schema_to_xml('public', true, false, '')`,
			`select database_to_xml(true, false, '')`,
			`select * from ts_stat('select to_tsvector(name) from users')`,
			`select md5(pg_catalog.query_to_xml($1, true, false, '')::text)`,
		} {
			env.refused(t, q, "runs SQL")
		}
	})
}

// TestQueryToXMLRunsWriter guards against query_to_xml running a volatile
// function that writes, unseen: a statement calling it is an unknown write.
func TestQueryToXMLRunsWriter(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create function bump() returns int volatile language sql as
				$$ update users set name = name || '+' where id = 1; select 1 $$`)
		env.prime(t, userName, 1)
		mustExec(t, env.db, `select query_to_xml('select bump()', true, false, '')`)
		env.same(t, userName, 1)
	})
}

// TestViewCallsWriter guards the audit-on-read pattern: a read of a view
// whose query calls a volatile function writes what the function writes,
// and a registered read of such a view is not cached.
func TestViewCallsWriter(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create table access_log (id int8);
			create function log_access(int8) returns bool volatile language sql as
				$$ insert into access_log values ($1); select true $$;
			create view audited_users as select id, name from users where log_access(id);
			create view audited_names as select name from audited_users`)
		q, q2 := `select count(*) from access_log`, `select count(*) + 0 from access_log`
		env.register(t, q, cachedpq.Policy{})
		env.register(t, q2, cachedpq.Policy{})
		env.prime(t, q)
		env.same(t, `select name from audited_users where id = 1`)
		env.same(t, q)
		env.prime(t, q2)
		env.same(t, `select count(*) from audited_names`) // through a view over it
		env.same(t, q2)
		v := `select name from audited_users where id = $1`
		env.register(t, v, cachedpq.Policy{})
		env.uncached(t, "volatile", v, 1)
		env.same(t, q)
	})
}

// TestRefreshCallsWriter guards against REFRESH MATERIALIZED VIEW running
// a writer that its view's query calls, unseen.
func TestRefreshCallsWriter(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table log (n int); insert into log values (0);
			create function bump() returns int volatile language sql as
				$$ update log set n = n + 1; select 1 $$;
			create materialized view mv as select bump() as b`)
		q := `select n from log`
		env.register(t, q, cachedpq.Policy{})
		env.prime(t, q)
		mustExec(t, env.db, `refresh materialized view mv`)
		env.same(t, q)
	})
}

// TestPolicyReadsAreTags guards a row level security policy that reads
// another table: a read of users reads members too, for whom to show. A
// row added to members showed the user to a read through the driver only
// once its entry expired: members was not among its tags.
func TestPolicyReadsAreTags(t *testing.T) {
	forEachRoleEnv(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table members (user_id int8);
			alter table users enable row level security, force row level security;
			create policy p on users using (exists (select 1 from members m where m.user_id = users.id))`)
		env.prime(t, userName, 1)
		mustExec(t, env.db, `insert into members values (1)`)
		env.same(t, userName, 1)
	})
}

// TestPolicyFunctionReadsAreTags guards a policy that calls a function
// reading another table: a read of users reads what the function reads.
// A SQL function's tables are tags; a function whose reads its source
// does not show (EXECUTE), or a volatile one, keeps the read from the
// cache. Each read was stale until its entry expired before policies'
// calls were followed.
func TestPolicyFunctionReadsAreTags(t *testing.T) {
	for _, tt := range []struct {
		name, fn string
		cached   bool
	}{
		{"sql", `create function is_member(id int8) returns bool stable language sql as
			$$ select exists (select 1 from members m where m.user_id = id) $$`, true},
		{"execute", `create function is_member(id int8) returns bool stable language plpgsql as
			$$ declare found bool; begin
				execute 'select exists (select 1 from members m where m.user_id = $1)' into found using id;
				return found; end $$`, false},
		{"volatile", `create function is_member(id int8) returns bool language plpgsql as
			$$ begin return exists (select 1 from members m where m.user_id = id); end $$`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			forEachRoleEnv(t, func(t *testing.T, env *cacheEnv) {
				mustExec(t, env.raw, `create table members (user_id int8);`+tt.fn+`;
					alter table users enable row level security, force row level security;
					create policy p on users using (is_member(id))`)
				if tt.cached {
					env.prime(t, userName, 1)
				} else {
					// The function that EXECUTE makes opaque may also have
					// written, or changed the session (see
					// TestPolicyFunctionWritesInvalidate): the second read
					// may bypass for the session instead.
					env.same(t, userName, 1)
					env.same(t, userName, 1)
					if s := env.stats(); s.Fills != 0 || s.Hits != 0 || s.Bypass["volatile"] == 0 {
						t.Fatalf("a read through an opaque policy function was cached: %+v", s)
					}
				}
				mustExec(t, env.db, `insert into members values (1)`)
				env.same(t, userName, 1)
			})
		})
	}
}

// TestPolicyFunctionWritesInvalidate guards a policy that calls a function
// that writes (an audit of who saw what): a read of users, and a write to
// it, run the function, and what it writes is invalidated. The audit count
// was served stale after either before policies' calls were followed for
// writes.
func TestPolicyFunctionWritesInvalidate(t *testing.T) {
	for _, stmt := range []string{userName, `update users set name = 'seen' where id = $1`} {
		t.Run(strings.Fields(stmt)[0], func(t *testing.T) {
			forEachRoleEnv(t, func(t *testing.T, env *cacheEnv) {
				mustExec(t, env.raw, `create table audit (user_id int8);
					create function audited(id int8) returns bool language plpgsql as
						$$ begin insert into audit values (id); return true; end $$;
					alter table users enable row level security, force row level security;
					create policy p on users using (audited(id))`)
				const audit = `select count(*) from audit`
				env.register(t, audit, cachedpq.Policy{})
				env.prime(t, audit)
				before := env.same(t, audit)
				if _, err := env.db.Exec(stmt, 1); err != nil {
					t.Fatal(err)
				}
				if after := env.same(t, audit); fmt.Sprint(after) == fmt.Sprint(before) {
					t.Fatalf("%s wrote no audit row (%v): the test proves nothing", stmt, after)
				}
			})
		})
	}
}

// TestRegCastInFunctionNotCached guards a function that casts to an OID
// type: $1::regclass looks the name up in the catalog, which DDL changes
// under no tag of the read. A read calling it served the dropped table's
// OID after the table was created anew, until its entry expired.
func TestRegCastInFunctionNotCached(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table t2 (id int);
			create function rel_oid(name text) returns oid language sql stable as $$ select $1::regclass::oid $$`)
		const q = `select rel_oid($1)`
		env.register(t, q, cachedpq.Policy{})
		before := env.same(t, q, "t2")
		env.same(t, q, "t2")
		mustExec(t, env.db, `drop table t2; create table t2 (id int)`)
		if after := env.same(t, q, "t2"); fmt.Sprint(after) == fmt.Sprint(before) {
			t.Fatalf("t2 kept its OID (%v): the test proves nothing", after)
		}
		if s := env.stats(); s.Fills != 0 || s.Hits != 0 {
			t.Fatalf("a read calling a function that casts to regclass was cached: %+v", s.Counters)
		}
	})
}

// TestViewRegCastNotCached guards a view that casts to an OID type at run
// time (o::regclass, CAST(name AS regtype)): the cast reads the catalog
// by the number or name it converts, which DDL changes under no tag of
// the read. A read of the view was cached, and served the old table's
// name after the table was renamed and another took its place.
func TestViewRegCastNotCached(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table t2 (); create table names (o oid, name text);
			insert into names select 't2'::regclass, 'int8';
			create view rel_names as select o::regclass::text as rel, cast(name as regtype)::text as typ from names`)
		const q = `select rel, typ from rel_names`
		env.register(t, q, cachedpq.Policy{})
		before := env.same(t, q)
		env.same(t, q)
		mustExec(t, env.db, `alter table t2 rename to t3`)
		if after := env.same(t, q); fmt.Sprint(after) == fmt.Sprint(before) {
			t.Fatalf("the rename changed nothing the view returns (%v): the test proves nothing", after)
		}
		if s := env.stats(); s.Fills != 0 || s.Hits != 0 || s.Bypass["view"] == 0 {
			t.Fatalf("a read of a view that casts to regclass was cached: %+v", s.Counters)
		}
	})
}

// TestOIDColumnsNotCached guards a result with a column of an OID type
// (regclass, an array of regtype, pg_typeof's regtype): its values print
// the current names of what they number, which a rename changes under no
// tag of the read. Such a result was cached, and served the renamed
// table's old name. The reads answer as lib/pq does, from Postgres.
func TestOIDColumnsNotCached(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table t2 (); create table refs (id int, rc regclass, rts regtype[]);
			insert into refs values (1, 't2', '{int4,t2}')`)
		for _, q := range []string{`select rc from refs where id = $1`, `select id, rts from refs where id = $1`,
			`select pg_typeof(r) from refs r where id = $1`} {
			env.register(t, q, cachedpq.Policy{})
			env.same(t, q, 1)
			env.same(t, q, 1)
		}
		before := env.same(t, `select rc from refs where id = $1`, 1)
		mustExec(t, env.db, `alter table t2 rename to t3`)
		if after := env.same(t, `select rc from refs where id = $1`, 1); fmt.Sprint(after) == fmt.Sprint(before) {
			t.Fatalf("the rename changed nothing the read returns (%v): the test proves nothing", after)
		}
		env.same(t, `select id, rts from refs where id = $1`, 1)
		if s := env.stats(); s.Fills != 0 || s.Hits != 0 || s.Bypass["too_large"] == 0 {
			t.Fatalf("a result with an OID column was cached: %+v", s.Counters)
		}
	})
}
