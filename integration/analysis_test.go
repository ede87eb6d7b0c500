package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cachedpq/cachedpq"
)

// Statements whose written tables the SQL analysis used to miss: each
// test caches a row, runs the write through the driver, and expects the
// cached read to match Postgres.

// writeThrough caches userName(1), runs write through the cached DB and
// checks that the read sees the change.
func writeThrough(t *testing.T, write string) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		mustExec(t, env.db, write)
		env.same(t, userName, 1)
	})
}

// TestNestedWithDMLInvalidates: a WITH inside a CTE body hid the DML
// after it.
func TestNestedWithDMLInvalidates(t *testing.T) {
	writeThrough(t, `with d as (with b as (select 1) update users set name = 'changed' where id = 1 returning *)
		select count(*) from d`)
}

// TestOnlyParenthesizedInvalidates: ONLY ( name ) hid the target of
// UPDATE, DELETE and TRUNCATE.
func TestOnlyParenthesizedInvalidates(t *testing.T) {
	for _, write := range []string{
		`update only (users) set name = 'changed' where id = 1`,
		`delete from only (users) where id = 1`,
		`truncate only (users)`,
	} {
		t.Run(write, func(t *testing.T) { writeThrough(t, write) })
	}
}

// TestCopyDMLInvalidates: COPY (DML RETURNING ...) TO runs the DML; it
// was taken for a read.
func TestCopyDMLInvalidates(t *testing.T) {
	writeThrough(t, `copy (update users set name = 'changed' where id = 1 returning *) to '/dev/null'`)
}

// TestUescapeNameInvalidates: a U&"" name with a UESCAPE clause was
// tagged with its raw text.
func TestUescapeNameInvalidates(t *testing.T) {
	writeThrough(t, `update U&"!0075sers" UESCAPE '!' set name = 'changed' where id = 1`)
}

// TestQualifiedVolatileCallInvalidates: a volatile function called through
// a schema-qualified name was recorded as its raw text, quotes and spaces
// included, so the catalog did not know it and its writes went unseen.
func TestQualifiedVolatileCallInvalidates(t *testing.T) {
	for _, call := range []string{`select "%s"."bump"()`, `select %s . bump()`} {
		t.Run(call, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, `create function bump() returns int volatile language sql as
					$$ update users set name = name || '+' where id = 1; select 1 $$`)
				env.prime(t, userName, 1)
				env.same(t, fmt.Sprintf(call, env.schema))
				env.same(t, userName, 1)
			})
		})
	}
}

// TestLongNameInvalidates: the server cuts names to 63 bytes, so a write
// to "t…x" must void a read of "t…x_more", which is the same table. The
// analysis kept the whole name and tagged them apart.
func TestLongNameInvalidates(t *testing.T) {
	name := "t" + strings.Repeat("x", 62)
	for _, tc := range []struct{ read, write string }{
		{name + "_read", name},
		{name, `"` + name + `_Write"`},
	} {
		t.Run(tc.write, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				mustExec(t, env.raw, `create table `+name+` (id int primary key, v int); insert into `+name+` values (1, 1)`)
				q := `select v from ` + tc.read + ` where id = $1`
				env.register(t, q, cachedpq.Policy{})
				env.prime(t, q, 1)
				mustExec(t, env.db, `update `+tc.write+` set v = v + 1 where id = 1`)
				env.same(t, q, 1)
			})
		})
	}
}

// TestStableWrapperCallInvalidates: a statement calls a STABLE function
// that calls a volatile one which writes; only declared volatility was
// checked, so the write went unseen.
func TestStableWrapperCallInvalidates(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create function bump() returns int volatile language sql as
				$$ update users set name = name || '+' where id = 1; select 1 $$;
			create function quiet_bump() returns int stable language sql as $$ select bump() $$`)
		env.prime(t, userName, 1)
		env.same(t, `select quiet_bump()`)
		env.same(t, userName, 1)
	})
}
