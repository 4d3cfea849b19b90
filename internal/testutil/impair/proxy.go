package impair

import (
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
)

// TCPProxy forwards TCP connections from its own listener to a target, and
// can freeze (hold every byte, as a path that went silent does) or cut
// (reset every connection, as a NAT that forgot them does).
type TCPProxy struct {
	l      net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	thaw   chan struct{} // closed when frozen ends
	conns  map[net.Conn]struct{}
	down   []net.Conn // the accepted side of each open connection, oldest first
	closed bool

	wg sync.WaitGroup
}

// NewTCPProxy listens on a free loopback port and forwards to target.
func NewTCPProxy(target string) (*TCPProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &TCPProxy{l: l, target: target, conns: make(map[net.Conn]struct{}), thaw: make(chan struct{})}
	close(p.thaw)
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is where clients connect.
func (p *TCPProxy) Addr() string { return p.l.Addr().String() }

// Freeze stops (true) or resumes (false) forwarding on every connection,
// new ones included. Frozen bytes are held, not lost.
func (p *TCPProxy) Freeze(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.frozen {
		return
	}
	p.frozen = on
	if on {
		p.thaw = make(chan struct{})
	} else {
		close(p.thaw)
	}
}

// Cut resets every open connection, both sides.
func (p *TCPProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// Close stops listening, cuts every connection and waits for the proxy's
// goroutines.
func (p *TCPProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Freeze(false)
	err := p.l.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

func (p *TCPProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *TCPProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	if i := slices.Index(p.down, c); i >= 0 {
		p.down = slices.Delete(p.down, i, i+1)
	}
	p.mu.Unlock()
	c.Close()
}

// CutOne resets the oldest open connection (the far side sees it close)
// and reports whether there was one.
func (p *TCPProxy) CutOne() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.down) == 0 {
		return false
	}
	c := p.down[0]
	p.down = p.down[1:]
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
	return true
}

func (p *TCPProxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *TCPProxy) serve(c net.Conn) {
	if !p.track(c) {
		c.Close()
		return
	}
	p.mu.Lock()
	p.down = append(p.down, c)
	p.mu.Unlock()
	defer p.untrack(c)
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(up, c) })
	p.pipe(c, up)
	wg.Wait()
}

// pipe copies src to dst, waiting while frozen before each write.
func (p *TCPProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			thaw := p.thaw
			p.mu.Unlock()
			<-thaw
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
					return
				}
			}
			dst.Close()
			return
		}
	}
}

// UDPProxy forwards datagrams between clients and a target, one upstream
// socket per client address, and can blackhole (drop everything both ways).
type UDPProxy struct {
	pc     net.PacketConn
	target *net.UDPAddr

	blackhole atomic.Bool

	mu      sync.Mutex
	peers   map[string]*net.UDPConn
	closing bool
	wg      sync.WaitGroup
}

// NewUDPProxy listens on a free loopback UDP port and forwards to target.
func NewUDPProxy(target string) (*UDPProxy, error) {
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &UDPProxy{pc: pc, target: ta, peers: make(map[string]*net.UDPConn)}
	p.wg.Go(p.fromClients)
	return p, nil
}

// Addr is where clients send.
func (p *UDPProxy) Addr() string { return p.pc.LocalAddr().String() }

// SetBlackhole starts or stops dropping every datagram, both ways.
func (p *UDPProxy) SetBlackhole(on bool) { p.blackhole.Store(on) }

// Inject sends b to the target from every client's upstream socket, as
// if each client had sent it: a datagram forged with a client's address.
func (p *UDPProxy) Inject(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, up := range p.peers {
		up.Write(b)
	}
}

// Close stops forwarding and waits for the proxy's goroutines.
func (p *UDPProxy) Close() error {
	p.mu.Lock()
	p.closing = true
	for _, up := range p.peers {
		up.Close()
	}
	p.mu.Unlock()
	err := p.pc.Close()
	p.wg.Wait()
	return err
}

func (p *UDPProxy) fromClients() {
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := p.pc.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		if p.blackhole.Load() {
			continue
		}
		up := p.upstream(addr)
		if up != nil {
			up.Write(buf[:n])
		}
	}
}

// upstream returns the socket that carries client's datagrams, opening it
// on first use.
func (p *UDPProxy) upstream(client net.Addr) *net.UDPConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return nil
	}
	if up, ok := p.peers[client.String()]; ok {
		return up
	}
	up, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil
	}
	p.peers[client.String()] = up
	p.wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue // e.g. ICMP refused while the target restarts
			}
			if !p.blackhole.Load() {
				p.pc.WriteTo(buf[:n], client)
			}
		}
	})
	return up
}
