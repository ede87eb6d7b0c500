package cachedpq

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
)

func TestParseDSN(t *testing.T) {
	tests := []struct {
		name, dsn string
		want      dsnSettings
		runtime   map[string]string
	}{
		{"plain", "host=127.0.0.1 dbname=test sslmode=disable", dsnSettings{}, map[string]string{}},
		{"keyvalue", "host=h dbname=d search_path=s cache_prefix=app cache_timeout=20ms cache_redis='redis://:pw@127.0.0.1:6380/2'",
			dsnSettings{prefix: "app", timeout: 20 * time.Millisecond, redisURL: "redis://:pw@127.0.0.1:6380/2"},
			map[string]string{"search_path": "s"}},
		{"url escaped", "postgres://u@h/d?sslmode=disable&cache_redis=redis%3A%2F%2F127.0.0.1%3A6379%2F1&cache_max_memory=8MiB&TimeZone=UTC",
			dsnSettings{redisURL: "redis://127.0.0.1:6379/1", maxMemory: 8 << 20},
			map[string]string{"TimeZone": "UTC"}},
		{"rediss", "dbname=d cache_redis=rediss://user:pass@127.0.0.1:6379/0",
			dsnSettings{redisURL: "rediss://user:pass@127.0.0.1:6379/0"}, map[string]string{}},
		{"prepare", "dbname=d cache_prepare=true", dsnSettings{prepare: true}, map[string]string{}},
		{"prepare off", "postgres://h/d?cache_prepare=false", dsnSettings{}, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, got, err := parseDSN(tt.dsn)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("settings = %+v, want %+v", got, tt.want)
			}
			for k := range cfg.Runtime {
				if strings.HasPrefix(k, "cache_") {
					t.Errorf("lib/pq would see %s", k)
				}
			}
			if !reflect.DeepEqual(cfg.Runtime, tt.runtime) && !(len(cfg.Runtime) == 0 && len(tt.runtime) == 0) {
				t.Errorf("runtime = %v, want %v", cfg.Runtime, tt.runtime)
			}
		})
	}
}

func TestBadDSNFailsAtOpen(t *testing.T) {
	tests := []struct{ dsn, mention string }{
		{"dbname=d cache_bogus=1", "cache_bogus"},
		{"dbname=d cache_timeout=soon", "cache_timeout"},
		{"dbname=d cache_timeout=-5ms", "cache_timeout"},
		{"dbname=d cache_redis=http://x", "cache_redis"},
		{"dbname=d cache_max_memory=lots", "cache_max_memory"},
		{"dbname=d cache_prefix=''", "cache_prefix"},
		{"dbname=d cache_prepare=sometimes", "cache_prepare"},
		{"postgres://h/d?cache_tiemout=1s", "cache_tiemout"},
		{"dbname=d sslmode=bogus", "sslmode"},
		{"dbname=d standard_conforming_strings=off", "standard_conforming_strings"},
		{"dbname=d standard_conforming_strings=false", "standard_conforming_strings"},
		{"dbname=d standard_conforming_strings=OFF", "standard_conforming_strings"},
		{"dbname=d standard_conforming_strings=0", "standard_conforming_strings"},
		{"dbname=d Standard_Conforming_Strings=off", "standard_conforming_strings"},
		{"dbname=d options='-c standard_conforming_strings=off'", "standard_conforming_strings"},
		{"dbname=d options='--standard-conforming-strings=no'", "standard_conforming_strings"},
		// The server reads a backslash in options as "the next byte as is".
		{`dbname=d options='-c standard_conforming_string\\s=off'`, "standard_conforming_strings"},
		{`dbname=d options='-c standard\\_conforming\\_strings=off'`, "standard_conforming_strings"},
		{"postgres://h/d?options=-c%20standard_conforming_string%5Cs%3Doff", "standard_conforming_strings"},
	}
	for _, tt := range tests {
		t.Run(tt.mention, func(t *testing.T) {
			db, err := sql.Open(DriverName, tt.dsn)
			if err == nil {
				db.Close()
				t.Fatalf("sql.Open(%q) succeeded", tt.dsn)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not name %s", err, tt.mention)
			}
		})
	}
}

