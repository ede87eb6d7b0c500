package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/cachedpq/cachedpq"
)

// progress draws a one-line bar on w while a run lasts.
type progress struct {
	done chan struct{}
	wg   sync.WaitGroup
}

// startProgress starts the bar, or does nothing when show is false.
func startProgress(w io.Writer, show bool, label string, total time.Duration, ops *atomic.Uint64) *progress {
	p := &progress{done: make(chan struct{})}
	if !show {
		return p
	}
	start := time.Now()
	p.wg.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.done:
				drawBar(w, label, min(time.Since(start), total), total, ops.Load())
				fmt.Fprintln(w)
				return
			case <-tick.C:
				drawBar(w, label, min(time.Since(start), total), total, ops.Load())
			}
		}
	})
	return p
}

func drawBar(w io.Writer, label string, elapsed, total time.Duration, ops uint64) {
	const width = 30
	filled := int(float64(width) * elapsed.Seconds() / total.Seconds())
	bar := strings.Repeat("#", filled) + strings.Repeat(".", width-filled)
	rate := float64(ops) / max(elapsed.Seconds(), 0.001)
	fmt.Fprintf(w, "\r%-22s [%s] %4.1fs/%.0fs %9d ops %8.0f ops/s", label, bar, elapsed.Seconds(), total.Seconds(), ops, rate)
}

// finish stops the bar and ends its line.
func (p *progress) finish() {
	close(p.done)
	p.wg.Wait()
}

// writeComparison prints the side-by-side table.
func writeComparison(w io.Writer, o demoOpts, store string, raw, cached result) {
	fmt.Fprintf(w, "\n%d workers, %.0f%% reads (%.0f%% point lookup, %.0f%% 50-row page, %.0f%% aggregate), %.0f%% writes, %s per run\n\n",
		o.workers, 100*(1-o.writes), 100*shareProduct, 100*shareCategory, 100*(1-shareProduct-shareCategory), 100*o.writes, o.duration)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\traw lib/pq\t%s\t\n", store)
	fmt.Fprintf(tw, "throughput (ops/s)\t%.0f\t%.0f\t\n", raw.throughput(), cached.throughput())
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50 latency", 0.50}, {"p95 latency", 0.95}, {"p99 latency", 0.99}} {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", q.name, ms(raw.percentile(q.q)), ms(cached.percentile(q.q)))
	}
	fmt.Fprintf(tw, "operations\t%d\t%d\t\n", raw.reads+raw.writes, cached.reads+cached.writes)
	fmt.Fprintf(tw, "hit rate\t-\t%.1f%%\t\n", 100*cached.hitRatio)
	tw.Flush()
	if raw.throughput() > 0 {
		fmt.Fprintf(w, "\ncachedpq: %.1fx the throughput of raw lib/pq\n", cached.throughput()/raw.throughput())
	}
}

// ms renders a latency in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
}

// showInvalidation reads a cached row, updates it through cachedpq and
// reads it again, checking that the new value is served.
func (d *demoEnv) showInvalidation(ctx context.Context) error {
	const id = 1
	fmt.Fprintf(d.s.out, "\nread-your-writes: product %d through cachedpq\n", id)
	if _, _, err := d.readPrice(ctx, id); err != nil { // make sure it is cached
		return err
	}
	before, how, err := d.readPrice(ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.s.out, "  read    price %s   (%s)\n", before, how)
	if _, err := d.cachedDB.ExecContext(ctx, "update products set price = price + 1 where id = $1", id); err != nil {
		return err
	}
	fmt.Fprintf(d.s.out, "  UPDATE products SET price = price + 1 WHERE id = %d   (replaces the products stamp)\n", id)
	after, how, err := d.readPrice(ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.s.out, "  read    price %s   (%s)\n", after, how)
	if err := checkIncrement(before, after); err != nil {
		return err
	}
	writeStats(d.s.out, d.conn.Stats())
	return nil
}

// readPrice reads a product's price and says how it was served.
func (d *demoEnv) readPrice(ctx context.Context, id int) (price, how string, err error) {
	before := d.conn.Stats()
	var gotID, stock int
	var name string
	err = d.cachedDB.QueryRowContext(ctx, qProduct, id).Scan(&gotID, &name, &price, &stock)
	after := d.conn.Stats()
	switch {
	case after.Hits > before.Hits:
		how = "cache hit"
	case after.Stale > before.Stale:
		how = "stale entry rejected, read from Postgres"
	default:
		how = "cache miss, read from Postgres"
	}
	return price, how, err
}

// checkIncrement verifies that after is before plus one: the write was seen.
func checkIncrement(before, after string) error {
	b, err1 := strconv.ParseFloat(before, 64)
	a, err2 := strconv.ParseFloat(after, 64)
	if err1 != nil || err2 != nil || fmt.Sprintf("%.2f", b+1) != fmt.Sprintf("%.2f", a) {
		return fmt.Errorf("read after write returned price %s, want %s + 1", after, before)
	}
	return nil
}

// writeStats prints the Connector's main counters.
func writeStats(w io.Writer, s cachedpq.Stats) {
	fmt.Fprintf(w, "\ncache stats: %d hits, %d misses, %d stale, %d coalesced, %d fills (%s raw, %s stored), %d invalidations, %d cache errors\n",
		s.Hits, s.Misses, s.Stale, s.Coalesced, s.Fills, human(int64(s.FillBytesRaw)), human(int64(s.FillBytes)), s.Invalidations, s.CacheErrors)
	fmt.Fprintf(w, "cache lookup p50/p99 %s / %s; Postgres load p50/p99 %s / %s\n",
		ms(s.CacheLatency.P50), ms(s.CacheLatency.P99), ms(s.DBLatency.P50), ms(s.DBLatency.P99))
}
