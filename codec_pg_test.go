package cachedpq

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
)

// pgTestDSN is the test database, from CACHEDPQ_TEST_DSN or the default.
func pgTestDSN() string {
	if dsn := os.Getenv("CACHEDPQ_TEST_DSN"); dsn != "" {
		return dsn
	}
	return "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
}

// pgConnector returns a lib/pq connector for the test database with extra
// DSN settings, skipping the test if Postgres is unreachable (failing it
// under CI=true).
func pgConnector(t *testing.T, extra string) *pq.Connector {
	t.Helper()
	c, err := pq.NewConnector(pgTestDSN() + " " + extra)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.Connect(ctx)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("postgres unreachable: %v", err)
		}
		t.Skipf("postgres unreachable: %v", err)
	}
	_ = conn.Close()
	return c
}

// pgSchema creates a schema of the test's own and drops it at cleanup.
func pgSchema(t *testing.T, db *sql.DB) string {
	t.Helper()
	schema := "cachedpq_codec_" + hex.EncodeToString(randomBytes(4))
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := db.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	return schema
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// everyTypeSetup creates a table holding every common Postgres type: a
// typical row, a row of edge values and a row of NULLs.
func everyTypeSetup(schema string) []string {
	s := schema + "."
	return []string{
		"CREATE TYPE " + s + "mood AS ENUM ('sad', 'ok', 'happy')",
		"CREATE TYPE " + s + "pair AS (a int, b text)",
		"CREATE TABLE " + s + `t (
			id int PRIMARY KEY, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, num numeric(12,3), anynum numeric,
			cash money, txt text, vc varchar(20), ch char(5), nm name, ba bytea, bo bool, d date, tm time, ttz timetz,
			ts timestamp, tstz timestamptz, iv interval, u uuid, j json, jb jsonb, x xml, ip inet, net cidr, mac macaddr,
			ints int[], texts text[], mood ` + s + `mood, pr ` + s + `pair, r int4range, tr tstzrange, o oid, big text)`,
		"INSERT INTO " + s + `t VALUES (1, 12, -123456, 9223372036854775807, 1.5, 3.141592653589793, 123456789.123, 1e-20,
			'12.34', 'hello', 'varchar', 'ab', 'aname', '\x00ff10', true, '2024-02-29', '23:59:59.999999', '12:00:00+05:30',
			'2024-07-04 12:30:45.123456', '2024-07-04 12:30:45.123456+00', '1 year 2 mons 3 days 04:05:06', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
			'{"a": [1, 2]}', '{"b": {"c": null}}', '<a>x</a>', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03',
			'{1,2,NULL}', '{"x","y z",NULL}', 'happy', ROW(1, 'one'), '[1,10)', '[2024-01-01 00:00+00,2024-02-01 00:00+00)', 42,
			repeat('0123456789', 10000))`,
		"INSERT INTO " + s + `t VALUES (2, -32768, 2147483647, -9223372036854775808, 'NaN', '-Infinity', 0, 'NaN',
			'-0.01', '', '', '', '', '', false, '0001-01-01 BC', '00:00:00', '24:00:00-03', '294276-12-31 23:59:59.999999',
			'infinity', '-178000000 years', '00000000-0000-0000-0000-000000000000', '[]', '{}', '', '::1', '::/0', 'ff:ff:ff:ff:ff:ff',
			'{}', '{""}', 'sad', ROW(NULL, NULL), 'empty', '(,)', 0, '')`,
		"INSERT INTO " + s + `t VALUES (3, -0, 0, 0, '-0', '-0', -0.5, -1, 0, 'x', 'y', 'z', 'n', '\x', NULL,
			'2024-03-10', '12:34:56', '00:00:00+00', '1999-12-31 23:59:59', '-infinity', '0', NULL, 'null', 'null', NULL,
			NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`,
		"INSERT INTO " + s + `t (id) VALUES (4)`,
		// a DST fold in the session zone: 01:30 happens twice in New York
		"INSERT INTO " + s + `t (id, tstz) VALUES (5, '2024-11-03 05:30:00+00'), (6, '2024-11-03 06:30:00+00')`,
	}
}

// pgQuery runs query on conn through lib/pq's driver directly.
func pgQuery(t *testing.T, conn driver.Conn, query string) driver.Rows {
	t.Helper()
	rows, err := conn.(driver.QueryerContext).QueryContext(context.Background(), query, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// readDeep reads every row of rows, cloning values that alias the
// driver's buffer, and closes it.
func readDeep(t *testing.T, rows driver.Rows) [][]driver.Value {
	t.Helper()
	var out [][]driver.Value
	dest := make([]driver.Value, len(rows.Columns()))
	for {
		err := rows.Next(dest)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		row := make([]driver.Value, len(dest))
		for i, v := range dest {
			row[i], _ = copyValue(v)
		}
		out = append(out, row)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCodecPostgresEveryType(t *testing.T) {
	connector := pgConnector(t, "timezone=America/New_York")
	db := sql.OpenDB(connector)
	t.Cleanup(func() { db.Close() })
	schema := pgSchema(t, db)
	for _, stmt := range everyTypeSetup(schema) {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}
	query := "SELECT * FROM " + schema + ".t ORDER BY id"
	conn, err := connector.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	liveRows := pgQuery(t, conn, query)
	liveAnswers := answers(liveRows)
	live := readDeep(t, liveRows)

	var rec recorder
	recorded := readDeep(t, newRecordingRows(pgQuery(t, conn, query), recordLimits{}, rec.done))
	if rec.calls != 1 || !rec.complete {
		t.Fatalf("recording: done calls %d complete %v", rec.calls, rec.complete)
	}
	sameRows(t, recorded, live) // the caller saw what lib/pq returned

	b, err := encodeEntry(nil, &entry{snap: *rec.snap})
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := decodeEntry(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	replay := newReplayRows(&decoded.snap)
	if got := answers(replay); !reflect.DeepEqual(got, liveAnswers) {
		t.Fatalf("replayed column answers\n%+v\nlive\n%+v", got, liveAnswers)
	}
	sameRows(t, readDeep(t, replay), live)
	assertZones(t, live)
	t.Logf("%d rows, %d columns: %d bytes encoded", len(live), len(live[0]), len(b))

	replayDB := sql.OpenDB(snapConnector{func() driver.Rows { return newReplayRows(&decoded.snap) }})
	t.Cleanup(func() { replayDB.Close() })
	sameColumnTypes(t, columnTypes(t, replayDB, query), columnTypes(t, db, query))
	sameRows(t, scanAll(t, replayDB, query), scanAll(t, db, query))
}

// assertZones checks the test covers what it claims: timestamptz values
// in the session's named zone and in lib/pq's unnamed fixed zones.
func assertZones(t *testing.T, rows [][]driver.Value) {
	t.Helper()
	zones := map[string]bool{}
	for _, row := range rows {
		for _, v := range row {
			if tv, ok := v.(time.Time); ok {
				zones[tv.Location().String()] = true
			}
		}
	}
	if !zones["America/New_York"] || !zones[""] {
		t.Fatalf("locations seen: %v", zones)
	}
}

// columnMeta is what database/sql's ColumnType reports.
type columnMeta struct {
	Name, DBType         string
	ScanType             reflect.Type
	Length               int64
	LengthOK             bool
	Precision, Scale     int64
	DecimalOK            bool
	Nullable, NullableOK bool
}

func columnTypes(t *testing.T, db *sql.DB, query string) []columnMeta {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cts, err := rows.ColumnTypes()
	if err != nil {
		t.Fatal(err)
	}
	var out []columnMeta
	for _, ct := range cts {
		m := columnMeta{Name: ct.Name(), DBType: ct.DatabaseTypeName(), ScanType: ct.ScanType()}
		m.Length, m.LengthOK = ct.Length()
		m.Precision, m.Scale, m.DecimalOK = ct.DecimalSize()
		m.Nullable, m.NullableOK = ct.Nullable()
		out = append(out, m)
	}
	return out
}

func sameColumnTypes(t *testing.T, got, want []columnMeta) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ColumnTypes differ:\nreplay %+v\n  live %+v", got, want)
	}
}

// scanAll scans every column into *any through database/sql.
func scanAll(t *testing.T, db *sql.DB, query string) [][]driver.Value {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][]driver.Value
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([]driver.Value, len(vals))
		for i, v := range vals {
			row[i] = v
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// optionalRowsInterfaces lists every optional driver.Rows interface.
var optionalRowsInterfaces = map[string]reflect.Type{
	"RowsNextResultSet":              reflect.TypeFor[driver.RowsNextResultSet](),
	"RowsColumnTypeScanType":         reflect.TypeFor[driver.RowsColumnTypeScanType](),
	"RowsColumnTypeDatabaseTypeName": reflect.TypeFor[driver.RowsColumnTypeDatabaseTypeName](),
	"RowsColumnTypeLength":           reflect.TypeFor[driver.RowsColumnTypeLength](),
	"RowsColumnTypeNullable":         reflect.TypeFor[driver.RowsColumnTypeNullable](),
	"RowsColumnTypePrecisionScale":   reflect.TypeFor[driver.RowsColumnTypePrecisionScale](),
}

func implemented(r driver.Rows) []string {
	var names []string
	for name, iface := range optionalRowsInterfaces {
		if reflect.TypeOf(r).Implements(iface) {
			names = append(names, name)
		}
	}
	return strings.Fields(fmt.Sprint(sortedStrings(names)))
}

func sortedStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

func TestRowsInterfaceParityWithLibPQ(t *testing.T) {
	connector := pgConnector(t, "")
	conn, err := connector.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	live := pgQuery(t, conn, "SELECT 1 AS one")
	want := implemented(live)
	var rec recorder
	recording := newRecordingRows(live, recordLimits{}, rec.done)
	if got := implemented(recording); !reflect.DeepEqual(got, want) {
		t.Errorf("recording rows implement %v, lib/pq's %v", got, want)
	}
	readDeep(t, recording)
	if got := implemented(newReplayRows(rec.snap)); !reflect.DeepEqual(got, want) {
		t.Errorf("replayed rows implement %v, lib/pq's %v", got, want)
	}
	if len(want) < 4 {
		t.Fatalf("lib/pq rows implement only %v", want)
	}
}

func TestRecordingPostgresQueryRowDrains(t *testing.T) {
	connector := pgConnector(t, "")
	conn, err := connector.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rec recorder
	rows := newRecordingRows(pgQuery(t, conn, "SELECT g, repeat('x', g) FROM generate_series(1, 500) g"), recordLimits{}, rec.done)
	if err := readAll(t, rows, 1); err != nil {
		t.Fatal(err)
	}
	if !rec.complete || len(rec.snap.rows) != 500 {
		t.Fatalf("complete %v rows %d", rec.complete, len(rec.snap.rows))
	}
	for i, row := range rec.snap.rows {
		if row[0] != int64(i+1) || row[1] != strings.Repeat("x", i+1) {
			t.Fatalf("row %d: %v", i, row)
		}
	}
	// the connection is usable afterwards: Close finished the protocol
	if got := readDeep(t, pgQuery(t, conn, "SELECT 7")); got[0][0] != int64(7) {
		t.Fatalf("next query gave %v", got)
	}
}
