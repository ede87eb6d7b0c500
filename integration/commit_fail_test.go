package integration

import (
	"context"
	"testing"

	"github.com/cachedpq/cachedpq"
)

// Statements that commit a write and then fail: the error must not hide
// the write that committed. Each caches a read, runs the failing
// statement, and expects the read to match Postgres.

// TestCommitThenFail guards a DO block or procedure that commits part of
// its work (a batch committing in chunks) and then raises an error: what
// it committed is invalidated all the same.
func TestCommitThenFail(t *testing.T) {
	for _, w := range []string{
		`do $$ begin update users set name = 'changed' where id = 1; commit; perform 1/0; end $$`,
		`call p()`,
	} {
		t.Run(w, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, `create procedure p() language plpgsql as $$
					begin update users set name = 'changed' where id = 1; commit; perform 1/0; end $$`)
				env.prime(t, userName, 1)
				if _, err := env.db.Exec(w); err == nil {
					t.Fatal("the statement did not fail")
				}
				env.sees(t, 1, "changed", w)
			})
		})
	}
}

// TestCommitThenLateSyntaxError guards a string that commits, then fails
// with a syntax error (42601) that Postgres raises only as it runs a later
// statement, after the whole string parsed: the COMMIT took effect.
func TestCommitThenLateSyntaxError(t *testing.T) {
	for _, w := range []string{
		`begin; update users set name = 'changed' where id = 1; commit; select to_tsquery('&&')`,
		`begin; update users set name = 'changed' where id = 1; commit; select 1 union select 2 into t9`,
	} {
		t.Run(w, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				env.prime(t, userName, 1)
				if _, err := env.db.Exec(w); err == nil {
					t.Fatal("the string did not fail")
				}
				env.sees(t, 1, "changed", w)
			})
		})
	}
}

// TestDetachConcurrentlyCancelled guards ALTER TABLE ... DETACH PARTITION
// ... CONCURRENTLY cancelled in its second transaction, waiting for a
// reader of the parent: its first transaction committed, and the parent no
// longer reads the partition's rows.
func TestDetachConcurrentlyCancelled(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table m (k int) partition by list (k);
			create table m1 partition of m for values in (1);
			create table m2 partition of m for values in (2);
			insert into m values (1), (2)`)
		q := `select count(*) from m`
		env.register(t, q, cachedpq.Policy{})
		env.prime(t, q)
		ctx := context.Background()
		blocker, err := env.raw.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer blocker.Rollback()
		if _, err := blocker.Exec(`select count(*) from m`); err != nil {
			t.Fatal(err)
		}
		c := env.pinned(t)
		execOn(t, c, `set statement_timeout = 1000`)
		if _, err := c.ExecContext(ctx, `alter table m detach partition m1 concurrently`); err == nil {
			t.Fatal("DETACH ... CONCURRENTLY was not cancelled")
		}
		env.same(t, q)
	})
}
