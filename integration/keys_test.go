package integration

import (
	"testing"
	"time"

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
