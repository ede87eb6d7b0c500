// Package redistest runs private redis-server instances and Redis Clusters
// on loopback ports for tests, so that a test can kill, stall and restart
// its own Redis without disturbing anyone else's.
//
// Every server binds 127.0.0.1 only, saves nothing unless asked (--save ""
// --appendonly no) and lives in its own t.TempDir(); t.Cleanup stops it.
// When redis-server is not installed the test is skipped, or failed when the
// environment has CI=true.
package redistest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// startTries is how often a start is retried on a port that another
	// process took between our probe and redis-server's bind.
	startTries = 5
	// readyTimeout bounds the wait for a started server to answer PING.
	readyTimeout = 10 * time.Second
	// clusterBusOffset is where Redis Cluster puts a node's bus port.
	clusterBusOffset = 10000
)

// Server is one redis-server process owned by a test. Its methods are safe
// for concurrent use.
type Server struct {
	Addr string // host:port, on 127.0.0.1

	t    testing.TB
	port int
	dir  string
	args []string

	mu     sync.Mutex    // guards cmd, exited, out, client
	cmd    *exec.Cmd     // the running process, nil once killed
	exited chan struct{} // closed when cmd has exited
	out    *bytes.Buffer // the process's output, shown when a start fails
	client *redis.Client // made by Client, closed at cleanup
}

// Start runs a redis-server on a free loopback port with extra args (such
// as "--maxmemory", "1mb"), waits until it answers PING and stops it at the
// test's cleanup.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin := requireBinary(t, "redis-server")
	for try := 1; ; try++ {
		port := freePort(t, false)
		s := &Server{t: t, port: port, dir: t.TempDir(), args: args}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err := s.start(bin)
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		if try == startTries {
			t.Fatalf("redistest: redis-server did not start: %v", err)
		}
	}
}

// requireBinary returns the path of a program, or skips (fails under CI)
// the test when it is not installed.
func requireBinary(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("redistest: %s is required under CI: %v", name, err)
	}
	t.Skipf("redistest: %s not installed: %v", name, err)
	return ""
}

// freePort returns a loopback port that was free a moment ago; with bus,
// one whose cluster bus port (port+10000) was free too.
func freePort(t testing.TB, bus bool) int {
	t.Helper()
	for range 100 {
		port, ok := probePort(0)
		if !ok || !bus {
			if ok {
				return port
			}
			continue
		}
		if port+clusterBusOffset <= 65535 {
			if _, ok := probePort(port + clusterBusOffset); ok {
				return port
			}
		}
	}
	t.Fatal("redistest: no free loopback port found")
	return 0
}

// probePort listens on 127.0.0.1:port (0: any) and closes at once,
// returning the port it got.
func probePort(port int) (int, bool) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return 0, false
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, true
}

// start launches the process and waits until it answers; on failure the
// process is gone and the error carries its output.
func (s *Server) start(bin string) error {
	args := append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--daemonize", "no", "--protected-mode", "yes",
	}, s.args...)
	return s.run(exec.Command(bin, args...))
}

// run starts cmd as s's process and waits until it answers; on failure
// the process is gone and the error carries its output.
func (s *Server) run(cmd *exec.Cmd) error {
	out := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited, s.out = cmd, exited, out
	s.mu.Unlock()
	if err := waitReady(s.Addr, exited); err != nil {
		s.Kill()
		return fmt.Errorf("%w; output:\n%s", err, out.String())
	}
	return nil
}

// waitReady polls addr with PING until it answers, the process exits or
// readyTimeout passes.
func waitReady(addr string, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited: %v", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready: %v", addr, err)
		}
	}
}

// signal sends sig to the running process, if any.
func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Kill stops the server at once (SIGKILL), as a crash would, and waits
// until the process has exited. It loses everything not saved.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(readyTimeout):
		s.t.Errorf("redistest: redis-server on %s survived SIGKILL", s.Addr)
	}
}

// Pause stalls the server (SIGSTOP): connections stay open, nothing answers.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume ends a Pause (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Restart kills the server and starts it again on the same port. With
// keepData, the dataset is saved (SAVE to dump.rdb in its dir) first and
// loaded again; without, the new server starts empty.
func (s *Server) Restart(keepData bool) {
	s.t.Helper()
	rdb := filepath.Join(s.dir, "dump.rdb")
	if keepData {
		s.Resume()
		s.save()
	}
	s.Kill()
	if !keepData {
		_ = os.Remove(rdb)
	}
	if err := s.start(requireBinary(s.t, "redis-server")); err != nil {
		s.t.Fatalf("redistest: restart on %s: %v", s.Addr, err)
	}
}

// Revert kills the server (SIGKILL) and starts it again on the same port
// from the last snapshot in its dir (a SAVE the test made), as a crash and
// a restart from an old snapshot would: everything written since is lost.
// A cluster node keeps its nodes.conf, and so its ID and slots.
func (s *Server) Revert() {
	s.t.Helper()
	s.Kill()
	if err := s.start(requireBinary(s.t, "redis-server")); err != nil {
		s.t.Fatalf("redistest: revert on %s: %v", s.Addr, err)
	}
}

