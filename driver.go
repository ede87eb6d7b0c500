package cachedpq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
)

// DriverName is the name under which the driver registers with database/sql.
const DriverName = "cachedpq"

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.DriverContext = (*Driver)(nil)
	_ driver.Connector     = (*Connector)(nil)
	_ io.Closer            = (*Connector)(nil)
)

func init() {
	sql.Register(DriverName, registered)
	sqlx.BindDriver(DriverName, sqlx.DOLLAR)
}

// Driver is the database/sql driver registered as "cachedpq". Its DSN is
// anything lib/pq accepts plus the cache_* parameters described in the
// package documentation. Driver is safe for concurrent use.
type Driver struct {
	mu         sync.Mutex            // guards connectors
	connectors map[string]*Connector // by DSN, for the legacy Open path
}

// OpenConnector parses dsn and returns a Connector using the default
// registry. database/sql calls it from sql.Open, so a bad DSN or cache
// parameter is an error from sql.Open itself.
func (d *Driver) OpenConnector(dsn string) (driver.Connector, error) {
	return NewConnector(dsn, Options{})
}

// Open opens a connection for callers that use the driver without
// database/sql's connector support. Connectors are shared per DSN, so
// repeated calls do not open new cache clients.
func (d *Driver) Open(dsn string) (driver.Conn, error) {
	c, err := d.connector(dsn)
	if err != nil {
		return nil, err
	}
	return c.Connect(context.Background())
}

func (d *Driver) connector(dsn string) (*Connector, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.connectors[dsn]; ok {
		return c, nil
	}
	c, err := NewConnector(dsn, Options{})
	if err != nil {
		return nil, err
	}
	if d.connectors == nil {
		d.connectors = make(map[string]*Connector)
	}
	d.connectors[dsn] = c
	return c, nil
}

// Connector opens cached connections to Postgres. It is safe for concurrent
// use. Close it (sql.DB.Close does) to release the cache clients it owns.
type Connector struct {
	inner driver.Connector
	opts  Options
	id    identity
	owned redis.UniversalClient // created from a URL; closed by Close
	eng   *engine
	drv   boundDriver // what Driver returns

	// refused, if set, is why the Connector must not connect (see Wrap).
	refused error

	// binaryParams is lib/pq's binary_parameters: its CheckNamedValue
	// then turns values with a BinaryValue method into their bytes, and
	// InvalidateQuery must too.
	binaryParams bool

	// probes is set for lib/pq: each new connection answers probeQuery
	// (see probe.go).
	probes   bool
	settleMu sync.Mutex // serialises settling the identity
	settled  atomic.Bool
	// settings are the first connection's (see settingsQuery), written
	// before settled is set.
	settings       string
	warnedSettings atomic.Bool
}

// NewConnector returns a Connector for a lib/pq DSN with cache_* parameters.
// Fields set in opts win over the DSN's cache parameters.
func NewConnector(dsn string, opts Options) (*Connector, error) {
	cfg, settings, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	opts, redisURL, err := settings.apply(opts)
	if err != nil {
		return nil, err
	}
	inner, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, err
	}
	var owned redis.UniversalClient
	if opts.Redis == nil && redisURL != "" {
		ropts, err := redis.ParseURL(redisURL)
		if err != nil {
			return nil, err
		}
		// go-redis ignores context deadlines unless told otherwise: a stalled
		// server would then hold every cache call for its ReadTimeout (3s
		// and more) instead of Options.Timeout.
		ropts.ContextTimeoutEnabled = true
		owned = redis.NewClient(ropts)
		opts.Redis = owned
	}
	if err := readsFromPrimaries(opts.Redis); err != nil {
		return nil, err
	}
	if scsOff(cfg) {
		return nil, errSCSOff
	}
	c := newConnector(inner, opts, newIdentity(cfg))
	c.owned = owned
	c.probes = true
	c.binaryParams = cfg.BinaryParameters
	return c, nil
}

// errSCSOff refuses standard_conforming_strings=off, wherever it is set.
var errSCSOff = errors.New("cachedpq: standard_conforming_strings=off is not supported: the SQL analysis reads backslashes in strings as Postgres does when it is on")

// scsOff reports whether cfg may turn standard_conforming_strings off, as
// a runtime parameter in any case or in options (-c name=value or
// --name=value, where dashes stand for underscores): anything but a value
// Postgres reads as true.
func scsOff(cfg pq.Config) bool {
	for k, v := range cfg.Runtime {
		if strings.EqualFold(k, "standard_conforming_strings") && !pgTrue(v) {
			return true
		}
	}
	opts := strings.ReplaceAll(strings.ToLower(splitOpts(cfg.Options)), "-", "_")
	for rest := opts; ; {
		_, after, ok := strings.Cut(rest, "standard_conforming_strings")
		if !ok {
			return false
		}
		v, ok := strings.CutPrefix(strings.TrimLeft(after, " "), "=")
		if !ok {
			return true // not a form this reads: refuse rather than guess
		}
		if f := strings.Fields(v); len(f) == 0 || !pgTrue(f[0]) {
			return true
		}
		rest = after
	}
}

