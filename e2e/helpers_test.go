// Package e2e tests warren end to end: real servers and clients (in
// process, and as child processes of the built binary) on loopback, over
// both transports with TLS, with real TCP backends and public connections.
package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/impair"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/transport"
)

// Tokens of the two clients every test server knows.
const (
	tokenOffice = "office-token-0123456789abcdef"
	tokenOther  = "other-token-0123456789abcdef"
)

// waitTimeout bounds every wait for a state change.
const waitTimeout = 30 * time.Second

var transports = []string{transport.KindTCP, transport.KindKCP}

// forEachTransport runs fn as a subtest over TCP+TLS and KCP+TLS.
func forEachTransport(t *testing.T, fn func(t *testing.T, kind string)) {
	for _, kind := range transports {
		t.Run(kind, func(t *testing.T) { fn(t, kind) })
	}
}

// testServer is a running in-process server.
type testServer struct {
	*server.Server
	kind     string
	cfg      server.Config
	logs     *harness.Logs
	metrics  *metrics.Registry
	cancel   context.CancelFunc
	done     chan struct{}
	runErr   error
	stopOnce sync.Once
}

// serverConfig is the config tests start from: loopback, quick heartbeats,
// clients "office" and "other" allowed every unprivileged TCP and UDP port.
func serverConfig(t *testing.T, kind string) server.Config {
	cfg := server.DefaultConfig()
	cfg.PublicAddress = "127.0.0.1"
	cfg.StateDir = t.TempDir()
	cfg.Listen = []server.Listen{{Transport: kind, Address: "127.0.0.1:0"}}
	cfg.HeartbeatInterval = 300 * time.Millisecond
	cfg.HeartbeatMisses = 6
	all := []server.PortRange{{Lo: 1024, Hi: 65535}}
	cfg.Clients = []server.Client{
		{Name: "office", Token: tokenOffice, Ports: all, UDPPorts: all, Domains: []string{"*.office.example.com"}},
		{Name: "other", Token: tokenOther, Ports: all, UDPPorts: all},
	}
	return cfg
}

func startServer(t *testing.T, cfg server.Config) *testServer {
	t.Helper()
	return startServerWith(t, cfg, nil)
}

// startServerWith is startServer with setup (nil: none) run before Run,
// and opts.
func startServerWith(t *testing.T, cfg server.Config, setup func(*server.Server), opts ...server.Option) *testServer {
	t.Helper()
	logs := &harness.Logs{}
	srv, err := server.New(cfg, logs.Logger(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := metrics.New(metrics.Config{Role: metrics.RoleServer, MaxNames: 1024})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetMetrics(reg)
	if setup != nil {
		setup(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, kind: cfg.Listen[0].Transport, cfg: cfg, logs: logs, metrics: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		ts.runErr = srv.Run(ctx)
		close(ts.done)
	}()
	select {
	case <-srv.Ready():
	case <-ts.done:
		t.Fatalf("server did not start: %v", ts.runErr)
	}
	t.Cleanup(ts.stop)
	t.Cleanup(func() { logs.DumpIfFailed(t, "server") })
	return ts
}

// stop stops the server and waits for Run to return.
func (s *testServer) stop() {
	s.stopOnce.Do(func() {
		s.cancel()
		<-s.done
	})
}

func (s *testServer) addr() string { return s.Addr(s.kind).String() }

// waitSessions waits until the server has n sessions.
func (s *testServer) waitSessions(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		ch := s.Changed()
		if len(s.Sessions()) == n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("server has %d sessions, want %d", len(s.Sessions()), n)
		}
	}
}

// testClient is a running in-process client.
type testClient struct {
	*client.Client
	logs    *harness.Logs
	metrics *metrics.Registry
	cancel  context.CancelFunc
	done    chan struct{}
	runErr  error
}

func clientConfig(s *testServer, token string, svcs ...client.Service) client.Config {
	cfg := client.DefaultConfig()
	cfg.Server = s.addr()
	cfg.Transport = s.kind
	cfg.Token = token
	cfg.TLS.Fingerprint = s.Fingerprint()
	cfg.HeartbeatInterval = 300 * time.Millisecond
	cfg.HeartbeatMisses = 6
	cfg.Services = svcs
	return cfg
}

func startClient(t *testing.T, cfg client.Config) *testClient {
	t.Helper()
	return startClientWith(t, cfg, nil)
}

// startClientWith is startClient with setup (nil: none) run before Run,
// and opts.
func startClientWith(t *testing.T, cfg client.Config, setup func(*client.Client), opts ...client.Option) *testClient {
	t.Helper()
	logs := &harness.Logs{}
	c, err := client.New(cfg, logs.Logger(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := metrics.New(metrics.Config{Role: metrics.RoleClient, MaxNames: 1024})
	if err != nil {
		t.Fatal(err)
	}
	c.SetMetrics(reg)
	if setup != nil {
		setup(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc := &testClient{Client: c, logs: logs, metrics: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		tc.runErr = c.Run(ctx)
		close(tc.done)
	}()
	t.Cleanup(tc.stop)
	t.Cleanup(func() { logs.DumpIfFailed(t, "client") })
	return tc
}

func (c *testClient) stop() {
	c.cancel()
	<-c.done
}

// waitSession waits until the client is connected with its n-th session
// (counting from 1) and returns the status.
func (c *testClient) waitSession(t *testing.T, n int) client.Status {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		ch := c.Changed()
		st := c.Status()
		if st.Connected && st.Sessions >= n {
			return st
		}
		select {
		case <-ch:
		case <-c.done:
			t.Fatalf("client stopped before session %d: %v", n, c.runErr)
		case <-deadline:
			t.Fatalf("client has no session %d after %v; last error: %v", n, waitTimeout, st.LastError)
		}
	}
}

// waitLastError waits until the client's last error satisfies ok (the
// session or attempt that ended, as typed errors).
func (c *testClient) waitLastError(t *testing.T, ok func(error) bool) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		ch := c.Changed()
		st := c.Status()
		if ok(st.LastError) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("client's last error is %v after %v", st.LastError, waitTimeout)
		}
	}
}

// waitExit waits for Run to return and gives its error.
func (c *testClient) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case <-c.done:
		return c.runErr
	case <-time.After(waitTimeout):
		t.Fatalf("client still running; status %+v", c.Status())
		return nil
	}
}

