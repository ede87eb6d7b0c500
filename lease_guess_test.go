package cachedpq

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// pausePipeline is a go-redis hook that, once armed, holds back the reply
// of the next pipeline after Redis ran it, until resume is closed: another
// reader's round trip then comes between the pipeline and its caller.
type pausePipeline struct {
	armed  atomic.Bool
	ran    chan struct{}
	resume chan struct{}
}

func (h *pausePipeline) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pausePipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *pausePipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if h.armed.CompareAndSwap(true, false) {
			close(h.ran)
			<-h.resume
		}
		return err
	}
}

// TestHitLeaseClaimedMeanwhile: the lease pipeline takes the lease beside
// a current entry, and the answer says nobody holds it. Its token is
// registered here before the request leaves, so a load of this process
// told (by its own lookup, while the hit's answer is on its way) that the
// token holds the lease claims it, and loads under it. The hit's give-back
// must then leave the lease to that load: released, it no longer keeps
// the other processes' readers from loading too.
func TestHitLeaseClaimedMeanwhile(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testRedis(t).Options().Addr})
	t.Cleanup(func() { rdb.Close() })
	pause := &pausePipeline{ran: make(chan struct{}), resume: make(chan struct{})}
	rdb.AddHook(pause)
	_, c, _ := engineDB(t, rdb)
	e := c.eng
	rb := e.direct.(*redisBackend)
	ctx := context.Background()
	key, tags := c.opts.Prefix+":kv:hitclaim", []string{"public.kv", epochTag}

	// A first lookup checks the server, which gives the namespace its epoch.
	_, _, _, err := e.storeLookup(ctx, key+":warm", tags)
	must(t, err)
	e.bg.Wait()
	stamps, err := rb.readStamps(ctx, tags)
	must(t, err)
	now := time.Now()
	ent := &entry{stamps: stamps, created: now.UnixNano(), expires: now.Add(time.Hour).UnixNano(),
		snap: snapshot{columns: []column{{name: "v"}}}}
	must(t, rb.fill(ctx, key, ent, time.Hour, tags))

	// The hit: its pipeline takes the lease, and its answer is held back.
	pause.armed.Store(true)
	hit := make(chan error, 1)
	go func() {
		got, _, holder, err := e.storeLookup(ctx, key, tags)
		if err == nil && (got == nil || holder != 0) {
			t.Errorf("the hit: entry %v, holder %d", got, holder)
		}
		hit <- err
	}()
	<-pause.ran
	// An early refresh of the entry asks for the lease meanwhile: it is
	// told the hit's token holds it, and claims it.
	r := &read{key: key, tags: tags, replaces: ent.created}
	got, load, err := e.takeLease(ctx, r, stamps)
	must(t, err)
	if got != nil || !load || r.held == nil {
		t.Fatalf("the refresh: entry %v, load %v, held %+v", got, load, r.held)
	}
	close(pause.resume)
	must(t, <-hit)
	e.bg.Wait()
	if v := rdb.Get(ctx, leaseKey(key)).Val(); v != formatStamp(r.held.token)+"|"+stampTag(stamps) {
		t.Fatalf("the refresh loads under lease %d, but Redis holds %q", r.held.token, v)
	}
	e.releaseLease(r)
}

