package cachedpq

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
)

// Defaults for the zero values of Options.
const (
	defaultPrefix    = "cachedpq"
	defaultTimeout   = 50 * time.Millisecond
	defaultMaxMemory = 64 << 20

	defaultCatalogRefresh = time.Minute
)

// envRedisURL names the environment variable consulted when neither
// Options.Redis nor the DSN's cache_redis names a Redis server.
const envRedisURL = "CACHEDPQ_REDIS_URL"

// Options configures a Connector. The zero value works: it caches in an
// in-process store under the prefix "cachedpq", with the default registry.
// A Connector copies its Options; changing them afterwards has no effect.
type Options struct {
	// Redis is the shared cache. Nil means: the DSN's cache_redis, else the
	// CACHEDPQ_REDIS_URL environment variable, else the embedded in-process
	// store. A single node, Sentinel or Cluster client (a Ring, or a
	// Cluster client that reads from replicas, is refused: both can forget
	// invalidations). The Connector never closes a client it was given, and
	// adds a hook to it that counts its dials (see restarts.go). Create it
	// with ContextTimeoutEnabled: true, or go-redis ignores Timeout and a
	// stalled server holds each cache call for the client's ReadTimeout.
	Redis redis.UniversalClient

	// Prefix namespaces every key the Connector writes. Empty means
	// "cachedpq". Processes that share a prefix share entries.
	Prefix string

	// Timeout bounds one cache operation. Zero means 50ms. Past it the call
	// goes to Postgres as if the cache had missed. Operations whose context
	// cannot be cancelled (a Query without a context, background fills)
	// share one deadline per tick, and may run up to an eighth longer.
	Timeout time.Duration

	// MaxMemory bounds the embedded in-process store, in bytes. Zero means
	// 64 MiB. With Redis, a quarter of it bounds the values this process
	// keeps decoded, so that the hits of a hot key do not decode the same
	// bytes again (below 256 KiB, none are kept).
	MaxMemory int64

	// NoEarlyQueries makes the query of every registered read wait for
	// its cache lookup. Otherwise, with Redis, while at least three in
	// four lookups of keys this process has not looked up lately miss (a
	// cold cache, a keyspace larger than the cache), a read of such a key
	// sends its query at once and looks up in the background, once the
	// query is answered (or 1 ms after it was sent, for a query whose last
	// load took longer): its miss costs the query, not a round trip and
	// then the query. The lookup still takes the fill lease, so other
	// processes wait for this one's entry. When it finds a current entry
	// after all (another process stored it), the query was spent for
	// nothing; Stats.EarlyFound counts those.
	NoEarlyQueries bool

	// Prepare runs the Postgres query of a registered read's miss as a
	// named prepared statement, prepared once per connection (the DSN's
	// cache_prepare=true sets it too). lib/pq runs a query with arguments
	// in two round trips, Parse and Describe then Bind and Execute; a
	// prepared one costs only the second, so a miss costs a round trip less
	// than the query through lib/pq. Off by default, because a named
	// statement lives in its server session: behind a pooler in
	// transaction mode that does not track them (PgBouncer before 1.21, or
	// with max_prepared_statements 0) a statement may be missing, or be
	// another client's of the same name, and return its rows. Postgres may
	// also plan a prepared statement once for all arguments after five
	// runs (plan_cache_mode). Statements dropped behind the driver's back
	// (DEALLOCATE, DISCARD) or made stale by a change of their tables'
	// columns are run again unprepared and prepared anew. Reads in a
	// transaction, on a connection whose session changed, and queries
	// without arguments (one round trip already) are never prepared.
	Prepare bool

	// Identity names the database and role in cache keys for a Connector
	// made by Wrap, whose inner connector cannot be inspected. Connectors
	// wrapping different databases or roles must use different values.
	// NewConnector ignores it: it derives the identity from the DSN.
	Identity string

	// NoCatalog stops cachedpq from reading pg_catalog, for an inner
	// connector that is not PostgreSQL. Writes then invalidate only the
	// tables their text names: foreign-key cascades, writes through views,
	// views read by registered queries and volatile functions go unseen,
	// so Policy.Tags and the Invalidate methods must cover them.
	NoCatalog bool

	// CatalogRefresh is how long what cachedpq read from pg_catalog
	// serves before it is read again, so that schema changes made by other
	// processes (a migration adding a foreign key, a trigger, a view, a
	// partition) are followed; DDL through the Connector itself is followed
	// at once. Zero means one minute; negative, never.
	CatalogRefresh time.Duration

	// UnknownWrites narrows the invalidation of statements whose writes
	// the SQL text cannot show: CALL, DO, EXECUTE, DROP ... CASCADE, schema
	// changes not scoped to named tables (types, functions, schemas,
	// privileges, policies, roles), calls of volatile user functions whose
	// SQL or PL/pgSQL source does not show all they write, and writes to
	// tables whose triggers or rules the catalog cannot read. It receives
	// the normalized statement and returns the tables it writes beyond
	// those the text and the catalog show; ok false (or a nil func)
	// invalidates the whole namespace. A statement it narrows is trusted
	// not to change the session either; any other CALL, DO, EXECUTE or
	// such call stops its connection from using the cache, since that code
	// may call set_config (a tenant for row level security, a time zone)
	// as surely as SET does. It must be safe for concurrent use.
	UnknownWrites func(statement string) (tables []string, ok bool)

	// Registry holds the registered queries. Nil means the default registry
	// that Register fills.
	Registry *Registry

	// Logger receives cache failures and other events. Nil means nothing is
	// logged. Argument values and passwords are never logged.
	Logger *slog.Logger

	// OnError, if set, is called with every cache failure. The SQL caller
	// never sees these errors. It must be safe for concurrent use.
	OnError func(error)
}

