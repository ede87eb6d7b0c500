package cachedpq_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"time"

	"github.com/cachedpq/cachedpq"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
)

// dsn is the local Postgres of the examples, with the cache settings that
// sql.Open accepts in the DSN itself.
const dsn = "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"

// Register the read queries to cache, once at start-up, before they run.
// Everything else passes through to Postgres untouched.
func ExampleRegister() {
	err := cachedpq.Register("SELECT id, name, email FROM example_users WHERE id = $1", cachedpq.Policy{
		Name: "user_by_id", // labels keys and metrics
		TTL:  5 * time.Minute,
	})
	fmt.Println(err)

	// Writes and statements that cannot be cached are refused, saying why.
	err = cachedpq.Register("UPDATE example_users SET name = $1", cachedpq.Policy{TTL: time.Minute})
	fmt.Println(err)
	// Output:
	// <nil>
	// cachedpq: register "UPDATE example_users SET name = $1": not a read-only query: update
}

// Open with database/sql: the cache_* parameters configure the cache and
// lib/pq never sees them. Without cache_redis (or CACHEDPQ_REDIS_URL) the
// cache is in-process.
func Example() {
	db, err := sql.Open("cachedpq", dsn+" cache_redis=redis://127.0.0.1:6379/0 cache_prefix=shop")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	var name string
	err = db.QueryRow("SELECT name FROM example_users WHERE id = $1", 42).Scan(&name)
	fmt.Println(name, err)
}

// sqlx works unchanged: the driver name "cachedpq" is bound to $n
// placeholders, and Get and Select are cached like any registered read.
func Example_sqlx() {
	db, err := sqlx.Open("cachedpq", dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	var user struct {
		ID    int64  `db:"id"`
		Name  string `db:"name"`
		Email string `db:"email"`
	}
	err = db.Get(&user, "SELECT id, name, email FROM example_users WHERE id = $1", 42)
	fmt.Println(user.Name, err)
}

// OpenDB takes Options for what a DSN cannot carry: a Redis client of your
// own (Cluster, Sentinel), a private registry, a logger or an error hook.
func ExampleOpenDB() {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:7000"}})
	defer rdb.Close()
	reg := cachedpq.NewRegistry()
	if err := reg.Register("SELECT * FROM example_products WHERE category = $1", cachedpq.Policy{
		TTL: time.Minute, Tags: []string{"example_prices"}, StaleFor: 10 * time.Second,
	}); err != nil {
		log.Fatal(err)
	}
	db, err := cachedpq.OpenDB(dsn, cachedpq.Options{
		Redis:    rdb,
		Prefix:   "shop",
		Registry: reg,
		OnError:  func(err error) { log.Println("cache:", err) },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
}

// Writes made through the driver invalidate by themselves. A script or
// another application that wrote behind its back calls InvalidateTables (or
// runs `cachedpq invalidate --table ...`).
func ExampleConnector_InvalidateTables() {
	db, err := sql.Open("cachedpq", dsn+" cache_redis=redis://127.0.0.1:6379/0")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	conn, err := cachedpq.ConnectorOf(db)
	if err != nil {
		log.Fatal(err)
	}
	if err := conn.InvalidateTables(context.Background(), "example_users", "public.example_orders"); err != nil {
		log.Fatal(err)
	}
}

// Stats counts hits, misses and bypasses in total and per registered
// query; the prometheus and otel packages export them.
func ExampleConnector_Stats() {
	db, err := sql.Open("cachedpq", dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	conn, err := cachedpq.ConnectorOf(db)
	if err != nil {
		log.Fatal(err)
	}
	s := conn.Stats()
	fmt.Printf("hit ratio %.1f%%, %d bypassed in transactions, cache p99 %v\n",
		100*s.HitRatio(), s.Bypass["transaction"], s.CacheLatency.P99)
	for name, q := range s.Queries {
		fmt.Printf("%s: %d hits, %d misses\n", name, q.Hits, q.Misses)
	}
}

// Explain shows what the driver makes of a statement, as `cachedpq explain`
// does.
func ExampleExplain() {
	e := cachedpq.Explain("SELECT o.id FROM Orders o JOIN users u ON u.id = o.user_id -- by user\n WHERE u.id = $1")
	fmt.Println(e.Normalized)
	fmt.Println(e.Kind, e.ReadTables, e.Cacheable)

	e = cachedpq.Explain("SELECT now()")
	fmt.Println(e.Cacheable, e.Reason != "")
	// Output:
	// select o . id from orders o join users u on u . id = o . user_id where u . id = $1
	// select [orders users] true
	// false true
}

// A Histogram gives exporters the buckets behind Stats' percentiles.
func ExampleHistogram_Quantile() {
	h := cachedpq.Histogram{
		Bounds: []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond},
		Counts: []uint64{6, 3, 1},
	}
	fmt.Println(h.Count(), h.Quantile(0.5), h.Quantile(0.99), h.Sum())
	// Output: 10 1ms 4ms 10.5ms
}
