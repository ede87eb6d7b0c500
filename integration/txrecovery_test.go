package integration

import (
	"context"
	"testing"

	"github.com/cachedpq/cachedpq"
)

// TestBeginAtomicInTextTransaction: the END of a BEGIN ATOMIC function body
// is no COMMIT, so the transaction opened by text stays open: its write is
// neither cached by its connection nor left uninvalidated at COMMIT.
func TestBeginAtomicInTextTransaction(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		ctx := context.Background()
		c := env.pinned(t)
		execOn(t, c,
			`begin`,
			`create function f() returns int language sql begin atomic select 1; end`,
			`update users set name = 'uncommitted' where id = 1`,
		)
		var name string
		if err := c.GetContext(ctx, &name, userName, 1); err != nil || name != "uncommitted" {
			t.Fatalf("in the transaction: %q %v", name, err)
		}
		if got := env.same(t, userName, 1); got[0] != "[user1]" {
			t.Fatalf("another connection read %v", got)
		}
		if _, err := c.ExecContext(ctx, `commit`); err != nil {
			t.Fatal(err)
		}
		env.sees(t, 1, "uncommitted", "after commit")
	})
}

// TestSavepointRecoveryKeepsWrites: an error inside a savepoint the
// transaction rolls back to does not end it; what it wrote before is
// invalidated at its COMMIT still.
func TestSavepointRecoveryKeepsWrites(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create table u (x int primary key); insert into u values (1)`)
		ctx := context.Background()
		steps := func(exec func(string) error, commit func() error) {
			if err := exec(`update users set name = 'recovered' where id = 1`); err != nil {
				t.Fatal(err)
			}
			if err := exec(`savepoint s; insert into u values (1)`); err == nil {
				t.Fatal("duplicate key accepted")
			}
			if err := exec(`rollback to savepoint s`); err != nil {
				t.Fatal(err)
			}
			env.prime(t, userName, 1) // another connection caches the committed row
			if err := commit(); err != nil {
				t.Fatal(err)
			}
			env.sees(t, 1, "recovered", "after commit")
			mustExec(t, env.db, `update users set name = 'user1' where id = 1`)
			env.same(t, userName, 1)
		}
		c := env.pinned(t)
		exec := func(q string) error { _, err := c.ExecContext(ctx, q); return err }
		if err := exec(`begin`); err != nil {
			t.Fatal(err)
		}
		steps(exec, func() error { return exec(`commit`) })

		tx, err := env.db.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		steps(func(q string) error { _, err := tx.Exec(q); return err }, tx.Commit)
	})
}

// TestWriteThroughOwnViewInTransaction: a write through a view created in
// the same transaction reaches the view's table, though the catalog read
// before the commit cannot show the view.
func TestWriteThroughOwnViewInTransaction(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table base (x int); insert into base values (1)`)
		q := `select count(*) from base`
		env.register(t, q, cachedpq.Policy{})
		env.prime(t, q)
		tx, err := env.db.Beginx()
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, `create view bv as select * from base`)
		mustExec(t, tx, `insert into bv values (2)`)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := env.same(t, q); got[0] != "[2]" {
			t.Fatalf("after commit: %v", got)
		}
	})
}

// TestOnCommitDropKeepsTheConnectionCacheable: a temporary table dropped
// at commit shadows nothing afterwards, so the connection keeps hitting.
func TestOnCommitDropKeepsTheConnectionCacheable(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		ctx := context.Background()
		c := env.pinned(t)
		tx, err := c.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, `create temp table staging (x int) on commit drop`)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		env.hitsOn(t, c, "the dropped staging table")
	})
}

