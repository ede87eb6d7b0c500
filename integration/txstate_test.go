package integration

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"

	"github.com/lib/pq"
)

// Session state and transaction control through the driver, where
// cachedpq must track what lib/pq's session does.

// otherUsers creates a second schema whose users row 1 is named 'other
// schema', and returns its name.
func otherUsers(t *testing.T, env *cacheEnv) string {
	t.Helper()
	other := newSchema(t)
	mustExec(t, env.raw, `create table `+other+`.users (id int8 primary key, name text);
		insert into `+other+`.users values (1, 'other schema')`)
	return other
}

// readOn reads user 1's name on c.
func readOn(t *testing.T, c interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) string {
	t.Helper()
	var name string
	if err := c.QueryRowContext(context.Background(), userName, 1).Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestPgSettingsUpdateChangesTheSession: an UPDATE of pg_settings is a
// SET (its rule calls set_config with is_local false), but it left the
// connection using the cache: it was served rows of the old search_path,
// and its misses filled entries with rows of the new one, which other
// sessions were then served.
func TestPgSettingsUpdateChangesTheSession(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		other := otherUsers(t, env)
		env.prime(t, userName, 2)
		c := env.pinned(t)
		execOn(t, c, `update pg_settings set setting = '`+other+`' where name = 'search_path'`)
		var name string
		err := c.QueryRowContext(context.Background(), userName, 2).Scan(&name)
		if !errors.Is(err, sql.ErrNoRows) {
			t.Errorf("read of user 2 after the update: %q, %v; the other schema has no such row", name, err)
		}
		if got := readOn(t, c); got != "other schema" {
			t.Errorf("read of user 1 after the update: %q, want the other schema's row", got)
		}
		if s := env.stats(); s.Bypass["session_state"] != 2 {
			t.Errorf("want both reads to skip the cache for the session's state: %+v", s.Counters)
		}
	})
}

// TestQueryRowsClosedLate: transaction control or a SET sent through
// Query has run when Query returns, and on a sql.Conn the next statements
// may run before its rows' Close (a deferred Close). Its effect was noted
// only at Close: the write in the transaction BEGIN opened was invalidated
// at once, another connection cached the committed row again, and the
// COMMIT invalidated nothing, so the old row was served until its TTL;
// reads after the SET were served rows of the old search_path.
func TestQueryRowsClosedLate(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		ctx := context.Background()
		t.Run("set", func(t *testing.T) {
			other := otherUsers(t, env)
			env.prime(t, userName, 1)
			c, err := env.db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Raw(func(any) error { return driver.ErrBadConn }) // its search_path changed: discard it
			rows, err := c.QueryContext(ctx, `set search_path = `+other)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			if got := readOn(t, c); got != "other schema" {
				t.Errorf("read after the SET, its rows still open: %q, want the other schema's row (lib/pq reads it)", got)
			}
		})
		t.Run("begin", func(t *testing.T) {
			c := env.pinned(t)
			rows, err := c.QueryContext(ctx, `begin`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			execOn(t, c, `update users set name = 'late' where id = 1`)
			env.prime(t, userName, 1) // another connection caches the committed row
			rows.Close()
			execOn(t, c, `commit`)
			env.sees(t, 1, "late", "after the commit")
		})
	})
}

// TestCommitOfFailedTransactionInvalidatesNothing: lib/pq answers the
// Commit of a transaction an error aborted with a ROLLBACK and
// pq.ErrInFailedTransaction; the driver took that for an unknown outcome
// and invalidated what the transaction had written and rolled back.
func TestCommitOfFailedTransactionInvalidatesNothing(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		tx, err := env.db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		mustExec(t, tx, `update users set name = 'rolled back' where id = 1`)
		if _, err := tx.Exec(`insert into users values (1, 'dup')`); err == nil {
			t.Fatal("duplicate key accepted")
		}
		if err := tx.Commit(); !errors.Is(err, pq.ErrInFailedTransaction) {
			t.Fatalf("commit of a failed transaction: %v", err)
		}
		hits := env.stats().Hits
		env.sees(t, 1, "user1", "after the failed commit")
		if s := env.stats(); s.Hits != hits+1 || s.Invalidations != 0 {
			t.Fatalf("the failed commit invalidated its rolled-back write: %+v", s.Counters)
		}
	})
}