// splitOpts undoes the server's pg_split_opts escapes: options are split
// at whitespace, and a backslash makes the next character literal, so
// "-c standard_conforming_string\s=off" names the setting. The words are
// joined again with single spaces.
func splitOpts(s string) string {
	var words []string
	var w strings.Builder
	escaped, inWord := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			w.WriteByte(c)
			escaped, inWord = false, true
		case c == '\\':
			escaped, inWord = true, true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return strings.Join(words, " ")
}

// pgTrue reports whether Postgres's parse_bool reads v as true.
func pgTrue(v string) bool {
	v = strings.ToLower(strings.TrimSpace(v))
	switch {
	case v == "1" || v == "on":
		return true
	case v != "" && (strings.HasPrefix("true", v) || strings.HasPrefix("yes", v)):
		return true
	}
	return false
}

// readsFromPrimaries refuses a Cluster client that reads from replicas:
// a replica that lags its primary answers a stamp from before a write,
// and the entry that write voided would be served, even to the writer.
// It refuses a Ring too: a Ring moves a down shard's keys to the others,
// and back when it answers again, with the stamps it held before, so a
// write made meanwhile would be forgotten.
func readsFromPrimaries(c redis.UniversalClient) error {
	if _, ok := c.(*redis.Ring); ok {
		return errors.New("cachedpq: a Redis Ring moves keys between shards as they fail and recover, which loses invalidations; use a single node, Sentinel or Cluster")
	}
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		return nil
	}
	if o := cc.Options(); o.ReadOnly || o.RouteByLatency || o.RouteRandomly {
		return errors.New("cachedpq: a Redis Cluster client that reads from replicas (ReadOnly, RouteByLatency, RouteRandomly) could serve invalidated entries; use one that reads from primaries")
	}
	return nil
}

// Wrap returns a Connector that caches over any other driver.Connector,
// such as one built with pq.NewConnectorConfig or a test double. The cache
// keys name the database through opts.Identity.
//
// A Redis client NewConnector would refuse (a Ring, a Cluster client that
// reads from replicas) makes every Connect fail with the reason.
func Wrap(inner driver.Connector, opts Options) *Connector {
	c := newConnector(inner, opts, newIdentity(pq.Config{Database: opts.Identity}))
	c.refused = readsFromPrimaries(opts.Redis)
	return c
}

func newConnector(inner driver.Connector, opts Options, id identity) *Connector {
	opts = opts.withDefaults()
	c := &Connector{inner: inner, opts: opts, id: id}
	c.drv = boundDriver{Driver: registered, c: c}
	c.eng = newEngine(c)
	return c
}

// OpenDB opens a *sql.DB over a new Connector for dsn with opts. It is the
// programmatic form of sql.Open("cachedpq", dsn).
func OpenDB(dsn string, opts Options) (*sql.DB, error) {
	c, err := NewConnector(dsn, opts)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(c), nil
}

// Connect opens a connection through the inner connector and wraps it.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	if c.refused != nil {
		return nil, c.refused
	}
	inner, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	p, err := c.probe(ctx, inner)
	if err != nil {
		inner.Close()
		return nil, err
	}
	cn := newConn(c, inner)
	cn.standby = p.standby
	cn.otherSettings = p.otherSettings
	return cn, nil
}

// Prefix returns the namespace the Connector's keys are under: Options.Prefix,
// else the DSN's cache_prefix, else "cachedpq".
func (c *Connector) Prefix() string { return c.opts.Prefix }

// Driver returns the cachedpq driver, bound to c: a *sql.DB's Driver
// method then leads ConnectorOf to c without taking a connection.
func (c *Connector) Driver() driver.Driver { return &c.drv }

// boundDriver is the registered Driver, as the Connector c returns it.
type boundDriver struct {
	*Driver
	c *Connector
}

// Close releases the cache clients the Connector created and closes the
// inner connector if it can be closed. A client passed in Options is left
// open: its owner closes it.
func (c *Connector) Close() error {
	var errs []error
	c.eng.close()
	if c.owned != nil {
		errs = append(errs, c.owned.Close())
	}
	if cl, ok := c.inner.(io.Closer); ok {
		errs = append(errs, cl.Close())
	}
	return errors.Join(errs...)
}

// registered is the Driver value that Connector.Driver reports.
var registered = &Driver{}

// Unwrap returns the inner driver connection of a connection opened by
// cachedpq, for use inside sql.Conn.Raw with functions that need lib/pq's
// own connection (pq.SetNoticeHandler, for example). Other values are
// returned unchanged.
func Unwrap(driverConn any) any {
	if c, ok := driverConn.(*conn); ok {
		return c.inner
	}
	return driverConn
}
