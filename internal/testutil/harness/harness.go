// Package harness runs whole warren systems in a test: servers and clients
// as in production (server.New, client.New, Run), with backends behind the
// clients and public peers in front of the server. One switch picks what
// connects them:
//
//   - "memory" (the default): tunnel connections over transporttest,
//     public ports and entry points, and the clients' targets, on memnet
//     networks. No sockets, no TLS, no KCP: fast, for the policy above
//     the seams.
//   - "tcp" or "kcp": the real transports with TLS, and the host's
//     loopback for everything else, as e2e runs.
//
// A World is one such system. NewWorld takes the kind from the test flag
// -warren.tunnel (so `go test ./server/ -warren.tunnel=kcp` runs a
// package's harness tests over real KCP+TLS); NewWorldOf names it.
package harness

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/impair"
	"github.com/warren-tunnel/warren/internal/testutil/memnet"
	"github.com/warren-tunnel/warren/transport/transporttest"
)

// Kinds of World.
const (
	Memory = "memory"
	TCP    = "tcp"
	KCP    = "kcp"
)

var tunnelFlag = flag.String("warren.tunnel", Memory, `what harness tests connect over: "memory", "tcp" or "kcp" (real sockets, TLS)`)

// WaitTimeout bounds every wait for a state change.
const WaitTimeout = 30 * time.Second

// Net is a network the system and the test share: a memnet.Network, or
// the host's loopback (Loopback).
type Net interface {
	Listen(network, address string) (net.Listener, error)
	Dial(ctx context.Context, network, address string) (net.Conn, error)
	// DialFrom dials from the source IP from (the zero Addr: any).
	DialFrom(ctx context.Context, from netip.Addr, network, address string) (net.Conn, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	// ListenPacket binds a UDP address; DialPacket opens a UDP socket
	// connected to one (network "udp").
	ListenPacket(network, address string) (PacketConn, error)
	DialPacket(ctx context.Context, network, address string) (net.Conn, error)
}

// PacketConn is a bound UDP socket: a *net.UDPConn or a memnet one.
type PacketConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	LocalAddr() net.Addr
	SetReadDeadline(t time.Time) error
	Close() error
}

// memNet is a memnet.Network as a Net.
type memNet struct{ *memnet.Network }

func (m memNet) ListenPacket(network, address string) (PacketConn, error) {
	pc, err := m.Network.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return pc, nil
}

// Loopback is the host's network.
type Loopback struct{}

func (Loopback) Listen(network, address string) (net.Listener, error) {
	return net.Listen(network, address)
}

func (Loopback) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

func (Loopback) DialFrom(ctx context.Context, from netip.Addr, network, address string) (net.Conn, error) {
	d := net.Dialer{}
	if from.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
	}
	return d.DialContext(ctx, network, address)
}

func (Loopback) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, network, host)
}

func (Loopback) ListenPacket(network, address string) (PacketConn, error) {
	a, err := net.ResolveUDPAddr(network, address)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP(network, a)
	if err != nil {
		return nil, err
	}
	// Backends answer bursts from many flows at once: the default buffer
	// (208 KiB) holds 25 datagrams of 8 KiB.
	c.SetReadBuffer(4 << 20)
	return c, nil
}

func (Loopback) DialPacket(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

// World is one system under test: the networks, and the servers, clients
// and backends started on them, all stopped when the test ends.
type World struct {
	t testing.TB
	// Kind is Memory, TCP or KCP.
	Kind string
	// Public is where public ports and entry points listen and public
	// peers dial from; Private is where the clients' targets listen.
	Public, Private Net
	tunnel          *transporttest.Network // Memory: the tunnel connections

	mu      sync.Mutex
	servers int // servers started, for tunnel addresses
}

// NewWorld returns a world of the kind -warren.tunnel names.
func NewWorld(t testing.TB) *World { return NewWorldOf(t, *tunnelFlag) }

// NewWorldOf returns a world of kind: Memory, TCP or KCP.
func NewWorldOf(t testing.TB, kind string) *World {
	w := &World{t: t, Kind: kind}
	switch kind {
	case Memory:
		w.Public, w.Private, w.tunnel = memNet{&memnet.Network{}}, memNet{&memnet.Network{}}, &transporttest.Network{}
	case TCP, KCP:
		w.Public, w.Private = Loopback{}, Loopback{}
	default:
		t.Fatalf("harness: unknown kind %q (want memory, tcp or kcp)", kind)
	}
	return w
}

// InMemory reports whether the world runs without sockets.
func (w *World) InMemory() bool { return w.Kind == Memory }

// Tunnel is the in-memory tunnel transport, nil for a real world: tests
// use it to reach a server's tunnel listener as a client would.
func (w *World) Tunnel() *transporttest.Network { return w.tunnel }

// Backend starts a TCP server on the private network; handle runs for
// each connection, which is closed when it returns. It returns the
// address, a target for a client's service.
func (w *World) Backend(handle func(net.Conn)) string {
	w.t.Helper()
	l, err := w.Private.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	return w.BackendOn(l, handle)
}

// BackendOn is Backend on the listener l, which the test made (a socket
// with options of its own, say).
func (w *World) BackendOn(l net.Listener, handle func(net.Conn)) string {
	w.t.Helper()
	var wg sync.WaitGroup
	w.t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	return l.Addr().String()
}

// DeadAddr is an address on the private network where nothing listens.
func (w *World) DeadAddr() string {
	w.t.Helper()
	l, err := w.Private.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Dial connects to a public address, or fails the test; the connection
// is closed when the test ends.
func (w *World) Dial(addr string) net.Conn {
	w.t.Helper()
	c, err := w.DialErr(addr)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { c.Close() })
	return c
}

// DialErr connects to a public address within 5 s.
func (w *World) DialErr(addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.Public.Dial(ctx, "tcp", addr)
}

// Echo is a backend handler that copies the connection back to itself,
// then half-closes.
func Echo(c net.Conn) {
	io.Copy(c, c)
	CloseWrite(c)
}

// EchoOn sends a byte on c, an echo service's connection, and reads it
// back, or fails the test.
func EchoOn(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	b := []byte{'x'}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("echo: %q, %v", b, err)
	}
}

