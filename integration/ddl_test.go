package integration

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"github.com/cachedpq/cachedpq"
)

// Schema changes that change what a cached read returns without naming
// the table it reads: each test caches a read, runs the DDL through the
// driver, and expects the read to answer as Postgres does.

// schemaChangeCases change a read's result through a type, a function or
// privileges, never through the table it names.
var schemaChangeCases = []struct {
	name, setup, read, ddl string
}{
	{name: "enum label", setup: `create type mood as enum ('happy', 'sad');
		create table feelings (id int8 primary key, m mood); insert into feelings values (1, 'sad')`,
		read: `select m::text from feelings where id = $1`,
		ddl:  `alter type mood rename value 'sad' to 'unhappy'`},
	{name: "function body", setup: `create function plus(int8) returns int8 language sql immutable as $$ select $1 + 1 $$`,
		read: `select plus(id) from users where id = $1`,
		ddl:  `create or replace function plus(int8) returns int8 language sql immutable as $$ select $1 + 2 $$`},
}

func TestSchemaChangeInvalidates(t *testing.T) {
	for _, tc := range schemaChangeCases {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, tc.setup)
				env.register(t, tc.read, cachedpq.Policy{})
				env.prime(t, tc.read, 1)
				mustExec(t, env.db, tc.ddl)
				env.same(t, tc.read, 1)
			})
		})
	}
}

// TestSchemaRenameInvalidates: with search_path a, b, renaming schema a
// makes a bare name resolve to b's table.
func TestSchemaRenameInvalidates(t *testing.T) {
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			a, b := newSchema(t), newSchema(t)
			env := newEnvDSN(t, redisFor(t, store), a, baseDSN()+" search_path="+a+","+b)
			setupUsers(t, env)
			mustExec(t, env.raw, `create table `+b+`.users (id int8 primary key, name text);
				insert into `+b+`.users values (1, 'schema b')`)
			env.prime(t, userName, 1)
			mustExec(t, env.db, `alter schema `+a+` rename to `+a+`_z`)
			t.Cleanup(func() { env.raw.Exec(`drop schema ` + a + `_z cascade`) })
			env.sees(t, 1, "schema b", "after the rename")
		})
	}
}

// TestRevokeInvalidates: a role that loses SELECT must get Postgres's
// "permission denied", not the rows it cached while it could read.
// The role owns the table and revokes its own privilege, so one
// connector (and the in-process store) sees both.
func TestRevokeInvalidates(t *testing.T) {
	forEachRoleEnv(t, func(t *testing.T, env *cacheEnv) {
		env.prime(t, userName, 1)
		mustExec(t, env.db, `revoke select on users from current_user`)
		for _, db := range []*sql.DB{env.db.DB, env.raw.DB} {
			var name string
			err := db.QueryRow(userName, 1).Scan(&name)
			if pqErr := (*pq.Error)(nil); !errors.As(err, &pqErr) || pqErr.Code != "42501" {
				t.Fatalf("read after REVOKE: %q, %v; want permission denied", name, err)
			}
		}
	})
}

// TestAlterPolicyInvalidates: a row level security policy decides which
// rows a role sees.
func TestAlterPolicyInvalidates(t *testing.T) {
	forEachRoleEnv(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `alter table users enable row level security, force row level security;
			create policy p on users using (true)`)
		env.prime(t, userName, 1)
		mustExec(t, env.db, `alter policy p on users using (id > 1)`)
		if got := env.same(t, userName, 1); len(got) != 0 {
			t.Fatalf("after ALTER POLICY: %v", got)
		}
	})
}

// forEachRoleEnv runs test on each store, in an env whose connections log
// in as a new role (trust auth) that owns the users table.
func forEachRoleEnv(t *testing.T, test func(t *testing.T, env *cacheEnv)) {
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			schema := newSchema(t)
			role := schema + "_role"
			admin, err := sql.Open("postgres", baseDSN())
			if err != nil {
				t.Fatal(err)
			}
			mustExec(t, admin, `create role `+role+` login; grant all on schema `+schema+` to `+role)
			t.Cleanup(func() {
				admin.Exec(`drop owned by ` + role + `; drop role ` + role)
				admin.Close()
			})
			env := newEnvDSN(t, redisFor(t, store), schema, baseDSN()+" search_path="+schema+" user="+role)
			setupUsers(t, env)
			test(t, env)
		})
	}
}

// redisFor is the Redis client for store, nil for the in-process one.
func redisFor(t *testing.T, store string) redis.UniversalClient {
	t.Helper()
	if store == "redis" {
		return newRedis(t)
	}
	return nil
}

// tempShadows create a temporary users table or view whose row 1 is named
// 'temp', shadowing the permanent table on their connection only.
var tempShadows = []string{
	`create temp table users (id int8, name text); insert into users values (1, 'temp')`,
	`create temporary table users as select 1::int8 as id, 'temp'::text as name`,
	`create local temp table users as select 1::int8 as id, 'temp'::text as name`,
	`create temp view users as select 1::int8 as id, 'temp'::text as name`,
	`create table pg_temp.users as select 1::int8 as id, 'temp'::text as name`,
	`select 1::int8 as id, 'temp'::text as name into temp users`,
	`(select * into temp users from base)`,
}

// TestTempTableShadowsOnItsConnection: after creating a temporary users,
// a connection reads its own rows, not those other connections cached,
// and leaves them none of its own.
func TestTempTableShadowsOnItsConnection(t *testing.T) {
	for _, create := range tempShadows {
		t.Run(create, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, `create table base as select 1::int8 as id, 'temp'::text as name`)
				ctx := context.Background()
				c := env.pinned(t)
				for _, q := range strings.Split(create, ";") { // the CREATE alone
					if _, err := c.ExecContext(ctx, q); err != nil {
						t.Fatalf("%s: %v", q, err)
					}
				}
				env.prime(t, userName, 1) // on other connections
				var name string
				if err := c.GetContext(ctx, &name, userName, 1); err != nil || name != "temp" {
					t.Fatalf("read after %s: %q, %v; want the temporary row", create, name, err)
				}
				env.same(t, userName, 1)
			})
		})
	}
}
