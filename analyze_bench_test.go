package cachedpq

import (
	"database/sql/driver"
	"testing"
	"time"
)

// benchQueries are typical statements of a web application.
var benchQueries = map[string]string{
	"point":  "SELECT id, name, email, created_at FROM users WHERE id = $1",
	"join":   "SELECT u.id, u.name, o.id, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1 AND o.status = $2 ORDER BY o.created_at DESC LIMIT 20",
	"cte":    "WITH recent AS (SELECT * FROM orders WHERE created_at > $1) SELECT r.user_id, count(*) FROM recent r JOIN users u ON u.id = r.user_id GROUP BY r.user_id HAVING count(*) > $2",
	"insert": "INSERT INTO events (user_id, kind, payload) VALUES ($1, $2, $3) ON CONFLICT (user_id, kind) DO UPDATE SET payload = excluded.payload RETURNING id",
	"update": "UPDATE accounts SET balance = balance - $1 FROM users WHERE users.id = accounts.user_id AND users.email = $2",
}

// BenchmarkAnalyzeMemoized is the cost every statement pays.
func BenchmarkAnalyzeMemoized(b *testing.B) {
	q := benchQueries["join"]
	analyze(q)
	b.ReportAllocs()
	for b.Loop() {
		analyze(q)
	}
}

// BenchmarkAnalyzeMemoizedParallel measures the memo under contention.
func BenchmarkAnalyzeMemoizedParallel(b *testing.B) {
	q := benchQueries["point"]
	analyze(q)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			analyze(q)
		}
	})
}

// BenchmarkAnalyzeFirstTime is the cost of a statement's first sight.
func BenchmarkAnalyzeFirstTime(b *testing.B) {
	for name, q := range benchQueries {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				analyzeUncached(q)
			}
		})
	}
}

// BenchmarkAppendKey builds a key for a query with three arguments.
func BenchmarkAppendKey(b *testing.B) {
	id := testIdentity(b, testDSN+" search_path=app")
	a := analyze(benchQueries["join"])
	nv := []driver.NamedValue{
		{Ordinal: 1, Value: int64(12345)},
		{Ordinal: 2, Value: "shipped"},
		{Ordinal: 3, Value: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)},
	}
	b.Run("new buffer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			appendKey(nil, "cachedpq", "", &id, a, nv)
		}
	})
	b.Run("reused buffer", func(b *testing.B) {
		buf := make([]byte, 0, 128)
		b.ReportAllocs()
		for b.Loop() {
			appendKey(buf[:0], "cachedpq", "", &id, a, nv)
		}
	})
}