// port is the public port granted to the named service.
func (c *testClient) port(t *testing.T, name string) int {
	t.Helper()
	for _, s := range c.Status().Session.Services {
		if s.Name == name {
			return s.RemotePort
		}
	}
	t.Fatalf("no service %q in %+v", name, c.Status().Session.Services)
	return 0
}

// publicAddr is where the named service is reachable.
func (c *testClient) publicAddr(t *testing.T, name string) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port(t, name)))
}

// backend is a TCP server on loopback behind a client; handle runs per
// connection. (The harness's, over real sockets.)
func backend(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	return harness.NewWorldOf(t, harness.TCP).Backend(handle)
}

// Helpers the harness has for every world.
var (
	echo         = harness.Echo
	randomStream = harness.RandomStream
	sumAll       = harness.SumAll
	streamBytes  = harness.StreamBytes
	isClosed     = harness.IsClosed
)

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// dialPublic connects to a public address.
func dialPublic(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// waitStreams waits until the server's sessions have n streams open.
func (s *testServer) waitStreams(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		total := 0
		for _, si := range s.Sessions() {
			total += si.Streams
		}
		if total == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server has %d streams open, want %d", total, n)
		}
		time.Sleep(5 * time.Millisecond) // stream counts have no change signal
	}
}

func (s *testServer) entryAddr(name string) string { return s.EntryAddr(name).String() }

// rawExchange writes msg to a new connection to addr, half-closes it and
// returns everything read back.
func rawExchange(t *testing.T, addr string, msg []byte) []byte {
	t.Helper()
	c := dialPublic(t, addr)
	c.SetDeadline(time.Now().Add(waitTimeout))
	go func() {
		c.Write(msg)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer: %v (read %q)", err, got)
	}
	return got
}

// lossyKCP makes KCP+TLS transports, a server's and its client's, over
// sockets that lose a share of the datagrams each way (the test's
// packet-loss layer, impair).
type lossyKCP struct {
	srvTLS, cliTLS *tls.Config
	wrap           func(net.PacketConn) net.PacketConn
}

func newLossyKCP(t *testing.T, loss float64) *lossyKCP {
	t.Helper()
	srvTLS, fp, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, err := transport.ClientTLS{Fingerprint: fp}.Config()
	if err != nil {
		t.Fatal(err)
	}
	return &lossyKCP{srvTLS, cliTLS, func(pc net.PacketConn) net.PacketConn { return impair.Wrap(pc, impair.Config{Loss: loss}) }}
}

func (l *lossyKCP) server(cfg transport.KCPConfig) *transport.KCP {
	return &transport.KCP{Config: cfg, TLS: l.srvTLS, WrapPacketConn: l.wrap}
}

func (l *lossyKCP) client(cfg transport.KCPConfig) *transport.KCP {
	return &transport.KCP{Config: cfg, TLS: l.cliTLS, WrapPacketConn: l.wrap}
}
