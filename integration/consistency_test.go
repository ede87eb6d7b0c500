package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/cachedpq/cachedpq"
	"github.com/cachedpq/cachedpq/internal/redistest"
)

// The consistency checker: goroutines of this process and of a second one
// read and write a small table through cachedpq while Redis is killed,
// stalled and restarted, and every operation is recorded with its start and
// end. Each write increments one row's version and returns it, so a read
// that began after a write had returned must see that version or a later
// one. Times are wall-clock nanoseconds: both processes run on this
// machine and read the same clock.

// Consistency run settings; CACHEDPQ_CONSISTENCY_DURATION overrides the
// run's length.
const (
	cellCount       = 8
	parentWorkers   = 6
	helperWorkers   = 3
	defaultDuration = 8 * time.Second
)

const cellsDDL = `create table cells (id int8 primary key, v int8 not null default 0);
	insert into cells (id) select generate_series(1, 8)`

// The registered reads and the two write forms.
const (
	cellQuery  = `select v from cells where id = $1`
	cellsQuery = `select id, v from cells order by id`
	bumpCell   = `update cells set v = v + 1 where id = $1 returning v`
)

// op is one recorded operation: a write returned version V of cell ID; a
// read saw version V of it.
type op struct {
	Write bool  `json:"w"`
	ID    int64 `json:"id"`
	V     int64 `json:"v"`
	Start int64 `json:"s"`
	End   int64 `json:"e"`
	Proc  int   `json:"p"`
}

// opLog collects a process's operations.
type opLog struct {
	mu   sync.Mutex // guards ops and errs
	ops  []op
	errs []string
}

func (l *opLog) add(ops ...op) {
	l.mu.Lock()
	l.ops = append(l.ops, ops...)
	l.mu.Unlock()
}

func (l *opLog) fail(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err.Error())
	l.mu.Unlock()
}

// runMix runs workers goroutines of random reads and writes on db until
// the deadline, recording into log as process proc.
func runMix(db *sqlx.DB, workers, proc int, until time.Time, log *opLog) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(until) {
				if err := oneMixOp(db, proc, log); err != nil {
					log.fail(err)
				}
			}
		})
	}
	wg.Wait()
}

// oneMixOp runs one random operation: 76% point reads, 20% list reads, 2%
// autocommit writes, 2% writes in a transaction. Writes are rare enough
// that most reads between faults are served from the cache.
func oneMixOp(db *sqlx.DB, proc int, log *opLog) error {
	id := rand.Int64N(cellCount) + 1
	start := time.Now().UnixNano()
	switch n := rand.IntN(100); {
	case n < 76:
		var v int64
		if err := db.Get(&v, cellQuery, id); err != nil {
			return fmt.Errorf("point read: %w", err)
		}
		log.add(op{ID: id, V: v, Start: start, End: time.Now().UnixNano(), Proc: proc})
	case n < 96:
		return listRead(db, proc, start, log)
	case n < 98:
		var v int64
		if err := db.QueryRow(bumpCell, id).Scan(&v); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		log.add(op{Write: true, ID: id, V: v, Start: start, End: time.Now().UnixNano(), Proc: proc})
	default:
		return txWrite(db, id, proc, start, log)
	}
	return nil
}

// listRead reads every cell through the registered list query.
func listRead(db *sqlx.DB, proc int, start int64, log *opLog) error {
	var cells []struct{ ID, V int64 }
	if err := db.Select(&cells, cellsQuery); err != nil {
		return fmt.Errorf("list read: %w", err)
	}
	end := time.Now().UnixNano()
	for _, c := range cells {
		log.add(op{ID: c.ID, V: c.V, Start: start, End: end, Proc: proc})
	}
	return nil
}

