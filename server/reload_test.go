package server_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/session"
)

// TestServerReload: a reload removes one client (its session is closed
// and it is refused from then on) and adds another (which may connect),
// while a transfer through a client the reload leaves alone carries on
// intact in the same session. A reload that changes a restart-only key is
// refused and changes nothing.
func TestServerReload(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	const seed, size = 21, 2 << 20
	started := make(chan struct{})
	dl := w.Backend(harness.SlowDownload(seed, size, 30*time.Millisecond, started))
	target := w.Backend(harness.Echo)
	cfg := w.ServerConfig()
	srv := w.StartServer(cfg)
	office := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "dl", Target: dl}))
	other := w.StartClient(w.ClientConfig(srv, harness.TokenOther, client.Service{Name: "echo", Target: target}))
	office.WaitSession(1)
	other.WaitSession(1)
	c := w.Dial(office.PublicAddr("dl"))
	<-started

	bad := cfg
	bad.PublicAddress = "0.0.0.0"
	if err := srv.Reload(bad); err == nil || !strings.Contains(err.Error(), "server.public_address changed") {
		t.Fatalf("reload changing public_address: %v, want it refused naming the key", err)
	}

	const tokenThird = "third-token-0123456789abcdef"
	next := cfg
	next.Clients = []server.Client{cfg.Clients[0], {Name: "third", Token: tokenThird, Ports: cfg.Clients[0].Ports}}
	if err := srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	err := other.WaitExit()
	var rej *session.RejectError
	if !errors.As(err, &rej) || rej.Code != session.CodeUnknownToken {
		t.Fatalf("removed client ended with %v, want its token refused", err)
	}
	third := w.StartClient(w.ClientConfig(srv, tokenThird, client.Service{Name: "echo", Target: target}))
	third.WaitSession(1)
	w.RoundTrip(third.PublicAddr("echo"))

	harness.CheckDownload(t, c, seed, size)
	c.Close()
	if st := office.Status(); st.Sessions != 1 || !st.Connected {
		t.Errorf("the untouched client: %d sessions, connected %v; want its first session still up", st.Sessions, st.Connected)
	}
}

// TestServerReloadConcurrent: reloads from SIGHUP and the admin API may
// run at once; they are applied one after the other.
func TestServerReloadConcurrent(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	cfg := w.ServerConfig()
	srv := w.StartServer(cfg)
	done := make(chan error, 2)
	for i := range 2 {
		go func() {
			next := cfg
			next.Clients = append([]server.Client{}, cfg.Clients...)
			next.Clients = append(next.Clients, server.Client{Name: fmt.Sprintf("extra%d", i), Token: fmt.Sprintf("extra-token-%d-0123456789", i), Ports: cfg.Clients[0].Ports})
			done <- srv.Reload(next)
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
