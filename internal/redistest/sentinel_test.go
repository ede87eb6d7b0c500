package redistest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestSentinelFailover: the Sentinels know the deployment, a write the
// master takes after CutReplication is not on the replica, and after
// Failover the Sentinels and a failover client reach the replica.
func TestSentinelFailover(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(map[int]string{1: "one", 3: "three"}[n], func(t *testing.T) {
			start := time.Now()
			s := StartSentinel(t, n)
			t.Logf("started in %v", time.Since(start))
			ctx := ctxT(t)
			if got, err := s.MasterAddr(ctx); err != nil || got != s.Master.Addr {
				t.Fatalf("MasterAddr = %q, %v; want %s", got, err, s.Master.Addr)
			}
			c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.Name, SentinelAddrs: s.Addrs})
			defer c.Close()
			if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if n, err := s.Master.Client().Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
				t.Fatalf("WAIT: %d %v", n, err)
			}
			s.CutReplication()
			if err := c.Set(ctx, "after", "1", 0).Err(); err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			s.Failover()
			t.Logf("failover in %v", time.Since(start))
			if got, err := s.MasterAddr(ctx); err != nil || got != s.Replica.Addr {
				t.Fatalf("MasterAddr = %q, %v; want %s", got, err, s.Replica.Addr)
			}
			// The client learns of it from the Sentinel's +switch-master.
			_, port, _ := net.SplitHostPort(s.Replica.Addr)
			waitClient(t, func() bool {
				return strings.Contains(c.Info(context.Background(), "server").Val(), "tcp_port:"+port+"\r\n")
			})
			if got := c.Get(ctx, "before").Val(); got != "1" {
				t.Fatalf("the write made before CutReplication is not on the promoted replica: %q", got)
			}
			if n := c.Exists(ctx, "after").Val(); n != 0 {
				t.Fatal("the write made after CutReplication reached the promoted replica")
			}
		})
	}
}

// waitClient polls cond for a few seconds.
func waitClient(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
