package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
)

// warrenBin is the binary under test, built once by TestMain (with the race
// detector when the tests have it).
var warrenBin string

func TestMain(m *testing.M) {
	if mode := os.Getenv("WARREN_E2E_HELPER"); mode != "" {
		os.Exit(runHelper(mode))
	}
	dir, err := os.MkdirTemp("", "warren-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	warrenBin = filepath.Join(dir, "warren")
	args := []string{"build", "-o", warrenBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/warren-tunnel/warren/cmd/warren")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building warren:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a warren child process whose stderr is read as JSON log records.
// Tests wait on its state through its admin API (waitStatus) when it has
// one, and read its log for what it says to its user.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	admin  admin.Client // Addr "" when it has no admin API
	stdout *lockedBuffer
	mu     sync.Mutex
	logs   []map[string]any
	raw    strings.Builder
	more   chan struct{} // closed and replaced on each new line
	done   chan struct{}
	code   int
}

type lockedBuffer struct {
	mu   sync.Mutex
	b    strings.Builder
	more chan struct{} // closed and replaced on each write; nil until waited on
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.more != nil {
		close(l.more)
		l.more = nil
	}
	return l.b.Write(p)
}

// waitLine waits until the buffer has a whole line containing s, or done
// is closed, or waitTimeout passes; it returns the line, or "".
func (l *lockedBuffer) waitLine(s string, done <-chan struct{}) string {
	deadline := time.After(waitTimeout)
	for {
		l.mu.Lock()
		for _, line := range strings.SplitAfter(l.b.String(), "\n") {
			if strings.HasSuffix(line, "\n") && strings.Contains(line, s) {
				l.mu.Unlock()
				return strings.TrimSuffix(line, "\n")
			}
		}
		if l.more == nil {
			l.more = make(chan struct{})
		}
		more := l.more
		l.mu.Unlock()
		select {
		case <-more:
		case <-done:
			return ""
		case <-deadline:
			return ""
		}
	}
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProc runs warren with args; env entries ("K=V") add to the
// environment.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startProcIn(t, "", env, args...)
}

// startProcIn is startProc in the working directory dir ("": the test's).
func startProcIn(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(warrenBin, args...), stdout: &lockedBuffer{}, more: make(chan struct{}), done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.stdout
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var rec map[string]any
			json.Unmarshal(sc.Bytes(), &rec)
			p.mu.Lock()
			p.raw.WriteString(sc.Text() + "\n")
			if rec != nil {
				p.logs = append(p.logs, rec)
			}
			close(p.more)
			p.more = make(chan struct{})
			p.mu.Unlock()
		}
		err := p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		if ee, ok := err.(*exec.ExitError); ok && !ee.Exited() {
			p.code = -1 // killed by a signal
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", args[0], p.stderr())
		}
	})
	return p
}

func (p *proc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.raw.String()
}

// waitLog waits for a log record with message msg whose attributes include
// the given key/value pairs (values compared as text), and returns it.
func (p *proc) waitLog(msg string, kv ...string) map[string]any {
	p.t.Helper()
	return p.waitRecord(fmt.Sprintf("%q %v", msg, kv), func(r map[string]any) bool {
		if r["msg"] != msg {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if fmt.Sprint(r[kv[i]]) != kv[i+1] {
				return false
			}
		}
		return true
	})
}

// waitRecord waits for a log record that match accepts, and returns it.
func (p *proc) waitRecord(what string, match func(map[string]any) bool) map[string]any {
	p.t.Helper()
	deadline := time.After(waitTimeout)
	seen := 0
	for {
		p.mu.Lock()
		recs, more := p.logs[seen:], p.more
		p.mu.Unlock()
		for _, r := range recs {
			seen++
			if match(r) {
				return r
			}
		}
		select {
		case <-more:
		case <-p.done:
			p.t.Fatalf("process exited (code %d) before logging %s:\n%s", p.code, what, p.stderr())
		case <-deadline:
			p.t.Fatalf("no log %s:\n%s", what, p.stderr())
		}
	}
}

