package transport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// KCP is TLS 1.3 over KCP (kcp-go in stream mode, without kcp-go's own
// packet crypto: TLS encrypts and authenticates), or plain KCP when TLS is
// nil.
//
// KCP has no handshake and never declares a peer dead. Dial uses a
// connected UDP socket, so when the server's host answers "port
// unreachable" the connection fails at once, as a refused TCP dial would.
// With TLS, Dial also fails when the server does not complete the TLS
// handshake before ctx ends; without TLS, Dial succeeds even when nobody
// answers, and only the first read tells. Liveness after that is the
// session layer's job (heartbeats).
//
// KCP has no FIN either: Close discards whatever the peer has not yet
// acknowledged. A side that must deliver its last bytes waits for the peer
// to hang up before closing, as the session layer does after its Goodbye.
//
// The UDP socket of a listener is shared by every connection it accepted, so
// it stays open after Close until the last of them is closed too.
type KCP struct {
	Config KCPConfig
	// TLS is the client or server TLS configuration; nil means plaintext.
	TLS *tls.Config
	// WrapPacketConn, when set, wraps every UDP socket Dial and Listen open,
	// after tuning. Tests use it to lose, reorder or blackhole datagrams.
	WrapPacketConn func(net.PacketConn) net.PacketConn
	// Log gets the rate controllers' debug lines (rate_mbit = "auto");
	// nil discards them.
	Log *slog.Logger
}

var _ Transport = (*KCP)(nil)

func (k *KCP) String() string { return kindName(KindKCP, k.TLS != nil) }

// Dial opens a KCP session to addr from a fresh UDP socket and, when
// encrypted, completes the TLS handshake over it.
func (k *KCP) Dial(ctx context.Context, addr string) (net.Conn, error) {
	raddr, err := resolveUDP(ctx, addr)
	if err != nil {
		return nil, err
	}
	network := "udp6"
	if raddr.IP.To4() != nil {
		network = "udp4"
	}
	uc, err := net.DialUDP(network, nil, raddr)
	if err != nil {
		return nil, err
	}
	if err := k.Config.tuneSocket(uc); err != nil {
		uc.Close()
		return nil, err
	}
	pc := k.wrap(uc)
	var conv uint32
	if err := binary.Read(rand.Reader, binary.LittleEndian, &conv); err != nil {
		pc.Close()
		return nil, err
	}
	var watch *dialWatch
	kpc := pc
	if k.Config.RateMbit == RateAuto {
		watch = newDialWatch(pc)
		kpc = watch
	}
	// Not ownConn: kcp-go would close the socket right after its last
	// flush, racing its own sender; kcpConn.Close lingers first.
	s, err := kcp.NewConn4(conv, raddr, nil, k.Config.DataShards, k.Config.ParityShards, false, kpc)
	if err != nil {
		pc.Close()
		return nil, err
	}
	c := newKCPConn(s, k.Config, k.Log, func() { lingerClose(pc) })
	if watch != nil {
		watch.ctl.Store(c.ctl)
	}
	if k.TLS == nil {
		return c, nil
	}
	return clientHandshake(ctx, c, k.TLS, addr, false) // no cork: see corkConn
}

// Listen binds a UDP socket on addr and accepts KCP sessions on it.
func (k *KCP) Listen(addr string) (Listener, error) {
	lpc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	// kcp-go's per-session setters do nothing on accepted sessions; the
	// socket they share is where buffers and DSCP take effect.
	if err := k.Config.tuneSocket(lpc); err != nil {
		lpc.Close()
		return nil, err
	}
	pc := k.wrap(lpc)
	var watch *listenWatch
	kpc := pc
	if k.Config.RateMbit == RateAuto {
		watch = newListenWatch(pc)
		kpc = watch
	}
	l, err := kcp.ServeConn(nil, k.Config.DataShards, k.Config.ParityShards, kpc)
	if err != nil {
		pc.Close()
		return nil, err
	}
	kl := newKCPListener(l, pc, k.Config, k.TLS)
	kl.watch, kl.log = watch, k.Log
	return kl, nil
}

func (k *KCP) wrap(pc net.PacketConn) net.PacketConn {
	if k.WrapPacketConn != nil {
		return k.WrapPacketConn(pc)
	}
	return pc
}

