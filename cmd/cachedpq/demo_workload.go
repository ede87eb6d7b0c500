package main

import (
	"context"
	"database/sql"
	"math"
	"math/rand"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Read mix: the share of reads that are point lookups and category pages;
// the rest are aggregates.
const (
	shareProduct  = 0.6
	shareCategory = 0.3
	// zipfS skews ids and categories: a few are hot, as in real traffic.
	zipfS = 1.1
)

// result is what one run measured.
type result struct {
	label         string
	reads, writes uint64
	elapsed       time.Duration
	lat           []time.Duration // every operation's latency, sorted
	cached        bool
	hitRatio      float64
}

func (r result) throughput() float64 {
	return float64(r.reads+r.writes) / r.elapsed.Seconds()
}

// percentile returns the latency at quantile q (nearest rank).
func (r result) percentile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(r.lat)))) - 1
	return r.lat[max(i, 0)]
}

// runRaw runs the workload through lib/pq alone.
func (d *demoEnv) runRaw(ctx context.Context) (result, error) {
	db, err := d.openRaw()
	if err != nil {
		return result{}, err
	}
	defer db.Close()
	return d.run(ctx, "raw lib/pq", db)
}

// runCached runs the workload through cachedpq; the DB stays open for the
// invalidation that follows.
func (d *demoEnv) runCached(ctx context.Context) (result, error) {
	db, err := d.openCached()
	if err != nil {
		return result{}, err
	}
	d.cachedDB = db
	r, err := d.run(ctx, d.storeName(), db)
	r.cached, r.hitRatio = true, d.conn.Stats().HitRatio()
	return r, err
}

// run drives the workers for the configured duration. Operations are not
// cancelled at the deadline: each worker finishes its current one, so no
// query is cut short and counted.
func (d *demoEnv) run(ctx context.Context, label string, db *sql.DB) (result, error) {
	db.SetMaxOpenConns(d.o.workers)
	db.SetMaxIdleConns(d.o.workers)
	var stop atomic.Bool
	timer := time.AfterFunc(d.o.duration, func() { stop.Store(true) })
	defer timer.Stop()
	var ops atomic.Uint64
	bar := startProgress(d.s.err, d.o.progress, label, d.o.duration, &ops)
	start := time.Now()
	workers := make([]*worker, d.o.workers)
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	for i := range workers {
		workers[i] = newWorker(db, d.o, int64(i))
		wg.Go(func() {
			if err := workers[i].loop(ctx, &stop, &ops); err != nil {
				errOnce.Do(func() { firstErr = err; stop.Store(true) })
			}
		})
	}
	wg.Wait()
	r := result{label: label, elapsed: time.Since(start)}
	bar.finish()
	for _, w := range workers {
		r.reads += w.reads
		r.writes += w.writes
		r.lat = append(r.lat, w.lat...)
	}
	slices.Sort(r.lat)
	return r, firstErr
}

// worker is one client: its own random source and key distributions.
type worker struct {
	db            *sql.DB
	writeShare    float64 // fraction of operations that write
	r             *rand.Rand
	ids, cats     *rand.Zipf
	reads, writes uint64
	lat           []time.Duration
}

func newWorker(db *sql.DB, o demoOpts, seed int64) *worker {
	r := rand.New(rand.NewSource(seed + 1))
	return &worker{
		db: db, writeShare: o.writes, r: r,
		ids:  rand.NewZipf(r, zipfS, 1, uint64(o.rows-1)),
		cats: rand.NewZipf(r, zipfS, 1, categories-1),
		lat:  make([]time.Duration, 0, 1<<14),
	}
}

// loop runs operations until stop is set or ctx ends.
func (w *worker) loop(ctx context.Context, stop *atomic.Bool, ops *atomic.Uint64) error {
	for !stop.Load() && ctx.Err() == nil {
		start := time.Now()
		write, err := w.op(ctx)
		if err != nil {
			return err
		}
		w.lat = append(w.lat, time.Since(start))
		if write {
			w.writes++
		} else {
			w.reads++
		}
		ops.Add(1)
	}
	return ctx.Err()
}

// op runs one random operation and reports whether it wrote.
func (w *worker) op(ctx context.Context) (bool, error) {
	x := w.r.Float64()
	if x < w.writeShare {
		_, err := w.db.ExecContext(ctx, qOrder, w.ids.Uint64()+1, 1+w.r.Intn(5))
		return true, err
	}
	x = (x - w.writeShare) / (1 - w.writeShare) // uniform again over the reads
	switch {
	case x < shareProduct:
		return false, drain(w.db.QueryContext(ctx, qProduct, w.ids.Uint64()+1))
	case x < shareProduct+shareCategory:
		return false, drain(w.db.QueryContext(ctx, qCategory, w.cats.Uint64()))
	default:
		return false, drain(w.db.QueryContext(ctx, qStats, 100*w.r.Intn(categories/100)))
	}
}

// drain scans every row, as an application would, and closes the rows.
func drain(rows *sql.Rows, err error) error {
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
	}
	return rows.Err()
}
