package cachedpq

import (
	"reflect"
	"sync/atomic"
	"testing"
	"time"
)

// TestQueriesSharingANameAddUp: Stats.Queries is keyed by Policy.Name,
// which two queries may share; their counts add up, so that the per-query
// series sum to the totals.
func TestQueriesSharingANameAddUp(t *testing.T) {
	db, c, _ := engineDB(t, nil)
	for _, q := range []string{`select v from kv where k = $1`, `select k from kv where v = $1`} {
		if err := c.opts.Registry.Register(q, Policy{TTL: time.Hour, Name: "same"}); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		getV(t, db, 1)
	}
	var k int
	if err := db.QueryRow(`select k from kv where v = $1`, "v2").Scan(&k); err != nil {
		t.Fatal(err)
	}
	s := c.Stats()
	got := s.Queries["same"]
	if got.Hits+got.Misses != 6 || got.Hits != s.Hits || got.Misses != s.Misses {
		t.Fatalf("queries named alike: %d hits %d misses; in total %d and %d", got.Hits, got.Misses, s.Hits, s.Misses)
	}
}

// TestCountersAllCoversEveryField: addTo adds every counter, so a new one
// cannot be left out of the per-query sums.
func TestCountersAllCoversEveryField(t *testing.T) {
	var c counters
	n := 0
	rt := reflect.TypeFor[counters]()
	for i := range rt.NumField() {
		switch f := rt.Field(i); {
		case f.Type == reflect.TypeFor[atomic.Uint64]():
			n++
		case f.Type.Kind() == reflect.Array:
			n += f.Type.Len()
		}
	}
	if got := len(c.all()); got != n {
		t.Fatalf("counters.all lists %d counters of %d", got, n)
	}
}