// waitStatus polls the process's admin API until its status satisfies ok
// (the API has no change signal), and returns it.
func (p *proc) waitStatus(what string, ok func(admin.Status) bool) admin.Status {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, _, err := p.admin.Status(ctx)
		cancel()
		if err == nil && ok(st) {
			return st
		}
		last = err
		select {
		case <-p.done:
			p.t.Fatalf("process exited (code %d) before %s:\n%s", p.code, what, p.stderr())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no %s after %v (last error %v):\n%s", what, waitTimeout, last, p.stderr())
		}
	}
}

// logged reports whether the process has logged a record with message
// msg and the given attributes: for what a process says, once it has
// said it (after it exited, say).
func (p *proc) logged(msg string, kv ...string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.logs {
		if r["msg"] != msg {
			continue
		}
		all := true
		for i := 0; i+1 < len(kv); i += 2 {
			all = all && fmt.Sprint(r[kv[i]]) == kv[i+1]
		}
		if all {
			return true
		}
	}
	return false
}

// sessionOn reports whether a server's status shows a session of client
// over transport.
func sessionOn(st admin.Status, client, transport string) bool {
	for _, c := range st.Clients {
		for _, s := range c.Sessions {
			if c.Name == client && s.Transport == transport {
				return true
			}
		}
	}
	return false
}

// signal sends sig and waits for the exit code.
func (p *proc) stop(sig syscall.Signal) int {
	p.t.Helper()
	p.cmd.Process.Signal(sig)
	return p.wait()
}

func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(waitTimeout):
		p.t.Fatalf("process did not exit:\n%s", p.stderr())
		return 0
	}
}

// writeFile writes a file into dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startReadyServer starts "warren server -c cfg", whose admin API is at
// adminAddr, and waits until its status says ready; it returns the process
// and that status.
func startReadyServer(t *testing.T, cfg, adminAddr string) (*proc, admin.Status) {
	t.Helper()
	p := startProc(t, nil, "server", "-c", cfg)
	p.admin = admin.Client{Addr: adminAddr}
	return p, p.waitStatus("ready", func(st admin.Status) bool { return st.Ready })
}

// binServer starts "warren server" on both transports, with its admin API
// on a free loopback port, and waits until it is ready; it returns the
// process, the tunnel address of each transport and the fingerprint, as
// its status gives them.
func binServer(t *testing.T, dir, tcpAddr, kcpAddr string) (p *proc, addrs map[string]string, fingerprint string) {
	t.Helper()
	adminAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(t)))
	cfg := writeFile(t, dir, "server.toml", fmt.Sprintf(`
[server]
public_address = "127.0.0.1"
state_dir = %q
heartbeat_interval = "200ms"
heartbeat_misses = 3
shutdown_timeout = "5s"
[[server.listen]]
transport = "tcp"
address = %q
[[server.listen]]
transport = "kcp"
address = %q
[[server.clients]]
name = "office"
token_file = %q
ports = ["1024-65535"]
[server.log]
level = "debug"
format = "json"
[server.admin]
address = %q
`, filepath.Join(dir, "state"), tcpAddr, kcpAddr, writeFile(t, dir, "token", tokenOffice+"\n"), adminAddr))
	p, st := startReadyServer(t, cfg, adminAddr)
	addrs = map[string]string{}
	for _, l := range st.Listeners {
		addrs[strings.TrimSuffix(l.Transport, "+tls")] = l.Address
	}
	return p, addrs, st.Fingerprint
}

// binClient starts "warren client" for one echo service, with the token
// in the environment and its admin API on a free loopback port, and waits
// until it serves; it returns the process and the granted public port.
func binClient(t *testing.T, dir, kind, server, fingerprint, token, target string, remotePort int) (*proc, int) {
	t.Helper()
	adminAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(t)))
	cfg := writeFile(t, dir, "client-"+kind+".toml", fmt.Sprintf(`
[client]
server = %q
transport = %q
token_env = "WARREN_TEST_TOKEN"
heartbeat_interval = "200ms"
heartbeat_misses = 3
shutdown_timeout = "5s"
[client.tls]
fingerprint = %q
[[client.services]]
name = "echo"
target = %q
remote_port = %d
[client.log]
level = "debug"
format = "json"
[client.admin]
address = %q
`, server, kind, fingerprint, target, remotePort, adminAddr))
	p := startProc(t, []string{"WARREN_TEST_TOKEN=" + token}, "client", "-c", cfg)
	p.admin = admin.Client{Addr: adminAddr}
	if token != tokenOffice {
		return p, 0
	}
	st := p.waitStatus("a session", func(st admin.Status) bool { return st.Ready && st.Session != nil })
	return p, st.Session.Services[0].RemotePort
}