// TestRefusesRing: a Ring moves a failed shard's keys elsewhere and back,
// old stamps and all, so it would forget invalidations. NewConnector
// refuses it; a Connector from Wrap refuses to connect.
func TestRefusesRing(t *testing.T) {
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	if c, err := NewConnector("dbname=d", Options{Redis: ring}); err == nil || !strings.Contains(err.Error(), "Ring") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("NewConnector with a Ring: %v", err)
	}
	c := Wrap(&fakeConnector{}, Options{Redis: ring})
	defer c.Close()
	if _, err := c.Connect(context.Background()); err == nil || !strings.Contains(err.Error(), "Ring") {
		t.Fatalf("Connect through Wrap with a Ring: %v", err)
	}
}

// TestPGOPTIONSTurningSCSOffRefused: lib/pq reads PGOPTIONS, escapes and
// all.
func TestPGOPTIONSTurningSCSOffRefused(t *testing.T) {
	t.Setenv("PGOPTIONS", `-c standard_conforming_string\s=off`)
	if c, err := NewConnector("dbname=d", Options{}); err == nil {
		c.Close()
		t.Error("NewConnector accepted PGOPTIONS that turn standard_conforming_strings off")
	}
}

// TestStandardConformingStringsOnAccepted: only the spellings of off are
// refused.
func TestStandardConformingStringsOnAccepted(t *testing.T) {
	for _, extra := range []string{"standard_conforming_strings=on", "standard_conforming_strings=TRUE",
		"options='-c standard_conforming_strings=yes'", "options='-c geqo=off'"} {
		c, err := NewConnector("dbname=d "+extra, Options{})
		if err != nil {
			t.Errorf("NewConnector(%q): %v", extra, err)
			continue
		}
		c.Close()
	}
}

