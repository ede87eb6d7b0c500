package cachedpq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// probeConnector answers probeQuery as a server that is a standby or not,
// decoded as lib/pq decodes infinities with or without EnableInfinityTs,
// with the session settings settings, and every other query with one row:
// 1.
type probeConnector struct {
	standby, infinity bool
	settings          string
}

func (c probeConnector) Connect(context.Context) (driver.Conn, error) { return probeConn(c), nil }
func (c probeConnector) Driver() driver.Driver                        { return nil }

type probeConn probeConnector

func (c probeConn) Prepare(string) (driver.Stmt, error) { return nil, driver.ErrSkip }
func (c probeConn) Close() error                        { return nil }
func (c probeConn) Begin() (driver.Tx, error)           { return nil, driver.ErrSkip }
func (c probeConn) QueryContext(_ context.Context, query string, _ []driver.NamedValue) (driver.Rows, error) {
	if query != probeQuery {
		return &readRows{cols: []string{"v"}, rows: [][]driver.Value{{int64(1)}}}, nil
	}
	return probeRows(c.standby, c.infinity, c.settings), nil
}

// probeRows answers probeQuery.
func probeRows(standby, infinity bool, settings string) *readRows {
	row := []driver.Value{standby, []byte("-infinity"), []byte("infinity"), "on", settings}
	if infinity {
		row[1], row[2] = time.Time{}, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return &readRows{cols: []string{"r", "n", "p", "s", "g"}, rows: [][]driver.Value{row}}
}

// probed returns a Connector over inner that probes its connections, as
// NewConnector's do, with q registered.
func probed(t *testing.T, inner driver.Connector, q string) (*sql.DB, *Connector) {
	t.Helper()
	c := newConnector(inner, Options{Registry: NewRegistry(), NoCatalog: true}, identityOf("test"))
	c.probes = true
	must(t, c.opts.Registry.Register(q, Policy{TTL: time.Hour}))
	db := sql.OpenDB(c)
	t.Cleanup(func() { db.Close() })
	return db, c
}

// TestStandbySkipsTheCache: a connection that reached a standby neither
// fills the cache (its rows may predate a write already invalidated) nor
// reads it.
func TestStandbySkipsTheCache(t *testing.T) {
	const q = `select v from kv where k = $1`
	for _, standby := range []bool{false, true} {
		db, c := probed(t, probeConnector{standby: standby}, q)
		for range 2 {
			var v int
			must(t, db.QueryRow(q, 1).Scan(&v))
		}
		s := c.Stats()
		if standby && (s.Hits != 0 || s.Fills != 0 || s.Bypass["standby"] != 2) ||
			!standby && (s.Hits != 1 || s.Bypass["standby"] != 0) {
			t.Errorf("standby %v: %+v", standby, s)
		}
	}
}

// TestInfinitySettingInIdentity: the first connection tells how lib/pq
// decodes infinite times; a process that enabled pq.EnableInfinityTs has
// keys of its own, and one that did not keeps the keys it had.
func TestInfinitySettingInIdentity(t *testing.T) {
	const q = `select v from kv where k = $1`
	keyOf := func(c *Connector) string {
		reg := c.opts.Registry.lookup(analyze(q))
		k, _, _ := appendKey(nil, "p", reg.name, c.eng.id.Load(), reg.a, args(int64(1)))
		return string(k)
	}
	plainDB, plain := probed(t, probeConnector{}, q)
	infDB, inf := probed(t, probeConnector{infinity: true}, q)
	before := keyOf(plain)
	must(t, plainDB.Ping())
	must(t, infDB.Ping())
	if keyOf(plain) != before {
		t.Error("the default setting changed the keys")
	}
	if keyOf(inf) == before || !strings.Contains(inf.eng.id.Load().String(), "infinity=") {
		t.Errorf("EnableInfinityTs shares keys: %s", inf.eng.id.Load())
	}
}

// flipConnector reaches the primary until standby is set, then a
// standby. The primary answers the registered read with "new", the
// standby, which has not replayed the write yet, with "old".
type flipConnector struct {
	standby atomic.Bool
	// settings, if set, are the settings new connections start with;
	// those that do answer "old".
	settings atomic.Pointer[string]
}

func (c *flipConnector) Connect(context.Context) (driver.Conn, error) {
	fc := &flipConn{standby: c.standby.Load()}
	if s := c.settings.Load(); s != nil {
		fc.settings = *s
	}
	return fc, nil
}
func (c *flipConnector) Driver() driver.Driver { return nil }

type flipConn struct {
	standby  bool
	settings string
}

func (c *flipConn) Prepare(string) (driver.Stmt, error) { return nil, driver.ErrSkip }
func (c *flipConn) Close() error                        { return nil }
func (c *flipConn) Begin() (driver.Tx, error)           { return nil, driver.ErrSkip }
func (c *flipConn) QueryContext(_ context.Context, query string, _ []driver.NamedValue) (driver.Rows, error) {
	if query == probeQuery {
		return probeRows(c.standby, false, c.settings), nil
	}
	v := "new"
	if c.standby || c.settings != "" {
		v = "old"
	}
	return &readRows{cols: []string{"v"}, rows: [][]driver.Value{{v}}}, nil
}

// TestRefreshSkipsUnfitConnections: an early refresh (Beta) reloads on a
// connection of the engine's own, opened on lib/pq's connector directly;
// it did not answer the probe, so one that reached a standby stored rows
// from before a write for every reader (found by review E). One that
// started with other settings than the identity's (a role's search_path
// changed) would store its rows under keys that stand for the first
// settings' rows.
func TestRefreshSkipsUnfitConnections(t *testing.T) {
	for name, unfit := range map[string]func(*flipConnector){
		// A multi-host DSN, a proxy, a failover: the standby has not
		// replayed the write yet.
		"standby":  func(c *flipConnector) { c.standby.Store(true) },
		"settings": func(c *flipConnector) { s := "search_path=elsewhere"; c.settings.Store(&s) },
	} {
		t.Run(name, func(t *testing.T) {
			const q = `select v from kv where k = $1`
			inner := &flipConnector{}
			c := newConnector(inner, Options{Registry: NewRegistry(), NoCatalog: true}, identityOf("test"))
			c.probes = true
			must(t, c.opts.Registry.Register(q, Policy{TTL: time.Hour, Beta: 1e12}))
			db := sql.OpenDB(c)
			defer db.Close()
			db.SetMaxOpenConns(1) // the reader keeps its first connection
			read := func() string {
				var v string
				must(t, db.QueryRow(q, 1).Scan(&v))
				c.eng.bg.Wait()
				return v
			}
			read() // a miss fills "new"
			unfit(inner)
			read() // a hit; it draws an early refresh, on a new connection
			if got := read(); got != "new" {
				t.Fatalf("served %q, stored by an early refresh on an unfit connection (stats %+v)", got, c.Stats().Counters)
			}
		})
	}
}

// TestOtherSettingsSkipTheCache: the first connection's settings are in the
// identity, so Connectors whose sessions start with different settings have
// different keys; a later connection that starts with other settings than
// the first (a role's settings changed meanwhile) neither reads nor fills
// the cache, while the first connection still does.
func TestOtherSettingsSkipTheCache(t *testing.T) {
	const q = `select v from kv where k = $1`
	inner := &flipConnector{}
	first := "search_path=a"
	inner.settings.Store(&first)
	c := newConnector(inner, Options{Registry: NewRegistry(), NoCatalog: true}, identityOf("test"))
	c.probes = true
	must(t, c.opts.Registry.Register(q, Policy{TTL: time.Hour}))
	db := sql.OpenDB(c)
	defer db.Close()
	ctx := context.Background()
	old, err := db.Conn(ctx) // starts with the first settings
	must(t, err)
	defer old.Close()
	if id := c.eng.id.Load().String(); !strings.Contains(id, `settings="search_path=a"`) {
		t.Fatalf("the first settings are not in the identity: %s", id)
	}
	later := "search_path=b"
	inner.settings.Store(&later)
	changed, err := db.Conn(ctx)
	must(t, err)
	defer changed.Close()
	for _, sc := range []*sql.Conn{old, changed, old, changed} {
		var v string
		must(t, sc.QueryRowContext(ctx, q, 1).Scan(&v))
	}
	s := c.Stats()
	if s.Misses != 1 || s.Hits != 1 || s.Fills != 1 || s.Bypass["server_settings"] != 2 {
		t.Fatalf("want the first connection to miss then hit, and the other to skip twice: %+v", s)
	}
	aDB, a := probed(t, probeConnector{settings: "search_path=a"}, q)
	bDB, b := probed(t, probeConnector{settings: "search_path=b"}, q)
	must(t, aDB.Ping())
	must(t, bDB.Ping())
	if a.eng.id.Load().digest == b.eng.id.Load().digest {
		t.Errorf("Connectors whose sessions start with other settings share keys: %s", a.eng.id.Load())
	}
}

// TestHarmlessSettingAgreesWithThePattern: harmlessSetting, which judges a
// SET, and the probe's SQL, which judges the settings a role or database
// has of its own, draw the same line, as Postgres reads harmlessPattern.
func TestHarmlessSettingAgreesWithThePattern(t *testing.T) {
	db, err := sql.Open("postgres", pqDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	names := append([]string{
		"statement_timeout", "idle_session_timeout", "log_statement", "enable_seqscan",
		"app.request_timeout", "enable_x.y", "log_x.y", "search_path", "timezone",
		"extra_float_digits", "row_security", "bytea_output", "app.tenant", "timeout",
		"enable_", "my_enable_x", "x_timeout_y",
	}, harmlessSettings...)
	for _, name := range names {
		var matched bool
		err := db.QueryRow(`select $1 = any($2::text[]) or $1 ~ $3`, name, "{"+strings.Join(harmlessSettings, ",")+"}", harmlessPattern).Scan(&matched)
		if err != nil {
			t.Fatal(err)
		}
		if got := harmlessSetting(name); got != matched {
			t.Errorf("harmlessSetting(%q) = %v, Postgres says %v", name, got, matched)
		}
	}
}
