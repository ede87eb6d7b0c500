package integration

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/cachedpq/cachedpq"
)

// Transaction control sent as SQL text, and statements whose outcome the
// driver must work out from an error: each test caches a row, runs the
// case, writes the row, and expects the cached read to match Postgres.

// prime caches q(args) and checks that the next read hits. It first waits
// out the background purge of earlier writes, which would otherwise delete
// the new entry and hide a missed invalidation.
func (env *cacheEnv) prime(t *testing.T, q string, args ...any) {
	t.Helper()
	time.Sleep(50 * time.Millisecond)
	fills := env.stats().Fills
	env.same(t, q, args...)
	env.waitFills(t, fills+1)
	hits := env.stats().Hits
	env.same(t, q, args...)
	if env.stats().Hits != hits+1 {
		t.Fatalf("%s is not cached: %+v", q, env.stats())
	}
}

// pinned returns one connection of env.db, for statements that must share it.
func (env *cacheEnv) pinned(t *testing.T) *sqlx.Conn {
	t.Helper()
	c, err := env.db.Connx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// execOn runs stmts on c in turn, failing the test at the first error.
func execOn(t *testing.T, c *sqlx.Conn, stmts ...string) {
	t.Helper()
	for _, stmt := range stmts {
		if _, err := c.ExecContext(context.Background(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
}

// sees asserts the cached DB reads user id's name as Postgres does, and
// that it is name; after says when, for the failure.
func (env *cacheEnv) sees(t *testing.T, id int, name, after string) {
	t.Helper()
	if got := env.same(t, userName, id); got[0] != "["+name+"]" {
		t.Fatalf("%s: %v", after, got)
	}
}

// hitsOn reads user 1 on c and fails the test unless the cache served it.
func (env *cacheEnv) hitsOn(t *testing.T, c *sqlx.Conn, after string) {
	t.Helper()
	hits := env.stats().Hits
	var name string
	if err := c.GetContext(context.Background(), &name, userName, 1); err != nil || env.stats().Hits != hits+1 {
		t.Fatalf("after %s: %q %v, bypass %v", after, name, err, env.stats().Bypass)
	}
}

const userName = `select name from users where id = $1`

func setupUsers(t *testing.T, env *cacheEnv) {
	t.Helper()
	mustExec(t, env.raw, usersDDL)
	env.register(t, userName, cachedpq.Policy{})
}

// TestTransactionStringLeavesNoTransaction: a string that opens and
// commits a transaction leaves none open, so the connection's later
// autocommit writes invalidate at once (they used to wait for a COMMIT
// that never came).
func TestTransactionStringLeavesNoTransaction(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		ctx := context.Background()
		c := env.pinned(t)
		if _, err := c.ExecContext(ctx, `begin; update users set name = 'a' where id = 2; commit`); err != nil {
			t.Fatal(err)
		}
		env.same(t, userName, 2)
		env.prime(t, userName, 1)
		if _, err := c.ExecContext(ctx, `update users set name = 'changed' where id = 1`); err != nil {
			t.Fatal(err)
		}
		env.same(t, userName, 1)

		// A string that leaves a transaction open defers its writes'
		// invalidation to the COMMIT too.
		env.prime(t, userName, 3)
		if _, err := c.ExecContext(ctx, `update users set name = 'x' where id = 4; begin; update users set name = 'pending' where id = 3`); err != nil {
			t.Fatal(err)
		}
		env.prime(t, userName, 3) // re-read while the write is uncommitted
		if _, err := c.ExecContext(ctx, `commit`); err != nil {
			t.Fatal(err)
		}
		env.sees(t, 3, "pending", "after commit")
	})
}

// TestRefusedCommitEndsTheTransaction: Postgres rolls back a transaction
// whose COMMIT fails (here a deferred unique check); the connection's
// later writes must invalidate, and what the transaction wrote must not.
func TestRefusedCommitEndsTheTransaction(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create table d (x int unique deferrable initially deferred)`)
		ctx := context.Background()
		c := env.pinned(t)
		execOn(t, c, `begin`, `update users set name = 'rolled back' where id = 1`, `insert into d values (1), (1)`)
		if _, err := c.ExecContext(ctx, `commit`); err == nil {
			t.Fatal("the deferred check passed")
		}
		env.prime(t, userName, 1)
		if _, err := c.ExecContext(ctx, `update users set name = 'changed' where id = 1`); err != nil {
			t.Fatal(err)
		}
		env.sees(t, 1, "changed", "after the write")
	})
}

// TestFailedStringInvalidatesWhatItCommitted: a string that commits a
// write and then fails still committed the write.
func TestFailedStringInvalidatesWhatItCommitted(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		if _, err := env.db.Exec(`update users set name = 'changed' where id = 1; commit; select 1/0`); err == nil {
			t.Fatal("division by zero succeeded")
		}
		env.sees(t, 1, "changed", "after the string")
	})
}

// TestTextCommitInsideBeginTx: a COMMIT sent as text inside a BeginTx
// transaction commits its writes, whatever database/sql does with the Tx
// afterwards, and writes after it are autocommitted.
func TestTextCommitInsideBeginTx(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		tx, err := env.db.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, `update users set name = 'changed' where id = 1`)
		mustExec(t, tx, `commit`)
		tx.Rollback() // lib/pq refuses: the transaction is gone
		env.sees(t, 1, "changed", "after the text COMMIT")

		env.prime(t, userName, 2)
		tx, err = env.db.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, `commit`)
		mustExec(t, tx, `update users set name = 'autocommitted' where id = 2`)
		env.sees(t, 2, "autocommitted", "a write after the text COMMIT")
		tx.Rollback()
	})
}

// TestDDLInTransactionReloadsCatalogAtCommit: a foreign key added in a
// transaction reaches the catalog only at its commit; a catalog another
// connection read meanwhile must not outlive the commit, or the cascade
// it adds is missed.
func TestDDLInTransactionReloadsCatalogAtCommit(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table parent (id int primary key);
			create table child (id int primary key, pid int);
			create table other (x int);
			insert into parent values (1), (2);
			insert into child values (1, 1), (2, 2)`)
		q := `select count(*) from child`
		env.register(t, q, cachedpq.Policy{})
		tx, err := env.db.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, `alter table child add foreign key (pid) references parent (id) on delete cascade`)
		mustExec(t, env.db, `insert into other values (1)`) // another conn reads the catalog
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		env.prime(t, q)
		mustExec(t, env.db, `delete from parent where id = 1`)
		if got := env.same(t, q); got[0] != "[1]" {
			t.Fatalf("after the cascading delete: %v", got)
		}
	})
}

// TestSetLocalThenSetDirtiesTheSession: a session-wide SET after a SET
// LOCAL in one string changes the session as any SET does.
func TestSetLocalThenSetDirtiesTheSession(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		other := newSchema(t)
		mustExec(t, env.raw, `create table `+other+`.users (id int8 primary key, name text);
			insert into `+other+`.users values (1, 'other schema')`)
		env.prime(t, userName, 1)
		ctx := context.Background()
		c := env.pinned(t)
		if _, err := c.ExecContext(ctx, `set local work_mem = '1MB'; set search_path = `+other); err != nil {
			t.Fatal(err)
		}
		var name string
		if err := c.GetContext(ctx, &name, userName, 1); err != nil || name != "other schema" {
			t.Fatalf("read after SET search_path = %q, %v; want the other schema's row", name, err)
		}
	})
}
