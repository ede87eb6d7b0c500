package cachedpq

import (
	"slices"
	"testing"
)

// TestReachFollowsHierarchies: a write to a partition changes what its
// ancestors read, and a write to a parent may change every descendant's
// rows, but a partition's write leaves its siblings alone.
func TestReachFollowsHierarchies(t *testing.T) {
	cat := &catalog{
		parents:  map[string][]string{"m1": {"m"}, "m2": {"m"}, "m11": {"m1"}, "c": {"p"}},
		children: map[string][]string{"m": {"m1", "m2"}, "m1": {"m11"}, "p": {"c"}},
		cascades: map[string][]string{"m11": {"orders"}},
	}
	tests := []struct {
		writes []string
		want   []string
	}{
		{[]string{"m11"}, []string{"m11", "orders", "m1", "m"}},
		{[]string{"m1"}, []string{"m1", "m", "m11", "orders"}},
		{[]string{"m"}, []string{"m", "m1", "m2", "m11", "orders"}},
		{[]string{"c"}, []string{"c", "p"}},
		{[]string{"x"}, []string{"x"}},
	}
	for _, tt := range tests {
		got, _ := cat.reach(tt.writes, false)
		slices.Sort(got)
		want := slices.Sorted(slices.Values(tt.want))
		if !slices.Equal(got, want) {
			t.Errorf("reach(%v) = %v, want %v", tt.writes, got, want)
		}
	}
}
