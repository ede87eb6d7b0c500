package cachedpq

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// otherProcess opens a DB like c's, in its schema and under its prefix, as
// another process sharing the cache would, on rdb.
func otherProcess(t *testing.T, c *Connector, rdb redis.UniversalClient, query string) *sql.DB {
	t.Helper()
	schema := c.opts.Prefix // engineDB names both alike
	oc, err := NewConnector(pqDSN(t)+" search_path="+schema, Options{
		Redis: rdb, Prefix: schema, Registry: NewRegistry(), Timeout: c.opts.Timeout,
	})
	must(t, err)
	must(t, oc.opts.Registry.Register(query, Policy{TTL: time.Hour}))
	db := sql.OpenDB(oc)
	t.Cleanup(func() { db.Close() })
	return db
}

// TestLostLeaseIsGivenBack: a reader whose context ends after its lookup
// took the fill lease, but before the reply came, does not know it holds
// the lease. It gives it back all the same; left to expire, it made every
// other reader of the key, in any process, wait 3 s for a load that never
// came.
func TestLostLeaseIsGivenBack(t *testing.T) {
	const query = `select v from kv where k = $1`
	rdb, slow := slowRedis(t, 50*time.Millisecond)
	dbA, c, _ := engineDB(t, rdb)
	must(t, c.opts.Registry.Register(query, Policy{TTL: time.Hour}))
	dbB := otherProcess(t, c, testRedis(t), query)

	slow.on.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel) // the client disconnects
	if rows, err := dbA.QueryContext(ctx, query, 1); err == nil {
		rows.Close()
	}
	slow.on.Store(false)
	c.eng.bg.Wait()
	if leases := rdb.Keys(context.Background(), c.opts.Prefix+"*:lease").Val(); len(leases) != 0 {
		t.Errorf("the lease whose grant was lost is still held: %v", leases)
	}

	start := time.Now()
	var v string
	must(t, dbB.QueryRow(query, 1).Scan(&v))
	if d := time.Since(start); v != "v1" || d > leaseWait/3 {
		t.Errorf("the other process read %q in %v", v, d)
	}
}
