package cachedpq

import (
	"slices"
	"testing"

	"github.com/lib/pq"
)

// TestCommitsMidway: the statements that may commit part of what they do
// and then fail, whose errors must not hide that part.
func TestCommitsMidway(t *testing.T) {
	tests := []struct {
		q    string
		want bool
	}{
		{`call p()`, true},
		{`do $$ begin commit; end $$`, true},
		{`alter table m detach partition m1 concurrently`, true},
		{`ALTER TABLE IF EXISTS ONLY m DETACH PARTITION s.m1 CONCURRENTLY;`, true},
		{`alter table m detach partition m1`, false},
		{`alter table m detach partition m1 finalize`, false},
		{`create index concurrently on m (k)`, false},
		{`update t set a = 1`, false},
		{`execute s`, false},
	}
	for _, tt := range tests {
		if got := analyzeUncached(tt.q).commitsMidway; got != tt.want {
			t.Errorf("%q: commitsMidway = %v, want %v", tt.q, got, tt.want)
		}
	}
}

// TestNotRun: only a syntax error of the raw parser shows that nothing of
// a string ran; one raised as a later statement of it is analyzed or runs
// comes after its earlier statements ran.
func TestNotRun(t *testing.T) {
	tests := []struct {
		err  *pq.Error
		want bool
	}{
		{&pq.Error{Code: "42601", Routine: "scanner_yyerror"}, true},
		{&pq.Error{Code: "42601", Routine: "base_yyparse"}, true},
		{&pq.Error{Code: "42601", Routine: "exec_parse_message"}, true},
		{&pq.Error{Code: "42601", Routine: "scanner_yyerror", InternalPosition: "5"}, false},
		{&pq.Error{Code: "42601", Routine: "prssyntaxerror"}, false},            // to_tsquery('&&')
		{&pq.Error{Code: "42601", Routine: "transformSetOperationTree"}, false}, // SELECT INTO in a UNION
		{&pq.Error{Code: "42601"}, false},
		{&pq.Error{Code: "22012", Routine: "scanner_yyerror"}, false},
	}
	for _, tt := range tests {
		if got := notRun(tt.err); got != tt.want {
			t.Errorf("%s from %q: notRun = %v, want %v", tt.err.Code, tt.err.Routine, got, tt.want)
		}
	}
}

// TestAlterCalls: ALTER TABLE evaluates the expressions of a column
// default it adds, of USING and of CHECK on every row, so their functions
// are calls of the statement.
func TestAlterCalls(t *testing.T) {
	tests := []struct {
		q    string
		want string
	}{
		{`alter table users add column c int default bump()`, "bump"},
		{`alter table users alter column score type int using s.bump(score)`, "s.bump"},
		{`alter table only users add constraint k check (ok(id))`, "ok"},
		{`alter table t rename to u`, ""},
	}
	for _, tt := range tests {
		fns := analyzeUncached(tt.q).functions
		if tt.want == "" && len(fns) > 0 || tt.want != "" && !slices.Contains(fns, tt.want) {
			t.Errorf("%q: functions %q, want %q among them", tt.q, fns, tt.want)
		}
	}
}