// kcpListener owns the UDP socket and closes it once the listener and every
// session it accepted are closed.
//
// kcp-go queues a session for every new source address that sends a
// plausible packet, and a queued session that nobody accepts or closes keeps
// its goroutine forever. So one goroutine (loop) accepts from kcp-go for the
// listener's whole life, hands sessions to Accept while the listener is
// open, and closes the ones that arrive after.
type kcpListener struct {
	l   *kcp.Listener
	pc  net.PacketConn
	cfg KCPConfig
	tls *tls.Config
	// watch shows each session's datagrams to its rate controller
	// (rate_mbit = "auto"); nil otherwise.
	watch *listenWatch
	log   *slog.Logger

	accepted chan *kcp.UDPSession
	die      chan struct{} // closed by Close
	dieOnce  sync.Once
	done     chan struct{} // closed when loop has returned
	err      error         // why loop returned; read after done

	mu     sync.Mutex
	live   int  // accepted sessions not yet closed
	closed bool // Close was called
}

func newKCPListener(l *kcp.Listener, pc net.PacketConn, cfg KCPConfig, tlsCfg *tls.Config) *kcpListener {
	kl := &kcpListener{
		l: l, pc: pc, cfg: cfg, tls: tlsCfg,
		accepted: make(chan *kcp.UDPSession),
		die:      make(chan struct{}),
		done:     make(chan struct{}),
	}
	go kl.loop()
	return kl
}

// loop runs until the socket is closed and every queued session is drained.
func (l *kcpListener) loop() {
	defer close(l.done)
	defer l.l.Close()
	// Only a socket error ends AcceptKCP here (no deadline is set and the
	// kcp-go listener stays open). Its select picks at random between that
	// error and a queued session, so drain until the error comes many times
	// in a row: the chance of leaving a session queued is 2^-64.
	misses := 0
	for misses < 64 {
		s, err := l.l.AcceptKCP()
		if err != nil {
			misses++
			l.err = err
			continue
		}
		misses = 0
		select {
		case l.accepted <- s:
		case <-l.die:
			s.Close()
		}
	}
}

func (l *kcpListener) Accept() (net.Conn, error) {
	var s *kcp.UDPSession
	select {
	case s = <-l.accepted:
	case <-l.die:
		return nil, fmt.Errorf("kcp accept on %s: %w", l.pc.LocalAddr(), net.ErrClosed)
	case <-l.done:
		// The socket failed: no session can arrive any more.
		return nil, fmt.Errorf("kcp accept on %s: socket failed: %v: %w", l.pc.LocalAddr(), l.err, net.ErrClosed)
	}
	l.mu.Lock()
	if l.closed {
		// Close raced with this session arriving: refuse it.
		l.mu.Unlock()
		s.Close()
		return nil, fmt.Errorf("kcp accept on %s: %w", l.pc.LocalAddr(), net.ErrClosed)
	}
	l.live++
	l.mu.Unlock()
	release := l.release
	var c *kcpConn
	if l.watch != nil {
		release = func() {
			l.watch.remove(s.RemoteAddr(), c.ctl)
			l.release()
		}
	}
	c = newKCPConn(s, l.cfg, l.log, release)
	if l.watch != nil {
		l.watch.add(s.RemoteAddr(), c.ctl)
	}
	if l.tls == nil {
		return c, nil
	}
	return tls.Server(c, l.tls), nil
}

// release is called once per accepted session when it closes.
func (l *kcpListener) release() {
	l.mu.Lock()
	l.live--
	last := l.closed && l.live == 0
	l.mu.Unlock()
	if last {
		lingerClose(l.pc)
	}
}

func (l *kcpListener) Close() error {
	l.dieOnce.Do(func() {
		close(l.die)
		l.mu.Lock()
		l.closed = true
		last := l.live == 0
		l.mu.Unlock()
		if last {
			lingerClose(l.pc)
		}
	})
	return nil
}

// closeLinger is how long a KCP socket stays open after its last session
// closed: kcp-go hands the final datagrams (a TLS close_notify, the last
// ACKs) to a sender goroutine, and closing the socket at once loses them.
const closeLinger = 20 * time.Millisecond

// lingerClose closes a socket after closeLinger.
func lingerClose(pc net.PacketConn) {
	time.Sleep(closeLinger)
	pc.Close()
}

func (l *kcpListener) Addr() net.Addr { return l.pc.LocalAddr() }

