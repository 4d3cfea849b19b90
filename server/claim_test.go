package server

import (
	"net"
	"strconv"
	"strings"
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
	s := claimServer(t, PortRange{Lo: first, Hi: first + 4})
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

// TestClaimGroupCap: a client process may run at most
// session.MaxConnections sessions in one group; another group of the same
// client is not counted against it.
func TestClaimGroupCap(t *testing.T) {
	s := claimServer(t, PortRange{Lo: 1024, Hi: 65535})
	for i := range session.MaxConnections {
		s.sessions[&clientSession{client: s.clients[0], instance: "g/" + strconv.Itoa(i), group: "g"}] = struct{}{}
	}
	extra := &clientSession{client: s.clients[0], instance: "g/x", group: "g"}
	_, _, rej := s.claim(extra, []session.Service{{Name: "any"}})
	if rej == nil || rej.Code != session.CodeBadRequest || !strings.Contains(rej.Reason, "parallel sessions") {
		t.Fatalf("session %d of a group: got %v, want a bad_request naming the parallel sessions", session.MaxConnections+1, rej)
	}
	other := &clientSession{client: s.clients[0], instance: "h/0", group: "h"}
	if _, _, rej := s.claim(other, []session.Service{{Name: "any"}}); rej != nil {
		t.Fatalf("first session of another group: %v", rej)
	}
	s.mu.Lock()
	s.leaveLocked(other, false)
	s.mu.Unlock()
}

// TestClaimGroupSharesAnyPort: parallel sessions of one client process
// that ask for any port at once (the first still in its handshake) get the
// same port; a session of another process does not join it.
func TestClaimGroupSharesAnyPort(t *testing.T) {
	s := claimServer(t, PortRange{Lo: 1024, Hi: 65535})
	var sessions []*clientSession
	defer func() {
		s.mu.Lock()
		for _, cs := range sessions {
			s.leaveLocked(cs, false)
		}
		s.mu.Unlock()
	}()
	claim := func(instance, group string) int {
		t.Helper()
		cs := &clientSession{client: s.clients[0], instance: instance, group: group}
		granted, victims, rej := s.claim(cs, []session.Service{{Name: "any"}})
		if rej != nil || len(victims) != 0 {
			t.Fatalf("%s: rejected %v, victims %d", instance, rej, len(victims))
		}
		sessions = append(sessions, cs)
		return granted[0].RemotePort
	}
	first := claim("g/0", "g")
	if second := claim("g/1", "g"); second != first {
		t.Fatalf("second session of the group got port %d, the first %d", second, first)
	}
	if other := claim("h", ""); other == first {
		t.Fatalf("a session of another process joined the group's port %d", first)
	}
}

// claimServer is a server (not running) with one client, "office",
// allowed ports.
func claimServer(t *testing.T, ports PortRange) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.PublicAddress = "127.0.0.1"
	cfg.StateDir = t.TempDir()
	cfg.Listen = []Listen{{Transport: "tcp", Address: "127.0.0.1:0"}}
	cfg.Clients = []Client{{Name: "office", Token: "office-token-0123456789", Ports: []PortRange{ports}}}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
