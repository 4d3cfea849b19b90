package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/server"
)

// maxThreads bounds the OS threads of a process serving any number of
// sessions: GOMAXPROCS, the runtime's own, the relay poller's one, a few
// in system calls. Before the one poller per process, a server had a
// thread per session (issue 21: 945 for 935 sessions).
const maxThreads = 50

// TestManySessions: 1 000 client sessions (500 under the race detector,
// which caps live goroutines) on one in-process server, opened by "warren
// swarm" in a process of its own, each claiming a domain of its own (no
// public port each, so no port may collide); the server's process keeps
// fewer than maxThreads OS threads. The figures at scale are the bench's
// sessions scenario (docs/benchmarks.md).
func TestManySessions(t *testing.T) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("WARREN_E2E_SESSIONS")); err == nil {
		n = v
	}
	if raceEnabled {
		n = 500
	}
	raiseFileLimit(t, uint64(n+1024))
	cfg := serverConfig(t, "tcp")
	cfg.HTTP = server.Entry{Address: "127.0.0.1:0"}
	// Every swarm client dials from 127.0.0.1: the per-IP cap is the
	// global one here.
	cfg.Limits.MaxHandshakesPerIP = cfg.Limits.MaxHandshakes
	cfg.HeartbeatInterval, cfg.HeartbeatMisses = 5*time.Second, 3 // the defaults: the server is busy
	cfg.Clients = nil
	for i := range n {
		cfg.Clients = append(cfg.Clients, server.Client{Name: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("%s-%d", tokenOffice, i), Domains: []string{"*.swarm.test"}})
	}
	srv := startServer(t, cfg)
	threads0 := threadsOfSelf(t)

	dir := t.TempDir()
	file := writeFile(t, dir, "swarm.toml", fmt.Sprintf(`
[client]
server = %q
transport = "tcp"
token = %q
[client.tls]
fingerprint = %q
[[client.services]]
name = "web"
target = "127.0.0.1:9"
domains = ["swarm.test"]
`, srv.addr(), tokenOffice, srv.Fingerprint()))
	swarm := startProc(t, nil, "swarm", "-c", file, "-n", strconv.Itoa(n), "--every", "1s")

	deadline := time.After(3 * time.Minute) // 1 000 TLS handshakes on a busy 2-core machine
	for {
		ch := srv.Changed()
		if got := len(srv.Sessions()); got == n {
			break
		}
		select {
		case <-ch:
		case <-swarm.done:
			t.Fatalf("swarm exited with %d sessions up", len(srv.Sessions()))
		case <-deadline:
			t.Fatalf("%d of %d sessions up", len(srv.Sessions()), n)
		}
	}
	threads := threadsOfSelf(t)
	t.Logf("%d sessions: %d OS threads (%d before)", n, threads, threads0)
	if threads >= maxThreads {
		t.Errorf("%d OS threads with %d sessions, want fewer than %d", threads, n, maxThreads)
	}
	swarm.stop(syscall.SIGTERM)
}

// threadsOfSelf reads this process's OS thread count (/proc/self/status).
func threadsOfSelf(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("cannot count threads: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("Threads line %q: %v", l, err)
			}
			return n
		}
	}
	t.Skip("no Threads line in /proc/self/status")
	return 0
}
