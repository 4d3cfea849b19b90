package server

// The route table's rules for UDP ports (table.go), pinned one by one.

import (
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/session"
)

func udpSvc(name string, port int) session.Service {
	return session.Service{Name: name, RemotePort: port, Protocol: session.ProtoUDP}
}

// Rule 1: a UDP claim is checked against the token's udp_ports, apart
// from its TCP ports, and has no domains.
func TestTableUDPTokens(t *testing.T) {
	f := newFixture(t)
	cs := f.session(f.office, "a", "")
	for _, tc := range []struct {
		name         string
		reqs         []session.Service
		code, reason string
	}{
		{"outside udp_ports", []session.Service{udpSvc("dns", 20050)}, session.CodePortNotAllowed, `remote_port 20050 (udp) is not in client "office"'s udp_ports (20000-20009)`},
		{"with domains", []session.Service{{Name: "x", Protocol: session.ProtoUDP, Domains: []string{"a.office.example.com"}}}, session.CodeBadRequest, "a UDP service has no domains"},
		{"with entry", []session.Service{{Name: "x", Protocol: session.ProtoUDP, RemotePort: 20001, Entry: "http"}}, session.CodeBadRequest, "a UDP service has no domains or entry point"},
		{"unknown protocol", []session.Service{{Name: "x", Protocol: "sctp", RemotePort: 20001}}, session.CodeBadRequest, `protocol "sctp"`},
		{"limits on tcp", []session.Service{{Name: "x", RemotePort: 20001, UDP: &session.UDPLimits{MaxFlows: 1}}}, session.CodeBadRequest, "UDP limits on a TCP service"},
		{"udp port twice", []session.Service{udpSvc("x", 20001), udpSvc("y", 20001)}, session.CodeBadRequest, "remote_port 20001 (udp) is claimed by two services"},
	} {
		t.Run(tc.name, func(t *testing.T) { f.refused(cs, tc.code, tc.reason, tc.reqs...) })
	}
	tcpOnly := &clientEntry{name: "tcponly", ports: []PortRange{{20000, 20099}}}
	f.tb.setClientsLocked(append(f.tb.clients, tcpOnly), append(f.tb.tokens, []byte("t")))
	f.refused(f.session(tcpOnly, "t", ""), session.CodePortNotAllowed, `not in client "tcponly"'s udp_ports ()`, udpSvc("dns", 20001))
	f.refused(f.session(tcpOnly, "t", ""), session.CodePortNotAllowed, "may claim no udp_ports", udpSvc("dns", 0))
}

// Rule 2: a TCP and a UDP port of one number are two routes, each
// claimable by one service, owned apart.
func TestTableUDPOwners(t *testing.T) {
	f := newFixture(t)
	cs := f.session(f.office, "a", "")
	granted, _ := f.claim(cs, svc("dns-tcp", 20001), udpSvc("dns", 20001))
	f.up(cs)
	if r := f.route("udp:20001"); r == nil || !r.udp || r.pc == nil {
		t.Fatalf("no UDP route bound: %+v", r)
	}
	if r := f.route("port:20001"); r == nil || r.udp || r.l == nil {
		t.Fatalf("no TCP route bound: %+v", r)
	}
	if g := granted[1]; !g.IsUDP() || g.UDP == nil || g.RemotePort != 20001 {
		t.Fatalf("grant %+v", g)
	}
	other := f.session(f.other, "o", "")
	f.refused(other, session.CodePortInUse, `udp port 20001 (service "x") is held by client "office"`, udpSvc("x", 20001))
	// The other protocol's port of another number is free to take.
	f.claim(other, udpSvc("x", 20002))

	// Held for the reconnect grace like a TCP route.
	f.tb.down(cs, true)
	if r := f.route("udp:20001"); r == nil || r.heldUntil.IsZero() {
		t.Fatal("the UDP port is not held")
	}
	f.refused(f.session(f.other, "o2", ""), session.CodePortInUse, "for its reconnect grace", udpSvc("y", 20001))
}

// Rule 7: an any-port UDP service gets a free port of the token's
// udp_ports, which an update keeps.
func TestTableUDPAnyPort(t *testing.T) {
	f := newFixture(t)
	cs := f.session(f.office, "a", "")
	granted, _ := f.claim(cs, udpSvc("game", 0), svc("web", 0))
	f.up(cs)
	port := granted[0].RemotePort
	if port < 20000 || port > 20009 {
		t.Fatalf("any UDP port: got %d, want one of 20000-20009", port)
	}
	if f.route(udpKey(port)) == nil {
		t.Fatalf("no route %s", udpKey(port))
	}
	again, _ := f.claim(cs, udpSvc("game", 0))
	if again[0].RemotePort != port {
		t.Fatalf("update moved the port from %d to %d", port, again[0].RemotePort)
	}
	if f.route(portKey(granted[1].RemotePort)) != nil {
		t.Fatal("the TCP route the update dropped is still there")
	}
}

