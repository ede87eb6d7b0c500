package integration

import (
	"context"
	"database/sql"
	"errors"
	"testing"
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
