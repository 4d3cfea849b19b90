package harness

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/server"
)

// Tokens of the clients every ServerConfig knows.
const (
	TokenOffice = "office-token-0123456789abcdef"
	TokenOther  = "other-token-0123456789abcdef"
)

// Logs collects a daemon's log, shown when its test fails.
type Logs struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed signalChan
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changed.notify()
	return l.buf.Write(p)
}

// WaitLine waits until a line of the log (text, debug level and up)
// contains every one of subs, and returns it. Only for tests of what is
// logged, such as access_log: everything else waits on typed state.
func (l *Logs) WaitLine(t testing.TB, subs ...string) string {
	t.Helper()
	deadline := time.After(WaitTimeout)
	for {
		l.mu.Lock()
		ch := l.changed.wait()
		text := l.buf.String()
		l.mu.Unlock()
		for line := range strings.SplitSeq(text, "\n") {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(line, s)
			}
			if all {
				return line
			}
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no log line with %q after %v", subs, WaitTimeout)
		}
	}
}

// signalChan is a channel closed and replaced at each change; its owner's
// lock guards it.
type signalChan struct{ ch chan struct{} }

func (s *signalChan) wait() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signalChan) notify() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// String is the log so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Logger is a text logger at debug level writing into l.
func (l *Logs) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// DumpIfFailed shows the last lines of the log of a failed test.
func (l *Logs) DumpIfFailed(t testing.TB, who string) {
	if !t.Failed() {
		return
	}
	lines := strings.Split(l.String(), "\n")
	if len(lines) > 200 {
		lines = lines[len(lines)-200:]
	}
	t.Logf("%s log (last %d lines):\n%s", who, len(lines), strings.Join(lines, "\n"))
}

// ServerConfig is the config server tests start from: quick heartbeats,
// clients "office" (TokenOffice, every unprivileged TCP and UDP port and
// *.office.example.com) and "other" (TokenOther, every unprivileged TCP
// and UDP port).
func (w *World) ServerConfig() server.Config {
	cfg := server.DefaultConfig()
	cfg.PublicAddress = "127.0.0.1"
	cfg.StateDir = w.t.TempDir()
	kind := w.Kind
	addr := "127.0.0.1:0"
	if w.InMemory() {
		kind = TCP // the listen entry the memory transport stands in for
		w.mu.Lock()
		w.servers++
		addr = "127.0.0.1:" + strconv.Itoa(7000+w.servers)
		w.mu.Unlock()
	}
	cfg.Listen = []server.Listen{{Transport: kind, Address: addr}}
	cfg.HeartbeatInterval = 300 * time.Millisecond
	cfg.HeartbeatMisses = 6
	all := []server.PortRange{{Lo: 1024, Hi: 65535}}
	cfg.Clients = []server.Client{
		{Name: "office", Token: TokenOffice, Ports: all, UDPPorts: all, Domains: []string{"*.office.example.com"}},
		{Name: "other", Token: TokenOther, Ports: all, UDPPorts: all},
	}
	return cfg
}

// running is a daemon's Run in a goroutine of its own.
type running struct {
	cancel   context.CancelFunc
	done     chan struct{}
	runErr   error
	stopOnce sync.Once
}

func runDaemon(run func(context.Context) error) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		r.runErr = run(ctx)
		close(r.done)
	}()
	return r
}

// Stop stops the daemon (as SIGTERM does: it drains) and waits for Run
// to return.
func (r *running) Stop() {
	r.stopOnce.Do(func() {
		r.cancel()
		<-r.done
	})
}

// Cancel begins the daemon's shutdown and returns at once; Done tells
// when it is over.
func (r *running) Cancel() { r.cancel() }

// Done is closed when Run has returned.
func (r *running) Done() <-chan struct{} { return r.done }

// Err is what Run returned; valid after Done.
func (r *running) Err() error { return r.runErr }

