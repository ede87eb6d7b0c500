package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cachedpq/cachedpq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// redisFlags are the flags every command that talks to Redis shares.
type redisFlags struct {
	url     string
	prefix  string
	timeout time.Duration
}

func (f *redisFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.url, "redis", "", "Redis URL such as redis://127.0.0.1:6379/0 (default $"+envRedis+")")
	cmd.Flags().StringVar(&f.prefix, "prefix", "", `key prefix (namespace) of the cache (default the DSN's cache_prefix, else "cachedpq")`)
	cmd.Flags().DurationVar(&f.timeout, "timeout", 5*time.Second, "bound on each Redis operation")
}

// client connects to the Redis the flags or the environment name. A
// missing or malformed URL is a usage error; an unreachable server is not.
func (f *redisFlags) client(ctx context.Context) (*redis.Client, error) {
	url := f.url
	if url == "" {
		url = envOr(envRedis, "")
	}
	if url == "" {
		return nil, usagef("no Redis given: pass --redis URL or set %s (the in-process cache of a running application cannot be reached from here)", envRedis)
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, usagef("--redis: %v", err)
	}
	opts.ReadTimeout, opts.WriteTimeout, opts.DialTimeout = f.timeout, f.timeout, f.timeout
	c := redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", opts.Addr, err)
	}
	return c, nil
}

func newInvalidate(s streams) *cobra.Command {
	var rf redisFlags
	var tables []string
	var all bool
	var dsn string
	cmd := &cobra.Command{
		Use:   "invalidate (--table T ... | --all)",
		Short: "Invalidate cached entries after writes the driver did not see",
		Long: `invalidate replaces the stamps of the named tables in a Redis namespace, so
that no process sharing it serves an entry that read them; --all invalidates
every entry in the namespace. Use it after a migration, a psql session or
another application wrote behind the cache's back. Table names are folded as
in SQL: "public.Users" and users are the same table.`,
		Example: `  cachedpq invalidate --redis redis://127.0.0.1:6379 --table users --table orders
  CACHEDPQ_REDIS_URL=redis://127.0.0.1:6379 cachedpq invalidate --prefix shop --all`,
		Args: wrapArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			tables = splitList(tables)
			if all == (len(tables) > 0) {
				return usagef("give either --table (one or more) or --all")
			}
			return invalidate(cmd.Context(), s, rf, dsn, tables)
		},
	}
	rf.register(cmd)
	cmd.Flags().StringArrayVarP(&tables, "table", "t", nil, "table to invalidate; repeat or separate with commas")
	cmd.Flags().BoolVar(&all, "all", false, "invalidate every entry in the namespace")
	cmd.Flags().StringVar(&dsn, "dsn", "", "DSN of the application, for its cache_prefix (default $"+envDSN+"); Postgres is not contacted")
	return cmd
}

// invalidate bumps the stamps through a Connector, exactly as a write seen
// by the driver would; an empty table list means everything.
func invalidate(ctx context.Context, s streams, rf redisFlags, dsn string, tables []string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	client, err := rf.client(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	if dsn == "" {
		dsn = envOr(envDSN, "")
	}
	conn, err := cachedpq.NewConnector(dsn, cachedpq.Options{
		Redis: client, Prefix: rf.prefix, Timeout: rf.timeout, NoCatalog: true, Registry: cachedpq.NewRegistry(),
	})
	if err != nil {
		return usagef("--dsn: %v", err)
	}
	defer conn.Close() // waits for the purge of the invalidated entries
	prefix := conn.Prefix()
	if len(tables) == 0 {
		if err := conn.InvalidateAll(ctx); err != nil {
			return err
		}
		fmt.Fprintf(s.out, "invalidated every entry in namespace %q\n", prefix)
		return nil
	}
	if err := conn.InvalidateTables(ctx, tables...); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "invalidated %d table(s) in namespace %q: %s\n", len(tables), prefix, strings.Join(tables, ", "))
	return nil
}

// splitList splits comma-separated values and drops empty ones.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
