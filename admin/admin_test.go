package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/metrics"
)

const testToken = "0123456789abcdef-admin-token"

// fakeSource is a Source whose answers the test sets.
type fakeSource struct {
	mu           sync.Mutex
	ready        bool
	reason       string
	status       admin.Status
	clients      map[string]bool // nil: a client daemon
	disconnected []string
	reloadErr    error
	reloads      int
	reloadGate   chan struct{} // when set, Reload waits for it to close
	reloadCalled chan struct{} // when set, closed as Reload starts
}

func (f *fakeSource) Ready() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready, f.reason
}

func (f *fakeSource) Status() admin.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeSource) Disconnect(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.clients == nil {
		return fmt.Errorf("disconnect: %w on a client", admin.ErrNotSupported)
	}
	if !f.clients[name] {
		return fmt.Errorf("%w %q", admin.ErrUnknownClient, name)
	}
	f.disconnected = append(f.disconnected, name)
	return nil
}

func (f *fakeSource) Reload() error {
	f.mu.Lock()
	gate, called := f.reloadGate, f.reloadCalled
	f.mu.Unlock()
	if called != nil {
		close(called)
	}
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	return f.reloadErr
}

func serverStatus() admin.Status {
	return admin.Status{
		Role:        admin.RoleServer,
		Version:     "1.2.3",
		Uptime:      admin.Duration(90 * time.Minute),
		Listeners:   []admin.Listener{{Transport: "kcp+tls", Address: "0.0.0.0:7000"}},
		Fingerprint: "sha256:abcd",
		Clients: []admin.ClientStatus{
			{Name: "laptop", Sessions: []admin.SessionStatus{{
				Client:    "laptop",
				Transport: "kcp+tls",
				Remote:    "192.0.2.7:40000",
				Uptime:    admin.Duration(time.Hour),
				RTT:       admin.Duration(12300 * time.Microsecond),
				Streams:   3,
				Services: []admin.ServiceStatus{
					{Name: "ssh", RemotePort: 2222, Connections: 1, BytesIn: 1000, BytesOut: 50000},
					{Name: "web", Domains: []string{"example.com"}, Connections: 2, BytesIn: 10, BytesOut: 20},
				},
			}}},
			{Name: "nas"},
		},
	}
}

func newSource() *fakeSource {
	return &fakeSource{
		ready:   true,
		status:  serverStatus(),
		clients: map[string]bool{"laptop": true, "nas": true},
	}
}

// start runs an admin server until the test ends, and returns it with an
// HTTP client whose idle connections are closed at the end.
func start(t *testing.T, cfg admin.Config, src admin.Source, reg *metrics.Registry) (*admin.Server, *http.Client) {
	t.Helper()
	s, err := admin.New(cfg, src, reg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	}
	tr := &http.Transport{}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		tr.CloseIdleConnections()
	})
	return s, &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func url(s *admin.Server, path string) string {
	return "http://" + s.Addr().String() + path
}

// do sends a request and returns the status and body.
func do(t *testing.T, c *http.Client, method, u, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if method == http.MethodPost { // as warren's tools and curl -H send it (guard.go)
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func loopback() admin.Config {
	return admin.Config{Address: "127.0.0.1:0"}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     admin.Config
		wantErr string // the key the error starts with; "" for none
	}{
		{"off", admin.Config{}, ""},
		{"loopback v4", admin.Config{Address: "127.0.0.1:7001"}, ""},
		{"loopback 127/8", admin.Config{Address: "127.9.8.7:7001"}, ""},
		{"loopback v6", admin.Config{Address: "[::1]:7001"}, ""},
		{"localhost", admin.Config{Address: "localhost:7001"}, ""},
		{"loopback with token", admin.Config{Address: "127.0.0.1:7001", Token: testToken}, ""},
		{"all interfaces, token", admin.Config{Address: "0.0.0.0:7001", Token: testToken}, ""},
		{"all interfaces, token_file", admin.Config{Address: ":7001", TokenFile: "/run/secrets/admin"}, ""},
		{"all interfaces, token_env", admin.Config{Address: "[::]:7001", TokenEnv: "WARREN_ADMIN_TOKEN"}, ""},
		{"all interfaces, no token", admin.Config{Address: "0.0.0.0:7001"}, "admin.token"},
		{"empty host, no token", admin.Config{Address: ":7001"}, "admin.token"},
		{"v6 any, no token", admin.Config{Address: "[::]:7001"}, "admin.token"},
		{"public IP, no token", admin.Config{Address: "192.0.2.1:7001"}, "admin.token"},
		{"host name, no token", admin.Config{Address: "admin.example.com:7001"}, "admin.token"},
		{"mapped loopback", admin.Config{Address: "[::ffff:127.0.0.1]:7001"}, ""},
		{"short token", admin.Config{Address: "127.0.0.1:7001", Token: "short"}, "admin.token"},
		{"two tokens", admin.Config{Address: "0.0.0.0:7001", Token: testToken, TokenEnv: "X"}, "admin.token, admin.token_file, admin.token_env"},
		{"no port", admin.Config{Address: "127.0.0.1"}, "admin.address"},
		{"bad port", admin.Config{Address: "127.0.0.1:http"}, "admin.address"},
		{"port too big", admin.Config{Address: "127.0.0.1:70000"}, "admin.address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr+":") {
				t.Fatalf("Validate() = %v, want an error starting %q", err, tt.wantErr+":")
			}
			if strings.Contains(err.Error(), testToken) {
				t.Fatalf("error %q shows the token", err)
			}
		})
	}
}

func TestResolveToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) (string, bool) {
		if k == "ADMIN_TOKEN" {
			return testToken, true
		}
		return "", false
	}
	tests := []struct {
		name      string
		cfg       admin.Config
		wantToken string
		wantErr   string
	}{
		{"inline", admin.Config{Token: testToken}, testToken, ""},
		{"none", admin.Config{}, "", ""},
		{"file", admin.Config{TokenFile: file}, testToken, ""},
		{"env", admin.Config{TokenEnv: "ADMIN_TOKEN"}, testToken, ""},
		{"missing file", admin.Config{TokenFile: file + ".missing"}, "", "admin.token_file"},
		{"unset env", admin.Config{TokenEnv: "NOPE"}, "", "admin.token_env"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			err := cfg.ResolveToken(env)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr+":") {
					t.Fatalf("ResolveToken() = %v, want an error starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveToken() = %v", err)
			}
			if cfg.Token != tt.wantToken || cfg.TokenFile != "" || cfg.TokenEnv != "" {
				t.Fatalf("after ResolveToken: %+v, want Token %q only", cfg, tt.wantToken)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name    string
		cfg     admin.Config
		src     admin.Source
		wantErr string
	}{
		{"off", admin.Config{}, newSource(), "admin.address"},
		{"non-loopback without token", admin.Config{Address: "0.0.0.0:0"}, newSource(), "admin.token"},
		{"unresolved token", admin.Config{Address: "0.0.0.0:0", TokenEnv: "X"}, newSource(), "admin.token_file, admin.token_env"},
		{"no source", loopback(), nil, "admin: nil Source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := admin.New(tt.cfg, tt.src, nil, nil)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("New() = %v, want an error starting %q", err, tt.wantErr)
			}
		})
	}
}

