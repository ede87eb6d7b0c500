package integration

import (
	"testing"

	"github.com/cachedpq/cachedpq"
)

// TestPartitionsAndInheritance: a write to a partition or an inheriting
// table changes what its parents read, and a write to a parent changes its
// partitions' rows; a partition's siblings keep their entries.
func TestPartitionsAndInheritance(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table m (k int, v int) partition by list (k);
			create table m1 partition of m for values in (1);
			create table m2 partition of m for values in (2);
			insert into m values (1, 1), (2, 2);
			create table p (v int);
			create table c () inherits (p);
			insert into c values (1)`)
		parent, part, sibling, inherited := `select count(*), sum(v) from m`, `select v from m1`, `select v from m2`, `select count(*) from p`
		for _, q := range []string{parent, part, sibling, inherited} {
			env.register(t, q, cachedpq.Policy{})
		}

		env.prime(t, parent)
		env.prime(t, sibling)
		mustExec(t, env.db, `insert into m1 values (1, 10)`)
		if got := env.same(t, parent); got[0] != "[3 13]" {
			t.Fatalf("the parent after a write to a partition: %v", got)
		}
		hits := env.stats().Hits
		env.same(t, sibling)
		if env.stats().Hits != hits+1 {
			t.Fatal("a write to a partition invalidated its sibling")
		}

		env.prime(t, part)
		mustExec(t, env.db, `update m set v = 9 where k = 1`)
		env.same(t, part)
		env.prime(t, part)
		mustExec(t, env.db, `truncate m`)
		env.same(t, part)

		env.prime(t, inherited)
		mustExec(t, env.db, `delete from c`)
		if got := env.same(t, inherited); got[0] != "[0]" {
			t.Fatalf("the parent after a write to an inheriting table: %v", got)
		}
	})
}
