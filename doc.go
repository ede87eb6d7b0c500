// Package cachedpq is a database/sql driver for PostgreSQL that caches the
// results of registered read queries, transparently, in Redis or in
// process. It wraps github.com/lib/pq: everything the application does
// through database/sql or sqlx behaves as with lib/pq, except that
// registered reads may be answered from the cache.
//
// # Opening
//
// Use the driver name "cachedpq" with any lib/pq DSN, plus cache_*
// parameters that lib/pq never sees:
//
//	db, err := sql.Open("cachedpq",
//		"host=127.0.0.1 dbname=app sslmode=disable cache_redis=redis://127.0.0.1:6379/0")
//
// or sqlx.Open("cachedpq", dsn), which binds $1-style placeholders. Without
// cache_redis (and without CACHEDPQ_REDIS_URL in the environment) entries
// live in a bounded in-process store. NewConnector, OpenDB and Wrap take an
// Options value instead, for an existing redis.UniversalClient (single
// node, Sentinel or Cluster), a logger, an error hook or a private Registry.
// A bad DSN or cache parameter is an error from sql.Open.
//
// # What is cached
//
// Only queries registered with Register (or Registry.Register), each with a
// Policy: a TTL, jitter, a TTL for empty results, size limits, extra tags,
// early refresh and stale-while-revalidate. A query matches its
// registration by fingerprint: whitespace, comments and the case of
// keywords and unquoted names do not matter. Registration refuses what
// cannot be cached safely: writes, locking clauses, several statements,
// temporary tables and non-deterministic functions such as now().
//
// A registered query is served from the cache only outside transactions,
// on a connection whose session state was not changed by SET, RESET or SET
// ROLE (but for settings that change no rows, such as statement_timeout
// and application_name). Its key holds its normalized SQL, its arguments (typed and
// length-prefixed) and the identity of the database and role (host, port,
// database, user and session settings of the DSN, and the settings the
// first connection's session started with; never the password). A
// connection that starts with other settings (its role's changed since)
// skips the cache. A hit replays the rows with the same Go values and column metadata as
// lib/pq. A miss streams the rows from Postgres and stores the whole
// result after the caller has read it; a result over the policy's limits
// is served but not stored.
//
// # When entries die
//
// Every table a cached result depends on has a stamp in the cache. An entry
// records the stamps of its tables as they were before its query ran; it
// is served only while they are unchanged and its TTL has not passed. A
// write replaces the stamps of the tables it wrote once it has committed:
// at once outside a transaction (before Exec, or the Close of a write made
// through Query, returns), at Commit inside one, never on Rollback. The
// tables a write reaches are read from its SQL text and from pg_catalog:
// foreign keys with ON DELETE/UPDATE actions, TRUNCATE ... CASCADE, writes
// through views, the base tables of views that registered queries read,
// the tables that triggers, rules and (for DDL) event triggers write, and
// those that the SQL and PL/pgSQL sources of called volatile functions
// name. A statement whose effects the text cannot show (CALL, DO, a
// volatile user function whose source does not show all it writes, a
// trigger running dynamic SQL, DDL on types, functions, schemas,
// privileges or policies) invalidates the whole namespace. pg_catalog is
// read again after DDL through the Connector, and every
// Options.CatalogRefresh for DDL by other processes.
//
// # Consistency
//
// A hit returns what Postgres returned for the same query, arguments,
// database and role, no older than the policy's TTL (plus StaleFor, if
// set), and never from before a write that this process has committed: a
// process always reads its own writes. A reader that raced a write cannot
// put pre-write rows into the cache, because its entry carries the stamps
// it read before its query. Other processes sharing Redis see a write as
// soon as its invalidation reaches Redis. Writes that bypass the driver
// (scripts, other applications) are seen when the TTL passes or after an
// explicit Connector.InvalidateTables or InvalidateAll.
//
// # Load
//
// Concurrent misses of one key in a process run one query. Across
// processes sharing Redis, the lookup that finds an entry missing takes a
// short fill lease in the same round trip, so one process loads it while
// the others wait a bounded time for its entry. Concurrent lookups of a
// hot key share one round trip, but never one sent before the reader
// arrived, which might predate a write the reader must see.
//
// # Failure
//
// The cache is never a requirement. Every cache operation has a deadline
// (cache_timeout); a failure or timeout sends the call to Postgres and is
// reported only to the Options' logger, error hook and Stats. A circuit
// breaker skips a failing Redis entirely until it answers again. An
// invalidation that fails is retried in the background; a process whose
// invalidation failed, or that saw the cache fail at all, serves no hit
// until it has invalidated the whole namespace.
package cachedpq
