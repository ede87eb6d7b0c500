package integration

import (
	"database/sql"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/cachedpq/cachedpq"
)

// TestBinaryParametersShareNoEntries: with binary_parameters=yes lib/pq
// sends []byte arguments in binary, which Postgres reads otherwise than
// text (8 bytes for an int8 are another number; a json.RawMessage for a
// jsonb is an error). Two connectors that differ only in that setting, on
// one Redis prefix, must each answer as their own lib/pq does.
func TestBinaryParametersShareNoEntries(t *testing.T) {
	text := newEnv(t, "redis")
	dsn := baseDSN() + " search_path=" + text.schema + " binary_parameters=yes"
	conn, err := cachedpq.NewConnector(dsn, cachedpq.Options{
		Redis: text.rdb, Prefix: text.prefix, Registry: text.reg, Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	bin := sqlx.NewDb(sql.OpenDB(conn), "cachedpq")
	defer bin.Close()
	raw := sqlx.MustOpen("postgres", dsn)
	defer raw.Close()

	q := `select $1::int8 as n, $2::jsonb as doc`
	text.register(t, q, cachedpq.Policy{})
	args := []any{[]byte("12345678"), json.RawMessage(`{"a":1}`)}
	fills := text.stats().Fills
	text.same(t, q, args...)
	text.waitFills(t, fills+1)

	want := describeResult(t, raw, q, args...)
	got := describeResult(t, bin, q, args...)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("binary_parameters=yes: cachedpq answers\n%q\nwhere lib/pq answers\n%q", got, want)
	}
}
