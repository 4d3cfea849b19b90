package server

// Fast in-memory tests of the route table: one (or more) per rule of the
// comment at the top of table.go, numbered as there. Ports are bound on a
// memnet network, time is a manual clock, and sessions are real sessions
// over in-memory pipes.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/internal/testutil/memnet"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport/transporttest"
)

// fixture is a table with two clients: office (ports 20000-20099, UDP
// ports 20000-20009, *.office.example.com and shared.example.com) and
// other (ports 20000-20199, UDP ports 20000-20019, shared.example.com).
type fixture struct {
	t      testing.TB
	tb     *table
	net    *memnet.Network
	clock  *clocktest.Clock
	office *clientEntry
	other  *clientEntry

	mu     sync.Mutex
	served []*route // routes given to serve
}

func newFixture(t *testing.T) *fixture { return newFixtureTB(t) }

func newFixtureTB(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{t: t, net: &memnet.Network{}, clock: clocktest.New()}
	cfg := tableConfig{grace: time.Minute, handshakeTimeout: time.Minute, maxWaiting: 4, maxServices: 8, udp: DefaultConfig().UDP}
	bind := func(udp bool, port int) (socket, error) {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if udp {
			pc, err := f.net.ListenPacket("udp", addr)
			if err != nil {
				return socket{}, err
			}
			return socket{pc: pc}, nil
		}
		l, err := f.net.Listen("tcp", addr)
		return socket{l: l}, err
	}
	serve := func(r *route) {
		f.mu.Lock()
		f.served = append(f.served, r)
		f.mu.Unlock()
	}
	f.tb = newTable(cfg, f.clock, slog.New(slog.DiscardHandler), &signal{}, bind, serve)
	f.office = &clientEntry{name: "office", ports: []PortRange{{20000, 20099}}, udpPorts: []PortRange{{20000, 20009}}, domains: []string{"*.office.example.com", "shared.example.com"}}
	f.other = &clientEntry{name: "other", ports: []PortRange{{20000, 20199}}, udpPorts: []PortRange{{20000, 20019}}, domains: []string{"shared.example.com"}}
	f.tb.setClientsLocked([]*clientEntry{f.office, f.other}, [][]byte{[]byte("o"), []byte("t")})
	t.Cleanup(func() {
		for _, l := range f.tb.close() {
			l.Close()
		}
	})
	return f
}

// session is a session of client in its handshake (not up).
func (f *fixture) session(c *clientEntry, instance, group string) *clientSession {
	return &clientSession{client: c, id: instance, instance: instance, group: group, log: slog.New(slog.DiscardHandler)}
}

// claim claims reqs for cs and fails the test on a rejection.
func (f *fixture) claim(cs *clientSession, reqs ...session.Service) ([]session.Service, []*clientSession) {
	f.t.Helper()
	granted, victims, rej := f.tb.claim(cs, reqs)
	if rej != nil {
		f.t.Fatalf("%s: claim rejected: %v", cs.instance, rej)
	}
	if cs.sess == nil {
		cs.granted = granted // as serveTunnel does
	}
	return granted, victims
}

// refused claims reqs for cs and checks the rejection's code and reason.
func (f *fixture) refused(cs *clientSession, code, reason string, reqs ...session.Service) {
	f.t.Helper()
	_, _, rej := f.tb.claim(cs, reqs)
	if rej == nil || rej.Code != code || !strings.Contains(rej.Reason, reason) {
		f.t.Fatalf("%s: claim of %v: %v, want %s saying %q", cs.instance, reqs, rej, code, reason)
	}
}

// up brings cs up with a live session (in memory, not running).
func (f *fixture) up(cs *clientSession) *session.Session {
	f.t.Helper()
	sess := liveSession(f.t, session.DefaultConfig())
	if ok, _ := f.tb.up(cs, sess); !ok {
		f.t.Fatalf("%s: not up", cs.instance)
	}
	return sess
}

// route returns the route of key, or nil.
func (f *fixture) route(key string) *route {
	f.tb.mu.Lock()
	defer f.tb.mu.Unlock()
	return f.tb.routes[key]
}

