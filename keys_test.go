package cachedpq

import (
	"bytes"
	"database/sql/driver"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
)

// testIdentity builds an identity from a DSN.
func testIdentity(t testing.TB, dsn string) identity {
	t.Helper()
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return newIdentity(cfg)
}

const testDSN = "host=127.0.0.1 port=5432 user=app dbname=test sslmode=disable"

// args turns values into positional named values.
func args(vs ...driver.Value) []driver.NamedValue {
	out := make([]driver.NamedValue, len(vs))
	for i, v := range vs {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return out
}

// keyOf returns the key and check of q with nv under id.
func keyOf(t testing.TB, id *identity, q string, nv []driver.NamedValue) (string, [16]byte) {
	t.Helper()
	k, c, ok := appendKey(nil, "cpq", "", id, analyze(q), nv)
	if !ok {
		t.Fatalf("appendKey(%q, %v) not ok", q, nv)
	}
	return string(k), c
}

func TestKeyDistinguishesArguments(t *testing.T) {
	id := testIdentity(t, testDSN)
	q := "select * from t where a = $1 and b = $2"
	utc := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	tests := []struct {
		name string
		a, b []driver.NamedValue
	}{
		{"fmt %v collision", args("a b", "c"), args("a", "b c")},
		{"int64 vs string", args(int64(1), "x"), args("1", "x")},
		{"bytes vs string", args([]byte("x"), "y"), args("x", "y")},
		{"nil vs empty string", args(nil, "y"), args("", "y")},
		{"nil vs empty bytes", args(nil, "y"), args([]byte{}, "y")},
		{"float bits", args(0.0, "y"), args(negZero(), "y")},
		{"float vs int", args(float64(1), "y"), args(int64(1), "y")},
		{"bool", args(true, "y"), args(false, "y")},
		{"time instant", args(utc, "y"), args(utc.Add(time.Nanosecond), "y")},
		{"time offset", args(utc, "y"), args(utc.In(time.FixedZone("X", 3600)), "y")},
		{"arity", args("a"), args("a", nil)},
		{"named", []driver.NamedValue{{Ordinal: 1, Name: "a", Value: "x"}}, []driver.NamedValue{{Ordinal: 1, Name: "b", Value: "x"}}},
		{"ordinal", []driver.NamedValue{{Ordinal: 1, Value: "x"}}, []driver.NamedValue{{Ordinal: 2, Value: "x"}}},
		{"embedded separator", args("a\x00b", "c"), args("a", "\x00bc")},
		{"BC time in a tz zone", args(bcNamed(t), "y"), args(bcNamed(t).In(time.FixedZone("", -17762)), "y")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka, ca := keyOf(t, &id, q, tt.a)
			kb, cb := keyOf(t, &id, q, tt.b)
			if ka == kb || ca == cb {
				t.Errorf("%v and %v share key %s or check", tt.a, tt.b, ka)
			}
		})
	}
}

func negZero() float64 { z := 0.0; return -z }

// bcNamed is a time before year 1 in America/New_York, at whose instant
// the zone's offset is -4:56:02 (local mean time), while lib/pq formats it
// at a date of 2021, in EDT.
func bcNamed(t *testing.T) time.Time {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip(err)
	}
	return time.Date(-2020, 6, 1, 12, 0, 0, 0, ny)
}

func TestKeySameForSameQuery(t *testing.T) {
	id := testIdentity(t, testDSN)
	ka, ca := keyOf(t, &id, "SELECT * FROM t WHERE a = $1", args(int64(7)))
	kb, cb := keyOf(t, &id, "select *\n from T -- x\n where a=$1", args(int64(7)))
	if ka != kb || ca != cb {
		t.Errorf("equivalent statements got keys %s and %s", ka, kb)
	}
	// The same instant in another named zone with the same offset sends
	// the same text, so it shares the key.
	utc := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	ka, _ = keyOf(t, &id, "select $1", args(utc))
	kb, _ = keyOf(t, &id, "select $1", args(utc.In(time.FixedZone("Z", 0))))
	if ka != kb {
		t.Error("same instant and offset got different keys")
	}
}

func TestKeyIdentity(t *testing.T) {
	base := testIdentity(t, testDSN)
	q := "select * from t where a = $1"
	k0, c0 := keyOf(t, &base, q, args("x"))
	for _, dsn := range []string{
		"host=127.0.0.2 port=5432 user=app dbname=test sslmode=disable",
		"host=127.0.0.1 port=5433 user=app dbname=test sslmode=disable",
		"host=127.0.0.1 port=5432 user=other dbname=test sslmode=disable",
		"host=127.0.0.1 port=5432 user=app dbname=prod sslmode=disable",
		"host=127.0.0.1 port=5432 user=app dbname=test sslmode=disable search_path=s",
		"host=127.0.0.1 port=5432 user=app dbname=test sslmode=disable timezone=UTC",
		"host=127.0.0.1 port=5432 user=app dbname=test sslmode=disable options='-c role=x'",
		// []byte arguments go in binary: []byte("12345678") is another bigint.
		"host=127.0.0.1 port=5432 user=app dbname=test sslmode=disable binary_parameters=yes",
	} {
		t.Run(dsn, func(t *testing.T) {
			id := testIdentity(t, dsn)
			if k, c := keyOf(t, &id, q, args("x")); k == k0 || c == c0 {
				t.Errorf("identity %s shares key with %s", id.String(), base.String())
			}
		})
	}
	withPass := testIdentity(t, testDSN+" password=s3cretpw")
	if k, _ := keyOf(t, &withPass, q, args("x")); k != k0 {
		t.Error("the password changed the key")
	}
	if strings.Contains(withPass.String(), "s3cretpw") {
		t.Errorf("identity leaks the password: %s", withPass.String())
	}
}

func TestIdentityStringStable(t *testing.T) {
	a := testIdentity(t, testDSN+" search_path=s application_name=x")
	b := testIdentity(t, "application_name=x "+testDSN+" search_path=s")
	if a.String() != b.String() || !strings.Contains(a.String(), `runtime.search_path="s"`) {
		t.Errorf("identities %q and %q", a.String(), b.String())
	}
}

func TestKeyShape(t *testing.T) {
	id := testIdentity(t, testDSN)
	tests := []struct{ name, q, policy, prefix string }{
		{"policy name", "select * from users", "byid", "cpq:byid:"},
		{"first table", "select * from Users join orders on true", "", "cpq:users:"},
		{"no table", "select 1", "", "cpq:q:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, _, ok := appendKey([]byte("keep|"), "cpq", tt.policy, &id, analyze(tt.q), nil)
			rest, found := bytes.CutPrefix(k, []byte("keep|"+tt.prefix))
			if !ok || !found || len(rest) != 32 {
				t.Errorf("key %q", k)
			}
		})
	}
}

func TestKeyRefusesUnknownTypes(t *testing.T) {
	id := testIdentity(t, testDSN)
	for _, v := range []driver.Value{int(1), uint64(1), []int64{1}, struct{}{}, &struct{}{}} {
		if _, _, ok := appendKey(nil, "p", "", &id, analyze("select $1"), args(v)); ok {
			t.Errorf("%T was keyed", v)
		}
	}
}

func TestKeyAllocs(t *testing.T) {
	id := testIdentity(t, testDSN)
	a := analyze("select * from t where a = $1 and b = $2 and c = $3")
	nv := args(int64(42), "hello", time.Now())
	n := testing.AllocsPerRun(100, func() { appendKey(nil, "cpq", "", &id, a, nv) })
	if n > 1 {
		t.Errorf("appendKey allocates %v times", n)
	}
}