// kcpConn is a KCP session as a net.Conn whose Close is idempotent and, for
// an accepted session, releases the listener's socket.
//
// Its deadlines keep net.Conn's contract, which kcp-go v5.6.72 does not
// on its own (nettest.TestConn finds both): a Read or Write that began
// with no deadline does not wake for one set while it waits, and one that
// need not wait ignores a deadline already passed. So kcp-go always has a
// deadline (noDeadline stands for none), which makes a waiting call re-arm
// its timer whenever a deadline is set, and Read and Write check a passed
// one first.
type kcpConn struct {
	*kcp.UDPSession
	rate      Rate
	fixed     float64  // with a fixed rate: bytes a second
	ctl       *rateCtl // with rate_mbit = "auto"
	pace      *pacer   // nil: unpaced
	acks      *ackSwitch
	closeOnce sync.Once
	onClose   func()
	rd, wd    atomic.Int64 // deadlines in Unix nanoseconds, 0 for none
}

// noDeadline is the deadline kcp-go gets for none: far enough never to
// pass, near enough for a timer.
var noDeadline = time.Now().Add(100 * 365 * 24 * time.Hour)

func newKCPConn(s *kcp.UDPSession, cfg KCPConfig, log *slog.Logger, onClose func()) *kcpConn {
	cfg.tuneSession(s)
	c := &kcpConn{UDPSession: s, onClose: onClose, rate: cfg.RateMbit, acks: newAckSwitch(cfg.mss(), cfg.interval(), cfg.minRTO(), monoClock())}
	s.SetACKNoDelay(true) // the switch's first state
	switch {
	case cfg.RateMbit == RateAuto:
		var l *slog.Logger
		if log != nil && log.Enabled(context.Background(), slog.LevelDebug) {
			l = log.With("kcp_conv", s.GetConv(), "remote", s.RemoteAddr().String())
		}
		c.ctl = newRateCtl(s.GetConv(), cfg.mss(), cfg.SendWindow, cfg.interval(), nil, l)
		c.pace = newPacer(c.ctl, &c.wd)
	case cfg.RateMbit > 0:
		c.fixed = cfg.dataRate()
		c.pace = newPacer(newFixedGate(c.fixed), &c.wd)
	}
	s.SetDeadline(noDeadline)
	return c
}

// interval is KCP's update interval in the configured mode: how long a
// peer may hold an ACK before it sends it.
func (c KCPConfig) interval() time.Duration {
	return time.Duration(kcpModes[c.Mode][1]) * time.Millisecond
}

// minRTO is kcp-go's floor of the retransmission timeout in the
// configured mode: 30 ms with nodelay, 100 ms without (kcp.go,
// IKCP_RTO_NDL and IKCP_RTO_MIN).
func (c KCPConfig) minRTO() time.Duration {
	if kcpModes[c.Mode][0] != 0 {
		return 30 * time.Millisecond
	}
	return 100 * time.Millisecond
}

// pathRTT is the session's RTT for its ACK switch: the rate
// controller's smallest when it has one, which a busy CPU does not
// inflate; else kcp-go's smoothed RTT; 0 before the first sample.
func (c *kcpConn) pathRTT() time.Duration {
	if c.ctl != nil {
		if r := c.ctl.minRTT(); r > 0 {
			return r
		}
	}
	return time.Duration(c.GetSRTT()) * time.Millisecond
}

// mss is the data a KCP segment carries: the MTU less KCP's header and
// FEC's.
func (c KCPConfig) mss() int {
	m := c.MTU - kcpHeaderLen
	if c.DataShards > 0 && c.ParityShards > 0 {
		m -= fecHeaderLen
	}
	return m
}

// paceState describes the session's pacing.
func (c *kcpConn) paceState() PaceState {
	switch {
	case c.ctl != nil:
		return c.ctl.state()
	case c.pace != nil:
		return PaceState{Rate: c.rate.String(), Mode: "fixed", PacingRate: c.fixed * 8}
	}
	return PaceState{Rate: c.rate.String(), Mode: "unpaced"}
}

func (c *kcpConn) SetDeadline(t time.Time) error {
	c.rd.Store(unixNano(t))
	c.wd.Store(unixNano(t))
	c.paceDeadlineSet()
	return c.UDPSession.SetDeadline(orNoDeadline(t))
}

func (c *kcpConn) SetReadDeadline(t time.Time) error {
	c.rd.Store(unixNano(t))
	return c.UDPSession.SetReadDeadline(orNoDeadline(t))
}

func (c *kcpConn) SetWriteDeadline(t time.Time) error {
	c.wd.Store(unixNano(t))
	c.paceDeadlineSet()
	return c.UDPSession.SetWriteDeadline(orNoDeadline(t))
}

// paceDeadlineSet tells a paced write that waits of a new deadline.
func (c *kcpConn) paceDeadlineSet() {
	if c.pace != nil {
		c.pace.deadlineSet()
	}
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func orNoDeadline(t time.Time) time.Time {
	if t.IsZero() {
		return noDeadline
	}
	return t
}

// passed returns the error of a call whose deadline d has passed, or nil.
func (c *kcpConn) passed(op string, d *atomic.Int64) error {
	if dl := d.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		return c.deadlineErr(op, os.ErrDeadlineExceeded)
	}
	return nil
}

