package integration

import (
	"testing"
	"time"

	"github.com/cachedpq/cachedpq"
)

// DDL run outside a transaction reaches the tables it changes through the
// catalog as it was before it ran (a partition it drops, an inheritance it
// ends) and as it is after (an inheritance it starts). Each test caches a
// read of a parent, runs the DDL through the driver, and expects the read
// to match Postgres.

// partitioned creates m, partitioned into m1 and m2, one row in each.
func partitioned(t *testing.T, env *cacheEnv) string {
	t.Helper()
	mustExec(t, env.raw, `create table m (k int, v int) partition by list (k);
		create table m1 partition of m for values in (1);
		create table m2 partition of m for values in (2);
		insert into m values (1, 1), (2, 2)`)
	q := `select count(*), sum(v) from m`
	env.register(t, q, cachedpq.Policy{})
	return q
}

// TestDropPartitionColdCatalog guards DROP TABLE of a partition when no
// reading of the catalog is at hand (other DDL dropped it): one read after
// the DROP no longer shows the partition's parent.
func TestDropPartitionColdCatalog(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		q := partitioned(t, env)
		env.prime(t, q)
		mustExec(t, env.db, `create index on m2 (v)`)
		mustExec(t, env.db, `drop table m1`)
		env.same(t, q)
	})
}

// TestDropPartitionStaleCatalog guards DROP TABLE of a partition once the
// reading of the catalog has served its CatalogRefresh (a minute by
// default), as routine maintenance that drops old partitions meets it.
func TestDropPartitionStaleCatalog(t *testing.T) {
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			schema := newSchema(t)
			env := newEnvDSN(t, redisFor(t, store), schema, baseDSN()+" search_path="+schema,
				func(o *cachedpq.Options) { o.CatalogRefresh = 100 * time.Millisecond })
			q := partitioned(t, env)
			env.prime(t, q)
			time.Sleep(300 * time.Millisecond)
			mustExec(t, env.db, `drop table m1`)
			env.same(t, q)
		})
	}
}

// TestNoInheritColdCatalog guards ALTER TABLE c NO INHERIT p when no
// reading of the catalog is at hand: p no longer reads c's rows.
func TestNoInheritColdCatalog(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table p (v int); insert into p values (1);
			create table c () inherits (p); insert into c values (10)`)
		q := `select count(*), sum(v) from p`
		env.register(t, q, cachedpq.Policy{})
		env.prime(t, q)
		mustExec(t, env.db, `comment on table p is 'x'`)
		mustExec(t, env.db, `alter table c no inherit p`)
		env.same(t, q)
	})
}

// TestAlterInherit guards ALTER TABLE c INHERIT p outside a transaction:
// p reads c's rows from then on, a link only the new catalog shows.
func TestAlterInherit(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table p (v int); insert into p values (1);
			create table c (v int); insert into c values (10)`)
		q := `select count(*), sum(v) from p`
		env.register(t, q, cachedpq.Policy{})
		env.prime(t, q)
		mustExec(t, env.db, `alter table c inherit p`)
		env.same(t, q)
	})
}

// TestAlterEvaluatesWriter guards ALTER TABLE that calls a function on
// every row, a column default or a USING expression, where the function
// writes another table.
func TestAlterEvaluatesWriter(t *testing.T) {
	for _, ddl := range []string{
		`alter table users add column c int default bump()`,
		`alter table users alter column score type int using bump()`,
	} {
		t.Run(ddl, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, `create table log (n int); insert into log values (0);
					create function bump() returns int volatile language sql as
						$$ update log set n = n + 1; select 1 $$`)
				q := `select n from log`
				env.register(t, q, cachedpq.Policy{})
				env.prime(t, q)
				mustExec(t, env.db, ddl)
				env.same(t, q)
			})
		})
	}
}
