package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
)

const statusTestToken = "status-test-admin-token-0123"

// statusSource is an admin.Source with a fixed status; ready unless
// notReady gives a reason.
type statusSource struct {
	mu       sync.Mutex
	st       admin.Status
	notReady string
}

func (s *statusSource) Ready() (bool, string) { return s.notReady == "", s.notReady }
func (s *statusSource) Status() admin.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}
func (s *statusSource) Disconnect(string) error { return admin.ErrNotSupported }
func (s *statusSource) Reload() error           { return nil }

func testServerStatus() admin.Status {
	return admin.Status{
		Role:        admin.RoleServer,
		Version:     "9.9.9",
		Uptime:      admin.Duration(26*time.Hour + 3*time.Second),
		Listeners:   []admin.Listener{{Transport: "kcp+tls", Address: "0.0.0.0:7000"}, {Transport: "tcp+tls", Address: "0.0.0.0:7000"}},
		Fingerprint: "sha256:feed",
		Clients: []admin.ClientStatus{
			{Name: "laptop", Sessions: []admin.SessionStatus{{
				Client:    "laptop",
				Transport: "kcp+tls",
				Remote:    "192.0.2.7:40000",
				Uptime:    admin.Duration(time.Hour + 2*time.Minute),
				RTT:       admin.Duration(12345 * time.Microsecond),
				Streams:   3,
				Services: []admin.ServiceStatus{
					{Name: "ssh", RemotePort: 2222, Connections: 1, BytesIn: 1536, BytesOut: 3 << 20},
					{Name: "web", Domains: []string{"example.com"}, Connections: 2, BytesIn: 10, BytesOut: 20},
					{Name: "dns", RemotePort: 53, Protocol: "udp", Connections: 7, Flows: 7, BytesIn: 700, BytesOut: 900},
				},
			}}},
			{Name: "nas"},
		},
	}
}

func testClientStatus() admin.Status {
	return admin.Status{
		Role:      admin.RoleClient,
		Version:   "9.9.9",
		Uptime:    admin.Duration(5 * time.Minute),
		Server:    "tunnel.example.com:7000",
		Transport: "kcp",
		Session: &admin.SessionStatus{
			Client:    "laptop",
			Transport: "kcp+tls",
			Remote:    "203.0.113.5:7000",
			Uptime:    admin.Duration(4 * time.Minute),
			RTT:       admin.Duration(800 * time.Microsecond),
			Services: []admin.ServiceStatus{
				{Name: "ssh", RemotePort: 2222, Target: "127.0.0.1:22", BytesIn: 100, BytesOut: 200},
				{Name: "game", RemotePort: 27015, Protocol: "udp", Target: "127.0.0.1:27015", Connections: 1, Flows: 1},
				{Name: "notes", Private: true, Target: "127.0.0.1:8000"},
			},
			Pacing: &admin.PacingStatus{RateMbit: "auto", Mode: "probe_bw", Bandwidth: 95.4e6, MinRTT: admin.Duration(50300 * time.Microsecond),
				RTT: admin.Duration(51 * time.Millisecond), PacingRate: 96e6, InFlight: 640 << 10, InFlightCap: 1300 << 10},
		},
		Visitors: []admin.VisitorStatus{
			{Name: "db", Service: "office/db", Bind: "127.0.0.1:15432", Connections: 2, BytesIn: 3 << 20, BytesOut: 1024},
			{Name: "wiki", Service: "home/wiki", Bind: "127.0.0.1:18080", Refused: `client "laptop" may not visit home/wiki`},
			{Name: "dns", Service: "office/dns", Bind: "127.0.0.1:5353", Protocol: "udp", Connections: 3},
		},
	}
}

// startAdmin runs an admin server on loopback until the test ends.
func startAdmin(t *testing.T, cfg admin.Config, st admin.Status) *admin.Server {
	t.Helper()
	return startAdminSource(t, cfg, &statusSource{st: st})
}

func startAdminSource(t *testing.T, cfg admin.Config, src admin.Source) *admin.Server {
	t.Helper()
	s, err := admin.New(cfg, src, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("admin Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("admin Run: %v", err)
		}
	})
	return s
}

// exitCode maps a command's error to its exit code as run does.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	default:
		return exitRuntime
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// deadAddress returns a loopback address where nothing listens.
func deadAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// silentAddress returns a loopback address that accepts connections and
// never answers.
func silentAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // net.ErrClosed at cleanup
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

