package redistest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ctxT returns a context bounded by a few seconds, so a stuck server fails
// the test instead of hanging it.
func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartAnswersAndCleansUp(t *testing.T) {
	var addr string
	t.Run("inner", func(t *testing.T) {
		s := Start(t, "--maxmemory", "1mb")
		addr = s.Addr
		ctx := ctxT(t)
		if err := s.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		got, err := s.Client().ConfigGet(ctx, "maxmemory").Result()
		if err != nil || got["maxmemory"] != "1048576" {
			t.Fatalf("extra args not applied: %v %v", got, err)
		}
		if c1, c2 := s.Client(), s.Client(); c1 != c2 {
			t.Fatal("Client is not memoised")
		}
	})
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(ctxT(t)).Err(); err == nil {
		t.Fatalf("server on %s still answers after its test ended", addr)
	}
}

func TestKill(t *testing.T) {
	s := Start(t)
	s.Kill()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(ctxT(t)).Err(); err == nil {
		t.Fatal("killed server still answers")
	}
	s.Kill() // a second Kill is harmless
}

func TestPauseResume(t *testing.T) {
	s := Start(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, ReadTimeout: 200 * time.Millisecond})
	defer c.Close()
	if err := c.Ping(ctxT(t)).Err(); err != nil {
		t.Fatal(err)
	}
	s.Pause()
	err := c.Ping(ctxT(t)).Err()
	var nerr interface{ Timeout() bool }
	if !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Fatalf("paused server: want a timeout, got %v", err)
	}
	s.Resume()
	deadline := time.Now().Add(5 * time.Second)
	for c.Ping(ctxT(t)).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("resumed server does not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRestart(t *testing.T) {
	for _, keep := range []bool{true, false} {
		t.Run(fmt.Sprintf("keepData=%v", keep), func(t *testing.T) {
			s := Start(t)
			ctx := ctxT(t)
			if err := s.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			s.Pause() // Restart must cope with a stalled server
			s.Restart(keep)
			n, err := s.Client().Exists(ctx, "k").Result()
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int64{true: 1, false: 0}[keep]; n != want {
				t.Fatalf("key exists %d after restart, want %d", n, want)
			}
		})
	}
}

func TestRevert(t *testing.T) {
	s := Start(t)
	ctx := ctxT(t)
	if err := s.Client().Set(ctx, "saved", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.save()
	if err := s.Client().Set(ctx, "lost", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Revert()
	if n := s.Client().Exists(ctx, "saved", "lost").Val(); n != 1 || s.Client().Exists(ctx, "saved").Val() != 1 {
		t.Fatalf("after Revert: %d of the keys exist, want the saved one alone", n)
	}
}

func TestClusterCoversAllSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := StartCluster(t, 3)
	ctx := ctxT(t)
	cl := c.Client()
	for i := range 50 { // keys spread over every master
		if err := cl.Set(ctx, fmt.Sprint("key", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	for _, s := range c.Servers {
		n, err := s.Client().DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			seen++
		}
	}
	if seen != 3 {
		t.Fatalf("keys landed on %d of 3 masters", seen)
	}
}

func TestReplicatedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := StartReplicatedCluster(t, 3)
	ctx := ctxT(t)
	masters := 0
	for _, s := range c.Servers {
		if role := s.Client().Do(ctx, "ROLE").Val().([]any)[0]; role != "master" {
			continue
		}
		masters++
		if r := c.ReplicaOf(s); r == nil || r == s {
			t.Fatalf("master %s: replica %v", s.Addr, r)
		}
	}
	if masters != 3 || len(c.Servers) != 6 {
		t.Fatalf("%d masters of %d nodes", masters, len(c.Servers))
	}
}

func TestClusterOK(t *testing.T) {
	ok := "cluster_state:ok\r\ncluster_slots_ok:16384\r\ncluster_known_nodes:3\r\n"
	tests := []struct {
		name  string
		info  string
		nodes int
		want  bool
	}{
		{"ok", ok, 3, true},
		{"fail state", "cluster_state:fail\r\ncluster_slots_ok:16384\r\ncluster_known_nodes:3\r\n", 3, false},
		{"missing slots", "cluster_state:ok\r\ncluster_slots_ok:16000\r\ncluster_known_nodes:3\r\n", 3, false},
		{"unknown node", ok, 4, false},
		{"prefix is not a match", "cluster_state:ok\r\ncluster_slots_ok:163840\r\ncluster_known_nodes:3\r\n", 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clusterOK(tt.info, tt.nodes); got != tt.want {
				t.Fatalf("clusterOK = %v, want %v", got, tt.want)
			}
		})
	}
}
