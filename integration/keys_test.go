package integration

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/cachedpq/cachedpq"
)

// argsAnswer asks q with each argument list in turn, through cachedpq and
// lib/pq, and fails when a cached answer differs from Postgres's.
func argsAnswer(t *testing.T, env *cacheEnv, q string, lists ...[]any) {
	t.Helper()
	env.register(t, q, cachedpq.Policy{})
	for _, args := range lists {
		fills := env.stats().Fills
		env.same(t, q, args...)
		env.waitFills(t, fills+1)
	}
	for _, args := range lists {
		env.same(t, q, args...)
	}
}

// TestKeyBCTimesInNamedZones: lib/pq sends a time before year 1 as the
// date of year 1-y in the value's own Location, with " BC": the wall
// clock and offset of that other date, which a tz database zone may give
// otherwise than a fixed zone with the same offset at the instant itself.
// Postgres then reads two instants, and the key must tell them apart.
func TestKeyBCTimesInNamedZones(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip(err)
	}
	named := time.Date(-2020, 6, 1, 12, 0, 0, 0, ny)
	_, off := named.Zone()
	fixed := named.In(time.FixedZone("", off))
	if !named.Equal(fixed) {
		t.Fatal("not one instant")
	}
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		argsAnswer(t, env, `select $1::timestamptz at time zone 'UTC'`, []any{named}, []any{fixed})
	})
}

// TestInvalidateQueryConvertsArgumentsAsQueries: InvalidateQuery must
// find the entry a query with the same arguments filled, so it must turn
// them into driver values exactly as database/sql and lib/pq do: a nil
// pointer to a type whose Value method has a value receiver is NULL (it
// panicked), and lib/pq sends a uint64 of math.MaxInt64 as a string (the
// key had an int64, and the entry survived). The query reads no table, so
// that removing the entry is all the invalidation does.
func TestInvalidateQueryConvertsArgumentsAsQueries(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		invalidateQueryArgs(t, env, `select $1::text as v, random() from generate_series(1, 1)`,
			(*pq.NullTime)(nil), uint64(math.MaxInt64), &sql.NullString{String: "x", Valid: true})
	})
	// With binary_parameters=yes lib/pq sends what a BinaryValue method
	// gives (hstore.Hstore has one), not what Value gives.
	t.Run("binary_parameters", func(t *testing.T) {
		schema := newSchema(t)
		env := newEnvDSN(t, newRedis(t), schema, baseDSN()+" search_path="+schema+" binary_parameters=yes")
		invalidateQueryArgs(t, env, `select $1::bytea as v, random() from generate_series(1, 1)`, binValue{})
	})
}

// binValue is sent as "text" by Value and as "binary" by BinaryValue.
type binValue struct{}

func (binValue) Value() (driver.Value, error) { return "text", nil }
func (binValue) BinaryValue() ([]byte, error) { return []byte("binary"), nil }

// invalidateQueryArgs fills q's entry for each argument, invalidates it
// with InvalidateQuery, and checks that the next read is not the entry.
func invalidateQueryArgs(t *testing.T, env *cacheEnv, q string, args ...any) {
	t.Helper()
	env.register(t, q, cachedpq.Policy{AllowNondeterministic: true})
	for _, arg := range args {
		t.Run(fmt.Sprintf("%T", arg), func(t *testing.T) {
			fills := env.stats().Fills
			first := rowsOf(t, env.db, q, arg)
			env.waitFills(t, fills+1)
			if again := rowsOf(t, env.db, q, arg); !reflect.DeepEqual(again, first) {
				t.Fatalf("not served from the cache: %v then %v", first, again)
			}
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						err = fmt.Errorf("panic: %v", p)
					}
				}()
				err = env.conn.InvalidateQuery(context.Background(), q, arg)
			}()
			if err != nil {
				t.Fatalf("InvalidateQuery(%#v): %v", arg, err)
			}
			fills = env.stats().Fills
			if after := rowsOf(t, env.db, q, arg); reflect.DeepEqual(after, first) {
				t.Fatalf("InvalidateQuery(%#v) left the entry: %v served again", arg, after)
			}
			// The next argument's first fill must not be this one's: it
			// waited for any fill (one in 20 runs failed so, the entry
			// being filled after InvalidateQuery).
			env.waitFills(t, fills+1)
		})
	}
}