// txWrite increments a cell inside a transaction; it has committed when
// Commit returns.
func txWrite(db *sqlx.DB, id int64, proc int, start int64, log *opLog) error {
	tx, err := db.Beginx()
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	var v int64
	if err := tx.QueryRow(bumpCell, id).Scan(&v); err != nil {
		tx.Rollback()
		return fmt.Errorf("tx write: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	log.add(op{Write: true, ID: id, V: v, Start: start, End: time.Now().UnixNano(), Proc: proc})
	return nil
}

// violation is a read that returned a version older than a write which
// had returned before the read began.
type violation struct {
	read  op
	write op
}

// check returns the reads that missed a write committed before they
// began, and the reads that saw a version no write had yet started.
func check(ops []op) (stale []violation, phantom []op) {
	writes := map[int64][]op{}
	for _, o := range ops {
		if o.Write {
			writes[o.ID] = append(writes[o.ID], o)
		}
	}
	for id := range writes {
		sort.Slice(writes[id], func(i, j int) bool { return writes[id][i].End < writes[id][j].End })
	}
	for _, r := range ops {
		if r.Write {
			continue
		}
		ws := writes[r.ID]
		// The newest version among writes that ended before r started.
		n := sort.Search(len(ws), func(i int) bool { return ws[i].End >= r.Start })
		newest := op{}
		for _, w := range ws[:n] {
			if w.V > newest.V {
				newest = w
			}
		}
		if r.V < newest.V {
			stale = append(stale, violation{read: r, write: newest})
		}
		if r.V > 0 && !slices.ContainsFunc(ws, func(w op) bool { return w.V == r.V && w.Start < r.End }) {
			phantom = append(phantom, r)
		}
	}
	return stale, phantom
}

// faultSchedule kills, stalls and restarts srv at random until the
// deadline, returning the count of each fault.
func faultSchedule(srv *redistest.Server, until time.Time) map[string]int {
	counts := map[string]int{}
	for time.Until(until) > time.Second {
		time.Sleep(time.Duration(800+rand.IntN(800)) * time.Millisecond)
		switch rand.IntN(3) {
		case 0:
			srv.Kill()
			time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
			srv.Restart(false)
			counts["kill+restart empty"]++
		case 1:
			srv.Pause()
			time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
			srv.Resume()
			counts["pause"]++
		default:
			counts["none"]++
		}
	}
	return counts
}

// TestConsistencyUnderFaults runs the checker. It fails on any caller
// error, any read older than a write that had returned before the read
// began, and any read of a version no write had started.
func TestConsistencyUnderFaults(t *testing.T) {
	duration := envDuration("CACHEDPQ_CONSISTENCY_DURATION", defaultDuration)
	srv := redistest.Start(t)
	env := newStressEnv(t, timedClient(t, srv.Addr), faultTimeout)
	mustExec(t, env.raw, cellsDDL)
	register := func(reg *cachedpq.Registry) {
		for _, q := range []string{cellQuery, cellsQuery} {
			if err := reg.Register(q, cachedpq.Policy{TTL: time.Minute, Beta: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	register(env.reg)
	out := filepath.Join(t.TempDir(), "helper.jsonl")
	cmd, helperOutput := startHelper(t, env, "consistency", helperOut+"="+out, helperRunFor+"="+duration.String())
	ctl := timedClient(t, redisAddr()) // the barrier lives in the shared test Redis, which no fault touches
	if err := ctl.Ping(context.Background()).Err(); err != nil {
		unavailable(t, "Redis", err)
	}
	var log opLog
	var faults map[string]int
	meetAt(t, ctl, env.prefix, 2)
	until := time.Now().Add(duration)
	done := make(chan struct{})
	go func() { defer close(done); faults = faultSchedule(srv, until) }()
	runMix(env.db, parentWorkers, 0, until, &log)
	<-done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, helperOutput)
	}
	helperOps := readOps(t, out)
	all := append(slices.Clone(log.ops), helperOps...)
	stale, phantom := check(all)
	reads, writes := 0, 0
	for _, o := range all {
		if o.Write {
			writes++
		} else {
			reads++
		}
	}
	s := env.stats()
	t.Logf("%v: %d operations (%d cell reads, %d writes; %d from the second process); faults %v; parent hits %d misses %d bypass %v; %s",
		duration, len(all), reads, writes, len(helperOps), faults, s.Hits, s.Misses, s.Bypass,
		lineWith(helperOutput.String(), "helper:"))
	if len(log.errs) > 0 {
		t.Errorf("caller errors: %d, first %v", len(log.errs), log.errs[:min(5, len(log.errs))])
	}
	for i, v := range stale[:min(len(stale), 10)] {
		t.Errorf("stale read %d: process %d read cell %d version %d, started %v after process %d's write of version %d returned",
			i, v.read.Proc, v.read.ID, v.read.V, time.Duration(v.read.Start-v.write.End), v.write.Proc, v.write.V)
	}
	if len(stale) > 0 || len(phantom) > 0 {
		t.Fatalf("%d stale reads, %d phantom reads", len(stale), len(phantom))
	}
}

// readOps reads the helper's operations.
func readOps(t *testing.T, path string) []op {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ops []op
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var o op
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, o)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ops
}

// helperConsistency is the second process of TestConsistencyUnderFaults:
// it runs the same mix and writes its operations to a file.
func helperConsistency(t *testing.T) {
	env, _ := helperConnector(t, faultTimeout)
	for _, q := range []string{cellQuery, cellsQuery} {
		env.register(t, q, cachedpq.Policy{TTL: time.Minute, Beta: 1})
	}
	ctl := timedClient(t, redisAddr())
	if err := barrier(ctl, env.prefix); err != nil {
		t.Fatal(err)
	}
	runFor, err := time.ParseDuration(os.Getenv(helperRunFor))
	if err != nil {
		t.Fatal(err)
	}
	var log opLog
	runMix(env.db, helperWorkers, 1, time.Now().Add(runFor), &log)
	if len(log.errs) > 0 {
		t.Fatalf("helper caller errors: %d, first %v", len(log.errs), log.errs[:min(5, len(log.errs))])
	}
	f, err := os.Create(os.Getenv(helperOut))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, o := range log.ops {
		if err := enc.Encode(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s := env.stats()
	fmt.Printf("helper: %d operations, hits %d misses %d\n", len(log.ops), s.Hits, s.Misses)
}