// TestExpiredHitLeaseFree: a lookup that finds its entry expired (current
// stamps, past its expiry: kept for StaleFor, or for the query's time) is
// answered as the script answers it, a current entry that nobody leases;
// the reader that reloads it then asks for the lease (takeLease), and must
// get it at once, as it did after the script. The lease pipeline takes
// the lease beside the entry and gives it back in the background: the
// reload finds it held, by a lease of this very process that no load will
// use, and waits leasePollMin and two more round trips for the give-back
// (or, should the give-back fail, until the lease expires).
func TestExpiredHitLeaseFree(t *testing.T) {
	_, c, _ := engineDB(t, testRedis(t))
	e := c.eng
	rb := e.direct.(*redisBackend)
	ctx := context.Background()
	tags := []string{"public.kv", epochTag}
	_, _, _, err := e.storeLookup(ctx, c.opts.Prefix+":kv:warm", tags) // checks the server
	must(t, err)
	e.bg.Wait()
	held := 0
	for i := range 20 {
		key := fmt.Sprintf("%s:kv:expired%d", c.opts.Prefix, i)
		stamps, err := rb.readStamps(ctx, tags)
		must(t, err)
		now := time.Now()
		ent := &entry{stamps: stamps, created: now.Add(-2 * time.Hour).UnixNano(), expires: now.Add(-time.Hour).UnixNano(),
			snap: snapshot{columns: []column{{name: "v"}}}}
		must(t, rb.fill(ctx, key, ent, time.Hour, tags))
		got, seen, _, err := e.storeLookup(ctx, key, tags)
		must(t, err)
		if got == nil || !sameStamps(got.stamps, seen) {
			t.Fatalf("the lookup found no current entry: %v", got)
		}
		r := &read{key: key, tags: tags}
		if got, load, err := e.takeLease(ctx, r, seen); err != nil || got != nil {
			t.Fatalf("the reload: entry %v, %v", got, err)
		} else if !load {
			held++
		}
		e.releaseLease(r)
		e.bg.Wait()
	}
	if held != 0 {
		t.Fatalf("the reload of an expired entry found the lease held %d times of 20", held)
	}
}

// splitPipeline is a go-redis hook that, once armed, runs the next
// pipeline's first command, calls between, then runs the rest: Redis does
// not promise to run a pipeline's commands without other clients' commands
// between them. A transaction's come before it (EXEC runs them at once).
type splitPipeline struct {
	armed   atomic.Bool
	between func()
}

func (h *splitPipeline) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *splitPipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *splitPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) < 2 || !h.armed.CompareAndSwap(true, false) {
			return next(ctx, cmds)
		}
		if cmds[0].Name() == "multi" { // nothing comes between MULTI and EXEC
			h.between()
			return next(ctx, cmds)
		}
		err := next(ctx, cmds[:1])
		h.between()
		if err2 := next(ctx, cmds[1:]); err == nil {
			err = err2
		}
		return err
	}
}

// TestLeaseByGuessInterleaved: the holder of the lease fills the entry and
// lets the lease go between the pipeline's MGET and its SET. The script,
// run before or after, would answer "that holder" or "a current entry";
// the pipeline must not answer "a stale entry, and the lease is yours",
// which loads the entry a second time.
func TestLeaseByGuessInterleaved(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testRedis(t).Options().Addr})
	t.Cleanup(func() { rdb.Close() })
	split := &splitPipeline{}
	rdb.AddHook(split)
	ctx := testCtx(t)
	s := newRedisStore(rdb, testPrefix(t, rdb))
	key, tags := s.prefix+":e:split", []string{"a"}
	stamps, err := s.readStamps(ctx, tags)
	must(t, err)
	other := newStamp()
	must(t, rdb.Set(ctx, leaseKey(key), formatStamp(other)+"|"+stampTag(stamps), time.Minute).Err())
	cur := stampTag(stamps) + "|entry"
	split.between = func() {
		must(t, s.fillReleasing(ctx, key, []byte(cur), time.Minute, tags, other))
	}
	split.armed.Store(true)
	tok := newStamp()
	val, _, holder, err := s.lookupLease(ctx, key, tags, time.Minute, false, tok)
	must(t, err)
	if holder == tok && string(val) != cur {
		t.Fatalf("the lookup took the lease beside a stale entry (%q) that its holder had filled meanwhile", val)
	}
}

// TestLeaseByGuessForeignLease: a lease key of another type fails the SET
// in the transaction, not the MGET: the script replaces it.
func TestLeaseByGuessForeignLease(t *testing.T) {
	c := testRedis(t)
	ctx := testCtx(t)
	s := newRedisStore(c, testPrefix(t, c))
	key, tags := s.prefix+":e:foreign", []string{"a"}
	stamps, err := s.readStamps(ctx, tags)
	must(t, err)
	must(t, c.RPush(ctx, leaseKey(key), "x").Err())
	tok := newStamp()
	_, got, holder, err := s.lookupLease(ctx, key, tags, time.Minute, false, tok)
	must(t, err)
	if holder != tok || !slices.Equal(got, stamps) || c.Get(ctx, leaseKey(key)).Val() != formatStamp(tok)+"|"+stampTag(stamps) {
		t.Fatalf("foreign lease: holder %d (want %d), stamps %v (want %v)", holder, tok, got, stamps)
	}
}