func TestStatusCommand(t *testing.T) {
	leaktest.Check(t)
	t.Setenv("WARREN_ADMIN_TOKEN", "")
	open := startAdmin(t, admin.Config{Address: "127.0.0.1:0"}, testServerStatus())
	locked := startAdmin(t, admin.Config{Address: "127.0.0.1:0", Token: statusTestToken}, testServerStatus())
	client := startAdmin(t, admin.Config{Address: "127.0.0.1:0"}, testClientStatus())
	openAddr, lockedAddr := open.Addr().String(), locked.Addr().String()
	_, lockedPort, _ := net.SplitHostPort(lockedAddr)
	tokenFile := writeFile(t, "token", statusTestToken+"\n")

	serverConf := writeFile(t, "server.toml", fmt.Sprintf(`
[server]
state_dir = "/nonexistent"   # other keys are not read by status
[server.admin]
address = "0.0.0.0:%s"
token_file = %q
`, lockedPort, tokenFile))
	bothConf := writeFile(t, "both.toml", fmt.Sprintf(`
[server.admin]
address = "127.0.0.1:%s"
token = %q
[client.admin]
address = %q
`, lockedPort, statusTestToken, client.Addr().String()))
	offConf := writeFile(t, "off.toml", "[server]\n")
	varConf := writeFile(t, "var.toml", "[server.admin]\naddress = \"${ADMIN_ADDRESS}\"\n")

	serverTable := []string{
		"warren server 9.9.9, up 26h0m3s, ready",
		"listeners: kcp+tls 0.0.0.0:7000, tcp+tls 0.0.0.0:7000",
		"fingerprint: sha256:feed",
		"CLIENT", "laptop", "connected", "192.0.2.7:40000", "12.3ms", "1h2m0s",
		"ssh", ":2222", "1.5 KiB", "3.0 MiB",
		"web", "example.com", "10 B", "20 B",
		"dns", ":53/udp", "7 flows", "700 B", "900 B",
		"nas", "offline",
	}
	clientTable := []string{
		"warren client 9.9.9, up 5m0s, ready",
		"server: tunnel.example.com:7000 (kcp)",
		`session: as "laptop" to 203.0.113.5:7000 over kcp+tls, up 4m0s, RTT 800µs, 0 streams, in 100 B, out 200 B`,
		"SERVICE", "127.0.0.1:22", "game", ":27015/udp", "1 flow", "notes", "private",
		"VISITOR", "office/db", "127.0.0.1:15432", "3.0 MiB", `refused: client "laptop" may not visit home/wiki`,
		"127.0.0.1:5353/udp",
	}

	tests := []struct {
		name       string
		args       []string
		env        string // $WARREN_ADMIN_TOKEN
		wantCode   int
		wantStdout []string
		wantStderr string
	}{
		{name: "table", args: []string{"--admin", openAddr}, wantStdout: serverTable},
		{name: "json", args: []string{"--admin", openAddr, "--json"}, wantStdout: []string{`"role": "server"`, `"rtt_seconds": 0.012345`}},
		{name: "client table", args: []string{"--admin", client.Addr().String()}, wantStdout: clientTable},
		{name: "token flag", args: []string{"--admin", lockedAddr, "--token", statusTestToken}, wantStdout: serverTable},
		{name: "token file", args: []string{"--admin", lockedAddr, "--token-file", tokenFile}, wantStdout: serverTable},
		{name: "token env", args: []string{"--admin", lockedAddr}, env: statusTestToken, wantStdout: serverTable},
		{name: "missing token", args: []string{"--admin", lockedAddr}, wantCode: exitRuntime, wantStderr: "401"},
		{name: "wrong token", args: []string{"--admin", lockedAddr, "--token", statusTestToken + "x"}, wantCode: exitRuntime, wantStderr: "401"},
		{name: "config file", args: []string{"-c", serverConf}, wantStdout: serverTable},
		{name: "config both tables", args: []string{"-c", bothConf}, wantCode: exitUsage, wantStderr: "--role"},
		{name: "config role server", args: []string{"-c", bothConf, "--role", "server"}, wantStdout: serverTable},
		{name: "config role client", args: []string{"-c", bothConf, "--role", "client"}, wantStdout: clientTable},
		{name: "config admin off", args: []string{"-c", offConf}, wantCode: exitUsage, wantStderr: "admin API is off"},
		{name: "config with variables", args: []string{"-c", varConf}, wantCode: exitUsage, wantStderr: "server.admin.address uses ${...}"},
		{name: "config missing", args: []string{"-c", offConf + ".missing"}, wantCode: exitUsage, wantStderr: "no such file"},
		{name: "nothing running", args: []string{"--admin", deadAddress(t)}, wantCode: exitRuntime, wantStderr: "connection refused"},
		{name: "no answer", args: []string{"--admin", silentAddress(t), "--timeout", "200ms"}, wantCode: exitRuntime, wantStderr: "no answer in time"},
		{name: "no target", args: nil, wantCode: exitUsage, wantStderr: "--admin HOST:PORT or -c FILE"},
		{name: "both targets", args: []string{"--admin", openAddr, "-c", serverConf}, wantCode: exitUsage, wantStderr: "give one"},
		{name: "two tokens", args: []string{"--admin", openAddr, "--token", "a", "--token-file", tokenFile}, wantCode: exitUsage, wantStderr: "give one"},
		{name: "role without file", args: []string{"--admin", openAddr, "--role", "server"}, wantCode: exitUsage, wantStderr: "--role goes with -c"},
		{name: "bad address", args: []string{"--admin", "localhost"}, wantCode: exitUsage, wantStderr: "host:port"},
		{name: "extra argument", args: []string{"--admin", openAddr, "x"}, wantCode: exitUsage, wantStderr: `unexpected argument "x"`},
		{name: "help", args: []string{"--help"}, wantCode: exitOK, wantStdout: []string{"warren status --admin HOST:PORT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WARREN_ADMIN_TOKEN", tt.env)
			var stdout, stderr bytes.Buffer
			err := runStatus(tt.args, &stdout, &stderr)
			if err != nil {
				fmt.Fprintf(&stderr, "warren status: %v\n", err)
			}
			if code := exitCode(err); code != tt.wantCode {
				t.Fatalf("status %q: exit %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, &stdout, &stderr)
			}
			for _, s := range tt.wantStdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, &stdout)
				}
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q lacks %q", &stderr, tt.wantStderr)
			}
			if strings.Contains(stdout.String()+stderr.String(), statusTestToken) {
				t.Errorf("output shows the token")
			}
		})
	}
}

