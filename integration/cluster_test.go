package integration

import (
	"testing"
	"time"

	"github.com/cachedpq/cachedpq"
	"github.com/cachedpq/cachedpq/internal/redistest"
)

// TestRedisCluster runs the engine against a three-master Redis Cluster the
// test starts on loopback ports: entries, stamps and indexes land on
// different nodes, and every lookup is one pipeline split per node.
func TestRedisCluster(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	env := newEnvWith(t, cluster.Client())
	mustExec(t, env.raw, usersDDL+`; create table orders (id int8 primary key, user_id int8 references users on delete cascade);
		insert into orders select g, g from generate_series(1, 20) g`)
	point := `select id, name from users where id = $1`
	join := `select u.name, count(o.id) from users u left join orders o on o.user_id = u.id group by u.name order by u.name limit 5`
	env.register(t, point, cachedpq.Policy{TTL: time.Minute})
	env.register(t, join, cachedpq.Policy{TTL: time.Minute})

	for id := 1; id <= 20; id++ {
		env.same(t, point, id)
	}
	env.same(t, join)
	env.waitFills(t, 21)
	for id := 1; id <= 20; id++ {
		env.same(t, point, id)
	}
	env.same(t, join)
	if s := env.stats(); s.Hits != 21 || s.CacheErrors != 0 {
		t.Fatalf("on the cluster: %+v", s.Counters)
	}
	// A write on one table invalidates entries across nodes, including the
	// join through a foreign-key cascade.
	mustExec(t, env.db, `delete from users where id = 3`)
	env.same(t, point, 3)
	env.same(t, join)
	mustExec(t, env.db, `update users set name = 'zz' where id < 10`)
	for id := 1; id <= 12; id++ {
		env.same(t, point, id)
	}
	if s := env.stats(); s.CacheErrors != 0 || s.Invalidations == 0 {
		t.Fatalf("cluster errors: %+v", s)
	}
}