// Read reads as kcp-go does, with a passed deadline reported as net.Conn
// says (deadlineErr).
func (c *kcpConn) Read(b []byte) (int, error) {
	if err := c.passed("read", &c.rd); err != nil {
		return 0, err
	}
	n, err := c.UDPSession.Read(b)
	if atOnce, changed := c.acks.read(n, monoClock(), c.pathRTT); changed {
		c.UDPSession.SetACKNoDelay(atOnce)
	}
	return n, c.deadlineErr("read", err)
}

func (c *kcpConn) Write(b []byte) (int, error) {
	if err := c.passed("write", &c.wd); err != nil {
		return 0, err
	}
	var n int
	var err error
	if c.pace == nil {
		n, err = c.UDPSession.Write(b)
	} else {
		n, err = c.pace.write(c.UDPSession.Write, b)
	}
	return n, c.deadlineErr("write", err)
}

// deadlineErr turns kcp-go's timeout, which is its own type, into what
// net.Conn promises for a passed deadline: a *net.OpError that wraps
// os.ErrDeadlineExceeded (errors.Is) and is a net.Error whose Timeout is
// true. Other errors pass unchanged.
func (c *kcpConn) deadlineErr(op string, err error) error {
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		return err
	}
	return &net.OpError{Op: op, Net: "kcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.ErrDeadlineExceeded}
}

// WriteBuffers writes through Write, so that a paced session stays paced.
func (c *kcpConn) WriteBuffers(v [][]byte) (int, error) {
	if err := c.passed("write", &c.wd); err != nil {
		return 0, err
	}
	if c.pace == nil {
		n, err := c.UDPSession.WriteBuffers(v)
		return n, c.deadlineErr("write", err)
	}
	n := 0
	for _, b := range v {
		m, err := c.Write(b)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *kcpConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		if c.pace != nil {
			c.pace.close()
		}
		err = c.UDPSession.Close()
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}

// tuneSession applies the per-session KCP settings.
func (c KCPConfig) tuneSession(s *kcp.UDPSession) {
	m := kcpModes[c.Mode]
	s.SetStreamMode(true)
	s.SetWriteDelay(false)
	s.SetNoDelay(m[0], m[1], m[2], m[3])
	s.SetWindowSize(c.SendWindow, c.RecvWindow)
	s.SetMtu(c.MTU)
}

// tuneSocket applies buffer sizes and DSCP to a UDP socket. Sockets that are
// not *net.UDPConn (test wrappers) are left alone.
func (c KCPConfig) tuneSocket(pc net.PacketConn) error {
	u, ok := pc.(*net.UDPConn)
	if !ok {
		return nil
	}
	if c.ReadBuffer > 0 {
		if err := u.SetReadBuffer(c.ReadBuffer); err != nil {
			return fmt.Errorf("kcp: read_buffer %d on %s: %w", c.ReadBuffer, u.LocalAddr(), err)
		}
	}
	if c.WriteBuffer > 0 {
		if err := u.SetWriteBuffer(c.WriteBuffer); err != nil {
			return fmt.Errorf("kcp: write_buffer %d on %s: %w", c.WriteBuffer, u.LocalAddr(), err)
		}
	}
	if c.DSCP > 0 {
		// A dual-stack socket takes one or both; it is enough that one works.
		err4 := ipv4.NewConn(u).SetTOS(c.DSCP << 2)
		err6 := ipv6.NewConn(u).SetTrafficClass(c.DSCP << 2)
		if err4 != nil && err6 != nil {
			return fmt.Errorf("kcp: dscp %d on %s: %w", c.DSCP, u.LocalAddr(), errors.Join(err4, err6))
		}
	}
	return nil
}

// resolveUDP resolves addr within ctx.
func resolveUDP(ctx context.Context, addr string) (*net.UDPAddr, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		p, lerr := net.DefaultResolver.LookupPort(ctx, "udp", portStr)
		if lerr != nil {
			return nil, fmt.Errorf("address %q: bad port %q", addr, portStr)
		}
		port = uint64(p)
	}
	if host == "" {
		host = "localhost"
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	ip := ips[0]
	for _, cand := range ips { // prefer IPv4, like kcp-go's own Dial
		if cand.Is4() || cand.Is4In6() {
			ip = cand
			break
		}
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(port))), nil
}
