package integration

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/cachedpq/cachedpq"
)

// TestInfinityTsAcrossProcesses: pq.EnableInfinityTs is a per-process
// switch of lib/pq that changes the Go value of an infinite timestamp
// ([]byte("infinity") or a time.Time). Two processes sharing a Redis prefix,
// one with it and one without, must each see what their own lib/pq gives.
func TestInfinityTsAcrossProcesses(t *testing.T) {
	if os.Getenv("CACHEDPQ_INF_CHILD") != "" {
		return
	}
	rdb := newRedis(t)
	for _, order := range [][]string{{"off", "on", "off"}, {"on", "off", "on"}} {
		t.Run(strings.Join(order, "-then-"), func(t *testing.T) {
			env := newEnvWith(t, rdb)
			for i, mode := range order {
				cmd := exec.Command(os.Args[0], "-test.run", "^TestInfinityTsChild$", "-test.count=1", "-test.v")
				cmd.Env = append(os.Environ(), fmt.Sprintf("CACHEDPQ_INF_CHILD=%s %s %s %d", env.prefix, env.schema, mode, i))
				out, err := cmd.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "hits=") {
					t.Fatalf("child %s (run %d): %v\n%s", mode, i, err, out)
				}
			}
		})
	}
}

func TestInfinityTsChild(t *testing.T) {
	arg := os.Getenv("CACHEDPQ_INF_CHILD")
	if arg == "" {
		t.Skip("run by TestInfinityTsAcrossProcesses")
	}
	f := strings.Fields(arg)
	prefix, schema, mode, run := f[0], f[1], f[2], f[3]
	if mode == "on" {
		pq.EnableInfinityTs(time.Date(-1000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))
	}
	reg := cachedpq.NewRegistry()
	q := `select 'infinity'::timestamptz, '-infinity'::timestamp, 'infinity'::date from generate_series(1, $1::int)`
	if err := reg.Register(q, cachedpq.Policy{TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	dsn := baseDSN() + " search_path=" + schema
	conn, err := cachedpq.NewConnector(dsn, cachedpq.Options{Redis: newRedis(t), Prefix: prefix, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	db := sqlx.NewDb(sql.OpenDB(conn), "cachedpq")
	raw := sqlx.MustOpen("postgres", dsn)
	defer db.Close()
	defer raw.Close()
	got := describeResult(t, db, q, 1)
	want := describeResult(t, raw, q, 1)
	hits := conn.Stats().Hits
	t.Logf("infinity %s hits=%d\ncachedpq: %q\nlib/pq:   %q", mode, hits, got, want)
	if run == "2" && hits != 1 { // same setting as the process that filled
		t.Fatalf("third process did not hit: %+v", conn.Stats())
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("infinity %s: cachedpq answers\n%q\nwhere lib/pq answers\n%q", mode, got, want)
	}
	if run == "2" {
		// A Connector that has no connection yet builds the same key.
		other, err := cachedpq.NewConnector(dsn, cachedpq.Options{Redis: newRedis(t), Prefix: prefix, Registry: reg})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if err := other.InvalidateQuery(context.Background(), q, 1); err != nil {
			t.Fatal(err)
		}
		misses := conn.Stats().Misses
		describeResult(t, db, q, 1)
		if conn.Stats().Misses != misses+1 {
			t.Fatalf("InvalidateQuery through a Connector with no connection missed the entry: %+v", conn.Stats())
		}
	}
	// Scanning into *time.Time works with lib/pq exactly when it is on.
	var ts time.Time
	errGot := db.QueryRow(q, 1).Scan(&ts, new(any), new(any))
	errWant := raw.QueryRow(q, 1).Scan(&ts, new(any), new(any))
	if (errGot == nil) != (errWant == nil) {
		t.Fatalf("Scan(*time.Time): cachedpq %v, lib/pq %v", errGot, errWant)
	}
	time.Sleep(100 * time.Millisecond) // let the fill land
}
