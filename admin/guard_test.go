package admin_test

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/warren-tunnel/warren/admin"
)

// TestGuardAgainstWebPages: what a web page could make a browser on the
// admin's machine send is refused (guard.go), and what the admin's own
// tools and pages send is not.
func TestGuardAgainstWebPages(t *testing.T) {
	type req struct {
		name        string
		method      string
		path        string
		host        string // Host header; "" keeps 127.0.0.1:PORT
		origin      string // Origin header, PORT replaced
		contentType string
		extra       string // a header "Name: value"
		wantStatus  int
	}
	const status, disconnect, reload = "/api/v1/status", "/api/v1/clients/laptop/disconnect", "/api/v1/reload"
	tokenless := []req{
		// DNS rebinding: the page's own name now resolves to 127.0.0.1.
		{name: "rebound host", method: "GET", path: status, host: "rebind.attacker.example", wantStatus: 403},
		{name: "rebound host with port", method: "GET", path: status, host: "rebind.attacker.example:PORT", wantStatus: 403},
		{name: "rebound host, readyz", method: "GET", path: "/readyz", host: "rebind.attacker.example:PORT", wantStatus: 403},
		{name: "rebound host, metrics", method: "GET", path: "/metrics", host: "rebind.attacker.example:PORT", wantStatus: 403},
		{name: "loopback-looking name", method: "GET", path: status, host: "127.0.0.1.nip.io:PORT", wantStatus: 403},
		{name: "127.0.0.1", method: "GET", path: status, wantStatus: 200},
		{name: "127.0.0.1 without port", method: "GET", path: status, host: "127.0.0.1", wantStatus: 200},
		{name: "other loopback address", method: "GET", path: status, host: "127.8.9.10:PORT", wantStatus: 200},
		{name: "localhost", method: "GET", path: status, host: "localhost:PORT", wantStatus: 200},
		{name: "LOCALHOST", method: "GET", path: status, host: "LOCALHOST", wantStatus: 200},
		{name: "::1", method: "GET", path: status, host: "[::1]:PORT", wantStatus: 200},
		// Cross-site reads.
		{name: "foreign origin", method: "GET", path: status, origin: "http://attacker.example", wantStatus: 403},
		{name: "null origin", method: "GET", path: status, origin: "null", wantStatus: 403},
		{name: "other port on loopback", method: "GET", path: status, origin: "http://127.0.0.1:1", wantStatus: 403},
		{name: "https origin of the same host and port", method: "GET", path: status, origin: "https://127.0.0.1:PORT", wantStatus: 200},
		{name: "own origin", method: "GET", path: status, origin: "http://127.0.0.1:PORT", wantStatus: 200},
		// A page served through ssh -L 8001:127.0.0.1:PORT.
		{name: "own origin through a tunnel", method: "GET", path: status, host: "localhost:8001", origin: "http://localhost:8001", wantStatus: 200},
		// Cross-site writes: "simple" requests need no preflight.
		{name: "simple POST from a page", method: "POST", path: disconnect, origin: "http://attacker.example", contentType: "text/plain", wantStatus: 403},
		{name: "JSON POST from a page", method: "POST", path: disconnect, origin: "http://attacker.example", contentType: "application/json", wantStatus: 403},
		{name: "text/plain POST", method: "POST", path: disconnect, contentType: "text/plain", wantStatus: 403},
		{name: "form POST", method: "POST", path: reload, contentType: "application/x-www-form-urlencoded", wantStatus: 403},
		{name: "bare POST", method: "POST", path: reload, wantStatus: 403},
		{name: "OPTIONS preflight", method: "OPTIONS", path: disconnect, origin: "http://attacker.example", wantStatus: 403},
		{name: "JSON POST", method: "POST", path: disconnect, contentType: "application/json; charset=utf-8", wantStatus: 200},
		{name: "POST with X-Warren", method: "POST", path: reload, extra: "X-Warren: 1", wantStatus: 200},
		{name: "POST from own page", method: "POST", path: reload, origin: "http://127.0.0.1:PORT", contentType: "application/json", wantStatus: 200},
	}
	withToken := []req{
		// The token guards; any name may reach the listener.
		{name: "any host", method: "GET", path: status, host: "admin.example.com:PORT", extra: "Authorization: Bearer " + testToken, wantStatus: 200},
		{name: "foreign origin", method: "GET", path: status, origin: "http://attacker.example", extra: "Authorization: Bearer " + testToken, wantStatus: 403},
		{name: "POST without token", method: "POST", path: reload, contentType: "text/plain", wantStatus: 401},
		{name: "POST with token", method: "POST", path: reload, extra: "Authorization: Bearer " + testToken, wantStatus: 200},
	}
	for _, suite := range []struct {
		name string
		cfg  admin.Config
		reqs []req
	}{
		{"tokenless", loopback(), tokenless},
		{"token", admin.Config{Address: "127.0.0.1:0", Token: testToken}, withToken},
	} {
		t.Run(suite.name, func(t *testing.T) {
			src := newSource()
			s, c := start(t, suite.cfg, src, nil)
			_, port, _ := net.SplitHostPort(s.Addr().String())
			for _, r := range suite.reqs {
				t.Run(r.name, func(t *testing.T) {
					src.mu.Lock()
					src.disconnected, src.reloads = nil, 0
					src.mu.Unlock()
					hr, err := http.NewRequest(r.method, url(s, r.path), nil)
					if err != nil {
						t.Fatal(err)
					}
					if r.host != "" {
						hr.Host = strings.ReplaceAll(r.host, "PORT", port)
					}
					if r.origin != "" {
						hr.Header.Set("Origin", strings.ReplaceAll(r.origin, "PORT", port))
					}
					if r.contentType != "" {
						hr.Header.Set("Content-Type", r.contentType)
					}
					if k, v, ok := strings.Cut(r.extra, ": "); ok {
						hr.Header.Set(k, v)
					}
					resp, err := c.Do(hr)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode != r.wantStatus {
						t.Fatalf("%s %s (Host %q, Origin %q, Content-Type %q) = %d, want %d",
							r.method, r.path, hr.Host, r.origin, r.contentType, resp.StatusCode, r.wantStatus)
					}
					src.mu.Lock()
					acted := len(src.disconnected) + src.reloads
					src.mu.Unlock()
					if r.method == "POST" && (acted > 0) != (r.wantStatus == 200) {
						t.Errorf("%s %s answered %d and acted %d times", r.method, r.path, resp.StatusCode, acted)
					}
				})
			}
		})
	}
}
