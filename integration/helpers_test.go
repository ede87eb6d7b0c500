// Package integration tests cachedpq against real PostgreSQL and Redis
// servers. Start them with scripts/services.sh. When a service cannot be
// reached the tests skip, except under CI=true, where they fail.
package integration

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
)

// baseDSN is the Postgres the tests use; CACHEDPQ_TEST_DSN overrides it.
func baseDSN() string {
	if dsn := os.Getenv("CACHEDPQ_TEST_DSN"); dsn != "" {
		return dsn
	}
	return "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
}

// redisAddr is the Redis the tests use; CACHEDPQ_TEST_REDIS overrides it.
func redisAddr() string {
	if a := os.Getenv("CACHEDPQ_TEST_REDIS"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// unavailable skips the test, or fails it when CI=true.
func unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s unreachable under CI=true: %v", what, err)
	}
	t.Skipf("%s unreachable (run scripts/services.sh): %v", what, err)
}

var schemaSeq atomic.Int64

// openSchema creates a fresh schema and returns a DB for driverName whose
// connections use it, dropped again when the test ends.
func openSchema(t testing.TB, driverName string, extra ...string) *sqlx.DB {
	t.Helper()
	schema := newSchema(t)
	dsn := baseDSN() + " search_path=" + schema
	for _, e := range extra {
		dsn += " " + e
	}
	db, err := sqlx.Open(driverName, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newSchema creates a uniquely named schema and drops it at cleanup.
func newSchema(t testing.TB) string {
	t.Helper()
	admin, err := sql.Open("postgres", baseDSN())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		unavailable(t, "PostgreSQL", err)
	}
	staleOnce.Do(func() { dropStale(admin) })
	schema := fmt.Sprintf("it_%d_%d", os.Getpid(), schemaSeq.Add(1))
	if _, err := admin.Exec("create schema " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Exec("drop schema " + schema + " cascade")
		admin.Close()
	})
	return schema
}

var staleOnce sync.Once

// dropStale drops the schemas (and roles) that test processes no longer
// running left behind: a killed run skips its cleanups. The catalog reads
// every schema's views and functions (judged by bare name, as tags are),
// so a leftover view that calls now() would keep a later run's reads of
// a view of that name from the cache. The database is this machine's
// (loopback only), so a process of the name's pid is looked for in /proc.
func dropStale(admin *sql.DB) {
	if _, err := os.Stat("/proc/self"); err != nil {
		return
	}
	rows, err := admin.Query(`select nspname from pg_catalog.pg_namespace where nspname ~ '^it_[0-9]+_[0-9]+$'
		union all select rolname from pg_catalog.pg_roles where rolname ~ '^it_[0-9]+_[0-9]+_role$'`)
	if err != nil {
		return
	}
	var stale []string
	for rows.Next() {
		var name string
		var pid int
		if rows.Scan(&name) != nil {
			continue
		}
		if n, _ := fmt.Sscanf(name, "it_%d_", &pid); n == 1 {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				stale = append(stale, name)
			}
		}
	}
	rows.Close()
	for _, name := range stale {
		if strings.HasSuffix(name, "_role") {
			admin.Exec("drop owned by " + name + "; drop role " + name)
		} else {
			admin.Exec("drop schema " + name + " cascade")
		}
	}
}

// newRedis returns a client for the test Redis, or skips/fails.
func newRedis(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redisAddr()})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		unavailable(t, "Redis", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustExec(t testing.TB, db interface {
	Exec(string, ...any) (sql.Result, error)
}, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}