// UDP limits: a claim may lower the server's, never raise them; the
// grant says what is in force, and so does the route.
func TestTableUDPLimits(t *testing.T) {
	f := newFixture(t)
	cs := f.session(f.office, "a", "")
	low := udpSvc("dns", 20001)
	low.UDP = &session.UDPLimits{IdleMillis: 5000, MaxFlows: 10, MaxDatagram: 1500}
	high := udpSvc("voip", 20002)
	high.UDP = &session.UDPLimits{IdleMillis: 3600e3, MaxFlows: 1 << 20, MaxDatagram: 65535}
	short := udpSvc("game", 20003)
	short.UDP = &session.UDPLimits{IdleMillis: 1}
	granted, _ := f.claim(cs, low, high, short, udpSvc("plain", 20004))
	def := DefaultConfig().UDP
	want := []session.UDPLimits{
		{IdleMillis: 5000, MaxFlows: 10, MaxDatagram: 1500},
		{IdleMillis: def.IdleTimeout.Milliseconds(), MaxFlows: def.MaxFlows, MaxDatagram: def.MaxDatagram},
		{IdleMillis: time.Second.Milliseconds(), MaxFlows: def.MaxFlows, MaxDatagram: def.MaxDatagram},
		{IdleMillis: def.IdleTimeout.Milliseconds(), MaxFlows: def.MaxFlows, MaxDatagram: def.MaxDatagram},
	}
	for i, g := range granted {
		if *g.UDP != want[i] {
			t.Errorf("%s: granted %+v, want %+v", g.Name, *g.UDP, want[i])
		}
	}
	if got := *f.route("udp:20001").limits.Load(); got != want[0] {
		t.Errorf("route limits %+v", got)
	}
	// An update changes them on the route it keeps.
	low.UDP.MaxFlows = 3
	f.up(cs)
	f.claim(cs, low)
	if got := f.route("udp:20001").limits.Load().MaxFlows; got != 3 {
		t.Errorf("after the update the route allows %d flows", got)
	}
}

// Rule 11: a UDP flow picks its member at once, never waiting: a live
// one; else one in its handshake, whose session sessionFor waits for
// until up; none while the route is held. A flow forwarded from another
// server picks alike (serveForwardedFlow).
func TestTableUDPPickFlow(t *testing.T) {
	leaktest.Check(t)
	f := newFixture(t)
	cs := f.session(f.office, "a", "")
	f.claim(cs, udpSvc("dns", 20001))
	r := f.route("udp:20001")
	m, h := f.tb.pickFlow(r, false)
	if m == nil || m.cs != cs || h != nil {
		t.Fatalf("picked %v, %v; want the member in its handshake", m, h)
	}
	got := make(chan *session.Session, 1)
	go func() { got <- f.tb.sessionFor(r, m, nil) }()
	sess := f.up(cs)
	if s := <-got; s != sess {
		t.Fatalf("sessionFor returned %v, want the session brought up", s)
	}
	if m2, _ := f.tb.pickFlow(r, false); m2 != m {
		t.Fatal("the live member is not picked")
	}
	f.tb.down(cs, true)
	if m, h := f.tb.pickFlow(r, false); m != nil || h != nil {
		t.Fatal("picked a member of a held route")
	}
	if s := f.tb.sessionFor(r, m, nil); s != nil {
		t.Fatal("sessionFor gave the session of a member that left")
	}
	if ms := f.tb.members(r); len(ms) != 0 {
		t.Fatalf("held route has members %v", ms)
	}

	// A handshake that fails (down) or a flow that ends (give) ends the
	// wait with no session.
	for _, end := range []string{"handshake fails", "flow ends"} {
		cs := f.session(f.office, end, "")
		f.claim(cs, udpSvc("dns", 20001)) // adopts the held route
		m, _ := f.tb.pickFlow(r, false)
		if m == nil || m.cs != cs {
			t.Fatalf("%s: picked %v, want the member in its handshake", end, m)
		}
		give := make(chan struct{})
		got := make(chan *session.Session, 1)
		go func() { got <- f.tb.sessionFor(r, m, give) }()
		if end == "flow ends" {
			close(give)
		} else {
			f.tb.down(cs, true)
		}
		if s := <-got; s != nil {
			t.Fatalf("%s: sessionFor returned %v", end, s)
		}
		if end == "flow ends" {
			f.tb.down(cs, true)
		}
	}
}
