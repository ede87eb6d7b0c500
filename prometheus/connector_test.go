package prometheus

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cachedpq/cachedpq"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testDSN is the Postgres the test uses; CACHEDPQ_TEST_DSN overrides it.
func testDSN() string {
	if dsn := os.Getenv("CACHEDPQ_TEST_DSN"); dsn != "" {
		return dsn
	}
	return "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
}

// openSchema creates a private schema with a users table holding one row
// and returns a raw lib/pq DB and the DSN that uses the schema.
func openSchema(t *testing.T) string {
	t.Helper()
	admin, err := sql.Open("postgres", testDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL unreachable under CI=true: %v", err)
		}
		t.Skipf("PostgreSQL unreachable: %v", err)
	}
	schema := fmt.Sprintf("prom_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	for _, q := range []string{
		"create schema " + schema,
		"create table " + schema + ".users (id int primary key, name text)",
		"insert into " + schema + ".users values (1, 'ada')",
	} {
		if _, err := admin.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() { admin.Exec("drop schema " + schema + " cascade") })
	return testDSN() + " search_path=" + schema
}

// TestCollectorOverConnector drives a real Connector through a known
// sequence and scrapes it: two misses (one of them empty), three hits (one
// on the empty result), and one read bypassed by a transaction.
func TestCollectorOverConnector(t *testing.T) {
	dsn := openSchema(t)
	reg := cachedpq.NewRegistry()
	const q = "select name from users where id = $1"
	if err := reg.Register(q, cachedpq.Policy{Name: "user", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	conn, err := cachedpq.NewConnector(dsn, cachedpq.Options{Registry: reg, Prefix: "promtest"})
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })

	for _, id := range []int{1, 1, 1, 2, 2} {
		var name string
		err := db.QueryRow(q, id).Scan(&name)
		if err != nil && err != sql.ErrNoRows {
			t.Fatal(err)
		}
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	var name string
	if err := tx.QueryRow(q, 1).Scan(&name); err != nil {
		t.Fatal(err)
	}
	tx.Rollback()

	const want = `
# HELP cachedpq_hits_total Registered reads served from the cache.
# TYPE cachedpq_hits_total counter
cachedpq_hits_total 3
# HELP cachedpq_misses_total Registered reads that ran on Postgres and were recorded.
# TYPE cachedpq_misses_total counter
cachedpq_misses_total 2
# HELP cachedpq_negative_hits_total Cache hits on an empty result (also counted in hits).
# TYPE cachedpq_negative_hits_total counter
cachedpq_negative_hits_total 1
`
	c := NewCollector(conn, Options{NoQueryLabels: true})
	err = testutil.CollectAndCompare(c, strings.NewReader(want),
		"cachedpq_hits_total", "cachedpq_misses_total", "cachedpq_negative_hits_total")
	if err != nil {
		t.Fatal(err)
	}
	perQuery := NewCollector(conn, Options{})
	bypass := `
# HELP cachedpq_bypass_total Registered reads that skipped the cache, by reason.
# TYPE cachedpq_bypass_total counter
` + bypassLines("user", "transaction") + `
`
	if err := testutil.CollectAndCompare(perQuery, strings.NewReader(bypass), "cachedpq_bypass_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(perQuery, "cachedpq_cache_lookup_duration_seconds"); n != 1 {
		t.Fatalf("%d cache latency summaries, want 1", n)
	}
}

// bypassLines renders one bypass series per reason, 1 for the one given.
func bypassLines(query, one string) string {
	reasons := []string{"arguments", "breaker_open", "cache_error", "invalidation_pending",
		"sequence", "server_settings", "session_state", "standby", "too_large", "transaction", "view", "volatile", "writing"}
	var b strings.Builder
	for _, r := range reasons {
		n := 0
		if r == one {
			n = 1
		}
		fmt.Fprintf(&b, "cachedpq_bypass_total{query=%q,reason=%q} %d\n", query, r, n)
	}
	return b.String()
}