func TestRedisURLFromEnvironment(t *testing.T) {
	t.Setenv(envRedisURL, "redis://127.0.0.1:1/0")
	c, err := NewConnector("dbname=d", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.owned == nil {
		t.Fatal("CACHEDPQ_REDIS_URL did not give a Redis client")
	}
	t.Setenv(envRedisURL, "ftp://nope")
	if _, err := NewConnector("dbname=d", Options{}); err == nil || !strings.Contains(err.Error(), envRedisURL) {
		t.Fatalf("bad %s: %v", envRedisURL, err)
	}
}

func TestOptionsCopiedAndDefaulted(t *testing.T) {
	opts := Options{Prefix: "p"}
	c := Wrap(&fakeConnector{}, opts)
	opts.Prefix = "changed"
	if c.opts.Prefix != "p" || c.opts.Timeout != defaultTimeout || c.opts.Registry != defaultRegistry {
		t.Fatalf("options = %+v", c.opts)
	}
}

// mockDB returns a DB over cachedpq wrapping go-sqlmock, so a test sees
// exactly which statements reach the database.
func mockDB(t *testing.T) (*sql.DB, sqlmock.Sqlmock) {
	t.Helper()
	return mockDBWith(t, Options{Registry: NewRegistry()})
}

// mockDBWith is mockDB with opts (NoCatalog set).
func mockDBWith(t *testing.T, opts Options) (*sql.DB, sqlmock.Sqlmock) {
	t.Helper()
	dsn := "cachedpq-" + t.Name()
	raw, mock, err := sqlmock.NewWithDSN(dsn, sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
	if err != nil {
		t.Fatal(err)
	}
	inner := &driverConnector{drv: raw.Driver(), dsn: dsn}
	opts.NoCatalog = true
	db := sql.OpenDB(Wrap(inner, opts))
	db.SetMaxOpenConns(1)
	t.Cleanup(func() {
		db.Close()
		raw.Close()
		if err := mock.ExpectationsWereMet(); err != nil {
			t.Error(err)
		}
	})
	return db, mock
}

type driverConnector struct {
	drv driver.Driver
	dsn string
}

func (c *driverConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c *driverConnector) Driver() driver.Driver                        { return c.drv }

func TestStatementsReachTheDatabaseUnchanged(t *testing.T) {
	db, mock := mockDB(t)
	mock.ExpectQuery(`select name from users where id = $1`).WithArgs(int64(7)).
		WillReturnRows(sqlmock.NewRows([]string{"name"}).AddRow("ann"))
	mock.ExpectExec(`update users set name = $1 where id = $2`).WithArgs("bob", int64(7)).
		WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectBegin()
	mock.ExpectExec(`delete from users`).WillReturnResult(sqlmock.NewResult(0, 3))
	mock.ExpectRollback()
	mock.ExpectPrepare(`select 1`).ExpectQuery().WillReturnRows(sqlmock.NewRows([]string{"x"}).AddRow(1))

	var name string
	if err := db.QueryRow(`select name from users where id = $1`, 7).Scan(&name); err != nil || name != "ann" {
		t.Fatalf("query: %q %v", name, err)
	}
	res, err := db.Exec(`update users set name = $1 where id = $2`, "bob", 7)
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("exec: %d %v", n, err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`delete from users`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	st, err := db.Prepare(`select 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var one int
	if err := st.QueryRow().Scan(&one); err != nil || one != 1 {
		t.Fatalf("prepared: %d %v", one, err)
	}
}

func TestErrorsPassThroughByIdentity(t *testing.T) {
	db, mock := mockDB(t)
	pqErr := &pq.Error{Code: "23505", Message: "duplicate key"}
	mock.ExpectExec(`insert into t values (1)`).WillReturnError(pqErr)
	mock.ExpectQuery(`select * from t`).WillReturnError(pqErr)
	mock.ExpectQuery(`select 2`).WillReturnRows(sqlmock.NewRows([]string{"x"}).AddRow(1).RowError(0, pqErr))

	_, err := db.Exec(`insert into t values (1)`)
	var got *pq.Error
	if !errors.As(err, &got) || got != pqErr {
		t.Fatalf("exec error %v is not the driver's *pq.Error", err)
	}
	_, err = db.Query(`select * from t`)
	if !errors.As(err, &got) || got != pqErr {
		t.Fatalf("query error %v is not the driver's *pq.Error", err)
	}
	rows, err := db.Query(`select 2`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
	}
	if !errors.Is(rows.Err(), pqErr) {
		t.Fatalf("row error %v is not the driver's", rows.Err())
	}
	rows.Close()
}

// The fakes below implement either every optional interface lib/pq has, or
// none, and record which methods database/sql reached.

type fakeConnector struct{ bare bool }

func (c *fakeConnector) Connect(context.Context) (driver.Conn, error) {
	if c.bare {
		return &bareConn{log: &callLog{}}, nil
	}
	return &fullConn{bareConn{log: &callLog{}}}, nil
}
func (c *fakeConnector) Driver() driver.Driver { return nil }

type callLog struct {
	mu    sync.Mutex // guards calls
	calls []string
}

func (l *callLog) add(s string) { l.mu.Lock(); l.calls = append(l.calls, s); l.mu.Unlock() }

// bareConn implements only driver.Conn.
type bareConn struct{ log *callLog }

func (c *bareConn) Prepare(q string) (driver.Stmt, error) {
	c.log.add("prepare " + q)
	return &fakeStmt{log: c.log}, nil
}
func (c *bareConn) Close() error              { return nil }
func (c *bareConn) Begin() (driver.Tx, error) { c.log.add("begin"); return fakeTx{c.log}, nil }

// fullConn adds lib/pq's optional interfaces.
type fullConn struct{ bareConn }

func (c *fullConn) QueryContext(_ context.Context, q string, _ []driver.NamedValue) (driver.Rows, error) {
	c.log.add("query " + q)
	return &stubRows{}, nil
}
func (c *fullConn) ExecContext(_ context.Context, q string, _ []driver.NamedValue) (driver.Result, error) {
	c.log.add("exec " + q)
	return driver.RowsAffected(1), nil
}
func (c *fullConn) Query(q string, _ []driver.Value) (driver.Rows, error) { return &stubRows{}, nil }
func (c *fullConn) Exec(q string, _ []driver.Value) (driver.Result, error) {
	return driver.RowsAffected(1), nil
}
func (c *fullConn) PrepareContext(_ context.Context, q string) (driver.Stmt, error) {
	return c.Prepare(q)
}
func (c *fullConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) { return c.Begin() }
func (c *fullConn) Ping(context.Context) error                                   { c.log.add("ping"); return nil }
func (c *fullConn) CheckNamedValue(nv *driver.NamedValue) error {
	if s, ok := nv.Value.([]int64); ok {
		nv.Value = "ints:" + strings.Repeat("i", len(s))
		return nil
	}
	return driver.ErrSkip
}
func (c *fullConn) ResetSession(context.Context) error { c.log.add("reset"); return nil }
func (c *fullConn) IsValid() bool                      { return true }

type fakeStmt struct {
	log  *callLog
	args []driver.Value
}

func (s *fakeStmt) Close() error  { return nil }
func (s *fakeStmt) NumInput() int { return -1 }
func (s *fakeStmt) Exec(args []driver.Value) (driver.Result, error) {
	s.log.add("stmt exec")
	s.args = args
	return driver.RowsAffected(2), nil
}
func (s *fakeStmt) Query(args []driver.Value) (driver.Rows, error) {
	s.log.add("stmt query")
	s.args = args
	return &stubRows{}, nil
}

type fakeTx struct{ log *callLog }

func (t fakeTx) Commit() error   { t.log.add("commit"); return nil }
func (t fakeTx) Rollback() error { t.log.add("rollback"); return nil }

type stubRows struct{ n int }

func (r *stubRows) Columns() []string { return []string{"x"} }
func (r *stubRows) Close() error      { return nil }
func (r *stubRows) Next(dest []driver.Value) error {
	if r.n > 0 {
		return io.EOF
	}
	r.n++
	dest[0] = int64(1)
	return nil
}

func TestFallbacksForABareDriver(t *testing.T) {
	c := Wrap(&fakeConnector{bare: true}, Options{Registry: NewRegistry(), NoCatalog: true})
	db := sql.OpenDB(c)
	defer db.Close()
	var x int
	// No QueryerContext: the conn answers ErrSkip and database/sql prepares;
	// the statement has no StmtQueryContext, so ours falls back to Query.
	if err := db.QueryRow(`select x`).Scan(&x); err != nil || x != 1 {
		t.Fatalf("query: %d %v", x, err)
	}
	if _, err := db.Exec(`update t`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.BeginTx(context.Background(), &sql.TxOptions{ReadOnly: true}); !errors.Is(err, errTxOptions) {
		t.Fatalf("read-only tx on a bare driver: %v", err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Query(`select x`, sql.Named("a", 1)); err == nil {
		t.Fatal("named argument accepted by a driver that cannot take it")
	}
}

func TestStatementCheckerFallsBackToTheConnection(t *testing.T) {
	c := Wrap(&fakeConnector{}, Options{Registry: NewRegistry(), NoCatalog: true})
	db := sql.OpenDB(c)
	defer db.Close()
	db.SetMaxOpenConns(1)
	st, err := db.Prepare(`insert into t values ($1)`)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// database/sql asks the statement's checker first: without the fallback
	// to the connection's, []int64 would be rejected by the default.
	if _, err := st.Exec([]int64{1, 2, 3}); err != nil {
		t.Fatalf("[]int64 through a prepared statement: %v", err)
	}
	conn, _ := db.Conn(context.Background())
	defer conn.Close()
	conn.Raw(func(dc any) error {
		if _, ok := Unwrap(dc).(*fullConn); !ok {
			t.Errorf("Unwrap gave %T", Unwrap(dc))
		}
		return nil
	})
}

// optional lists the optional interfaces a conn, stmt or rows may have.
var (
	connInterfaces = []reflect.Type{
		reflect.TypeFor[driver.Pinger](), reflect.TypeFor[driver.Execer](), reflect.TypeFor[driver.ExecerContext](),
		reflect.TypeFor[driver.Queryer](), reflect.TypeFor[driver.QueryerContext](), reflect.TypeFor[driver.ConnPrepareContext](),
		reflect.TypeFor[driver.ConnBeginTx](), reflect.TypeFor[driver.NamedValueChecker](),
		reflect.TypeFor[driver.SessionResetter](), reflect.TypeFor[driver.Validator](),
	}
	stmtInterfaces = []reflect.Type{
		reflect.TypeFor[driver.StmtExecContext](), reflect.TypeFor[driver.StmtQueryContext](),
		reflect.TypeFor[driver.ColumnConverter](),
	}
	rowsInterfaces = []reflect.Type{
		reflect.TypeFor[driver.RowsNextResultSet](), reflect.TypeFor[driver.RowsColumnTypeScanType](),
		reflect.TypeFor[driver.RowsColumnTypeDatabaseTypeName](), reflect.TypeFor[driver.RowsColumnTypeLength](),
		reflect.TypeFor[driver.RowsColumnTypeNullable](), reflect.TypeFor[driver.RowsColumnTypePrecisionScale](),
	}
)

func implementedBy(v any, ifaces []reflect.Type) []string {
	var names []string
	for _, it := range ifaces {
		if reflect.TypeOf(v).Implements(it) {
			names = append(names, it.String())
		}
	}
	return names
}

// localTestDSN is the test Postgres: CACHEDPQ_TEST_DSN, or the local default.
func localTestDSN() string {
	if dsn := os.Getenv("CACHEDPQ_TEST_DSN"); dsn != "" {
		return dsn
	}
	return "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
}

// pqDSN is the Postgres the in-package tests use; they skip without it,
// except under CI=true, where they fail.
func pqDSN(t testing.TB) string {
	t.Helper()
	dsn := localTestDSN()
	db, err := sql.Open("postgres", dsn)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = db.PingContext(ctx)
		cancel()
		db.Close()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL unreachable under CI=true: %v", err)
		}
		t.Skipf("PostgreSQL unreachable: %v", err)
	}
	return dsn
}

// TestInterfaceParityWithLibPQ proves the wrappers expose the optional
// interfaces lib/pq's own values do. The one deliberate difference is the
// statement's NamedValueChecker, which defers to the connection's exactly
// as database/sql would without it.
func TestInterfaceParityWithLibPQ(t *testing.T) {
	dsn := pqDSN(t)
	inner, err := pq.NewConnector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	raw, err := inner.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := Wrap(inner, Options{Registry: NewRegistry(), NoCatalog: true})
	wrapped, err := c.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer wrapped.Close()
	compare := func(what string, a, b any, ifaces []reflect.Type) {
		t.Helper()
		if x, y := implementedBy(a, ifaces), implementedBy(b, ifaces); !reflect.DeepEqual(x, y) {
			t.Errorf("%s: lib/pq has %v, cachedpq has %v", what, x, y)
		}
	}
	compare("conn", raw, wrapped, connInterfaces)

	rs, _ := raw.(driver.ConnPrepareContext).PrepareContext(ctx, "select 1::int8 a, 'x'::text b")
	ws, _ := wrapped.(driver.ConnPrepareContext).PrepareContext(ctx, "select 1::int8 a, 'x'::text b")
	compare("stmt", rs, ws, stmtInterfaces)
	if _, ok := ws.(driver.NamedValueChecker); !ok {
		t.Error("stmt lacks the NamedValueChecker that defers to the connection")
	}

	rr, err := rs.(driver.StmtQueryContext).QueryContext(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	compare("live rows", rr, newRows(rr, nil), rowsInterfaces)
	ws.Close()
	rs.Close()
}

// TestLostWritesInvalidate: a write whose connection is lost may have
// committed, through Exec or through Query (an INSERT ... RETURNING commits
// at Sync, before its rows arrive), so both invalidate.
func TestLostWritesInvalidate(t *testing.T) {
	db, mock := mockDB(t)
	c, err := ConnectorOf(db)
	if err != nil {
		t.Fatal(err)
	}
	mock.ExpectExec(`insert into t values (1)`).WillReturnError(io.ErrUnexpectedEOF)
	mock.ExpectQuery(`insert into t values (2) returning id`).WillReturnError(io.ErrUnexpectedEOF)
	if _, err := db.Exec(`insert into t values (1)`); err == nil {
		t.Fatal("the lost write succeeded")
	}
	if n := c.Stats().Invalidations; n != 1 {
		t.Fatalf("after a lost Exec: %d invalidations, want 1", n)
	}
	if _, err := db.Query(`insert into t values (2) returning id`); err == nil {
		t.Fatal("the lost write succeeded")
	}
	if n := c.Stats().Invalidations; n != 2 {
		t.Fatalf("after a lost Query: %d invalidations, want 2", n)
	}
}

// TestClusterReadingReplicasIsRefused: stamps read from a lagging replica
// would validate entries a write voided.
func TestClusterReadingReplicasIsRefused(t *testing.T) {
	for _, o := range []redis.ClusterOptions{{ReadOnly: true}, {RouteByLatency: true}, {RouteRandomly: true}, {}} {
		o.Addrs = []string{"127.0.0.1:1"}
		cc := redis.NewClusterClient(&o)
		_, err := NewConnector("dbname=d", Options{Redis: cc})
		cc.Close()
		if replicas := o.ReadOnly || o.RouteByLatency || o.RouteRandomly; (err != nil) != replicas {
			t.Errorf("%+v: NewConnector error %v", o, err)
		}
	}
}

// TestFatalErrorIsAnUnknownOutcome: a FATAL error ends the session, and a
// COMMIT it cut short may have committed: it is not a refusal.
func TestFatalErrorIsAnUnknownOutcome(t *testing.T) {
	if reportedByServer(&pq.Error{Severity: "FATAL", Code: "57P01"}) {
		t.Fatal("a FATAL error counted as a statement Postgres refused")
	}
	if !reportedByServer(&pq.Error{Severity: "ERROR", Code: "23505"}) {
		t.Fatal("an ERROR did not count as a refusal")
	}
}

// downConnector is a database that cannot be reached.
type downConnector struct{}

func (downConnector) Connect(context.Context) (driver.Conn, error) {
	return nil, errors.New("connection refused")
}
func (downConnector) Driver() driver.Driver { return nil }

// TestConnectorOfTakesNoConnection: ConnectorOf finds the Connector
// through the DB's driver, not through a pooled connection, so it answers
// when none can be had (Postgres down; or every connection held, where a
// pool wait would block for good), and it still tells a DB of another
// driver.
func TestConnectorOfTakesNoConnection(t *testing.T) {
	c := Wrap(downConnector{}, Options{})
	db := sql.OpenDB(c)
	defer db.Close()
	got, err := ConnectorOf(db)
	if err != nil || got != c {
		t.Fatalf("ConnectorOf of a DB whose database is down = %p, %v; want %p", got, err, c)
	}
	if d := c.Driver(); d.(driver.DriverContext) == nil {
		t.Fatal("the Connector's driver does not open connectors")
	}
	other, err := sql.Open("postgres", "host=127.0.0.1 port=1")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := ConnectorOf(other); err == nil {
		t.Fatal("ConnectorOf accepted a lib/pq DB")
	}
}
