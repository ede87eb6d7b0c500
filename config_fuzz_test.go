package cachedpq

import (
	"strconv"
	"strings"
	"testing"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
)

// FuzzParseDSN checks that any DSN either fails, with lib/pq's error or
// one that names the cache parameter at fault, or yields settings that NewConnector can
// use as they are: no cache_* parameter left for lib/pq, a Redis URL that
// parses, a prefix without spaces, a positive timeout and memory bound.
func FuzzParseDSN(f *testing.F) {
	for _, dsn := range []string{
		"host=127.0.0.1 dbname=test sslmode=disable",
		"dbname=d cache_prefix=app cache_timeout=20ms cache_redis='redis://:pw@127.0.0.1:6380/2'",
		"postgres://u@h/d?sslmode=disable&cache_redis=redis%3A%2F%2F127.0.0.1%3A6379%2F1&cache_max_memory=8MiB",
		"dbname=d cache_max_memory=4611686018427387904B",
		"dbname=d cache_timeout=1ns cache_prefix='a b'",
		"postgres://h/d?cache_max_memory=1GiB&cache_bogus=1",
		"dbname=d cache_prepare=1",
		"dbname='unterminated",
	} {
		f.Add(dsn)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		cfg, s, err := parseDSN(dsn)
		if err != nil {
			_, pqErr := pq.NewConfig(dsn)
			switch {
			case pqErr != nil && err.Error() != pqErr.Error():
				t.Fatalf("%q: lib/pq's error %q came back as %q", dsn, pqErr, err)
			case pqErr == nil && !strings.HasPrefix(err.Error(), "cachedpq: DSN parameter cache_"):
				t.Fatalf("%q: error %q does not name the cache parameter at fault", dsn, err)
			}
			return
		}
		for k := range cfg.Runtime {
			if strings.HasPrefix(k, "cache_") {
				t.Fatalf("%q: lib/pq would see %s", dsn, k)
			}
		}
		if s.redisURL != "" {
			if _, err := redis.ParseURL(s.redisURL); err != nil {
				t.Fatalf("%q: accepted Redis URL %q: %v", dsn, s.redisURL, err)
			}
		}
		if strings.ContainsAny(s.prefix, " \t\r\n") {
			t.Fatalf("%q: accepted prefix %q", dsn, s.prefix)
		}
		if s.timeout < 0 || s.maxMemory < 0 {
			t.Fatalf("%q: accepted settings %+v", dsn, s)
		}
	})
}

// FuzzParseBytes checks that a size is read as a positive number of bytes
// or refused, and that the number, written back in plain bytes, reads the
// same.
func FuzzParseBytes(f *testing.F) {
	for _, v := range []string{"1", "512KiB", "64MiB", "1GiB", "4294967296GiB", "0B", "-1KiB", "1.5MiB", "MiB", "07B"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, val string) {
		n, err := parseBytes(val)
		if err != nil {
			return
		}
		if n <= 0 || n > 1<<62 {
			t.Fatalf("parseBytes(%q) = %d", val, n)
		}
		if back, err := parseBytes(strconv.FormatInt(n, 10) + "B"); back != n || err != nil {
			t.Fatalf("parseBytes(%q) = %d, but %dB reads as %d, %v", val, n, n, back, err)
		}
	})
}