func TestStatusJSONIsTheAPIsJSON(t *testing.T) {
	s := startAdmin(t, admin.Config{Address: "127.0.0.1:0"}, testClientStatus())
	var stdout, stderr bytes.Buffer
	if err := runStatus([]string{"--admin", s.Addr().String(), "--json"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	var got admin.Status
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, &stdout)
	}
	if got.Role != admin.RoleClient || got.Session == nil || got.Session.Services[0].Target != "127.0.0.1:22" || !got.Ready {
		t.Fatalf("--json round trip: %+v", got)
	}
	if p := got.Session.Pacing; p == nil || *p != *testClientStatus().Session.Pacing {
		t.Fatalf("--json pacing: %+v", p)
	}
	for _, key := range []string{`"pacing": {`, `"rate_mbit": "auto"`, `"bandwidth_bps": 95400000`, `"min_rtt_seconds": 0.0503`, `"inflight_cap_bytes": 1331200`} {
		if !bytes.Contains(stdout.Bytes(), []byte(key)) {
			t.Errorf("--json lacks %s:\n%s", key, &stdout)
		}
	}
}

// TestHealthCommand: health means ready (GET /readyz, with the admin
// token from the flags, the environment or the config file); --live only
// asks whether the process answers.
func TestHealthCommand(t *testing.T) {
	leaktest.Check(t)
	t.Setenv("WARREN_ADMIN_TOKEN", "")
	locked := startAdmin(t, admin.Config{Address: "127.0.0.1:0", Token: statusTestToken}, testServerStatus())
	unready := startAdminSource(t, admin.Config{Address: "127.0.0.1:0"}, &statusSource{st: testClientStatus(), notReady: "no session: connecting to tunnel.example.com:7000: connection refused"})
	lockedUnready := startAdminSource(t, admin.Config{Address: "127.0.0.1:0", Token: statusTestToken}, &statusSource{st: testClientStatus(), notReady: "no session"})
	_, port, _ := net.SplitHostPort(locked.Addr().String())
	_, unreadyPort, _ := net.SplitHostPort(lockedUnready.Addr().String())
	conf4 := writeFile(t, "warren4.toml", fmt.Sprintf("[client.admin]\naddress = \":%s\"\ntoken = %q\n", port, statusTestToken))
	confUnready := writeFile(t, "unready.toml", fmt.Sprintf("[client.admin]\naddress = \"127.0.0.1:%s\"\ntoken = %q\n", unreadyPort, statusTestToken))
	tokenFile := writeFile(t, "token", statusTestToken+"\n")

	tests := []struct {
		name       string
		args       []string
		env        string // $WARREN_ADMIN_TOKEN
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "ready, token flag", args: []string{"--admin", locked.Addr().String(), "--token", statusTestToken}, wantStdout: "ready\n"},
		{name: "ready, token file", args: []string{"--admin", locked.Addr().String(), "--token-file", tokenFile}, wantStdout: "ready\n"},
		{name: "ready, token env", args: []string{"--admin", locked.Addr().String()}, env: statusTestToken, wantStdout: "ready\n"},
		{name: "ready by config, its token", args: []string{"-c", conf4}, wantStdout: "ready\n"},
		{name: "no token", args: []string{"--admin", locked.Addr().String()}, wantCode: exitRuntime, wantStderr: "401"},
		{name: "not ready", args: []string{"--admin", unready.Addr().String()}, wantCode: exitRuntime,
			wantStderr: "not ready: no session: connecting to tunnel.example.com:7000: connection refused"},
		{name: "not ready by config", args: []string{"-c", confUnready}, wantCode: exitRuntime, wantStderr: "not ready: no session"},
		{name: "live: not ready but answering", args: []string{"--admin", unready.Addr().String(), "--live"}, wantStdout: "ok\n"},
		{name: "live needs no token", args: []string{"--admin", locked.Addr().String(), "--live"}, wantStdout: "ok\n"},
		{name: "nothing running", args: []string{"--admin", deadAddress(t)}, wantCode: exitRuntime, wantStderr: "connection refused"},
		{name: "no answer", args: []string{"--admin", silentAddress(t), "--timeout", "200ms"}, wantCode: exitRuntime, wantStderr: "no answer in time"},
		{name: "no target", args: nil, wantCode: exitUsage, wantStderr: "--admin HOST:PORT or -c FILE"},
		{name: "two tokens", args: []string{"--admin", locked.Addr().String(), "--token", "x", "--token-file", tokenFile}, wantCode: exitUsage, wantStderr: "give one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WARREN_ADMIN_TOKEN", tt.env)
			var stdout, stderr bytes.Buffer
			start := time.Now()
			err := runHealth(tt.args, &stdout, &stderr)
			if err != nil {
				fmt.Fprintf(&stderr, "warren health: %v\n", err)
			}
			if code := exitCode(err); code != tt.wantCode {
				t.Fatalf("health %q: exit %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, &stdout, &stderr)
			}
			if stdout.String() != tt.wantStdout {
				t.Errorf("stdout %q, want %q", &stdout, tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q lacks %q", &stderr, tt.wantStderr)
			}
			if strings.Contains(stdout.String()+stderr.String(), statusTestToken) {
				t.Errorf("output shows the token")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("health took %v", d)
			}
		})
	}
}

