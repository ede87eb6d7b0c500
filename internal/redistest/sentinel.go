package redistest

// Sentinel: a master, its replica and the redis-server processes in
// sentinel mode that monitor them, all on loopback ports.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// sentinelName is the name the Sentinels know the master by.
	sentinelName = "cpqmaster"
	// downAfter is how long (ms) a Sentinel waits for an unanswering server
	// before it calls it down. A replica whose link to its master has been
	// down ten times as long is not promoted.
	downAfter = 1000
	// failoverTimeout (ms) bounds each step of a failover, such as the wait
	// for the promoted replica to report itself master.
	failoverTimeout = 5000
	// sentinelWait bounds the waits for a Sentinel to see the servers as
	// they are, and for a failover to complete.
	sentinelWait = 30 * time.Second
)

// Sentinel is a master, one replica of it and the Sentinels that monitor
// them, owned by a test. Its methods fail the test when something does not
// happen in time: call them from the test's goroutine.
type Sentinel struct {
	Name      string    // the master's name, for redis.FailoverOptions.MasterName
	Addrs     []string  // every Sentinel's host:port, for redis.FailoverOptions.SentinelAddrs
	Master    *Server   // the master at the start
	Replica   *Server   // its replica at the start
	Sentinels []*Server // the Sentinel processes; Restart and Revert do not apply to them

	t testing.TB
}

// StartSentinel runs a master, a replica of it (--replicaof) and sentinels
// Sentinels monitoring the master (quorum: a majority of them), with short
// timeouts, so that a failover takes a few seconds. It waits until the
// replica is in sync and every Sentinel knows the master, the replica and
// the other Sentinels. Everything is stopped at the test's cleanup.
func StartSentinel(t testing.TB, sentinels int) *Sentinel {
	t.Helper()
	if sentinels < 1 {
		t.Fatalf("redistest: a Sentinel deployment needs at least one Sentinel, not %d", sentinels)
	}
	bin := requireBinary(t, "redis-server")
	fast := []string{"--repl-diskless-sync-delay", "0"} // either may be the master
	master := Start(t, fast...)
	replica := Start(t, append(fast, "--replicaof", "127.0.0.1", strconv.Itoa(master.port))...)
	s := &Sentinel{Name: sentinelName, Master: master, Replica: replica, t: t}
	s.waitFor("the replica to sync", s.replicaSynced)
	for range sentinels {
		node := startSentinelNode(t, bin, master.port, sentinels/2+1)
		s.Sentinels = append(s.Sentinels, node)
		s.Addrs = append(s.Addrs, node.Addr)
	}
	s.waitFor("the Sentinels to know the master, the replica and each other", s.monitoring)
	return s
}

// startSentinelNode starts one redis-server in sentinel mode monitoring the
// master on masterPort.
func startSentinelNode(t testing.TB, bin string, masterPort, quorum int) *Server {
	t.Helper()
	for try := 1; ; try++ {
		port := freePort(t, false)
		s := &Server{t: t, port: port, dir: t.TempDir()}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err := s.startSentinel(bin, masterPort, quorum)
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		if try == startTries {
			t.Fatalf("redistest: Sentinel did not start: %v", err)
		}
	}
}

