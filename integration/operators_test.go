package integration

import (
	"fmt"
	"testing"

	"github.com/cachedpq/cachedpq"
)

// TestOperatorReadsInvalidate: a registered read that uses an operator a
// user function implements depends on what the function reads. Before the
// analysis noted operators and the catalog read their functions, the entry
// depended on users alone, and an order added through the driver left the
// cached answer stale until its TTL.
func TestOperatorReadsInvalidate(t *testing.T) {
	orderChangesRead(t, `create table orders (id int8 primary key, user_id int8 not null);
			insert into orders values (1, 1);
			create function orders_over(users, int) returns boolean language sql stable
				as $$ select count(*) > $2 from orders o where o.user_id = $1.id $$;
			create operator >>> (leftarg = users, rightarg = int, function = orders_over)`,
		`select u.id, u >>> 0 as ordered from users u where u.id = $1`, `insert into orders values (2, 2)`, 2)
}

// TestWritingOperatorRead: an operator whose function writes makes the
// read skip the cache, as a call of the function would, and what it writes
// is invalidated.
func TestWritingOperatorRead(t *testing.T) {
	const q = `select u.id from users u where u.id = $1 and u ==> 1`
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create table audit (user_id int8);
			create function visit_op(users, int) returns boolean language sql volatile
				as $$ insert into audit values ($1.id); select true $$;
			create operator ==> (leftarg = users, rightarg = int, function = visit_op)`)
		const audit = `select count(*) from audit`
		env.register(t, q, cachedpq.Policy{})
		env.register(t, audit, cachedpq.Policy{})
		env.prime(t, audit)
		before := env.stats()
		rowsOf(t, env.db, q, 1)
		rowsOf(t, env.db, q, 1)
		if s := env.stats(); s.Bypass["volatile"] == before.Bypass["volatile"] ||
			s.Hits != before.Hits || s.Fills != before.Fills {
			t.Fatalf("%s used the cache: %+v", q, s.Counters)
		}
		env.same(t, audit) // the operator's inserts through the driver invalidated it
	})
}

// TestHiddenCallReadsInvalidate: a registered read depends on what the
// functions an operator calls read when the operator is used in a function
// it calls, on what a user aggregate's functions read, and on what the
// function of a cast reads, in the read or in a function it calls. Each
// entry depended on users alone before, and an order added through the
// driver left it stale until its TTL.
func TestHiddenCallReadsInvalidate(t *testing.T) {
	for _, c := range []struct{ name, ddl, query string }{
		{"operator in a function", `create function orders_over(users, int) returns boolean language sql stable
				as $$ select count(*) > $2 from orders o where o.user_id = $1.id $$;
			create operator >>> (leftarg = users, rightarg = int, function = orders_over);
			create function has_orders(users) returns boolean language sql stable as $$ select $1 >>> 0 $$`,
			`select u.id, has_orders(u) from users u where u.id = $1`},
		{"aggregate", `create function add_orders(acc int8, uid int8) returns int8 language sql stable
				as $$ select acc + (select count(*) from orders o where o.user_id = uid) $$;
			create aggregate order_total(int8) (sfunc = add_orders, stype = int8, initcond = '0')`,
			`select order_total(u.id) from users u where u.id = $1`},
		{"cast", `create type tally as (n int8);
			create function tally_of(users) returns tally language sql stable
				as $$ select row(count(*))::tally from orders o where o.user_id = $1.id $$;
			create cast (users as tally) with function tally_of(users)`,
			`select (u::tally).n from users u where u.id = $1`},
		{"cast in a function", `create type tally as (n int8);
			create function tally_of(users) returns tally language sql stable
				as $$ select row(count(*))::tally from orders o where o.user_id = $1.id $$;
			create cast (users as tally) with function tally_of(users);
			create function orders_of(users) returns int8 language sql stable as $$ select ($1::tally).n $$`,
			`select orders_of(u) from users u where u.id = $1`},
	} {
		t.Run(c.name, func(t *testing.T) {
			orderChangesRead(t, "create table orders (id int8 primary key, user_id int8 not null);\n"+c.ddl,
				c.query, `insert into orders values (1, 2)`, 2)
		})
	}
}

// TestHiddenCallWritesInvalidate: what a statement writes through a user
// aggregate's functions, and what a function writes through an operator,
// a cast, an aggregate or attribute notation in its source, is
// invalidated when the statement runs through the driver. Each write
// through the driver used to leave the cached audit count stale, as the
// catalog saw no write: an aggregate is immutable whatever its functions
// are, and a function's source was read for calls by name only.
func TestHiddenCallWritesInvalidate(t *testing.T) {
	const visit = `create function visit(users, int) returns boolean language sql volatile
			as $$ insert into audit values ($1.id); select true $$;`
	for _, c := range []struct{ name, ddl, stmt string }{
		{"aggregate", `create function visit_sum(acc int8, uid int8) returns int8 language plpgsql volatile
				as $$ begin insert into audit values (uid); return acc + 1; end $$;
			create aggregate visits(int8) (sfunc = visit_sum, stype = int8, initcond = '0')`,
			`select visits(u.id) from users u where u.id = $1`},
		{"operator in a function", visit + `
			create operator ==> (leftarg = users, rightarg = int, function = visit);
			create function touch(u users) returns boolean language plpgsql volatile
				as $$ begin return u ==> 1; end $$`,
			`select touch(u) from users u where u.id = $1`},
		{"cast in a function", `create type visited as (ok boolean);
			create function visited_of(users) returns visited language sql volatile
				as $$ insert into audit values ($1.id); select row(true)::visited $$;
			create cast (users as visited) with function visited_of(users);
			create function touch(u users) returns boolean language plpgsql volatile
				as $$ begin return (u::visited).ok; end $$`,
			`select touch(u) from users u where u.id = $1`},
		{"aggregate in a function", `create function visit_sum(acc int8, uid int8) returns int8 language plpgsql volatile
				as $$ begin insert into audit values (uid); return acc + 1; end $$;
			create aggregate visits(int8) (sfunc = visit_sum, stype = int8, initcond = '0');
			create function touch(uid int8) returns int8 language sql volatile
				as $$ select visits(u.id) from users u where u.id = uid $$`,
			`select touch($1)`},
		{"attribute notation in a function", `create function marked(users) returns boolean language sql volatile
				as $$ insert into audit values ($1.id); select true $$;
			create function touch(u users) returns boolean language plpgsql volatile
				as $$ begin return (u).marked; end $$`,
			`select touch(u) from users u where u.id = $1`},
	} {
		t.Run(c.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, "create table audit (user_id int8);\n"+c.ddl)
				const audit = `select count(*) from audit`
				env.register(t, audit, cachedpq.Policy{})
				env.prime(t, audit)
				before := env.same(t, audit)
				rowsOf(t, env.db, c.stmt, 3)
				if after := env.same(t, audit); fmt.Sprint(after) == fmt.Sprint(before) {
					t.Fatalf("%s wrote no audit row (%v): the test proves nothing", c.stmt, after)
				}
			})
		})
	}
}
