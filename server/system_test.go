package server_test

import (
	"testing"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/leaktest"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
)

// TestSystemPair runs one tunnel over the in-memory edges and over real
// TCP+TLS sockets: the twin and the real thing answer alike.
func TestSystemPair(t *testing.T) {
	leaktest.Check(t)
	for _, kind := range []string{harness.Memory, harness.TCP} {
		t.Run(kind, func(t *testing.T) {
			w := harness.NewWorldOf(t, kind)
			target := w.Backend(harness.Echo)
			srv := w.StartServer(w.ServerConfig())
			cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "echo", Target: target}))
			cli.WaitSession(1)
			w.RoundTrip(cli.PublicAddr("echo"))
			srv.WaitSessions(1)
		})
	}
}
