package integration

import (
	"testing"

	"github.com/cachedpq/cachedpq"
)

// Registered reads that call user functions read what the functions read,
// though their text names no table. Each case caches such a read, writes
// the table through the driver, and expects the read to answer as
// Postgres does; each failed before the catalog read what functions read:
// the entry depended on no table, and was served until its TTL.
func TestFunctionReadsInvalidate(t *testing.T) {
	for _, c := range []struct {
		name, ddl, query string
	}{
		{"sql", `create function user_name(int8) returns text language sql stable
			as $$ select name from users where id = $1 $$`,
			`select user_name($1)`},
		{"from", `create function users_named(text) returns setof users language sql stable
			as $$ select * from users where name = $1 $$`,
			`select count(*) from users_named('user' || $1::text)`},
		{"plpgsql", `create function user_score(int8) returns text language plpgsql stable as $$
			declare s text;
			begin
				select name into s from users where id = $1;
				return s;
			end $$`,
			`select user_score($1)`},
		{"atomic", `create function user_first(int8) returns text language sql stable
			return (select name from users where id = $1)`,
			`select user_first($1)`},
		{"nested", `create function inner_name(int8) returns text language sql stable
				as $$ select name from users where id = $1 $$;
			create function outer_name(int8) returns text language sql stable
				as $$ select upper(inner_name($1)) $$`,
			`select outer_name($1)`},
		{"view", `create function view_name(int8) returns text language sql stable
				as $$ select name from users where id = $1 $$;
			create view named as select g as id, view_name(g) as name from generate_series(1, 3) g`,
			`select name from named where id = $1`},
	} {
		t.Run(c.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, c.ddl)
				env.register(t, c.query, cachedpq.Policy{})
				env.prime(t, c.query, 1)
				before := env.same(t, c.query, 1)
				mustExec(t, env.db, `update users set name = 'changed' where id = 1`)
				if after := env.same(t, c.query, 1); after[0] == before[0] {
					t.Fatalf("the update changed nothing the read returns (%v): the test proves nothing", after)
				}
			})
		})
	}
}

// TestOpaqueFunctionRead: a function whose source cannot show what it
// reads (dynamic SQL) makes a read that calls it skip the cache, even when
// the policy names the tables it reads (it may write, too); one in C (an
// extension's, here the built-in int4abs under a user name) reads no
// table, and a read that calls it is cached.
func TestOpaqueFunctionRead(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create function dyn_name(int8) returns text language plpgsql stable as $$
			declare r text;
			begin
				execute 'select name from users where id = $1' into r using $1;
				return r;
			end $$;
			create function my_abs(int4) returns int4 language internal immutable strict as 'int4abs'`)
		const (
			opaque = `select dyn_name($1)`
			tagged = `select dyn_name($1) as name`
			c      = `select my_abs(-$1::int4)`
		)
		env.register(t, opaque, cachedpq.Policy{})
		env.register(t, tagged, cachedpq.Policy{Tags: []string{"users"}})
		env.register(t, c, cachedpq.Policy{})
		env.prime(t, c, 1)
		before := env.stats()
		for _, q := range []string{opaque, tagged} {
			env.same(t, q, 1)
		}
		// The first read skips the cache and marks its connection as a
		// call of a volatile function does (Options.UnknownWrites).
		if s := env.stats(); s.Bypass["volatile"] == 0 || s.Hits != before.Hits || s.Fills != before.Fills {
			t.Fatalf("a read through dynamic SQL used the cache: %+v", s.Counters)
		}
	})
}
