package cachedpq

// This file holds the types shared by the codec, the SQL analysis, the
// stores and the engine, so that each can be built and tested on its own.

import "database/sql/driver"

// scanKind names the Go type a column scans into, as the inner driver's
// ColumnTypeScanType reports it. scanUnknown means the driver did not
// report one (its rows lack RowsColumnTypeScanType).
type scanKind uint8

const (
	scanUnknown scanKind = iota
	scanAny              // interface{}: lib/pq's answer for most types
	scanInt64
	scanInt32
	scanInt16
	scanFloat64
	scanFloat32
	scanString
	scanBool
	scanTime
	scanBytes
)

// column describes one result column exactly as the inner driver reported
// it; the has* fields record whether the driver answered at all.
type column struct {
	name        string
	dbType      string // ColumnTypeDatabaseTypeName
	hasDBType   bool
	scan        scanKind
	length      int64
	hasLength   bool
	precision   int64
	scale       int64
	hasDecimal  bool
	nullable    bool
	hasNullable bool
}

// snapshot is a whole result: its columns and every row's values.
// A snapshot is immutable once built and may be shared by many readers.
type snapshot struct {
	columns []column
	rows    [][]driver.Value
}

// entry is what the cache stores under a key.
type entry struct {
	check   [16]byte // wide hash of what the entry answers; a hit verifies it
	stamps  []uint64 // stamps of the entry's tags, read before its query ran, in tag order
	created int64    // unix nanoseconds at which the query started
	expires int64    // unix nanoseconds after which the entry is dead
	delta   int64    // nanoseconds the query took, for early refresh
	snap    snapshot
	size    int // encoded size in bytes, for memory accounting; not encoded
}
