package integration

import (
	"errors"
	"reflect"
	"testing"

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
