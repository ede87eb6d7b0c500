package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cachedpq/cachedpq"
)

// buildCLI builds cmd/cachedpq into a temporary directory; the build cache
// makes every build after the first a link.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cachedpq")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/cachedpq/cachedpq/cmd/cachedpq").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runCLI runs the binary and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cmd.Environ(), "CACHEDPQ_REDIS_URL=", "CACHEDPQ_DSN=")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String(), errOut.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, out.String(), errOut.String()
}

func redisURL() string { return "redis://" + redisAddr() }

func TestCLIExplain(t *testing.T) {
	bin := buildCLI(t)
	code, out, errOut := runCLI(t, bin, "explain", "--json", "SELECT u.name FROM Users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var e struct {
		Kind       string   `json:"kind"`
		ReadTables []string `json:"read_tables"`
		Cacheable  bool     `json:"cacheable"`
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if e.Kind != "select" || !e.Cacheable || strings.Join(e.ReadTables, ",") != "users,orders" && strings.Join(e.ReadTables, ",") != "orders,users" {
		t.Fatalf("unexpected explanation %+v", e)
	}
	if code, _, _ := runCLI(t, bin, "explain", "--check", "select now()"); code != 1 {
		t.Fatalf("--check on a non-deterministic read: exit %d, want 1", code)
	}
}

// cliEnv is a cached DB on the test Redis with an items table and a
// registered point lookup and count.
func cliEnv(t *testing.T) *cacheEnv {
	t.Helper()
	env := newEnv(t, "redis")
	mustExec(t, env.raw, "create table items (id int primary key, name text)")
	mustExec(t, env.raw, "insert into items select g, 'item ' || g from generate_series(1, 10) g")
	env.register(t, qItem, cachedpq.Policy{Name: "item", TTL: time.Minute})
	env.register(t, qCount, cachedpq.Policy{Name: "item_count", TTL: 2 * time.Minute})
	return env
}

const (
	qItem  = "select name from items where id = $1"
	qCount = "select count(*) from items"
)

func TestCLIInvalidate(t *testing.T) {
	bin := buildCLI(t)
	tests := []struct {
		name string
		args []string
	}{
		{"table", []string{"--table", "public.Items"}},
		{"all", []string{"--all"}},
		{"url-dsn", []string{"--all", "--dsn", "postgres://127.0.0.1/test?cache_prefix=%s"}}, // the namespace from the DSN
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := cliEnv(t)
			env.same(t, qItem, 1)
			env.waitFills(t, 1)
			env.same(t, qItem, 1)
			before := env.stats()
			if before.Hits != 1 || before.Misses != 1 {
				t.Fatalf("before: %d hits, %d misses, want 1 and 1", before.Hits, before.Misses)
			}
			args := []string{"invalidate", "--redis", redisURL()}
			if tt.name != "url-dsn" {
				args = append(args, "--prefix", env.prefix)
			}
			for _, a := range tt.args {
				args = append(args, strings.ReplaceAll(a, "%s", env.prefix))
			}
			code, out, errOut := runCLI(t, bin, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s%s", code, out, errOut)
			}
			if !strings.Contains(out, fmt.Sprintf("namespace %q", env.prefix)) {
				t.Fatalf("the message names another namespace: %s", out)
			}
			env.same(t, qItem, 1)
			after := env.stats()
			if after.Hits != before.Hits || after.Misses != before.Misses+1 {
				t.Fatalf("after invalidate: %d hits, %d misses; want the read to miss", after.Hits, after.Misses)
			}
		})
	}
}

func TestCLIInvalidateNeedsRedis(t *testing.T) {
	bin := buildCLI(t)
	if code, _, errOut := runCLI(t, bin, "invalidate", "--all"); code != 2 || !strings.Contains(errOut, "--redis") {
		t.Fatalf("exit %d, want 2 with a hint: %s", code, errOut)
	}
	if code, _, _ := runCLI(t, bin, "invalidate", "--all", "--redis", "redis://127.0.0.1:1", "--timeout", "200ms"); code != 1 {
		t.Fatalf("unreachable Redis: exit %d, want 1", code)
	}
}

func TestCLIInspect(t *testing.T) {
	bin := buildCLI(t)
	env := cliEnv(t)
	for id := 1; id <= 3; id++ {
		env.same(t, qItem, id)
	}
	env.same(t, qCount)
	env.waitFills(t, 4)
	code, out, errOut := runCLI(t, bin, "inspect", "--redis", redisURL(), "--prefix", env.prefix, "--json", "--count", "2", "--top", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var r struct {
		Entries int64 `json:"entries"`
		Bytes   int64 `json:"bytes"`
		Stamps  int64 `json:"stamps"`
		Queries []struct {
			Name    string `json:"name"`
			Entries int64  `json:"entries"`
			Bytes   int64  `json:"bytes"`
		} `json:"queries"`
		Tags []struct {
			Name    string `json:"name"`
			Entries int64  `json:"entries"`
		} `json:"tags"`
		ExpiringFirst []struct {
			Key   string `json:"key"`
			TTLms int64  `json:"ttl_ms"`
		} `json:"expiring_first"`
		ExpiringLast []struct {
			Key   string `json:"key"`
			TTLms int64  `json:"ttl_ms"`
		} `json:"expiring_last"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	perQuery := map[string]int64{}
	for _, q := range r.Queries {
		perQuery[q.Name] = q.Entries
		if q.Bytes <= 0 {
			t.Errorf("query %s: %d bytes", q.Name, q.Bytes)
		}
	}
	if r.Entries != 4 || perQuery["item"] != 3 || perQuery["item_count"] != 1 {
		t.Fatalf("entries %d, per query %v; want 4: item 3, item_count 1\n%s", r.Entries, perQuery, out)
	}
	if len(r.Tags) != 1 || r.Tags[0].Name != "items" || r.Tags[0].Entries != 4 || r.Stamps < 1 {
		t.Fatalf("tags %+v, stamps %d; want items with 4 entries\n%s", r.Tags, r.Stamps, out)
	}
	if len(r.ExpiringFirst) != 2 || len(r.ExpiringLast) != 2 || r.ExpiringLast[0].TTLms < r.ExpiringFirst[0].TTLms {
		t.Fatalf("expiring first %+v, last %+v", r.ExpiringFirst, r.ExpiringLast)
	}
	// The count entry has the longer TTL: it must be the newest.
	if !strings.Contains(r.ExpiringLast[0].Key, ":item_count:") {
		t.Errorf("newest entry %s, want the item_count entry", r.ExpiringLast[0].Key)
	}
	code, text, _ := runCLI(t, bin, "inspect", "--redis", redisURL(), "--prefix", env.prefix)
	if code != 0 || !strings.Contains(text, "4 entries") || !strings.Contains(text, "item_count") {
		t.Fatalf("text report (exit %d):\n%s", code, text)
	}
}

func TestCLIDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes several seconds")
	}
	newSchema(t) // skips, or fails under CI, when Postgres is down
	bin := buildCLI(t)
	code, out, errOut := runCLI(t, bin, "demo", "--dsn", baseDSN(), "--duration", "2s", "--rows", "20000", "--workers", "4")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"throughput (ops/s)", "p99 latency", "hit rate", "raw lib/pq", "cachedpq (in-process)", "read-your-writes", "cache stats:"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(errOut, "[###") {
		t.Errorf("progress bar drawn although stderr is not a terminal:\n%s", errOut)
	}
}
