package integration

import (
	"context"
	"testing"

	"github.com/cachedpq/cachedpq"
)

// TestHiddenSessionChange: a DO block or a function that calls set_config
// changes the session as SET does, so its connection must neither be
// served nor fill entries that other connections are served.
func TestHiddenSessionChange(t *testing.T) {
	for _, change := range []string{
		`do $$ begin perform set_config('TimeZone', 'Asia/Tokyo', false); end $$`,
		`select set_tz()`,
	} {
		t.Run(change[:2], func(t *testing.T) {
			forEachStore(t, func(t *testing.T, env *cacheEnv) {
				mustExec(t, env.raw, `create function set_tz() returns void language plpgsql volatile as
					$$ begin perform set_config('TimeZone', 'Asia/Tokyo', false); end $$`)
				q := `select '2024-01-01 00:00+00'::timestamptz::text where $1::int > 0`
				env.register(t, q, cachedpq.Policy{})
				want := env.same(t, q, 1)[0]
				ctx := context.Background()
				c := env.pinned(t)
				if _, err := c.ExecContext(ctx, change); err != nil {
					t.Fatal(err)
				}
				var got string
				if err := c.GetContext(ctx, &got, q, 1); err != nil || got != "2024-01-01 09:00:00+09" {
					t.Fatalf("after %s the connection read %q, %v", change, got, err)
				}
				if got := env.same(t, q, 1); got[0] != want {
					t.Fatalf("after %s another connection read %v, want %v", change, got, want)
				}
			})
		})
	}
}