// save writes the dataset to dump.rdb in the server's dir.
func (s *Server) save() {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := c.Save(ctx).Err(); err != nil {
		s.t.Fatalf("redistest: SAVE on %s: %v", s.Addr, err)
	}
}

// Client returns a client of the server, the same one on every call,
// closed at the test's cleanup. It reconnects across Restart.
func (s *Server) Client() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = redis.NewClient(&redis.Options{Addr: s.Addr})
	}
	return s.client
}

// stop closes the client and kills the process; run at cleanup.
func (s *Server) stop() {
	s.mu.Lock()
	c := s.client
	s.client = nil
	s.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
	s.Kill()
}

// Cluster is a Redis Cluster owned by a test.
type Cluster struct {
	Addrs   []string // every node's host:port
	Servers []*Server

	t      testing.TB
	mu     sync.Mutex           // guards client
	client *redis.ClusterClient // made by Client, closed at cleanup
}

// StartCluster runs masters (at least 3, as redis-cli requires) cluster
// nodes on free loopback ports whose bus ports are free too, joins them with
// `redis-cli --cluster create`, and waits until every node reports
// cluster_state:ok with all 16384 slots covered. It is stopped at cleanup.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	return startCluster(t, masters, 0)
}

// StartReplicatedCluster is StartCluster with one replica per master (see
// ReplicaOf). It waits until every replica is in sync.
func StartReplicatedCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	c := startCluster(t, masters, 1)
	deadline := time.Now().Add(30 * time.Second)
	for c.synced() < masters {
		if time.Now().After(deadline) {
			t.Fatalf("redistest: %d of %d replicas in sync after 30s", c.synced(), masters)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// synced counts the replicas in sync with their master.
func (c *Cluster) synced() int {
	n := 0
	for _, s := range c.Servers {
		if strings.Contains(s.info("replication"), "master_link_status:up") {
			n++
		}
	}
	return n
}

// ReplicaOf returns the replica of master, or nil if it has none.
func (c *Cluster) ReplicaOf(master *Server) *Server {
	for _, s := range c.Servers {
		if strings.Contains(s.info("replication"), "master_port:"+strconv.Itoa(master.port)+"\r\n") {
			return s
		}
	}
	return nil
}

// info is the server's INFO section, or "" if it does not answer.
func (s *Server) info(section string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.Client().Info(ctx, section).Val()
}

// startCluster starts a cluster with replicas per master.
func startCluster(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redistest: a cluster needs at least 3 masters, not %d", masters)
	}
	cli := requireBinary(t, "redis-cli")
	c := &Cluster{t: t}
	for range masters * (1 + replicas) {
		s := startNode(t)
		c.Servers = append(c.Servers, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	t.Cleanup(c.closeClient) // runs before the servers' cleanups
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy()
	return c
}

// startNode starts one cluster-enabled server whose bus port is free.
func startNode(t testing.TB) *Server {
	t.Helper()
	bin := requireBinary(t, "redis-server")
	for try := 1; ; try++ {
		port := freePort(t, true)
		s := &Server{t: t, port: port, dir: t.TempDir(), args: []string{
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--repl-diskless-sync-delay", "0",
		}}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err := s.start(bin)
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		if try == startTries {
			t.Fatalf("redistest: cluster node did not start: %v", err)
		}
	}
}

// WaitHealthy waits until every node sees the whole cluster, all slots
// covered and its state ok (after a node restarted, say).
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !c.healthy() {
		if time.Now().After(deadline) {
			c.t.Fatalf("redistest: cluster %v not ok after 30s", c.Addrs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// healthy reports whether every node's CLUSTER INFO says the cluster is ok.
func (c *Cluster) healthy() bool {
	for _, s := range c.Servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := s.Client().ClusterInfo(ctx).Result()
		cancel()
		if err != nil || !clusterOK(info, len(c.Servers)) {
			return false
		}
	}
	return true
}

// clusterOK reads a CLUSTER INFO answer.
func clusterOK(info string, nodes int) bool {
	want := []string{
		"cluster_state:ok",
		"cluster_slots_ok:16384",
		"cluster_known_nodes:" + strconv.Itoa(nodes),
	}
	for _, w := range want {
		if !bytes.Contains([]byte(info), []byte(w+"\r\n")) {
			return false
		}
	}
	return true
}

// Client returns a cluster client of all masters, the same one on every
// call, closed at the test's cleanup.
func (c *Cluster) Client() *redis.ClusterClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		c.client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	}
	return c.client
}

// closeClient closes the cluster client; run at cleanup.
func (c *Cluster) closeClient() {
	c.mu.Lock()
	cl := c.client
	c.client = nil
	c.mu.Unlock()
	if cl != nil {
		_ = cl.Close()
	}
}
