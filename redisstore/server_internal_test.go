package redisstore

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// RedisServer is a real redis-server on a free loopback port, owned by one
// test: no data on disk, stopped at the test's end. It is exported (in
// test builds only) for the package's external tests.
type RedisServer struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

// Addr is the server's address, the same across restarts.
func (r *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// StartRedis starts a redis-server for t. It skips t when the binary is not
// installed (CI installs it: see .ci/run).
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("RESIL_REQUIRE_REDIS") != "" {
			t.Fatal("redis-server is not installed, and RESIL_REQUIRE_REDIS is set (as .ci/run sets it)")
		}
		t.Skip("redis-server is not installed (Debian: apt-get install -y redis-server); .ci/run installs it, so CI runs this test")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	r := &RedisServer{t: t, port: port}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start runs the server (again) on its port and waits until it answers.
func (r *RedisServer) Start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server",
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.t.TempDir())
	require.NoError(r.t, r.cmd.Start())
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		require.True(r.t, time.Now().Before(deadline), "redis-server did not answer on %s", r.Addr())
		// A real process starting: real time is the only clock it knows.
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills the server and waits for it to exit. Stopping a stopped
// server does nothing.
func (r *RedisServer) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}
