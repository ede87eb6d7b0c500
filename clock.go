package cachedpq

// This file reads the wall clock for a hit. Entries expire at a wall-clock
// time (Unix nanoseconds, shared with other processes through Redis), so a
// hit must read the wall clock; on a host whose clock source is slow to
// read (kvm-clock), time.Now, which reads both the wall and the monotonic
// clock, was a tenth of an in-process hit, and otter's own reading for its
// expiry another tenth. wallClock carries one wall-clock reading forward on
// the monotonic clock instead, reading the wall clock again at least every
// rebaseEvery, and the in-process store's otter cache reads the last such
// reading without a clock read of its own (see memClock).

import (
	"sync"
	"sync/atomic"
	"time"
	"weak"
)

// rebaseEvery is how long a wall-clock reading is carried forward before
// the wall clock is read again. The two clocks advance at the same rate
// (NTP slews both), and differ only by a step of the wall clock: one is
// noticed within rebaseEvery. So an entry is served at most rebaseEvery
// past the moment the wall clock reaches its expiry, whatever the steps.
const rebaseEvery = time.Millisecond

// monoStart is the origin of monotonic readings.
var monoStart = time.Now()

// wallBase is a reading of both clocks at one moment.
type wallBase struct {
	wall int64         // Unix nanoseconds
	mono time.Duration // since monoStart
}

// wallClock is the wall clock read at most every rebaseEvery. It is safe
// for concurrent use; its zero value reads the wall clock on first use.
type wallClock struct {
	base atomic.Pointer[wallBase] // the newest reading; never replaced by an older one
}

// wallNow is the clock of hits.
var wallNow wallClock

// monoNow reads the monotonic clock, as time since monoStart.
func monoNow() time.Duration { return time.Since(monoStart) }

// at returns the wall-clock time at mono, a monotonic reading just taken,
// in Unix nanoseconds: carried forward from a reading of the last
// rebaseEvery, else read afresh.
func (c *wallClock) at(mono time.Duration) int64 {
	if b := c.base.Load(); b != nil {
		if d := mono - b.mono; d >= 0 && d < rebaseEvery {
			return b.wall + int64(d)
		}
	}
	return c.read()
}

// read reads the wall clock afresh and makes it the base, unless another
// goroutine installed a newer one meanwhile, and returns it.
func (c *wallClock) read() int64 {
	t := time.Now()
	nb := &wallBase{wall: t.UnixNano(), mono: t.Sub(monoStart)}
	for {
		old := c.base.Load()
		if old != nil && old.mono >= nb.mono || c.base.CompareAndSwap(old, nb) {
			return nb.wall
		}
	}
}

// lastMono returns the monotonic time of the newest reading, which lags
// behind by as long as nobody read the clock: cheap enough for every otter
// operation. It never decreases.
func (c *wallClock) lastMono() time.Duration {
	if b := c.base.Load(); b != nil {
		return b.mono
	}
	c.read()
	return c.base.Load().mono
}

// monoStartUnix is monoStart in Unix nanoseconds.
var monoStartUnix = monoStart.UnixNano()

// memClock is the in-process store's clock for otter: as otter's own, the
// time of the process's start carried forward on the monotonic clock, but
// as wallNow last read it. Hits read it at least every rebaseEvery while
// they come, and its ticks (otter's periodic clean-up) read it afresh, so
// it lags by at most about a second. It never runs ahead, and a fill reads
// the clock afresh before it stores, so otter never drops an entry before
// its TTL; it may drop one up to the lag late, so a lookup checks the
// entry's deadline itself, on a fresh reading.
type memClock struct {
	stop     chan struct{} // closed by close: the ticks end
	stopOnce sync.Once
}

func newMemClock() *memClock { return &memClock{stop: make(chan struct{})} }

// NowNano returns the time of the last reading of wallNow.
func (c *memClock) NowNano() int64 { return monoStartUnix + int64(wallNow.lastMono()) }

// Tick delivers ticks every d, each after a fresh reading of wallNow, until
// close, or until the clock is collected (its store dropped unclosed).
// otter calls it once, for its periodic clean-up.
func (c *memClock) Tick(d time.Duration) <-chan time.Time {
	out := make(chan time.Time)
	go tickMem(weak.Make(c), c.stop, d, out)
	return out
}

// tickMem runs Tick's ticks. It holds the clock weakly, as otter holds its
// cache, so that it ends once neither is reachable.
func tickMem(wc weak.Pointer[memClock], stop <-chan struct{}, d time.Duration, out chan<- time.Time) {
	t := time.NewTicker(d)
	defer t.Stop()
	defer close(out) // otter's goroutine ends on a closed channel
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if wc.Value() == nil {
				return
			}
			wallNow.read()
			select {
			case out <- now:
			default: // otter is cleaning up still, or gone: a tick may be missed
			}
		}
	}
}

// close ends the ticks.
func (c *memClock) close() { c.stopOnce.Do(func() { close(c.stop) }) }
