package integration

import (
	"os"
	"testing"

	"github.com/cachedpq/cachedpq"
)

// Statements whose tables the SQL analysis missed because a keyword was
// taken for a clause: each caches a read, writes through the driver, and
// expects the read to match Postgres.

// TestRowsAliasInvalidates guards a select item named rows (or delete)
// before FROM: it was taken for ROWS FROM, so the query had no table tags
// and was never invalidated.
func TestRowsAliasInvalidates(t *testing.T) {
	for _, q := range []string{
		`select count(*) as rows from users`,
		`select count(*) delete from users`,
	} {
		t.Run(q, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				env.register(t, q, cachedpq.Policy{})
				env.prime(t, q)
				mustExec(t, env.db, `delete from users where id = 1`)
				env.same(t, q)
			})
		})
	}
}

// TestFromListAfterCaseInvalidates guards a FROM list whose later items
// were lost: a CASE in a join condition, or an alias named set, ended the
// list at its WHEN or SET, so writes to orders left the reads stale.
func TestFromListAfterCaseInvalidates(t *testing.T) {
	for _, q := range []string{
		`select count(*) from users a join users b on case when a.id = b.id then true else false end, orders`,
		`select count(*) from users set, orders`,
	} {
		t.Run(q, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				setupUsers(t, env)
				mustExec(t, env.raw, `create table orders (user_id int8)`)
				env.register(t, q, cachedpq.Policy{})
				env.prime(t, q)
				mustExec(t, env.db, `insert into orders values (1)`)
				env.same(t, q)
			})
		})
	}
}

// TestKeywordCTENameInvalidates guards WITH names that are keywords
// (UPDATE, INSERT, DELETE, MERGE, VALUES): the first was taken for the
// main statement, so its target went unwritten, also in a nested WITH.
func TestKeywordCTENameInvalidates(t *testing.T) {
	for _, w := range []string{
		`with update as (select 1) update users set name = 'changed' where id = 1`,
		`with update as (select 1) delete from users where id = 1`,
		`with insert as (select 1::int8 as id) update users set name = 'changed' from insert where users.id = insert.id`,
		`with a as (select 1), merge as (select 1::int8 as id) delete from users where id in (select id from merge)`,
		`with values as (select 1) delete from users where id = 1`,
		`with d as (with update as (select 1) delete from users where id = 1 returning 1) select * from d`,
	} {
		t.Run(w, func(t *testing.T) { writeThrough(t, w) })
	}
}

// TestCopyBinaryInvalidates guards COPY BINARY t FROM, the old spelling
// the grammar still takes: it was read as a read of a table named binary,
// so the rows it added left the reads of t stale.
func TestCopyBinaryInvalidates(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		file := "/tmp/cachedpq_copy_binary_" + env.schema + ".bin"
		t.Cleanup(func() { os.Remove(file) }) // the server wrote it; this process runs on its machine
		mustExec(t, env.raw, `copy (select 1000::int8, 'copied'::text, null::numeric, null::timestamptz) to '`+file+`' with (format binary)`)
		q := `select count(*) from users`
		env.register(t, q, cachedpq.Policy{})
		env.prime(t, q)
		mustExec(t, env.db, `copy binary users from '`+file+`'`)
		env.same(t, q)
	})
}

// TestCreateTableAsExecuteInvalidates guards CREATE TABLE t AS EXECUTE p,
// which runs a prepared statement the text does not show (here one whose
// WITH updates users) and so must count as an unknown write, as EXECUTE
// p does.
func TestCreateTableAsExecuteInvalidates(t *testing.T) {
	forEachStore(t, func(t *testing.T, env *cacheEnv) {
		setupUsers(t, env)
		env.prime(t, userName, 1)
		execOn(t, env.pinned(t),
			`prepare p as with d as (update users set name = 'changed' where id = 1 returning *) select * from d`,
			`create table t2 as execute p`)
		env.same(t, userName, 1)
	})
}

// TestBeginAtomicInViewInvalidates guards a BEGIN ATOMIC outside CREATE
// FUNCTION or PROCEDURE (here a column begin aliased atomic in a view):
// it was taken for a function body, which swallowed the UPDATE after it.
func TestBeginAtomicInViewInvalidates(t *testing.T) {
	writeThrough(t, `create view v as select x.begin atomic from (select 1 as begin) x; update users set name = 'changed' where id = 1`)
}
