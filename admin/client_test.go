package admin_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/warren-tunnel/warren/admin"
)

// TestDialAddress: a listen address becomes one to dial; a wildcard host
// means loopback. (Moved from cmd/warren with the client.)
func TestDialAddress(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"0.0.0.0:7001", "127.0.0.1:7001"},
		{":7001", "127.0.0.1:7001"},
		{"[::]:7001", "[::1]:7001"},
		{"10.0.0.5:7001", "10.0.0.5:7001"},
		{"localhost:7001", "localhost:7001"},
	} {
		if got, err := admin.DialAddress(tt.in); err != nil || got != tt.want {
			t.Errorf("DialAddress(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"127.0.0.1", "127.0.0.1:0", "127.0.0.1:http"} {
		if _, err := admin.DialAddress(bad); err == nil {
			t.Errorf("DialAddress(%q) succeeded", bad)
		}
	}
}

// TestClient: the client against a real admin API: status, readiness
// (503 with the reason when not ready), liveness, reload, disconnect,
// and a 401 without the token.
func TestClient(t *testing.T) {
	src := &fakeSource{reason: "no session yet", status: admin.Status{Role: admin.RoleClient}}
	srv, _ := start(t, admin.Config{Address: "127.0.0.1:0", Token: "admin-token-0123456789"}, src, nil)
	c := admin.Client{Addr: srv.Addr().String(), Token: "admin-token-0123456789"}
	ctx := context.Background()

	st, raw, err := c.Status(ctx)
	if err != nil || st.Role != admin.RoleClient || st.Ready || st.NotReady != "no session yet" || !strings.Contains(string(raw), `"role"`) {
		t.Fatalf("Status: %+v, %q, %v", st, raw, err)
	}
	var ae *admin.APIError
	if err := c.Ready(ctx); !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Body != "no session yet" {
		t.Fatalf("Ready of a daemon not ready: %v, want a 503 saying why", err)
	}
	src.mu.Lock()
	src.ready = true
	src.mu.Unlock()
	if err := c.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if err := c.Live(ctx); err != nil {
		t.Fatalf("Live: %v", err)
	}
	if err := c.Reload(ctx); err != nil || src.reloads != 1 {
		t.Fatalf("Reload: %v, %d reloads", err, src.reloads)
	}
	if err := c.Disconnect(ctx, "laptop"); !errors.As(err, &ae) || ae.Status != http.StatusNotImplemented {
		t.Fatalf("Disconnect on a client daemon: %v, want 501", err)
	}
	if err := (admin.Client{Addr: c.Addr}).Ready(ctx); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("Ready without the token: %v, want 401", err)
	}
	if _, _, err := (admin.Client{Addr: "127.0.0.1"}).Status(ctx); err == nil {
		t.Fatal("Status of an address without a port succeeded")
	}
}

// TestWithReload: the daemon's side and the command's reload make one
// Source; without a config file, Reload is not supported.
func TestWithReload(t *testing.T) {
	d := newSource()
	calls := 0
	src := admin.WithReload(d, func() error { calls++; return nil })
	if err := src.Reload(); err != nil || calls != 1 {
		t.Fatalf("Reload: %v, %d calls", err, calls)
	}
	if ok, _ := src.Ready(); !ok || src.Status().Role != admin.RoleServer {
		t.Fatal("WithReload does not pass the daemon's side through")
	}
	if err := admin.WithReload(d, nil).Reload(); !errors.Is(err, admin.ErrNotSupported) {
		t.Fatalf("Reload without a config file: %v, want ErrNotSupported", err)
	}
}
