package integration

import (
	"context"
	"testing"
	"time"

	"github.com/cachedpq/cachedpq"
)

// TestViewBuiltinsNotCached guards reads of views whose definitions call
// built-ins a registered query may not call: pg_depend records no row for
// a built-in, so without reading the views' definitions such a read was
// cached. A view over now() went on serving rows whose time had passed, a
// view over pg_relation_size the size at its fill, and one calling
// set_config was read without the session change. A plain view is cached,
// and AllowNondeterministic lets now() through a view as it lets it
// through a query.
func TestViewBuiltinsNotCached(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, usersDDL+`;
			create view recent as select id, name from users where seen > now() - interval '100 years';
			create view lucky as select id, name from users where random() < 2;
			create view sized as select id, name, pg_relation_size('users') > -1 as sized from users;
			create view zoned as select id, name, set_config('TimeZone', 'UTC', false) as tz from users;
			create view recent2 as select * from recent;
			create view stamped as select id, name from users where seen < current_timestamp;
			create view plain as select id, name from users`)
		for _, v := range []string{"recent", "lucky", "sized", "recent2", "stamped"} {
			q := `select name from ` + v + ` where id = $1`
			env.register(t, q, cachedpq.Policy{})
			env.uncached(t, "view", q, 1)
		}
		plain := `select name from plain where id = $1`
		env.register(t, plain, cachedpq.Policy{})
		env.prime(t, plain, 1)
		q := `select name from recent where id = $1 and $1 > 0`
		env.register(t, q, cachedpq.Policy{TTL: time.Minute, AllowNondeterministic: true})
		env.prime(t, q, 1)
		// Read once, zoned changes the session: the connection's next reads
		// skip the cache for that (session_state), so it comes last.
		q = `select name from zoned where id = $1`
		env.register(t, q, cachedpq.Policy{})
		before := env.stats()
		env.same(t, q, 1)
		env.same(t, q, 1)
		if s := env.stats(); s.Hits != before.Hits || s.Fills != before.Fills || s.Bypass["view"] == before.Bypass["view"] {
			t.Fatalf("%s: hits %d -> %d, fills %d -> %d, bypass %v", q, before.Hits, s.Hits, before.Fills, s.Fills, s.Bypass)
		}
	})
}

// TestCatalogReadsNoViewLocks: reading the views' built-ins takes no lock,
// so a reload of the catalog does not wait behind DDL on a table that a
// view reads (pg_get_viewdef would: it takes a share lock on each).
func TestCatalogReadsNoViewLocks(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, usersDDL+`;
			create table items (id int8, x int); insert into items values (1, 1);
			create view stamped_at as select id, name, now() as at from users`)
		q := `select count(*) from items`
		env.register(t, q, cachedpq.Policy{})
		env.prime(t, q)
		lock, err := env.raw.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Rollback()
		if _, err := lock.Exec(`lock table users in access exclusive mode`); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// DDL reads the catalog before it runs, and again at the next
		// statement.
		if _, err := env.db.ExecContext(ctx, `create index on items (x)`); err != nil {
			t.Fatalf("DDL on items while users is locked: %v (did the catalog wait for the lock?)", err)
		}
		var n int
		if err := env.db.QueryRowContext(ctx, q).Scan(&n); err != nil || n != 1 {
			t.Fatalf("a read while users is locked: %d, %v (did the catalog wait for the lock?)", n, err)
		}
	})
}