// Server is a running server.
type Server struct {
	*server.Server
	*running
	w      *World
	Config server.Config
	opts   []server.Option
	Logs   *Logs
	// Metrics is the server's registry (SetMetrics).
	Metrics *metrics.Registry
}

// StartServer runs a server with cfg on the world's networks (opts go
// last, so they may replace those edges too), waits until it is ready,
// and stops it when the test ends.
func (w *World) StartServer(cfg server.Config, opts ...server.Option) *Server {
	w.t.Helper()
	var all []server.Option
	if w.InMemory() {
		all = append(all, server.WithTransport(cfg.Listen[0].Transport, w.tunnel), server.WithListen(w.Public.Listen),
			server.WithListenPacket(func(network, address string) (server.PacketConn, error) {
				pc, err := w.Public.ListenPacket(network, address)
				if err != nil {
					return nil, err
				}
				return pc, nil
			}))
	}
	all = append(all, opts...)
	logs := &Logs{}
	srv, err := server.New(cfg, logs.Logger(), all...)
	if err != nil {
		w.t.Fatal(err)
	}
	reg := newMetrics(w.t, metrics.RoleServer)
	srv.SetMetrics(reg)
	s := &Server{Server: srv, running: runDaemon(srv.Run), w: w, Config: cfg, opts: opts, Logs: logs, Metrics: reg}
	select {
	case <-srv.Ready():
	case <-s.done:
		w.t.Fatalf("server did not start: %v", s.runErr)
	}
	w.t.Cleanup(s.Stop)
	w.t.Cleanup(func() { logs.DumpIfFailed(w.t, "server") })
	return s
}

// Restart stops the server and starts another in its place (Again).
func (s *Server) Restart() *Server {
	s.w.t.Helper()
	s.Stop()
	return s.Again()
}

// Again starts another server like s, which has stopped: the same config
// and options, tunnel address and state directory (so the same
// certificate).
func (s *Server) Again() *Server {
	s.w.t.Helper()
	cfg := s.Config
	cfg.Listen = append([]server.Listen(nil), cfg.Listen...)
	cfg.Listen[0].Address = s.TunnelAddr()
	return s.w.StartServer(cfg, s.opts...)
}

// TunnelAddr is where clients reach the server.
func (s *Server) TunnelAddr() string { return s.Addr(s.Config.Listen[0].Transport).String() }

// EntryAddr is the bound address of entry point name ("http", "https").
func (s *Server) EntryAddr(name string) string { return s.Server.EntryAddr(name).String() }

// WaitSessions waits until the server has n sessions.
func (s *Server) WaitSessions(n int) {
	s.w.t.Helper()
	s.WaitFor("sessions", func() (bool, string) {
		got := len(s.Sessions())
		return got == n, strconv.Itoa(got) + " sessions, want " + strconv.Itoa(n)
	})
}

// WaitFor waits until cond holds, re-checking at every change of the
// server's sessions or routes (Changed); cond says what it saw.
func (s *Server) WaitFor(what string, cond func() (bool, string)) {
	s.w.t.Helper()
	deadline := time.After(WaitTimeout)
	for {
		ch := s.Changed()
		ok, saw := cond()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			s.w.t.Fatalf("%s: %s after %v", what, saw, WaitTimeout)
		}
	}
}

// WaitStreams waits until the server's sessions have n streams open.
// Stream counts have no change signal: it polls.
func (s *Server) WaitStreams(n int) {
	s.w.t.Helper()
	Poll(s.w.t, "streams", func() (bool, string) {
		total := 0
		for _, si := range s.Sessions() {
			total += si.Streams
		}
		return total == n, strconv.Itoa(total) + " streams open, want " + strconv.Itoa(n)
	})
}