// CloseWrite half-closes c (a *net.TCPConn or *memnet.Conn).
func CloseWrite(c net.Conn) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return errors.ErrUnsupported
}

// EchoOnce sends a message to an echo service at the public address addr
// and checks the answer.
func (w *World) EchoOnce(addr string) error {
	c, err := w.DialErr(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := "hello through the tunnel"
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	CloseWrite(c)
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		return &echoError{addr: addr, got: string(got), err: err}
	}
	return nil
}

type echoError struct {
	addr, got string
	err       error
}

func (e *echoError) Error() string {
	return "echo via " + e.addr + ": got " + strconv.Quote(e.got) + ", " + errString(e.err)
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// RoundTrip fails the test unless an echo service answers at addr.
func (w *World) RoundTrip(addr string) {
	w.t.Helper()
	if err := w.EchoOnce(addr); err != nil {
		w.t.Fatal(err)
	}
}

// IsClosed reports nil when reading c ends (EOF or reset) within d, the
// timeout otherwise.
func IsClosed(c net.Conn, d time.Duration) error {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return nil
}

// PublicAddr is the address of a public port.
func PublicAddr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// Link is the path between clients and a server, which a test can take
// down or cut: in memory a wrapper of the tunnel transport, on real
// sockets a proxy (TCP, or UDP for KCP).
type Link struct {
	// Addr is where clients reach the server through the link.
	Addr   string
	opts   []client.Option
	down   func(bool)
	cut    func()
	cutOne func() bool
}

// Link puts a link between s and the clients configured with Through.
func (w *World) Link(s *Server) *Link {
	w.t.Helper()
	switch w.Kind {
	case Memory:
		lt := &linkTransport{Network: w.tunnel}
		return &Link{Addr: s.TunnelAddr(), opts: []client.Option{client.WithTransport(lt)}, down: lt.setDown, cut: lt.cut, cutOne: lt.cutOne}
	case KCP:
		p, err := impair.NewUDPProxy(s.TunnelAddr())
		if err != nil {
			w.t.Fatal(err)
		}
		w.t.Cleanup(func() { p.Close() })
		return &Link{Addr: p.Addr(), down: p.SetBlackhole}
	default:
		p, err := impair.NewTCPProxy(s.TunnelAddr())
		if err != nil {
			w.t.Fatal(err)
		}
		w.t.Cleanup(func() { p.Close() })
		return &Link{Addr: p.Addr(), down: p.Freeze, cut: p.Cut, cutOne: p.CutOne}
	}
}

// Through sets cfg to reach the server over l; start the client with
// StartClient(cfg, l.Options()...).
func (l *Link) Through(cfg client.Config) client.Config {
	cfg.Server = l.Addr
	return cfg
}

// Options are the client options the link needs (in memory, its
// transport).
func (l *Link) Options() []client.Option { return l.opts }

// Down takes the link down (on) or brings it back. Down, nothing passes:
// in memory new connections are refused and open ones cut; a TCP proxy
// stops forwarding; UDP datagrams are dropped.
func (l *Link) Down(on bool) { l.down(on) }

// Cut resets every connection through the link (not for KCP, whose
// datagrams have no connection to reset: take the link down instead).
func (l *Link) Cut() {
	if l.cut != nil {
		l.cut()
	}
}

// Kill takes the link down and cuts what is open: the path is dead at
// once.
func (l *Link) Kill() {
	l.Down(true)
	l.Cut()
}

// CutOne resets the oldest connection through the link and reports
// whether there was one.
func (l *Link) CutOne() bool { return l.cutOne != nil && l.cutOne() }

// linkTransport is the in-memory link: the tunnel transport with
// connections it can cut and dials it can refuse.
type linkTransport struct {
	*transporttest.Network
	mu    sync.Mutex
	down  bool
	conns []*linkConn // open, oldest first
}

func (l *linkTransport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	l.mu.Lock()
	down := l.down
	l.mu.Unlock()
	if down {
		return nil, errors.New("memory dial " + addr + ": link down")
	}
	c, err := l.Network.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	lc := &linkConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns = append(l.conns, lc)
	l.mu.Unlock()
	return lc, nil
}

func (l *linkTransport) setDown(on bool) {
	l.mu.Lock()
	l.down = on
	l.mu.Unlock()
	if on {
		l.cut()
	}
}

func (l *linkTransport) cut() {
	l.mu.Lock()
	conns := l.conns
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (l *linkTransport) cutOne() bool {
	l.mu.Lock()
	var oldest *linkConn
	if len(l.conns) > 0 {
		oldest = l.conns[0]
	}
	l.mu.Unlock()
	if oldest == nil {
		return false
	}
	oldest.Close()
	return true
}

type linkConn struct {
	net.Conn
	l    *linkTransport
	once sync.Once
}

func (c *linkConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.conns = slices.DeleteFunc(slices.Clone(c.l.conns), func(o *linkConn) bool { return o == c })
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