// withDefaults returns a copy of o with its zero fields filled in.
func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = defaultPrefix
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.MaxMemory <= 0 {
		o.MaxMemory = defaultMaxMemory
	}
	if o.CatalogRefresh == 0 {
		o.CatalogRefresh = defaultCatalogRefresh
	}
	if o.Registry == nil {
		o.Registry = defaultRegistry
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// dsnSettings are the cache_* parameters of a DSN.
type dsnSettings struct {
	redisURL  string
	prefix    string
	timeout   time.Duration
	maxMemory int64
	prepare   bool
}

// parseDSN splits a lib/pq DSN (URL or key=value form) into the lib/pq
// configuration and the cache settings, which lib/pq never sees.
func parseDSN(dsn string) (pq.Config, dsnSettings, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return pq.Config{}, dsnSettings{}, err
	}
	var s dsnSettings
	for k, v := range cfg.Runtime {
		if !strings.HasPrefix(k, "cache_") {
			continue
		}
		delete(cfg.Runtime, k)
		if err := s.set(k, v); err != nil {
			return pq.Config{}, dsnSettings{}, fmt.Errorf("cachedpq: DSN parameter %s: %w", k, err)
		}
	}
	return cfg, s, nil
}

// set applies one cache_* parameter.
func (s *dsnSettings) set(key, val string) error {
	switch key {
	case "cache_redis":
		if _, err := redis.ParseURL(val); err != nil {
			return err
		}
		s.redisURL = val
	case "cache_prefix":
		if val == "" || strings.ContainsAny(val, " \t\r\n") {
			return fmt.Errorf("invalid prefix %q: must be non-empty without spaces", val)
		}
		s.prefix = val
	case "cache_timeout":
		d, err := time.ParseDuration(val)
		if err != nil || d <= 0 {
			return fmt.Errorf("invalid duration %q: want a positive Go duration such as 50ms", val)
		}
		s.timeout = d
	case "cache_max_memory":
		n, err := parseBytes(val)
		if err != nil {
			return err
		}
		s.maxMemory = n
	case "cache_prepare":
		b, err := strconv.ParseBool(val)
		if err != nil {
			return fmt.Errorf("invalid boolean %q: want true or false", val)
		}
		s.prepare = b
	default:
		return fmt.Errorf("unknown cache parameter (known: cache_redis, cache_prefix, cache_timeout, cache_max_memory, cache_prepare)")
	}
	return nil
}

// apply fills the fields of o that the application left zero from the DSN
// settings and the environment: explicit Options win over the DSN.
func (s dsnSettings) apply(o Options) (Options, string, error) {
	if o.Prefix == "" {
		o.Prefix = s.prefix
	}
	if o.Timeout == 0 {
		o.Timeout = s.timeout
	}
	if o.MaxMemory == 0 {
		o.MaxMemory = s.maxMemory
	}
	o.Prepare = o.Prepare || s.prepare
	url := s.redisURL
	if url == "" {
		url = os.Getenv(envRedisURL)
		if url != "" {
			if _, err := redis.ParseURL(url); err != nil {
				return o, "", fmt.Errorf("cachedpq: %s: %w", envRedisURL, err)
			}
		}
	}
	return o, url, nil
}

// parseBytes reads a size such as 1048576, 512KiB, 64MiB or 1GiB.
func parseBytes(val string) (int64, error) {
	units := []struct {
		suffix string
		scale  int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	num, scale := val, int64(1)
	for _, u := range units {
		if strings.HasSuffix(val, u.suffix) {
			num, scale = strings.TrimSuffix(val, u.suffix), u.scale
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/scale {
		return 0, fmt.Errorf("invalid size %q: want a positive number of bytes such as 64MiB", val)
	}
	return n * scale, nil
}
