package cachedpq

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedLookups is a lookupGroup whose lookups block until released, and
// which records how many were sent.
type gatedLookups struct {
	g       lookupGroup
	sent    atomic.Int64
	started chan int64    // the number of each lookup as it is sent
	release chan struct{} // one receive lets one lookup return
}

func newGatedLookups() *gatedLookups {
	gl := &gatedLookups{started: make(chan int64, 16), release: make(chan struct{})}
	gl.g.timeout = time.Minute
	gl.g.fn = func(ctx context.Context, key string, tags []string) (*entry, []uint64, uint64, error) {
		n := gl.sent.Add(1)
		gl.started <- n
		select {
		case <-gl.release:
		case <-ctx.Done():
			return nil, nil, 0, ctx.Err()
		}
		return &entry{created: n}, []uint64{uint64(n)}, 0, nil
	}
	return gl
}

func (gl *gatedLookups) do(ctx context.Context, key string, tags ...string) (int64, error) {
	ent, _, _, err := gl.g.do(ctx, key, tags)
	if err != nil {
		return 0, err
	}
	return ent.created, nil
}

// waitSlot waits until key's slot has a joinable next lookup.
func (gl *gatedLookups) waitNext(t *testing.T, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		gl.g.mu.Lock()
		s := gl.g.keys[key]
		ok := s != nil && s.next != nil
		gl.g.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no reader joined the next lookup")
}

func TestLookupGroupNeverAnswersWithAnEarlierLookup(t *testing.T) {
	gl := newGatedLookups()
	ctx := context.Background()
	first := make(chan int64)
	go func() { n, _ := gl.do(ctx, "k", "t"); first <- n }()
	if n := <-gl.started; n != 1 {
		t.Fatalf("first lookup is #%d", n)
	}
	// Lookup #1 is on its way: readers who arrive now must not share it.
	var wg sync.WaitGroup
	got := make([]int64, 5)
	for i := range got {
		wg.Go(func() { got[i], _ = gl.do(ctx, "k", "t") })
	}
	gl.waitNext(t, "k")
	time.Sleep(20 * time.Millisecond) // let the other readers join too
	gl.release <- struct{}{}
	if n := <-first; n != 1 {
		t.Fatalf("first reader got lookup #%d", n)
	}
	if n := <-gl.started; n != 2 {
		t.Fatalf("second lookup is #%d", n)
	}
	gl.release <- struct{}{}
	wg.Wait()
	for i, n := range got {
		if n < 2 {
			t.Errorf("reader %d arrived after lookup #1 was sent but got its answer", i)
		}
	}
	if s := gl.sent.Load(); s > 3 {
		t.Errorf("%d lookups for 6 readers in two waves", s)
	}
	gl.g.mu.Lock()
	defer gl.g.mu.Unlock()
	if len(gl.g.keys) != 0 {
		t.Errorf("slots left behind: %v", gl.g.keys)
	}
}

func TestLookupGroupWaiterHonoursItsContext(t *testing.T) {
	gl := newGatedLookups()
	go gl.do(context.Background(), "k", "t")
	<-gl.started
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := gl.do(ctx, "k", "t"); done <- err }()
	gl.waitNext(t, "k")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter got %v", err)
	}
	// The lookup it waited for is still sent, for whoever joins it later.
	gl.release <- struct{}{}
	<-gl.started
	gl.release <- struct{}{}
	waitFor(t, func() bool {
		gl.g.mu.Lock()
		defer gl.g.mu.Unlock()
		return len(gl.g.keys) == 0
	})
}

func TestLookupGroupSharesOnlyIdenticalTags(t *testing.T) {
	gl := newGatedLookups()
	go gl.do(context.Background(), "k", "a")
	<-gl.started
	done := make(chan int64)
	go func() { n, _ := gl.do(context.Background(), "k", "b"); done <- n }()
	if n := <-gl.started; n != 2 {
		t.Fatalf("a reader with other tags waited: lookup #%d", n)
	}
	gl.release <- struct{}{}
	gl.release <- struct{}{}
	<-done
}
