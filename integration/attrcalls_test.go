package integration

import (
	"fmt"
	"testing"

	"github.com/cachedpq/cachedpq"
)

// orderCountDDL adds orders and order_count, a function of a users row
// that attribute notation calls: u.order_count is order_count(u).
const orderCountDDL = `create table orders (id int8 primary key, user_id int8 not null);
	insert into orders values (1, 1), (2, 1), (3, 2);
	create function order_count(users) returns bigint language sql stable
		as $$ select count(*) from orders o where o.user_id = $1.id $$`

// TestAttrCallReadsInvalidate: a registered read that calls a function in
// attribute notation (PostgREST's computed columns) depends on what the
// function reads. Each case failed before the analysis and the catalog saw
// such calls: the entry depended on users alone, and an order added
// through the driver left the cached count stale until its TTL.
func TestAttrCallReadsInvalidate(t *testing.T) {
	for _, q := range []string{
		`select u.id, u.name, u.order_count from users u where u.id = $1`,
		`select (u).order_count from users u where u.id = $1`,
	} {
		t.Run(q, func(t *testing.T) { orderChangesRead(t, orderCountDDL, q, `insert into orders values (4, 1)`, 1) })
	}
}

// orderChangesRead registers query, over users and what ddl creates
// (orders among it), caches its read of arg, then runs insert through the
// driver: the read must return what Postgres does, and must have changed.
func orderChangesRead(t *testing.T, ddl, query, insert string, arg int) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, ddl)
		env.register(t, query, cachedpq.Policy{})
		env.prime(t, query, arg)
		before := env.same(t, query, arg)
		mustExec(t, env.db, insert)
		if after := env.same(t, query, arg); fmt.Sprint(after) == fmt.Sprint(before) {
			t.Fatalf("the insert changed nothing the read returns (%v): the test proves nothing", after)
		}
	})
}

// TestOpaqueAttrCallRead: a function called in attribute notation whose
// source cannot show what it reads (dynamic SQL), or that writes, makes
// the read skip the cache as a call of it would, and what the writing one
// writes is invalidated. Both reads were cached before the analysis and
// the catalog saw such calls, and the audit count stayed stale.
func TestOpaqueAttrCallRead(t *testing.T) {
	for _, c := range []struct{ name, ddl, query string }{
		{"dynamic", `create function dyn_name(users) returns text language plpgsql stable as $$
			declare r text;
			begin
				execute 'select name from users where id = $1' into r using $1.id;
				return r;
			end $$`,
			`select u.id, u.dyn_name from users u where u.id = $1`},
		{"writes", `create function visit(users) returns bigint language sql volatile as $$
				insert into audit values ($1.id);
				select count(*) from audit where user_id = $1.id $$`,
			`select (u).visit from users u where u.id = $1`},
	} {
		t.Run(c.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, `create table audit (user_id int8)`)
				mustExec(t, env.raw, c.ddl)
				const audit = `select count(*) from audit`
				env.register(t, c.query, cachedpq.Policy{})
				env.register(t, audit, cachedpq.Policy{})
				env.prime(t, audit)
				before := env.stats()
				rowsOf(t, env.db, c.query, 1) // visit writes: no answer to compare
				rowsOf(t, env.db, c.query, 1)
				// The first read marks its connection as a call of a
				// volatile function does: the second bypasses for that.
				if s := env.stats(); s.Bypass["volatile"] == before.Bypass["volatile"] ||
					s.Hits != before.Hits || s.Fills != before.Fills {
					t.Fatalf("%s used the cache: %+v", c.query, s.Counters)
				}
				env.same(t, audit) // visit's inserts through the driver invalidated it
			})
		})
	}
}