// TestBeginTxEndsUnsure: a connection unsure whether a transaction is open
// (after a refused COMMIT) knows again once BeginTx succeeds, which lib/pq
// allows only outside one.
func TestBeginTxEndsUnsure(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create table d (x int unique deferrable initially deferred)`)
		env.prime(t, userName, 1)
		ctx := context.Background()
		c := env.pinned(t)
		execOn(t, c, `begin`, `insert into d values (1), (1)`)
		if _, err := c.ExecContext(ctx, `commit`); err == nil {
			t.Fatal("the deferred check passed")
		}
		tx, err := c.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		env.hitsOn(t, c, "BeginTx")
	})
}

// TestFailedStringStillChangesTheSession: a string that commits and then
// fails made its temporary table and its view last: the connection stops
// using the cache, and writes through the view reach its table.
func TestFailedStringStillChangesTheSession(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		ctx := context.Background()
		c := env.pinned(t)
		if _, err := c.ExecContext(ctx, `create temp table users (id int8, name text); insert into users values (1, 'temp');
			create view uv as select * from `+env.schema+`.users; commit; select 1/0`); err == nil {
			t.Fatal("division by zero succeeded")
		}
		tx, err := c.BeginTxx(ctx, nil) // the connection knows again where it stands
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		var name string
		if err := c.GetContext(ctx, &name, userName, 1); err != nil || name != "temp" {
			t.Fatalf("the connection with the temporary table read %q, %v", name, err)
		}
		env.same(t, userName, 1) // and did not fill the cache with it
		if _, err := c.ExecContext(ctx, `update uv set name = 'changed' where id = 1`); err != nil {
			t.Fatal(err)
		}
		env.sees(t, 1, "changed", "after a write through the string's view")
	})
}

// TestBypassedRegisteredReadStillWrites: a registered read that calls a
// volatile function goes around the cache, and what the function wrote is
// invalidated like any write.
func TestBypassedRegisteredReadStillWrites(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		mustExec(t, env.raw, `create function touch(i int8) returns text language sql volatile as
			$$ update users set name = 'touched' where id = i returning name $$`)
		env.register(t, `select touch($1)`, cachedpq.Policy{})
		env.prime(t, userName, 1)
		var s string
		if err := env.db.Get(&s, `select touch($1)`, 1); err != nil || s != "touched" {
			t.Fatalf("%q %v", s, err)
		}
		env.sees(t, 1, "touched", "after the function's write")
	})
}

// TestErrorInQueryRowsKeepsTheTransaction: an error met in the rows of a
// string run through Query is no success: its COMMIT did not run, and the
// transaction its BEGIN opened stays open (aborted) until ROLLBACK.
func TestErrorInQueryRowsKeepsTheTransaction(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		ctx := context.Background()
		c := env.pinned(t)
		rows, err := c.QueryContext(ctx, `select 1; begin; select 1/0; commit`)
		if err == nil {
			for rows.NextResultSet() {
				for rows.Next() {
				}
			}
			rows.Close()
		}
		hits := env.stats().Hits
		var name string
		c.GetContext(ctx, &name, userName, 1) // Postgres refuses: the transaction is aborted
		if env.stats().Hits != hits {
			t.Fatalf("a connection in an aborted transaction was served %q from the cache", name)
		}
		if _, err := c.ExecContext(ctx, `rollback`); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRefusedSavepointKeepsHitting: a SAVEPOINT refused outside a
// transaction leaves the connection as it was, cacheable.
func TestRefusedSavepointKeepsHitting(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		ctx := context.Background()
		c := env.pinned(t)
		if _, err := c.ExecContext(ctx, `savepoint s`); err == nil {
			t.Fatal("a savepoint outside a transaction was accepted")
		}
		env.hitsOn(t, c, "the refused savepoint")
	})
}

// TestRefusedRollbackToKeepsTheTransaction: a refused ROLLBACK WORK TO
// SAVEPOINT (no such savepoint) leaves the transaction open: its writes are
// still invalidated at its COMMIT, and its reads never touch the cache.
func TestRefusedRollbackToKeepsTheTransaction(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		ctx := context.Background()
		c := env.pinned(t)
		execOn(t, c, `begin`, `update users set name = 'in tx' where id = 1`, `savepoint s`)
		if _, err := c.ExecContext(ctx, `rollback work to savepoint nosuch`); err == nil {
			t.Fatal("a rollback to a missing savepoint was accepted")
		}
		if _, err := c.ExecContext(ctx, `rollback to savepoint s`); err != nil {
			t.Fatal(err)
		}
		var name string
		if err := c.GetContext(ctx, &name, userName, 1); err != nil || name != "in tx" {
			t.Fatalf("in the transaction: %q %v", name, err)
		}
		if _, err := c.ExecContext(ctx, `commit`); err != nil {
			t.Fatal(err)
		}
		env.sees(t, 1, "in tx", "after commit")
	})
}

// TestSyntaxErrorRunsNothing: Postgres parses a whole string before it
// runs any of it, so a syntax error changes nothing: a misspelt COMMIT
// leaves its transaction open (aborted, until ROLLBACK TO brings it back),
// and a string that never ran leaves its connection cacheable.
func TestSyntaxErrorRunsNothing(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		ctx := context.Background()
		c := env.pinned(t)
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`begin; update users set name = $1 where id = 2; commit`, []any{"x"}},
			{`begin; update users set name = 'x' where id = 2; commit; selec 1`, nil},
		} {
			if _, err := c.ExecContext(ctx, q.sql, q.args...); err == nil {
				t.Fatalf("%s accepted", q.sql)
			}
			env.hitsOn(t, c, q.sql)
		}

		execOn(t, c, `begin`, `update users set name = 'uncommitted' where id = 1`, `savepoint s`)
		if _, err := c.ExecContext(ctx, `commit and chian`); err == nil {
			t.Fatal("a misspelt commit was accepted")
		}
		if _, err := c.ExecContext(ctx, `rollback to savepoint s`); err != nil {
			t.Fatal(err)
		}
		var name string
		if err := c.GetContext(ctx, &name, userName, 1); err != nil || name != "uncommitted" {
			t.Fatalf("in the transaction: %q %v", name, err)
		}
		if got := env.same(t, userName, 1); got[0] != "[user1]" {
			t.Fatalf("another connection read %v", got)
		}
		if _, err := c.ExecContext(ctx, `rollback`); err != nil {
			t.Fatal(err)
		}
	})
}
