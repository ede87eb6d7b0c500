package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cachedpq/cachedpq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// demoOpts are the flags of demo.
type demoOpts struct {
	dsn      string
	redisURL string
	duration time.Duration
	rows     int
	workers  int
	writes   float64
	progress bool
}

func newDemo(s streams) *cobra.Command {
	var o demoOpts
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a mixed workload through raw lib/pq and through cachedpq, side by side",
		Long: `demo creates its own schema in a local Postgres with a products table of
--rows rows, registers three queries (a point lookup, a 50-row page and an
aggregate), and runs the same mixed workload (95% reads of products, 5%
inserts into orders by default) twice for --duration each: through raw
lib/pq, then through cachedpq (the in-process store, or Redis with --redis).
It prints throughput, p50/p95/p99 latency and hit rate side by side, shows an
UPDATE invalidating a cached row, and drops its schema, also on Ctrl-C.`,
		Example: `  cachedpq demo
  cachedpq demo --redis redis://127.0.0.1:6379 --duration 10s`,
		Args: wrapArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			if !cmd.Flags().Changed("progress") {
				o.progress = isTerminal(os.Stderr)
			}
			return runDemo(cmd.Context(), s, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dsn, "dsn", envOr(envDSN, defaultDSN), "Postgres DSN (lib/pq key=value or URL form)")
	f.StringVar(&o.redisURL, "redis", "", "cache in this Redis instead of the in-process store")
	f.DurationVar(&o.duration, "duration", 20*time.Second, "how long each of the two runs lasts")
	f.IntVar(&o.rows, "rows", 300_000, "rows in the products table")
	f.IntVar(&o.workers, "workers", 16, "concurrent clients")
	f.Float64Var(&o.writes, "writes", 0.05, "fraction of operations that write")
	f.BoolVar(&o.progress, "progress", false, "show a progress bar on stderr (default: when stderr is a terminal)")
	return cmd
}

func (o *demoOpts) validate() error {
	switch {
	case o.duration <= 0:
		return usagef("--duration must be positive")
	case o.rows < 1000:
		return usagef("--rows must be at least 1000")
	case o.workers < 1:
		return usagef("--workers must be at least 1")
	case o.writes < 0 || o.writes > 1:
		return usagef("--writes must be between 0 and 1")
	}
	if o.redisURL != "" {
		if _, err := redis.ParseURL(o.redisURL); err != nil {
			return usagef("--redis: %v", err)
		}
	}
	return nil
}

// isTerminal reports whether f is a character device, such as a terminal.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// runDemo runs the whole demo. Its schema is dropped however it ends,
// including on SIGINT and SIGTERM, which cancel the context.
func runDemo(parent context.Context, s streams, o demoOpts) (err error) {
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := newDemoEnv(ctx, s, o)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.cleanup()) }()
	if err := d.setup(ctx); err != nil {
		return interrupted(ctx, err)
	}
	raw, err := d.runRaw(ctx)
	if err != nil {
		return interrupted(ctx, err)
	}
	cached, err := d.runCached(ctx)
	if err != nil {
		return interrupted(ctx, err)
	}
	writeComparison(s.out, o, d.storeName(), raw, cached)
	return interrupted(ctx, d.showInvalidation(ctx))
}

// interrupted replaces the error of an interrupted run with a plain one.
func interrupted(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return errors.New("interrupted; the demo schema was dropped")
	}
	return err
}

// demoEnv is the demo's schema, databases and cache.
type demoEnv struct {
	s      streams
	o      demoOpts
	schema string
	admin  *sql.DB             // raw lib/pq on the base DSN, for setup and cleanup
	redis  *redis.Client       // nil for the in-process store
	conn   *cachedpq.Connector // behind cachedDB
	// cachedDB is the DB over conn; closing it closes conn.
	cachedDB *sql.DB
	reg      *cachedpq.Registry
}

// newDemoEnv connects to Postgres (and Redis) and names the schema.
func newDemoEnv(ctx context.Context, s streams, o demoOpts) (*demoEnv, error) {
	admin, err := sql.Open("postgres", o.dsn)
	if err != nil {
		return nil, usagef("--dsn: %v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := admin.PingContext(pctx); err != nil {
		admin.Close()
		return nil, fmt.Errorf("cannot reach Postgres (start it, or pass --dsn): %w", err)
	}
	d := &demoEnv{s: s, o: o, admin: admin, schema: fmt.Sprintf("cachedpq_demo_%d", os.Getpid())}
	if o.redisURL != "" {
		d.redis, err = (&redisFlags{url: o.redisURL, timeout: 5 * time.Second}).client(ctx)
		if err != nil {
			admin.Close()
			return nil, err
		}
	}
	return d, nil
}

// storeName names the cache for the table's heading.
func (d *demoEnv) storeName() string {
	if d.redis != nil {
		return "cachedpq (Redis)"
	}
	return "cachedpq (in-process)"
}