// Poll checks cond every few milliseconds until it holds, failing t after
// WaitTimeout with what cond last saw. Only for state without a change
// signal.
func Poll(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s after %v", what, saw, WaitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ClientConfig is the config of a client of s with token serving svcs.
func (w *World) ClientConfig(s *Server, token string, svcs ...client.Service) client.Config {
	cfg := client.DefaultConfig()
	cfg.Server = s.TunnelAddr()
	cfg.Transport = s.Config.Listen[0].Transport
	cfg.Token = token
	cfg.TLS.Fingerprint = s.Fingerprint()
	cfg.HeartbeatInterval = 300 * time.Millisecond
	cfg.HeartbeatMisses = 6
	cfg.Services = svcs
	return cfg
}

// Client is a running client.
type Client struct {
	*client.Client
	*running
	w      *World
	Config client.Config
	Logs   *Logs
	// Metrics is the client's registry (SetMetrics).
	Metrics *metrics.Registry
}

// StartClient runs a client with cfg on the world's networks (opts go
// last, so they may replace those edges too) and stops it when the test
// ends.
func (w *World) StartClient(cfg client.Config, opts ...client.Option) *Client {
	w.t.Helper()
	var all []client.Option
	if w.InMemory() {
		all = append(all, client.WithTransport(w.tunnel), client.WithDial(w.Private.Dial), client.WithResolver(w.Private), client.WithDialPacket(w.Private.DialPacket), client.WithListen(w.Public.Listen),
			client.WithListenPacket(func(network, address string) (net.PacketConn, error) {
				pc, err := w.Public.ListenPacket(network, address)
				if err != nil {
					return nil, err
				}
				return pc.(net.PacketConn), nil // memnet's and *net.UDPConn both are
			}))
	}
	all = append(all, opts...)
	logs := &Logs{}
	c, err := client.New(cfg, logs.Logger(), all...)
	if err != nil {
		w.t.Fatal(err)
	}
	reg := newMetrics(w.t, metrics.RoleClient)
	c.SetMetrics(reg)
	tc := &Client{Client: c, running: runDaemon(c.Run), w: w, Config: cfg, Logs: logs, Metrics: reg}
	w.t.Cleanup(tc.Stop)
	w.t.Cleanup(func() { logs.DumpIfFailed(w.t, "client") })
	return tc
}

// WaitSession waits until the client is connected with its n-th session
// (counting from 1) and returns the status.
func (c *Client) WaitSession(n int) client.Status {
	c.w.t.Helper()
	return c.WaitStatus("session "+strconv.Itoa(n), func(st client.Status) bool { return st.Connected && st.Sessions >= n })
}

// WaitUp waits until n of the client's sessions are up at once.
func (c *Client) WaitUp(n int) client.Status {
	c.w.t.Helper()
	return c.WaitStatus(strconv.Itoa(n)+" sessions up", func(st client.Status) bool { return st.Up == n })
}

// WaitStatus waits until the client's status satisfies ok, re-checking at
// every change (Changed), and returns it.
func (c *Client) WaitStatus(what string, ok func(client.Status) bool) client.Status {
	c.w.t.Helper()
	deadline := time.After(WaitTimeout)
	for {
		ch := c.Changed()
		st := c.Status()
		if ok(st) {
			return st
		}
		select {
		case <-ch:
		case <-c.done:
			c.w.t.Fatalf("client stopped before %s: %v", what, c.runErr)
		case <-deadline:
			c.w.t.Fatalf("client has no %s after %v: %d up, last error %v", what, WaitTimeout, st.Up, st.LastError)
		}
	}
}

// WaitExit waits for Run to return and gives its error.
func (c *Client) WaitExit() error {
	c.w.t.Helper()
	select {
	case <-c.done:
		return c.runErr
	case <-time.After(WaitTimeout):
		c.w.t.Fatalf("client still running; status %+v", c.Status())
		return nil
	}
}

// Port is the public port granted to the named service.
func (c *Client) Port(name string) int {
	c.w.t.Helper()
	for _, s := range c.Status().Session.Services {
		if s.Name == name {
			return s.RemotePort
		}
	}
	c.w.t.Fatalf("no service %q in %+v", name, c.Status().Session.Services)
	return 0
}

// PublicAddr is where the named service is reachable.
func (c *Client) PublicAddr(name string) string { return PublicAddr(c.Port(name)) }

// WaitNotReady waits until the server's admin source says it is not
// ready, giving why.
func (s *Server) WaitNotReady() string {
	s.w.t.Helper()
	var why string
	s.WaitFor("not ready", func() (bool, string) {
		var ready bool
		ready, why = s.AdminSource().Ready()
		return !ready, "ready"
	})
	return why
}

// WaitTimer waits until clk has a timer set for d pending: the code
// under test has set the timer the test means to fire.
func WaitTimer(t testing.TB, clk *clocktest.Clock, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	if err := clk.WaitTimer(ctx, d); err != nil {
		t.Fatalf("waiting for a timer of %v (%d pending): %v", d, clk.Pending(), err)
	}
}

// Advance moves clk by d once at least n of its timers are pending: the
// code under test has set the one the test means to fire.
func Advance(t testing.TB, clk *clocktest.Clock, n int, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	if err := clk.WaitPending(ctx, n); err != nil {
		t.Fatalf("waiting for %d timers (%d pending): %v", n, clk.Pending(), err)
	}
	clk.Advance(d)
}

// WaitSessionOn is WaitSession for a client whose timers run on clk:
// whenever the client has a timer pending (its reconnect backoff, above
// all), it advances clk past the longest backoff, until the client has
// its n-th session.
func (c *Client) WaitSessionOn(clk *clocktest.Clock, n int) client.Status {
	c.w.t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for time.Now().Before(deadline) {
		ch := c.Changed()
		if st := c.Status(); st.Connected && st.Sessions >= n {
			return st
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		go func() {
			select {
			case <-ch:
			case <-c.done:
			case <-ctx.Done():
			}
			cancel()
		}()
		if clk.WaitPending(ctx, 1) == nil {
			clk.Advance(30 * time.Second)
		}
		cancel()
	}
	return c.WaitSession(n) // fails with what it saw
}

// WaitStatusOn is WaitStatus for a client whose timers run on clk: while
// the status does not satisfy ok, it moves clk on by 30 s whenever a
// timer is pending (reconnect backoff above all), and returns the status
// that does.
func (c *Client) WaitStatusOn(clk *clocktest.Clock, what string, ok func(client.Status) bool) client.Status {
	c.w.t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for time.Now().Before(deadline) {
		ch := c.Changed()
		if st := c.Status(); ok(st) {
			return st
		}
		if clk.Pending() > 0 {
			clk.Advance(30 * time.Second)
		}
		select {
		case <-ch:
		case <-c.done:
			c.w.t.Fatalf("client stopped before %s: %v", what, c.runErr)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return c.WaitStatus(what, ok) // fails with what it saw
}

// DialTunnel opens a raw connection to the server's tunnel listener from
// the source IP from (the zero Addr: loopback), as an intruder would: no
// TLS, no handshake. For TCP and memory worlds (KCP has no connection to
// open without speaking KCP).
func (s *Server) DialTunnel(from netip.Addr) net.Conn {
	s.w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var c net.Conn
	var err error
	switch s.w.Kind {
	case Memory:
		f := ""
		if from.IsValid() {
			f = from.String()
		}
		c, err = s.w.tunnel.DialFrom(ctx, f, s.TunnelAddr())
	case TCP:
		c, err = Loopback{}.DialFrom(ctx, from, "tcp", s.TunnelAddr())
	default:
		s.w.t.Fatalf("DialTunnel: not over %s", s.w.Kind)
	}
	if err != nil {
		s.w.t.Fatal(err)
	}
	s.w.t.Cleanup(func() { c.Close() })
	return c
}

// WaitPending waits until the server has n connections in their
// handshake.
func (s *Server) WaitPending(n int) {
	s.w.t.Helper()
	s.WaitFor("handshakes", func() (bool, string) {
		got := s.Pending()
		return got == n, strconv.Itoa(got) + " handshakes pending, want " + strconv.Itoa(n)
	})
}