func TestEndpointsOnLoopbackWithoutToken(t *testing.T) {
	leaktest.Check(t)
	reg, err := metrics.New(metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	reg.PublicConn("web", metrics.OutcomeOK)
	src := newSource()
	s, c := start(t, loopback(), src, reg)

	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantBody   string
	}{
		{"healthz", "GET", "/healthz", 200, "ok\n"},
		{"readyz", "GET", "/readyz", 200, "ready\n"},
		{"metrics", "GET", "/metrics", 200, `warren_public_connections_total{outcome="ok",service="web"} 1`},
		{"status", "GET", "/api/v1/status", 200, `"role": "server"`},
		{"disconnect", "POST", "/api/v1/clients/laptop/disconnect", 200, `"ok": true`},
		{"disconnect unknown", "POST", "/api/v1/clients/ghost/disconnect", 404, `unknown client \"ghost\"`},
		{"disconnect by GET", "GET", "/api/v1/clients/laptop/disconnect", 405, ""},
		{"reload", "POST", "/api/v1/reload", 200, `"ok": true`},
		{"reload by GET", "GET", "/api/v1/reload", 405, ""},
		{"status by POST", "POST", "/api/v1/status", 405, ""},
		{"unknown path", "GET", "/nope", 404, ""},
		{"dashboard", "GET", "/", 200, "<title>warren</title>"},
		{"dashboard script", "GET", "/assets/app.js", 200, "'use strict'"},
		{"dashboard style", "GET", "/assets/style.css", 200, ":root"},
		{"page by POST", "POST", "/", 405, ""},
		{"page as an asset", "GET", "/assets/index.html", 404, ""},
		{"unknown asset", "GET", "/assets/nope.js", 404, ""},
		{"history", "GET", "/api/v1/history", 200, `"interval_seconds": 1`},
		{"history after", "GET", "/api/v1/history?after=5", 200, `"samples": []`},
		{"history after garbage", "GET", "/api/v1/history?after=-1", 400, `after: \"-1\" is not a sample number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, c, tt.method, url(s, tt.path), "")
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("%s %s = %d %q, want %d containing %q", tt.method, tt.path, status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if !reflect.DeepEqual(src.disconnected, []string{"laptop"}) || src.reloads != 1 {
		t.Fatalf("source saw disconnects %v and %d reloads, want [laptop] and 1", src.disconnected, src.reloads)
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name    string
		address string
	}{
		{"loopback", "127.0.0.1:0"},
		// Bound beyond loopback (all interfaces); the test only talks
		// to it over loopback.
		{"all interfaces", "0.0.0.0:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := start(t, admin.Config{Address: tt.address, Token: testToken}, newSource(), nil)
			_, port, _ := net.SplitHostPort(s.Addr().String())
			base := "http://127.0.0.1:" + port
			requests := []struct {
				name       string
				method     string
				path       string
				auth       string
				wantStatus int
			}{
				{"healthz needs none", "GET", "/healthz", "", 200},
				{"the page needs none", "GET", "/", "", 200},
				{"its script needs none", "GET", "/assets/app.js", "", 200},
				{"unknown asset without token", "GET", "/assets/nope.js", "", 401},
				{"no API under assets", "GET", "/assets/../api/v1/status", "", 401},
				{"history without token", "GET", "/api/v1/history", "", 401},
				{"history with token", "GET", "/api/v1/history", "Bearer " + testToken, 200},
				{"status without token", "GET", "/api/v1/status", "", 401},
				{"readyz without token", "GET", "/readyz", "", 401},
				{"metrics without token", "GET", "/metrics", "", 401},
				{"reload without token", "POST", "/api/v1/reload", "", 401},
				{"disconnect without token", "POST", "/api/v1/clients/laptop/disconnect", "", 401},
				{"wrong token", "GET", "/api/v1/status", "Bearer " + testToken + "x", 401},
				{"token prefix", "GET", "/api/v1/status", "Bearer " + testToken[:20], 401},
				{"empty bearer", "GET", "/api/v1/status", "Bearer ", 401},
				{"basic auth", "GET", "/api/v1/status", "Basic " + testToken, 401},
				{"bare token", "GET", "/api/v1/status", testToken, 401},
				{"right token", "GET", "/api/v1/status", "Bearer " + testToken, 200},
				{"scheme is case-insensitive", "GET", "/readyz", "bearer " + testToken, 200},
				{"reload with token", "POST", "/api/v1/reload", "Bearer " + testToken, 200},
				{"unclean path still needs it", "GET", "/api/v1/../healthz/../api/v1/status", "", 401},
			}
			for _, r := range requests {
				t.Run(r.name, func(t *testing.T) {
					status, body := do(t, c, r.method, base+r.path, r.auth)
					if status != r.wantStatus {
						t.Fatalf("%s %s with %q = %d %q, want %d", r.method, r.path, r.auth, status, body, r.wantStatus)
					}
					if status == 401 && strings.Contains(body, testToken) {
						t.Fatalf("401 body %q shows the token", body)
					}
				})
			}
		})
	}
}

func TestReadyz(t *testing.T) {
	src := newSource()
	src.ready, src.reason = false, "listeners not bound yet"
	s, c := start(t, loopback(), src, nil)

	status, body := do(t, c, "GET", url(s, "/readyz"), "")
	if status != 503 || body != "listeners not bound yet\n" {
		t.Fatalf("readyz = %d %q, want 503 with the reason", status, body)
	}
	_, body = do(t, c, "GET", url(s, "/api/v1/status"), "")
	var st admin.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if st.Ready || st.NotReady != "listeners not bound yet" {
		t.Fatalf("status says ready=%v %q, want not ready with the reason", st.Ready, st.NotReady)
	}

	src.mu.Lock()
	src.ready, src.reason = true, ""
	src.mu.Unlock()
	if status, _ := do(t, c, "GET", url(s, "/readyz"), ""); status != 200 {
		t.Fatalf("readyz = %d once ready, want 200", status)
	}
	if status, _ := do(t, c, "GET", url(s, "/healthz"), ""); status != 200 {
		t.Fatalf("healthz = %d, want 200", status)
	}
}

func TestStatusJSON(t *testing.T) {
	src := newSource()
	s, c := start(t, loopback(), src, nil)
	status, body := do(t, c, "GET", url(s, "/api/v1/status"), "")
	if status != 200 {
		t.Fatalf("status = %d %q", status, body)
	}
	var got admin.Status
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	want := serverStatus()
	want.Ready = true
	want.Clients[1].Sessions = []admin.SessionStatus{} // null is sent as []
	want.Events = []admin.Event{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("status round trip:\n got %+v\nwant %+v", got, want)
	}
	for _, key := range []string{`"uptime_seconds": 5400`, `"rtt_seconds": 0.0123`, `"bytes_out": 50000`, `"remote_port": 2222`, `"sessions": []`} {
		if !strings.Contains(body, key) {
			t.Errorf("status JSON lacks %s:\n%s", key, body)
		}
	}
	if in, out := got.Clients[0].Sessions[0].Bytes(); in != 1010 || out != 50020 {
		t.Errorf("Bytes() = %d, %d, want 1010, 50020", in, out)
	}
	if !got.Clients[0].Connected() || got.Clients[1].Connected() {
		t.Errorf("Connected() wrong: %+v", got.Clients)
	}
}

func TestClientSide(t *testing.T) {
	src := &fakeSource{ready: false, reason: "not authenticated", status: admin.Status{Role: admin.RoleClient, Server: "host:7000"}}
	src.reloadErr = errors.New("client.services[1].target: missing port")
	s, c := start(t, loopback(), src, nil)
	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantBody   string
	}{
		{"disconnect not supported", "POST", "/api/v1/clients/laptop/disconnect", 501, "not supported"},
		{"bad reload", "POST", "/api/v1/reload", 400, "client.services[1].target: missing port"},
		{"not ready", "GET", "/readyz", 503, "not authenticated"},
		{"no metrics registry", "GET", "/metrics", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, c, tt.method, url(s, tt.path), "")
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("%s %s = %d %q, want %d containing %q", tt.method, tt.path, status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

// Run returns only after a request in flight has finished, and leaves no
// goroutine behind.
func TestShutdownWaitsForRequests(t *testing.T) {
	leaktest.Check(t)
	src := newSource()
	src.reloadGate = make(chan struct{})
	src.reloadCalled = make(chan struct{})
	s, err := admin.New(loopback(), src, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-s.Ready()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	type answer struct {
		status int
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := c.Post(url(s, "/api/v1/reload"), "application/json", nil)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		answered <- answer{status: resp.StatusCode}
	}()
	<-src.reloadCalled
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while a request was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(src.reloadGate)
	if a := <-answered; a.err != nil || a.status != 200 {
		t.Fatalf("reload in flight at shutdown: %d, %v; want 200", a.status, a.err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	// The listener is gone.
	if _, err := net.Dial("tcp", s.Addr().String()); err == nil {
		t.Fatal("admin address still accepts after Run returned")
	}
}

func TestRunOnceAndClose(t *testing.T) {
	leaktest.Check(t)
	t.Run("close stops run", func(t *testing.T) {
		s, err := admin.New(loopback(), newSource(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(context.Background()) }()
		<-s.Ready()
		if err := s.Run(context.Background()); !errors.Is(err, admin.ErrClosed) {
			t.Fatalf("second Run = %v, want ErrClosed", err)
		}
		s.Close()
		s.Close()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v after Close", err)
		}
	})
	t.Run("close before run", func(t *testing.T) {
		s, err := admin.New(loopback(), newSource(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if err := s.Run(context.Background()); !errors.Is(err, admin.ErrClosed) {
			t.Fatalf("Run after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("address in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		s, err := admin.New(admin.Config{Address: l.Addr().String()}, newSource(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = s.Run(context.Background())
		if err == nil || !strings.HasPrefix(err.Error(), "admin.address:") {
			t.Fatalf("Run on a busy address = %v, want an admin.address error", err)
		}
	})
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		name string
		d    admin.Duration
		json string
	}{
		{"zero", 0, "0"},
		{"rtt", admin.Duration(12345678 * time.Nanosecond), "0.012346"},
		{"uptime", admin.Duration(26 * time.Hour), "93600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.d)
			if err != nil || string(b) != tt.json {
				t.Fatalf("Marshal(%v) = %s, %v; want %s", tt.d, b, err, tt.json)
			}
			var back admin.Duration
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if diff := back.D() - tt.d.D(); diff < -time.Microsecond || diff > time.Microsecond {
				t.Fatalf("round trip %v -> %v", tt.d, back)
			}
		})
	}
	var d admin.Duration
	if err := json.Unmarshal([]byte(`"5s"`), &d); err == nil {
		t.Fatal(`Unmarshal("5s") succeeded; want an error (seconds are a number)`)
	}
}
