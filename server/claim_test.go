package server

import (
	"net"
	"testing"

	"github.com/warren-tunnel/warren/session"
)

// TestClaimAnyPortSkipsNamedPorts: a service asking for any port must not
// take the port another service of the same request names, even when that
// port is the first of the client's range.
func TestClaimAnyPortSkipsNamedPorts(t *testing.T) {
	// A free range of 5 ports whose first port is the one named.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	first := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := DefaultConfig()
	cfg.PublicAddress = "127.0.0.1"
	cfg.StateDir = t.TempDir()
	cfg.Listen = []Listen{{Transport: "tcp", Address: "127.0.0.1:0"}}
	cfg.Clients = []Client{{Name: "office", Token: "office-token-0123456789", Ports: []PortRange{{Lo: first, Hi: first + 4}}}}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs := &clientSession{client: s.clients[0], instance: "i"}
	granted, victims, rej := s.claim(cs, []session.Service{{Name: "any"}, {Name: "named", RemotePort: first}})
	if rej != nil {
		t.Fatalf("rejected: %v", rej)
	}
	defer func() { s.mu.Lock(); s.leaveLocked(cs, false); s.mu.Unlock() }()
	if len(victims) != 0 {
		t.Fatalf("victims: %d", len(victims))
	}
	if granted[0].RemotePort == first || granted[0].RemotePort < first || granted[0].RemotePort > first+4 {
		t.Fatalf("any-port service got %d; range %d-%d, %d named", granted[0].RemotePort, first, first+4, first)
	}
	if granted[1].RemotePort != first {
		t.Fatalf("named service got %d, want %d", granted[1].RemotePort, first)
	}
}