// members lists the instances serving the route of key.
func (f *fixture) members(key string) []string {
	f.tb.mu.Lock()
	defer f.tb.mu.Unlock()
	var out []string
	if r := f.tb.routes[key]; r != nil {
		for _, m := range r.members {
			out = append(out, m.cs.instance)
		}
	}
	return out
}

// liveSession returns the server side of a session over an in-memory
// pipe, whose connections are closed when the test ends (closing the
// sessions would wait out their goodbye). Neither side runs: it stays
// alive with no streams until then.
func liveSession(t testing.TB, cfg session.Config) *session.Session {
	t.Helper()
	s, _ := sessionPair(t, cfg)
	return s
}

// sessionPair is liveSession with the client's side too, for a test that
// runs it.
func sessionPair(t testing.TB, cfg session.Config) (srvSide, cliSide *session.Session) {
	t.Helper()
	mem := &transporttest.Network{}
	l, err := mem.Listen("s")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		s   *session.Session
		err error
	}
	srv := make(chan result, 1)
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			srv <- result{nil, err}
			return
		}
		conns <- c
		p, err := session.Accept(c, cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			srv <- result{nil, err}
			return
		}
		s, err := p.Welcome(session.Welcome{Client: "c", Session: "s", Groups: true})
		srv <- result{s, err}
	}()
	c, err := mem.Dial(context.Background(), "s")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := session.ConnectBy(time.Time{}, c, cfg, slog.New(slog.DiscardHandler), []byte("token"), "i", "", []session.Service{{Name: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	r := <-srv
	if r.err != nil {
		t.Fatal(r.err)
	}
	sc := <-conns
	t.Cleanup(func() {
		c.Close()
		sc.Close()
		// The goodbyes fail at once on closed connections: no wait.
		cli.Close(session.CodeClosed, "test over")
		r.s.Close(session.CodeClosed, "test over")
	})
	return r.s, cli
}

func svc(name string, port int) session.Service { return session.Service{Name: name, RemotePort: port} }

// Rule 1: claims are checked against the token and the limits.
func TestTableTokens(t *testing.T) {
	f := newFixture(t)
	cs := f.session(f.other, "a", "")
	for _, tc := range []struct {
		name         string
		reqs         []session.Service
		code, reason string
	}{
		{"port outside the ranges", []session.Service{svc("x", 20200)}, session.CodePortNotAllowed, `remote_port 20200 is not in client "other"'s ports (20000-20199)`},
		{"domain not allowed", []session.Service{{Name: "x", Domains: []string{"a.office.example.com"}}}, session.CodeDomainNotAllowed, "domain a.office.example.com is not in client \"other\"'s domains"},
		{"none", nil, session.CodeBadRequest, "no services claimed"},
		{"too many", []session.Service{svc("a", 0), svc("b", 0), svc("c", 0), svc("d", 0), svc("e", 0), svc("f", 0), svc("g", 0), svc("h", 0), svc("i", 0)}, session.CodeBadRequest, "limits.max_services"},
		{"bad name", []session.Service{svc("-x", 0)}, session.CodeBadRequest, `service name "-x"`},
		{"name twice", []session.Service{svc("x", 0), svc("x", 0)}, session.CodeBadRequest, `"x" is claimed twice`},
		{"port twice", []session.Service{svc("x", 20001), svc("y", 20001)}, session.CodeBadRequest, "remote_port 20001 is claimed by two services"},
		{"port out of range", []session.Service{svc("x", 70000)}, session.CodeBadRequest, "out of range"},
		{"entry without domains", []session.Service{{Name: "x", Entry: "http"}}, session.CodeBadRequest, "without domains"},
		{"unknown entry", []session.Service{{Name: "x", Domains: []string{"shared.example.com"}, Entry: "ftp"}}, session.CodeBadRequest, `entry "ftp"`},
		{"bad domain", []session.Service{{Name: "x", Domains: []string{"a..b"}}}, session.CodeBadRequest, `service "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) { f.refused(cs, tc.code, tc.reason, tc.reqs...) })
	}
	none := &clientEntry{name: "none", domains: []string{"x.example.com"}}
	f.tb.setClientsLocked(append(f.tb.clients, none), append(f.tb.tokens, []byte("n")))
	f.refused(f.session(none, "n", ""), session.CodePortNotAllowed, "may claim no ports", svc("x", 0))

	// A client a reload removed meanwhile is unknown.
	f.tb.setClientsLocked([]*clientEntry{f.office}, [][]byte{[]byte("o")})
	f.refused(cs, session.CodeUnknownToken, "unknown token", svc("x", 0))
}

// Rule 2: a route belongs to its client, also while held for it.
func TestTableOwners(t *testing.T) {
	f := newFixture(t)
	holder := f.session(f.office, "h", "")
	f.claim(holder, svc("web", 20001), session.Service{Name: "site", Domains: []string{"shared.example.com"}})
	f.up(holder)
	thief := f.session(f.other, "t", "")
	f.refused(thief, session.CodePortInUse, `port 20001 (service "x") is held by client "office"`, svc("x", 20001))
	f.refused(thief, session.CodeDomainInUse, `domain shared.example.com (http) (service "x") is held by client "office"`, session.Service{Name: "x", Domains: []string{"shared.example.com"}})
	// The same name on the other entry point is another route.
	f.claim(thief, session.Service{Name: "x", Domains: []string{"shared.example.com"}, Entry: session.EntryHTTPS})

	f.tb.down(holder, true) // dropped: held
	if r := f.route("port:20001"); r == nil || r.heldUntil.IsZero() {
		t.Fatal("the dropped session's port is not held")
	}
	f.refused(f.session(f.other, "t2", ""), session.CodePortInUse, `held by client "office" for its reconnect grace`, svc("x", 20001))
}

// Rule 3: every service on a shared route says shared.
func TestTableSharing(t *testing.T) {
	f := newFixture(t)
	web := session.Service{Name: "web", Domains: []string{"shared.example.com"}, Shared: true}
	a := f.session(f.office, "a", "")
	f.claim(a, web)
	f.up(a)
	b := f.session(f.other, "b", "")
	f.claim(b, web)
	f.up(b)
	if got := f.members("http:shared.example.com"); len(got) != 2 {
		t.Fatalf("shared route served by %v, want both clients", got)
	}
	f.refused(f.session(f.other, "c", ""), session.CodeDomainInUse, "is shared by client(s) office, other; set shared = true", session.Service{Name: "web", Domains: []string{"shared.example.com"}})

	own := f.session(f.office, "own", "")
	f.claim(own, svc("mine", 20002))
	f.refused(f.session(f.other, "d", ""), session.CodePortInUse, `is held by client "office" and not shared`, session.Service{Name: "x", RemotePort: 20002, Shared: true})
}

// Rules 4 and 5: a new session of the client replaces the old on the
// routes it claims, joining before the old leaves; a session in its
// handshake is not replaced.
func TestTableReplacing(t *testing.T) {
	f := newFixture(t)
	old := f.session(f.office, "old", "")
	f.claim(old, svc("web", 20001))
	f.up(old)
	r := f.route("port:20001")
	l := r.l

	nu := f.session(f.office, "new", "")
	_, victims := f.claim(nu, svc("web", 20001))
	if len(victims) != 1 || victims[0] != old {
		t.Fatalf("victims %v, want the old session", victims)
	}
	if f.route("port:20001") != r || r.l != l || !r.heldUntil.IsZero() {
		t.Fatal("the route was replaced, rebound or held: the new session must take it over as it is")
	}
	select {
	case <-r.done:
		t.Fatal("the route was removed in between")
	default:
	}
	if got := f.members("port:20001"); len(got) != 1 || got[0] != "new" {
		t.Fatalf("members %v, want only the new session", got)
	}
	if _, ok := f.tb.sessions[old]; ok || len(old.routes) != 0 {
		t.Fatal("the victim is still in the table")
	}

	// nu is still in its handshake: another session may not replace it.
	f.refused(f.session(f.office, "third", ""), session.CodePortInUse, `is being claimed by another session of client "office"`, svc("web", 20001))

	// The same instance again replaces its own stale session, even on
	// other routes.
	f.up(nu)
	again := f.session(f.office, "new", "")
	_, victims = f.claim(again, svc("other", 20003))
	if len(victims) != 1 || victims[0] != nu {
		t.Fatalf("victims %v, want the stale session of the same instance", victims)
	}
	if f.route("port:20001") != nil {
		t.Fatal("the stale session's route, claimed by nobody now, is still there")
	}
}

// Rule 4, in a reconnect storm: a client whose handshake timed out on a
// busy server comes back on a new connection. Its earlier attempt, still
// in its handshake, makes the retry wait (a temporary refusal, not a
// fatal one); once the retry is up, the earlier attempt completing late
// is refused and does not replace it.
func TestTableStaleAttempt(t *testing.T) {
	f := newFixture(t)
	first := f.session(f.office, "storm", "")
	first.accepted = 1
	f.claim(first, svc("web", 20001)) // its client gave up meanwhile
	retry := f.session(f.office, "storm", "")
	retry.accepted = 2
	f.refused(retry, session.CodeLimit, "earlier attempt of this client instance", svc("web", 20001))
	if !(&session.RejectError{Code: session.CodeLimit}).Temporary() {
		t.Fatal("the refusal must be temporary: the client retries")
	}

	// The retry of the retry is up, then the first attempt's handshake
	// completes: it is refused and the live session keeps its route.
	f.tb.down(first, false)
	third := f.session(f.office, "storm", "")
	third.accepted = 3
	f.claim(third, svc("web", 20001))
	f.up(third)
	late := f.session(f.office, "storm", "")
	late.accepted = 1
	f.refused(late, session.CodeClosed, "superseded", svc("web", 20001))
	if got := f.members("port:20001"); len(got) != 1 || f.route("port:20001").members[0].cs != third {
		t.Fatalf("members %v, want the live session alone", got)
	}
}

// Rule 6: the sessions of a group serve together, at most
// session.MaxConnections of them; another group is not counted.
func TestTableGroups(t *testing.T) {
	f := newFixture(t)
	var group []*clientSession
	for i := range session.MaxConnections {
		cs := f.session(f.office, "g/"+strconv.Itoa(i), "g")
		if _, victims := f.claim(cs, svc("web", 20001)); len(victims) != 0 {
			t.Fatalf("session %d of the group replaced %d others", i, len(victims))
		}
		f.up(cs)
		group = append(group, cs)
	}
	if got := f.members("port:20001"); len(got) != session.MaxConnections {
		t.Fatalf("%d members, want the %d sessions of the group", len(got), session.MaxConnections)
	}
	f.refused(f.session(f.office, "g/x", "g"), session.CodeBadRequest, "parallel sessions", svc("web", 20001))
	// Another process of the client is counted apart, and replaces the
	// group on the route.
	_, victims := f.claim(f.session(f.office, "h/0", "h"), svc("web", 20001))
	if len(victims) != len(group) {
		t.Fatalf("%d victims, want the %d of the old group", len(victims), len(group))
	}
}

// Rule 7: any-port services.
func TestTableAnyPort(t *testing.T) {
	t.Run("skips the ports the claim names", func(t *testing.T) {
		f := newFixture(t)
		f.office.ports = []PortRange{{20000, 20004}}
		f.net = &memnet.Network{} // the kernel's picks are outside the range
		granted, _ := f.claim(f.session(f.office, "a", ""), svc("any", 0), svc("named", 20000))
		if p := granted[0].RemotePort; p < 20001 || p > 20004 {
			t.Fatalf("any-port service got %d; range 20000-20004 with 20000 named", p)
		}
		if granted[1].RemotePort != 20000 {
			t.Fatalf("named service got %d", granted[1].RemotePort)
		}
	})
	t.Run("the group shares one port, claiming at once", func(t *testing.T) {
		f := newFixture(t)
		const n = 6
		ports := make(chan int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				granted, _ := f.claim(f.session(f.office, "g/"+strconv.Itoa(i), "g"), svc("any", 0))
				ports <- granted[0].RemotePort
			})
		}
		wg.Wait()
		close(ports)
		seen := map[int]bool{}
		for p := range ports {
			seen[p] = true
		}
		if len(seen) != 1 {
			t.Fatalf("the group's sessions got ports %v, want one", seen)
		}
		// Another process does not join it.
		granted, _ := f.claim(f.session(f.office, "h", ""), svc("any", 0))
		if seen[granted[0].RemotePort] {
			t.Fatal("a session of another process joined the group's port")
		}
	})
	t.Run("an update keeps the port", func(t *testing.T) {
		f := newFixture(t)
		cs := f.session(f.office, "a", "")
		granted, _ := f.claim(cs, svc("any", 0))
		f.up(cs)
		again, _ := f.claim(cs, svc("any", 0), svc("more", 0))
		if again[0].RemotePort != granted[0].RemotePort {
			t.Fatalf("the update moved the service from %d to %d", granted[0].RemotePort, again[0].RemotePort)
		}
	})
	t.Run("none free", func(t *testing.T) {
		f := newFixture(t)
		f.office.ports = []PortRange{{20000, 20001}}
		for _, p := range []int{20000, 20001} {
			l, err := f.net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
		}
		f.refused(f.session(f.office, "a", ""), session.CodePortInUse, `none of client "office"'s ports (20000-20001) is free`, svc("any", 0))
	})
}

// Rule 8: an update is the whole new list, and replaces nobody.
func TestTableUpdate(t *testing.T) {
	f := newFixture(t)
	cs := f.session(f.office, "a", "")
	f.claim(cs, svc("keep", 20001), svc("drop", 20002))
	f.up(cs)
	keep := f.route("port:20001")
	f.claim(cs, svc("keep", 20001), svc("add", 20003))
	if f.route("port:20001") != keep {
		t.Fatal("a kept route was replaced")
	}
	if f.route("port:20002") != nil {
		t.Fatal("a dropped route is still there")
	}
	if f.route("port:20003") == nil {
		t.Fatal("an added route is not there")
	}
	if _, err := f.net.Listen("tcp", "127.0.0.1:20002"); err != nil {
		t.Fatalf("the dropped route's port was not released: %v", err)
	}

	other := f.session(f.office, "b", "")
	f.claim(other, svc("theirs", 20005))
	f.up(other)
	f.refused(cs, session.CodePortInUse, "is served by another session", svc("keep", 20001), svc("theirs", 20005))
	if got := f.members("port:20005"); len(got) != 1 || got[0] != "b" {
		t.Fatalf("the refused update disturbed the other session: members %v", got)
	}

	// A replaced session's update is refused.
	f.claim(f.session(f.office, "c", ""), svc("keep", 20001))
	f.refused(cs, session.CodeClosed, "replaced or closed", svc("keep", 20001))
}

// Rule 9: holds.
func TestTableHolds(t *testing.T) {
	f := newFixture(t)
	cs := f.session(f.office, "a", "")
	f.claim(cs, svc("web", 20001))
	f.up(cs)
	r := f.route("port:20001")
	if held := f.tb.down(cs, true); !held || r.heldUntil.IsZero() {
		t.Fatal("a dropped session's route is not held")
	}
	// The client's return adopts it, without a gap: same route, listener.
	back := f.session(f.office, "b", "")
	f.claim(back, svc("web", 20001))
	if f.route("port:20001") != r || !r.heldUntil.IsZero() || r.hold != nil {
		t.Fatal("the returning session did not adopt the held route")
	}
	f.up(back)

	// Dropped again; the grace ends on the clock.
	f.tb.down(back, true)
	f.clock.Advance(time.Minute - time.Millisecond)
	if f.route("port:20001") != r {
		t.Fatal("released before the grace ended")
	}
	f.clock.Advance(time.Millisecond)
	if f.route("port:20001") != nil {
		t.Fatal("still held after the grace")
	}
	select {
	case <-r.done:
	default:
		t.Fatal("the released route's waiters were not sent away")
	}

	// Nothing held for a goodbye, a drain or a release.
	for _, how := range []string{"goodbye", "drain", "released"} {
		cs := f.session(f.office, how, "")
		f.claim(cs, svc("web", 20001))
		f.up(cs)
		hold := true
		switch how {
		case "goodbye":
			hold = false
		case "drain":
			f.tb.drain(cs)
		case "released":
			f.tb.mu.Lock()
			cs.released = true
			f.tb.mu.Unlock()
		}
		if f.tb.down(cs, hold) || f.route("port:20001") != nil {
			t.Fatalf("%s: the route was held", how)
		}
	}
}

// Rules 10 and 11: picking and waking.
func TestTablePick(t *testing.T) {
	t.Run("fewest streams, then round robin", func(t *testing.T) {
		f := newFixture(t)
		var sess []*session.Session
		for i := range 3 {
			cs := f.session(f.office, "g/"+strconv.Itoa(i), "g")
			f.claim(cs, svc("web", 20001))
			sess = append(sess, f.up(cs))
		}
		r := f.route("port:20001")
		// Two streams on g/0, one on g/1, none on g/2.
		for i, n := range []int{2, 1, 0} {
			for range n {
				if _, err := sess[i].Open(session.Header{Service: "web"}); err != nil {
					t.Fatal(err)
				}
			}
		}
		m, err := f.tb.pick(r, nil, nil)
		if err != nil || m.cs.instance != "g/2" {
			t.Fatalf("picked %v, %v; want g/2, which has no streams", m, err)
		}
		if _, err := sess[2].Open(session.Header{Service: "web"}); err != nil {
			t.Fatal(err)
		}
		if _, err := sess[2].Open(session.Header{Service: "web"}); err != nil {
			t.Fatal(err)
		}
		// Now g/1 has the fewest; tried members are skipped.
		m, _ = f.tb.pick(r, nil, nil)
		if m.cs.instance != "g/1" {
			t.Fatalf("picked %s, want g/1", m.cs.instance)
		}
		m2, _ := f.tb.pick(r, map[*member]bool{m: true}, nil)
		if m2.cs.instance == "g/1" {
			t.Fatal("picked a member that failed this connection")
		}
	})
	t.Run("round robin among equals", func(t *testing.T) {
		f := newFixture(t)
		for i := range 3 {
			cs := f.session(f.office, "g/"+strconv.Itoa(i), "g")
			f.claim(cs, svc("web", 20001))
			f.up(cs)
		}
		r := f.route("port:20001")
		seen := map[string]int{}
		for range 6 {
			m, err := f.tb.pick(r, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			seen[m.cs.instance]++
		}
		if len(seen) != 3 {
			t.Fatalf("6 picks among 3 idle members went %v", seen)
		}
	})
	t.Run("late on heartbeats last", func(t *testing.T) {
		f := newFixture(t)
		late := f.session(f.office, "g/late", "g")
		f.claim(late, svc("web", 20001))
		cfg := session.DefaultConfig()
		cfg.HeartbeatInterval, cfg.HeartbeatMisses = 10*time.Millisecond, 1000
		sess := liveSession(t, cfg)
		f.tb.up(late, sess)
		go sess.Run(context.Background(), session.Handlers{}) // pings that no one answers
		for sess.Missed() <= 1 {
			time.Sleep(5 * time.Millisecond) // the session's own clock: no signal for a missed ping
		}
		busy := f.session(f.office, "g/busy", "g")
		f.claim(busy, svc("web", 20001))
		s := f.up(busy)
		for range 3 {
			s.Open(session.Header{Service: "web"})
		}
		for range 4 {
			if m, _ := f.tb.pick(f.route("port:20001"), nil, nil); m.cs != busy {
				t.Fatal("picked the member late on heartbeats over a busy one")
			}
		}
	})
	t.Run("waits while held, woken by the return", func(t *testing.T) {
		f := newFixture(t)
		cs := f.session(f.office, "a", "")
		f.claim(cs, svc("web", 20001))
		f.up(cs)
		f.tb.down(cs, true)
		r := f.route("port:20001")
		got := make(chan *member, 1)
		go func() {
			m, _ := f.tb.pick(r, nil, nil)
			got <- m
		}()
		waitFor(t, f, func() bool { return r.waiting == 1 })
		back := f.session(f.office, "b", "")
		f.claim(back, svc("web", 20001)) // joins, in its handshake: still waiting
		waitFor(t, f, func() bool { return r.waiting == 1 })
		f.up(back) // wakes it
		if m := <-got; m.cs != back {
			t.Fatalf("the waiting connection went to %v", m.cs.instance)
		}
	})
	t.Run("gives up: grace over, route gone, too many waiting", func(t *testing.T) {
		f := newFixture(t)
		cs := f.session(f.office, "a", "")
		f.claim(cs, svc("web", 20001), svc("api", 20002))
		f.up(cs)
		f.tb.down(cs, true)
		errs := make(chan error, 8)
		for _, key := range []string{"port:20001", "port:20001", "port:20001", "port:20001"} {
			r := f.route(key)
			go func() {
				_, err := f.tb.pick(r, nil, nil)
				errs <- err
			}()
		}
		r := f.route("port:20001")
		waitFor(t, f, func() bool { return r.waiting == 4 })
		if _, err := f.tb.pick(r, nil, nil); !errors.Is(err, errTooManyWaiting) {
			t.Fatalf("a fifth waiting connection: %v, want errTooManyWaiting", err)
		}
		api := f.route("port:20002")
		go func() {
			_, err := f.tb.pick(api, nil, nil)
			errs <- err
		}()
		waitFor(t, f, func() bool { return api.waiting == 1 })
		f.tb.mu.Lock()
		f.tb.removeRouteLocked(api)
		f.tb.mu.Unlock()
		if err := <-errs; !errors.Is(err, errRouteGone) {
			t.Fatalf("a connection on a removed route: %v, want errRouteGone", err)
		}
		f.clock.Advance(time.Minute)
		for range 4 {
			if err := <-errs; !errors.Is(err, errGraceOver) && !errors.Is(err, errRouteGone) {
				t.Fatalf("a connection waiting past the grace: %v", err)
			}
		}
	})
}

// waitFor waits until cond, read under the table's lock, holds; the table
// signals every change.
func waitFor(t *testing.T, f *fixture, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch := f.tb.changed.Wait()
		f.tb.mu.Lock()
		ok := cond()
		f.tb.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("condition not met")
		}
	}
}

// Rule 12: ports are bound with no lock held; a claim that needs a key
// another claim binds waits for it and sees its outcome.
func TestTableLocking(t *testing.T) {
	leaktest.Check(t)
	f := newFixture(t)
	served := f.session(f.other, "served", "")
	f.claim(served, svc("web", 20100))
	f.up(served)

	entered, release := make(chan int, 8), make(chan struct{})
	realBind := f.tb.bind
	f.tb.bind = func(udp bool, port int) (socket, error) {
		if port == 20001 {
			entered <- port
			<-release
		}
		return realBind(udp, port)
	}
	slow := f.session(f.office, "slow", "")
	done := make(chan *session.RejectError, 1)
	go func() {
		_, _, rej := f.tb.claim(slow, []session.Service{svc("a", 20001)})
		done <- rej
	}()
	<-entered // binding, no lock held:
	if m, err := f.tb.pick(f.route("port:20100"), nil, nil); err != nil || m.cs != served {
		t.Fatalf("pick while a claim binds: %v, %v", m, err)
	}
	f.claim(f.session(f.other, "quick", ""), svc("b", 20101)) // another claim commits meanwhile

	// A claim of the same port waits for the one binding it...
	waiter := make(chan *session.RejectError, 1)
	go func() {
		_, _, rej := f.tb.claim(f.session(f.other, "second", ""), []session.Service{svc("x", 20001)})
		waiter <- rej
	}()
	select {
	case rej := <-waiter:
		t.Fatalf("the second claim of a port being bound ended before the first: %v", rej)
	case <-time.After(20 * time.Millisecond): // it must still be waiting
	}
	close(release)
	if rej := <-done; rej != nil {
		t.Fatal(rej)
	}
	// ...and sees its outcome: the port is office's now.
	if rej := <-waiter; rej == nil || !strings.Contains(rej.Reason, `held by client "office"`) {
		t.Fatalf("the waiting claim: %v, want the port held by office", rej)
	}

	// Rollback: a claim whose second bind fails leaves nothing behind.
	l, err := f.net.Listen("tcp", "127.0.0.1:20011")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f.refused(f.session(f.office, "rb", ""), session.CodePortInUse, "remote_port 20011", svc("ok", 20010), svc("taken", 20011))
	if f.route("port:20010") != nil || len(f.tb.reserved) != 0 {
		t.Fatal("a failed claim left a route or a reservation")
	}
	if l2, err := f.net.Listen("tcp", "127.0.0.1:20010"); err != nil {
		t.Fatalf("a failed claim kept a listener: %v", err)
	} else {
		l2.Close()
	}
}

// Rule 13: closing.
func TestTableClosing(t *testing.T) {
	f := newFixture(t)
	cs := f.session(f.office, "a", "")
	f.claim(cs, svc("web", 20001))
	f.up(cs)
	ls := f.tb.close()
	if len(ls) != 1 {
		t.Fatalf("close returned %d listeners, want the public port's", len(ls))
	}
	ls[0].Close()
	f.refused(f.session(f.office, "b", ""), session.CodeShuttingDown, "shutting down", svc("x", 20002))
	if f.tb.down(cs, true) {
		t.Fatal("a route was held while closing")
	}
}

// Rule 14: reloads release what the new config no longer allows.
func TestTableReload(t *testing.T) {
	f := newFixture(t)
	office := f.session(f.office, "o", "")
	f.claim(office, svc("web", 20050))
	f.up(office)
	other := f.session(f.other, "t", "")
	f.claim(other, svc("web", 20150))
	f.up(other)
	gone := f.session(f.other, "held", "")
	f.claim(gone, svc("api", 20160))
	f.up(gone)
	f.tb.down(gone, true) // held for other

	// office may no longer claim 20050; other is removed.
	_, closing, reasons, _, removed := f.tb.reload([]Client{{Name: "office", Token: "o", Ports: []PortRange{{20000, 20009}}}})
	if len(closing) != 2 || !strings.Contains(reasons[office], "no longer allowed") || !strings.Contains(reasons[other], "removed") {
		t.Fatalf("closing %d sessions, reasons %v", len(closing), reasons)
	}
	if len(removed) != 1 || removed[0] != "other" {
		t.Fatalf("removed %v", removed)
	}
	if f.route("port:20160") != nil {
		t.Fatal("the route held for a removed client is still there")
	}
	// Released: their routes are not held when they go.
	if f.tb.down(office, true) || f.tb.down(other, true) {
		t.Fatal("a released session's routes were held")
	}
	// A new token is a new identity: its old routes are not its.
	f.claim(f.session(f.tb.clients[0], "o2", ""), svc("web", 20001))
	f.tb.reload([]Client{{Name: "office", Token: "rotated", Ports: []PortRange{{20000, 20009}}}})
	f.refused(f.session(f.tb.clients[0], "o3", ""), session.CodePortInUse, `held by client "office"`, svc("web", 20001))
}

// The sessions index (byClient): a claim looks only at its own client's
// sessions, so another client's session of the same instance name is
// neither replaced nor counted, and the index follows every way a
// session leaves: down, replaced, released by a reload.
func TestTableClientIndex(t *testing.T) {
	f := newFixture(t)
	checkIndex := func() {
		t.Helper()
		f.tb.mu.Lock()
		defer f.tb.mu.Unlock()
		n := 0
		for c, m := range f.tb.byClient {
			if len(m) == 0 {
				t.Fatalf("client %q has an empty entry in the index", c.name)
			}
			for cs := range m {
				if _, ok := f.tb.sessions[cs]; !ok || cs.client != c {
					t.Fatalf("the index has session %s of %q, which is not up as that client's", cs.instance, c.name)
				}
				n++
			}
		}
		if n != len(f.tb.sessions) {
			t.Fatalf("the index has %d sessions, the table %d", n, len(f.tb.sessions))
		}
	}
	a := f.session(f.office, "same", "")
	f.claim(a, svc("web", 20001))
	f.up(a)
	b := f.session(f.other, "same", "")
	if _, victims := f.claim(b, svc("web", 20101)); len(victims) != 0 {
		t.Fatalf("a session of another client replaced %d sessions", len(victims))
	}
	f.up(b)
	checkIndex()

	// The same instance of office again replaces a, not b.
	a2 := f.session(f.office, "same", "")
	_, victims := f.claim(a2, svc("web", 20001))
	if len(victims) != 1 || victims[0] != a {
		t.Fatalf("victims %v, want office's old session", victims)
	}
	checkIndex()
	f.up(a2)
	checkIndex()

	f.tb.down(b, true)
	checkIndex()
	f.tb.mu.Lock()
	_, left := f.tb.byClient[f.other]
	f.tb.mu.Unlock()
	if left {
		t.Fatal("a client with no session up is still in the index")
	}

	// A reload that removes office releases a2; its down empties the index.
	f.tb.reload([]Client{{Name: "other", Token: "t", Ports: []PortRange{{20000, 20199}}}})
	f.tb.down(a2, true)
	checkIndex()
	if f.tb.named["office"] != nil || f.tb.named["other"] == nil {
		t.Fatal("the clients by name do not follow the reload")
	}
}
