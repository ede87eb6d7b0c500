package cachedpq

import (
	"runtime"
	"testing"
	"time"
)

// TestWallClockRebases checks the bound clock.go promises: a reading is
// carried forward on the monotonic clock for less than rebaseEvery, and
// the wall clock is read afresh after. The bases stand for a wall clock
// stepped far forward since they were read (wall 0).
func TestWallClockRebases(t *testing.T) {
	for _, tc := range []struct {
		name  string
		age   time.Duration // of the base, on the monotonic clock
		fresh bool          // the wall clock must be read afresh
	}{
		{"recent", 0, false},
		{"at the bound", rebaseEvery, true},
		{"old", time.Hour, true},
		{"newer than the reading", -time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c wallClock
			mono := monoNow()
			c.base.Store(&wallBase{wall: 0, mono: mono - tc.age})
			before := time.Now().UnixNano()
			got := c.at(mono)
			switch {
			case tc.fresh && got < before:
				t.Fatalf("got %d, want a fresh reading ≥ %d", got, before)
			case !tc.fresh && got != int64(tc.age):
				t.Fatalf("got %d, want the base carried forward to %d", got, int64(tc.age))
			}
		})
	}
}

// TestWallClockKeepsNewest checks that a fresh reading does not replace a
// newer base, which a goroutine held up between its reading and its store
// could otherwise install over another's.
func TestWallClockKeepsNewest(t *testing.T) {
	var c wallClock
	newer := &wallBase{wall: 1, mono: monoNow() + time.Hour}
	c.base.Store(newer)
	c.read()
	if c.base.Load() != newer {
		t.Fatal("an older reading replaced the newer base")
	}
	c.base.Store(&wallBase{wall: 1, mono: monoNow() - time.Hour})
	before := time.Now().UnixNano()
	if c.read(); c.base.Load().wall < before {
		t.Fatal("a fresh reading did not replace the older base")
	}
}

// TestMemClockNeverAhead checks that the in-process store's otter clock
// never reads past the time (otter would drop entries early), and
// that a fill brings it up to date, so that an entry's otter deadline is
// no earlier than its TTL from the fill.
func TestMemClockNeverAhead(t *testing.T) {
	s := newMemStore(0)
	defer s.close()
	clock := func() int64 { return monoStartUnix + int64(monoNow()) } // otter's own
	if got, now := s.clock.NowNano(), clock(); got > now {
		t.Fatalf("otter's clock reads %d, ahead of the time's %d", got, now)
	}
	before := clock()
	if err := s.fill(t.Context(), "k", &entry{}, time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	if got := s.clock.NowNano(); got < before {
		t.Fatalf("after a fill otter's clock reads %d, before the fill began (%d)", got, before)
	}
}

// TestMemClockTicksEnd checks that the ticks end when the clock is closed,
// and when it is dropped unclosed: a Connector nobody closes must not leave
// a goroutine ticking for ever.
func TestMemClockTicksEnd(t *testing.T) {
	closed := newMemClock()
	ended := closed.Tick(time.Millisecond)
	closed.close()
	drainTicks(t, ended)
	dropped := newMemClock().Tick(time.Millisecond)
	drainTicks(t, dropped, runtime.GC)
}

// drainTicks reads ticks until the channel is closed, calling each of also
// between them.
func drainTicks(t *testing.T, ticks <-chan time.Time, also ...func()) {
	t.Helper()
	for range 1000 {
		for _, f := range also {
			f()
		}
		select {
		case _, ok := <-ticks:
			if !ok {
				return
			}
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatal("the ticks did not end")
}