// startSentinel writes the Sentinel's config file (Sentinel rewrites it as
// it learns, so it must be a file of its own) and starts it as start does
// a server.
func (s *Server) startSentinel(bin string, masterPort, quorum int) error {
	conf := filepath.Join(s.dir, "sentinel.conf")
	text := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode yes
daemonize no
dir %s
sentinel monitor %s 127.0.0.1 %d %d
sentinel down-after-milliseconds %[3]s %[6]d
sentinel failover-timeout %[3]s %[7]d
`, s.port, s.dir, sentinelName, masterPort, quorum, downAfter, failoverTimeout)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	return s.run(exec.Command(bin, conf, "--sentinel")) // the config file must come first
}

// waitFor polls cond until it holds, failing the test after sentinelWait
// with the reason cond last gave.
func (s *Sentinel) waitFor(what string, cond func(context.Context) error) {
	s.t.Helper()
	deadline := time.Now().Add(sentinelWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := cond(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redistest: waited %v for %s: %v", sentinelWait, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// replicaSynced reports whether the replica's link to the master is up.
func (s *Sentinel) replicaSynced(ctx context.Context) error { return s.replicaLink(ctx, "up") }

// replicaLink reports whether the replica's link to the master is status.
func (s *Sentinel) replicaLink(ctx context.Context, status string) error {
	info, err := s.Replica.Client().Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "master_link_status:"+status+"\r\n") {
		return fmt.Errorf("replica %s: %q", s.Replica.Addr, info)
	}
	return nil
}

// monitoring reports whether every Sentinel sees the master up, its
// replica up and in sync, and every other Sentinel.
func (s *Sentinel) monitoring(ctx context.Context) error {
	for _, addr := range s.Addrs {
		if err := s.sees(ctx, addr); err != nil {
			return fmt.Errorf("Sentinel %s: %w", addr, err)
		}
	}
	return nil
}

// sees checks what the Sentinel at addr knows of the deployment.
func (s *Sentinel) sees(ctx context.Context, addr string) error {
	c := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	m, err := c.Master(ctx, s.Name).Result()
	if err != nil {
		return err
	}
	others := strconv.Itoa(len(s.Addrs) - 1)
	if m["flags"] != "master" || m["num-slaves"] != "1" || m["num-other-sentinels"] != others {
		return fmt.Errorf("master: flags %q, %s replicas, %s other Sentinels (want %s)",
			m["flags"], m["num-slaves"], m["num-other-sentinels"], others)
	}
	replicas, err := c.Replicas(ctx, s.Name).Result()
	if err != nil {
		return err
	}
	if len(replicas) != 1 || replicas[0]["flags"] != "slave" || replicas[0]["master-link-status"] != "ok" {
		return fmt.Errorf("replicas: %v", replicas)
	}
	return nil
}

// MasterAddr is the master's host:port, as the first Sentinel names it.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	return masterAddr(ctx, s.Addrs[0], s.Name)
}

// masterAddr asks the Sentinel at addr for the master's host:port.
func masterAddr(ctx context.Context, addr, name string) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	hp, err := c.GetMasterAddrByName(ctx, name).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// Failover asks the first Sentinel to fail over (SENTINEL FAILOVER: the
// master need not be down) and waits until the replica says it is the
// master and the given Sentinels (every one if none is given; a paused one
// cannot answer) name it so. The old master is left as it is: the
// Sentinels make it a replica of the new one some seconds later, killing
// its clients' connections.
func (s *Sentinel) Failover(sentinels ...*Server) {
	s.t.Helper()
	if len(sentinels) == 0 {
		sentinels = s.Sentinels
	}
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addrs[0]})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Failover(ctx, s.Name).Err(); err != nil {
		s.t.Fatalf("redistest: SENTINEL FAILOVER %s on %s: %v", s.Name, s.Addrs[0], err)
	}
	s.waitFor("the replica to take over", func(ctx context.Context) error {
		return s.promoted(ctx, sentinels)
	})
}

// promoted reports whether the replica reports itself master and every one
// of sentinels names it so.
func (s *Sentinel) promoted(ctx context.Context, sentinels []*Server) error {
	info, err := s.Replica.Client().Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "role:master\r\n") {
		return fmt.Errorf("replica %s: %q", s.Replica.Addr, info)
	}
	for _, sn := range sentinels {
		got, err := masterAddr(ctx, sn.Addr, s.Name)
		if err != nil {
			return err
		}
		if got != s.Replica.Addr {
			return fmt.Errorf("Sentinel %s names %s the master", sn.Addr, got)
		}
	}
	return nil
}

// CutReplication stops the master feeding its replica, as a partition
// between the two or a lagging link would, while both still answer the
// Sentinels and clients: what the master acknowledges from now on is lost
// if the replica is promoted. The master's default user may no longer run
// PSYNC or SYNC, and the replica's link is killed; it waits until the
// replica reports the link down.
func (s *Sentinel) CutReplication() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m := s.Master.Client()
	if err := m.Do(ctx, "ACL", "SETUSER", "default", "-psync", "-sync").Err(); err != nil {
		s.t.Fatalf("redistest: ACL SETUSER on %s: %v", s.Master.Addr, err)
	}
	if err := m.ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
		s.t.Fatalf("redistest: CLIENT KILL TYPE replica on %s: %v", s.Master.Addr, err)
	}
	s.waitFor("the replica's link to go down", func(ctx context.Context) error {
		return s.replicaLink(ctx, "down")
	})
}