// TestBinaryTunnel runs the real binary as server and client with config
// files, carries data over each transport, and stops both with SIGTERM.
func TestBinaryTunnel(t *testing.T) {
	dir := t.TempDir()
	target := backend(t, echo)
	srv, addrs, fp := binServer(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(fp) {
		t.Fatalf("server logged fingerprint %q", fp)
	}
	for _, kind := range transports {
		t.Run(kind, func(t *testing.T) {
			cli, port := binClient(t, dir, kind, addrs[kind], fp, tokenOffice, target, 0)
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			roundTrip(t, addr)
			srv.waitStatus("office's session", func(st admin.Status) bool { return sessionOn(st, "office", kind+"+tls") })
			if code := cli.stop(syscall.SIGTERM); code != exitOK {
				t.Fatalf("client exited %d on SIGTERM, want 0", code)
			}
			if !cli.logged("client stopped") {
				t.Errorf("the client did not say it stopped:\n%s", cli.stderr())
			}
			srv.waitStatus("office's session gone", func(st admin.Status) bool { return !sessionOn(st, "office", kind+"+tls") })
		})
	}
	if code := srv.stop(syscall.SIGTERM); code != exitOK {
		t.Fatalf("server exited %d on SIGTERM, want 0", code)
	}
	if !srv.logged("server stopped") {
		t.Errorf("the server did not say it stopped:\n%s", srv.stderr())
	}
}

// Exit codes of the binary.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// TestBinaryUsageErrors: bad command lines and config files exit 2 with a
// message naming what was wrong and where.
func TestBinaryUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"no command", nil, []string{"Usage"}},
		{"unknown command", []string{"serve"}, []string{`unknown command "serve"`}},
		{"unknown flag", []string{"server", "--bogus"}, []string{"bogus"}},
		{"server without token", []string{"server", "--ports", "2222"}, []string{"--token"}},
		{"server without ports", []string{"server", "--token", tokenOffice}, []string{"--ports or --domains"}},
		{"bad listen", []string{"server", "--listen", "udp://:1", "--token", tokenOffice, "--ports", "1"}, []string{"--listen", "kcp://host:port"}},
		{"bad service", []string{"client", "--server", "kcp://h:1", "--token", tokenOffice, "--service", "ssh"}, []string{"--service", "NAME=REMOTE_PORT"}},
		{"missing file", []string{"server", "-c", filepath.Join(dir, "nope.toml")}, []string{"nope.toml", "no such file"}},
		{"unknown key", []string{"server", "-c", writeFile(t, dir, "a.toml", "[server]\nlisen = 1\n")}, []string{"a.toml", "unknown key server.lisen"}},
		{"bad value", []string{"server", "-c", writeFile(t, dir, "b.toml", "[server]\n[server.kcp]\nmtu = 9000\n")}, []string{"b.toml", "server.kcp.mtu"}},
		{"no server table", []string{"server", "-c", writeFile(t, dir, "c.toml", "[client]\nserver = \"h:1\"\ntoken = \""+tokenOffice+"\"\n[[client.services]]\nname = \"a\"\ntarget = \"127.0.0.1:1\"\n")}, []string{"c.toml: no [server] table"}},
		{"file and flags", []string{"client", "-c", "x.toml", "--token", "t"}, []string{"either a config file or the quick-mode flags"}},
		{"udp with domains", []string{"client", "-c", writeFile(t, dir, "e.toml", "[client]\nserver = \"h:1\"\ntoken = \""+tokenOffice+"\"\n[[client.services]]\nname = \"dns\"\ntarget = \"127.0.0.1:53\"\nprotocol = \"udp\"\ndomains = [\"dns.example.com\"]\n")}, []string{"e.toml", "client.services[0] (dns).domains", "a UDP service has no domains"}},
		{"unset token_env", []string{"client", "-c", writeFile(t, dir, "d.toml", "[client]\nserver = \"h:1\"\ntoken_env = \"WARREN_UNSET_FOR_TEST\"\n[[client.services]]\nname = \"a\"\ntarget = \"127.0.0.1:1\"\n")}, []string{"d.toml", "client.token_env", "WARREN_UNSET_FOR_TEST is not set"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProc(t, nil, tc.args...)
			if code := p.wait(); code != exitUsage {
				t.Fatalf("exit code %d, want %d", code, exitUsage)
			}
			out := p.stderr()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("stderr lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestBinaryWrongTokenExits: a rejected client exits 1 with the reason
// instead of retrying forever; the server logs the failure without the
// token.
func TestBinaryWrongTokenExits(t *testing.T) {
	dir := t.TempDir()
	srv, addrs, fp := binServer(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	for _, kind := range transports {
		t.Run(kind, func(t *testing.T) {
			bad := "wrong-token-0123456789abcdef"
			cli, _ := binClient(t, dir, kind, addrs[kind], fp, bad, deadAddr(t), 0)
			if code := cli.wait(); code != exitRuntime {
				t.Fatalf("exit code %d, want %d", code, exitRuntime)
			}
			if out := cli.stderr(); !strings.Contains(out, "auth rejected: unknown token") {
				t.Fatalf("client stderr lacks the reason:\n%s", out)
			}
			// The failure is counted (then logged, before the count).
			failures := func() float64 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				body, err := srv.admin.Get(ctx, "/metrics")
				if err != nil {
					return 0
				}
				return metricSum(string(body), "warren_handshake_failures_total", `reason="unknown_token"`)
			}
			deadline := time.Now().Add(waitTimeout)
			for failures() < float64(kindIndex(kind)+1) {
				if time.Now().After(deadline) {
					t.Fatalf("the server counted no unknown token:\n%s", srv.stderr())
				}
				time.Sleep(20 * time.Millisecond) // metrics have no change signal
			}
			if !srv.logged("auth failed: unknown token", "transport", kind+"+tls") {
				t.Errorf("the server did not log the failure over %s", kind)
			}
			if strings.Contains(srv.stderr(), bad) || strings.Contains(srv.stderr(), tokenOffice) {
				t.Fatal("server logged a token")
			}
		})
	}
}

// slowSource is a backend that sends a little data every few milliseconds
// until the connection breaks.
func slowSource(c net.Conn) {
	for {
		if _, err := c.Write([]byte("tick\n")); err != nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBinaryClientKilled: a client killed mid-transfer (SIGKILL, no
// goodbye) ends its public connections promptly and frees its port; a new
// client process serves it again.
func TestBinaryClientKilled(t *testing.T) {
	dir := t.TempDir()
	target := backend(t, slowSource)
	srv, addrs, fp := binServer(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	for _, kind := range transports {
		t.Run(kind, func(t *testing.T) {
			cli, port := binClient(t, dir, kind, addrs[kind], fp, tokenOffice, target, 0)
			c := dialPublic(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if _, err := io.ReadFull(c, make([]byte, 50)); err != nil {
				t.Fatal(err)
			}
			cli.cmd.Process.Kill()
			cli.wait()
			start := time.Now()
			// Heartbeats every 200 ms, 3 misses: the server notices within
			// about a second even over KCP, where nothing says "gone".
			if err := isClosed(c, 5*time.Second); err != nil {
				t.Fatalf("public connection survived its client: %v", err)
			}
			t.Logf("public connection closed %v after the kill", time.Since(start).Round(time.Millisecond))
			srv.waitStatus("the killed client's session gone", func(st admin.Status) bool { return !sessionOn(st, "office", kind+"+tls") })

			again, port2 := binClient(t, dir, kind, addrs[kind], fp, tokenOffice, target, port)
			if port2 != port {
				t.Fatalf("restarted client got port %d, want %d", port2, port)
			}
			c2 := dialPublic(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if _, err := io.ReadFull(c2, make([]byte, 50)); err != nil {
				t.Fatal(err)
			}
			c2.Close() // else the stopping client lets it run its shutdown_timeout
			again.stop(syscall.SIGTERM)
		})
	}
	srv.stop(syscall.SIGTERM)
}

// TestBinaryServerKilled: a server killed (SIGKILL) and started again on
// the same addresses and state directory is found again by its clients on
// their own; their ports come back.
func TestBinaryServerKilled(t *testing.T) {
	dir := t.TempDir()
	target := backend(t, echo)
	srv, addrs, fp := binServer(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	clients := map[string]*proc{}
	ports := map[string]int{}
	for _, kind := range transports {
		clients[kind], ports[kind] = binClient(t, dir, kind, addrs[kind], fp, tokenOffice, target, 0)
	}
	srv.cmd.Process.Kill()
	srv.wait()
	for _, kind := range transports {
		clients[kind].waitStatus("no session", func(st admin.Status) bool { return !st.Ready })
	}

	srv2, addrs2, fp2 := binServer(t, dir, addrs["tcp"], addrs["kcp"])
	if fp2 != fp {
		t.Fatalf("restarted server has fingerprint %s, was %s", fp2, fp)
	}
	_ = addrs2
	for _, kind := range transports {
		srv2.waitStatus("office back over "+kind, func(st admin.Status) bool { return sessionOn(st, "office", kind+"+tls") })
		roundTrip(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[kind])))
	}
	for _, kind := range transports {
		clients[kind].stop(syscall.SIGTERM)
	}
	srv2.stop(syscall.SIGTERM)
}

// TestBinaryDemo runs "warren demo", fetches the page it prints through
// the tunnel, which links the dashboards it prints, fetches those, and
// stops it with SIGINT.
func TestBinaryDemo(t *testing.T) {
	for _, kind := range transports {
		t.Run(kind, func(t *testing.T) {
			p := startProc(t, nil, "demo", "--transport", kind, "--port", "0")
			var url string
			deadline := time.Now().Add(waitTimeout)
			re := regexp.MustCompile(`open (http://127\.0\.0\.1:\d+/)`)
			for url == "" {
				if m := re.FindStringSubmatch(p.stdout.String()); m != nil {
					url = m[1]
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("demo printed no URL:\n%s\n%s", p.stdout.String(), p.stderr())
				}
				select {
				case <-p.done:
					t.Fatalf("demo exited %d:\n%s", p.code, p.stderr())
				case <-time.After(20 * time.Millisecond):
				}
			}
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			dash := regexp.MustCompile(`Dashboards: server (http://127\.0\.0\.1:\d+/)  client (http://127\.0\.0\.1:\d+/)`).FindStringSubmatch(p.stdout.String())
			if dash == nil {
				t.Fatalf("demo printed no dashboards:\n%s", p.stdout.String())
			}
			for _, want := range []string{"came through the warren tunnel", kind + "+tls", `href="` + dash[1] + `"`, `href="` + dash[2] + `"`} {
				if !strings.Contains(string(body), want) {
					t.Errorf("page lacks %q:\n%s", want, body)
				}
			}
			// Each dashboard answers: the page, and its API the role.
			for i, role := range []string{"server", "client"} {
				for path, want := range map[string]string{"": "<title>warren</title>", "api/v1/status": `"role": "` + role + `"`} {
					resp, err := http.Get(dash[i+1] + path)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
						t.Errorf("GET %s%s: %d, want 200 with %q:\n%s", dash[i+1], path, resp.StatusCode, want, b)
					}
				}
			}
			if code := p.stop(syscall.SIGINT); code != exitOK {
				t.Fatalf("demo exited %d on SIGINT", code)
			}
		})
	}
}

// kindIndex is the position of kind in transports: how many of the
// subtests over them have run before.
func kindIndex(kind string) int {
	for i, k := range transports {
		if k == kind {
			return i
		}
	}
	return -1
}

// metricSum adds up the samples of metric name, in Prometheus text format,
// whose labels include every one of labels ("k=\"v\"").
func metricSum(body, name string, labels ...string) float64 {
	sum := 0.0
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(line, l)
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); all && err == nil {
			sum += v
		}
	}
	return sum
}
