package cachedpq

import (
	"slices"
	"testing"
)

// TestKeywordAliasTables: non-reserved keywords used as column aliases,
// table aliases and column names, which ended or hid a FROM list and so
// lost its tables.
func TestKeywordAliasTables(t *testing.T) {
	tests := []struct {
		q             string
		reads, writes []string
	}{
		// A select item named rows or delete is no ROWS FROM or DELETE FROM.
		{"select count(*) as rows from users", []string{"users"}, nil},
		{"select count(*) rows from users", []string{"users"}, nil},
		{"select rows from t", []string{"t"}, nil},
		{"select 1 as delete from t", []string{"t"}, nil},
		{"select x.delete from t x, u", []string{"t", "u"}, nil},
		{"select * from t where a = (select delete from u limit 1)", []string{"t", "u"}, nil},
		{"insert into w select rows from t", []string{"t"}, []string{"w"}},
		{"update w set a = delete from t", []string{"t"}, []string{"w"}},
		{"select * from rows from (generate_series(1, 2), unnest(array[1])) as x(a, b), t", []string{"t"}, nil},
		// A DELETE FROM that starts a statement still reads nothing.
		{"delete from t where a in (select a from u)", []string{"u"}, []string{"t"}},
		{"with x as (select 1) delete from t", nil, []string{"t"}},
		{"select * from (with x as (select 1) delete from t returning 1) d", nil, []string{"t"}},
		{"explain analyze delete from t using u", []string{"u"}, []string{"t"}},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			a := analyzeUncached(tt.q)
			if !slices.Equal(a.reads, tt.reads) || !slices.Equal(a.writes, tt.writes) {
				t.Errorf("reads %q writes %q, want %q %q", a.reads, a.writes, tt.reads, tt.writes)
			}
		})
	}
}