// TestStatusNotReady: status prints what it can, and exits 1 with the
// reason when the daemon is not ready, in both formats.
func TestStatusNotReady(t *testing.T) {
	s := startAdminSource(t, admin.Config{Address: "127.0.0.1:0"}, &statusSource{st: admin.Status{Role: admin.RoleClient, Version: "9.9.9", Server: "tunnel.example.com:7000", Transport: "kcp"}, notReady: "no session"})
	for _, args := range [][]string{{"--admin", s.Addr().String()}, {"--admin", s.Addr().String(), "--json"}} {
		var stdout, stderr bytes.Buffer
		err := runStatus(args, &stdout, &stderr)
		if code := exitCode(err); code != exitRuntime || err.Error() != "not ready: no session" {
			t.Errorf("status %q: exit %d, error %v; want 1, not ready: no session", args, code, err)
		}
		if !strings.Contains(stdout.String(), "no session") {
			t.Errorf("status %q printed %q, want the status with the reason", args, &stdout)
		}
	}
}

func TestFormatting(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"bytes small", fmtBytes(1023), "1023 B"},
		{"bytes KiB", fmtBytes(1536), "1.5 KiB"},
		{"bytes GiB", fmtBytes(5 << 30), "5.0 GiB"},
		{"rtt unmeasured", fmtRTT(0), "-"},
		{"rtt sub-ms", fmtRTT(812345 * time.Nanosecond), "812µs"},
		{"rtt ms", fmtRTT(12345 * time.Microsecond), "12.3ms"},
		{"uptime short", fmtDuration(1234 * time.Millisecond), "1.2s"},
		{"uptime long", fmtDuration(26*time.Hour + 1500*time.Millisecond), "26h0m2s"},
		{"public port and domain", public(admin.ServiceStatus{RemotePort: 80, Domains: []string{"a.example", "b.example"}}), ":80,a.example,b.example"},
		{"public nothing", public(admin.ServiceStatus{}), "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

// TestPrintClientServers: a client of several servers shows a row per
// session of each server, one for a server without a session (with why),
// the pacing of each KCP session, then its services.
func TestPrintClientServers(t *testing.T) {
	st := testClientStatus()
	sess := *st.Session
	sess.ID, sess.Streams = "5e55", 3
	st.Servers = []admin.ServerStatus{
		{Server: "a.example.com:7000", Address: "203.0.113.5:7000", Transport: "kcp+tls", State: admin.ServerUp, Sessions: []admin.SessionStatus{sess}},
		{Server: "b.example.com:7000", Address: "203.0.113.6:7000", Transport: "kcp+tls", State: admin.ServerRefused, Sessions: []admin.SessionStatus{}, LastError: "auth rejected: unknown token"},
		{Server: "c.example.com:7000", Transport: "tcp+tls", State: admin.ServerUnresolved, Sessions: []admin.SessionStatus{}, LastError: "resolving c.example.com: no such host"},
	}
	var b strings.Builder
	if err := printStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"servers: 1 of 3 serving\n",
		`client: "laptop", in 100 B, out 200 B`,
		"SERVER ", "LAST ERROR",
		"a.example.com:7000  up          kcp+tls    203.0.113.5:7000  5e55     800µs  4m0s    3        -\n",
		"b.example.com:7000  refused     kcp+tls    203.0.113.6:7000  -        -      -       -        auth rejected: unknown token\n",
		"c.example.com:7000  unresolved  tcp+tls    -                 -        -      -       -        resolving c.example.com: no such host\n",
		"pacing of 5e55 to a.example.com:7000: auto, probe_bw: bandwidth 95.4 Mbit/s, min RTT 50.3ms, pacing 96.0 Mbit/s, in flight 640.0 KiB of 1.3 MiB\n",
		"ssh      :2222       127.0.0.1:22",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// TestPrintCluster: a cluster member's status shows its members with its
// links to them, and every route in the cluster marked local or remote.
func TestPrintCluster(t *testing.T) {
	st := admin.Status{Role: admin.RoleServer, Version: "test", Ready: true, Cluster: &admin.ClusterStatus{
		ID: "s1", PeerAddress: "10.0.0.1:7443", Error: "cluster registry unavailable: etcd did not answer",
		Members: []admin.MemberStatus{
			{ID: "s1", PeerAddress: "10.0.0.1:7443", Self: true},
			{ID: "s2", PeerAddress: "10.0.0.2:7443", Link: true, Forwarding: 2, ForwardedOut: 5, ForwardedIn: 1, BytesSent: 2048, BytesReceived: 100},
			{ID: "s3", PeerAddress: "10.0.0.3:7443"},
		},
		Routes: []admin.ClusterRoute{
			{Key: "http:www.example.com", Client: "office", Server: "s2"},
			{Key: "port:2222", Client: "office", Server: "s1", Local: true},
			{Key: "port:8080", Client: "lab", Server: "s3", Shared: true},
		},
	}}
	var b strings.Builder
	if err := printStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"cluster: this server is s1 (peers reach it at 10.0.0.1:7443)\n",
		"registry: cluster registry unavailable: etcd did not answer (the view below is the last one known)\n",
		"s1      10.0.0.1:7443  self",
		"s2      10.0.0.2:7443  up    2           5      1        2.0 KiB  100 B\n",
		"s3      10.0.0.3:7443  -",
		"http:www.example.com  office  s2      remote\n",
		"port:2222             office  s1      local\n",
		"port:8080             lab     s3      remote, shared\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
