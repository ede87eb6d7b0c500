package cachedpq

import "encoding/hex"

// Explanation is what cachedpq makes of one SQL string: how it normalizes
// it, which tables it reads and writes, and whether a policy can cache it.
type Explanation struct {
	// Normalized is the canonical text: tokens joined by single spaces,
	// keywords and unquoted identifiers in lower case, comments and
	// trailing semicolons removed, literals exactly as written.
	// Registration matches statements by this form.
	Normalized string
	// Fingerprint is the hex xxh3-128 hash of Normalized.
	Fingerprint string
	// Kind is the kind of the first statement: "select", "values",
	// "insert", "update", "delete", "merge", "truncate", "copy from",
	// "copy to", "ddl", "session", "tx", "call", "do", "lock", "other" or
	// "empty".
	Kind string
	// ReadTables are the tags of the tables read: bare relation names,
	// unquoted names folded to lower case, schemas dropped.
	ReadTables []string
	// WriteTables are the tags of the tables any statement writes.
	WriteTables []string
	// UnknownWrite reports effects the text cannot show (CALL, DO,
	// EXECUTE, ... CASCADE): the engine invalidates conservatively.
	UnknownWrite bool
	// Cacheable reports whether the statement can be registered as a
	// cached read with a default policy.
	Cacheable bool
	// Reason says why the statement cannot be cached; empty when it can.
	Reason string
}

// Explain analyzes query as the driver would and reports the result. It
// never fails: text the analysis does not understand is reported as not
// cacheable, with a reason. Explain is safe for concurrent use.
func Explain(query string) Explanation {
	a := analyze(query)
	return Explanation{
		Normalized:   a.normalized,
		Fingerprint:  hex.EncodeToString(a.fingerprint[:]),
		Kind:         a.kind.String(),
		ReadTables:   append([]string(nil), a.reads...),
		WriteTables:  append([]string(nil), a.writes...),
		UnknownWrite: a.unknownWrite,
		Cacheable:    a.notCacheable == "",
		Reason:       a.notCacheable,
	}
}
