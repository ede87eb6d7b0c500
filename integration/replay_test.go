package integration

import (
	"database/sql"
	"errors"
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

// A miss streams lib/pq's rows and a hit replays a snapshot: either way the
// caller must see what lib/pq alone would show it.

// divideByZero fails at its third row when $1 is 0: after the row
// QueryRow reads, before the end Close reads to.
const divideByZero = `select 1/(3-x) from generate_series(1,5) x where x > $1`

// readOutcomes reads q(args) in the ways a caller may leave a result and
// returns the error of each.
func readOutcomes(t *testing.T, db *sqlx.DB, q string, args ...any) map[string]error {
	t.Helper()
	out := map[string]error{"QueryRow.Scan": db.QueryRow(q, args...).Scan(new(int))}
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	rows.Next()
	out["Next then Close"] = rows.Close()
	rows, err = db.Query(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	for rows.Next() {
	}
	out["Next to the end"] = rows.Err()
	rows.Close()
	return out
}

// sameErrors asserts got holds lib/pq's errors, by value.
func sameErrors(t *testing.T, got, want map[string]error) {
	t.Helper()
	for how, w := range want {
		g := got[how]
		var gp, wp *pq.Error
		if w == nil || !errors.As(w, &wp) {
			t.Fatalf("%s: lib/pq answered %v, want a *pq.Error", how, w)
		}
		if !errors.As(g, &gp) || !reflect.DeepEqual(*gp, *wp) || g.Error() != w.Error() {
			t.Fatalf("%s: cachedpq answered %v, lib/pq %v", how, g, w)
		}
	}
}

// TestErrorPartWayThroughResult: an error Postgres raises after the rows a
// caller read is returned by Close, as lib/pq's Close returns it, so
// QueryRow().Scan fails. Recording rows used to drain the rest of a miss
// and drop the error; the result is never cached, so every read lost it.
// A recording cut short by a limit, and a write made through Query, must
// answer alike.
func TestErrorPartWayThroughResult(t *testing.T) {
	cases := []struct {
		name, query string
		policy      cachedpq.Policy
	}{
		{"read", divideByZero, cachedpq.Policy{}},
		{"read past MaxRows", divideByZero + ` and $1 >= 0`, cachedpq.Policy{MaxRows: 1}},
		// A function may write: its rows come through rows.go, not cached.
		{"write", `select inv(x) from generate_series(1,5) x where x > $1`, cachedpq.Policy{}},
	}
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create function inv(x int8) returns int8 language sql as 'select 1/(3-x)'`)
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				if c.name != "write" {
					env.register(t, c.query, c.policy)
				}
				for range 2 {
					sameErrors(t, readOutcomes(t, env.db, c.query, 0), readOutcomes(t, env.raw, c.query, 0))
				}
			})
		}
		if s := env.stats(); s.Fills != 0 || s.Hits != 0 {
			t.Fatalf("a failed result was cached: %+v", s)
		}
	})
}

// scribbler is a sql.Scanner that writes into the bytes it is given, as
// a caller may until the next Next.
type scribbler struct{}

func (scribbler) Scan(src any) error {
	if b, ok := src.([]byte); ok {
		for i := range b {
			b[i] = 'Y'
		}
	}
	return nil
}

// scribble reads q(args), overwriting each value in place: through
// sql.RawBytes in its first column and a scribbler in its second.
func scribble(t *testing.T, db *sqlx.DB, q string, args ...any) {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	for rows.Next() {
		var raw sql.RawBytes
		if err := rows.Scan(&raw, scribbler{}); err != nil {
			t.Fatal(err)
		}
		for i := range raw {
			raw[i] = 'X'
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestWritingIntoScannedBytesSparesTheCache: a caller may write into the
// []byte values it scanned into sql.RawBytes or a Scanner, which
// database/sql does not copy. A hit handed out the snapshot's own bytes,
// so every later hit returned what the caller wrote (through the decode
// memo on Redis); a miss must keep its recording apart from them too.
func TestWritingIntoScannedBytesSparesTheCache(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		mustExec(t, env.raw, `create table docs (id int8 primary key, doc jsonb, score numeric(8,2));
			insert into docs select g, jsonb_build_object('id', g, 'tags', array['a', 'b']), g * 1.25
			from generate_series(1, 5) g`)
		for _, q := range []string{
			`select doc, score from docs where id <= $1 order by id`,
			`select score, doc from docs where id <= $1 order by id`,
		} {
			env.register(t, q, cachedpq.Policy{})
			fills, hits := env.stats().Fills, env.stats().Hits
			scribble(t, env.db, q, 3) // the miss
			env.waitFills(t, fills+1)
			env.same(t, q, 3)
			for range 2 {
				scribble(t, env.db, q, 3)
				env.same(t, q, 3)
			}
			if got := env.stats().Hits - hits; got != 5 {
				t.Fatalf("%d hits of 5: %+v", got, env.stats())
			}
		}
	})
}

// TestTimetzAcrossLocalZones: lib/pq, through time.Parse, places a timetz
// value in time.Local when Local has its offset. The codec stored that
// location as "Local", so a process in another zone read the value in its
// own Local (+0009 LMT in Europe/Paris for a +00 value) where its lib/pq
// gives a fixed +00 zone. A process with TZ=UTC fills the entry; one with
// TZ=Europe/Paris must then hit it and answer as its lib/pq does.
func TestTimetzAcrossLocalZones(t *testing.T) {
	if os.Getenv("CACHEDPQ_TZ_CHILD") != "" {
		return // run by timetzChild only
	}
	rdb := newRedis(t)
	env := newEnvWith(t, rdb)
	for _, tz := range []string{"UTC", "Europe/Paris", "UTC"} {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestTimetzChild$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "TZ="+tz, "CACHEDPQ_TZ_CHILD="+env.prefix+" "+env.schema)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "hits=") {
			t.Fatalf("TZ=%s: %v\n%s", tz, err, out)
		}
	}
}

// TestTimetzChild is TestTimetzAcrossLocalZones in one process.
func TestTimetzChild(t *testing.T) {
	arg := os.Getenv("CACHEDPQ_TZ_CHILD")
	if arg == "" {
		t.Skip("run by TestTimetzAcrossLocalZones")
	}
	prefix, schema, _ := strings.Cut(arg, " ")
	reg := cachedpq.NewRegistry()
	q := `select '12:00:00+00'::timetz, '12:00:00+01'::timetz, '24:00:00+00'::timetz from generate_series(1, $1::int)`
	if err := reg.Register(q, cachedpq.Policy{TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	dsn := baseDSN() + " search_path=" + schema
	conn, err := cachedpq.NewConnector(dsn, cachedpq.Options{Redis: newRedis(t), Prefix: prefix, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	env := &cacheEnv{db: sqlx.NewDb(sql.OpenDB(conn), "cachedpq"), conn: conn}
	env.raw = sqlx.MustOpen("postgres", dsn)
	defer env.db.Close()
	defer env.raw.Close()
	got := env.same(t, q, 1)
	t.Logf("TZ=%s %v hits=%d", os.Getenv("TZ"), got, env.stats().Hits)
	if os.Getenv("TZ") != "UTC" && env.stats().Hits != 1 {
		t.Fatalf("not a hit: %+v", env.stats())
	}
	time.Sleep(100 * time.Millisecond) // let a fill finish before the process ends
}
