package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"

	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// Peer links carry forwarded public connections between the servers of a
// cluster: one authenticated TLS connection, and one smux session on it,
// per pair of servers, opened by the first server that has a connection
// to forward and kept while both are members. The flow of a link:
//
//	dialer                                   listener
//	  TCP connect, TLS 1.3 (ALPN warren-peer/1), both sides present a
//	  certificate, each verified against the cluster CA or the pinned
//	  fingerprints (Config.CA, Config.PeerFingerprints)
//	  hello: magic | id length (1) | id | nonce (32)  ->
//	                         <- hello: magic | id length (1) | id | nonce (32)
//	                            | HMAC(token, acceptLabel | dialer's nonce | binding)
//	  HMAC(token, dialLabel | listener's nonce | binding) ->
//	                         <- 0 (accepted)
//	  smux (version 2) both ways: either side opens a stream per
//	  forwarded connection (forward.go)
//
// binding is the TLS exporter both ends derive (transport.ExportBinding):
// a proof made on one connection is worthless on another. Everything
// before the last byte has a deadline (PeerConfig.HandshakeTimeout) and
// a size cap. A link is kept alive by smux heartbeats every
// PeerConfig.Heartbeat; one silent for PeerConfig.Timeout is dead, and
// the forwarded connections it carried are reset.

// PeerALPN is the TLS application protocol of peer links.
const PeerALPN = "warren-peer/1"

const (
	peerMagic   = "warrenP1"
	acceptLabel = "warren peer accept v1\x00"
	dialLabel   = "warren peer dial v1\x00"
)

// PeerConfig configures this server's end of the peer links.
type PeerConfig struct {
	// ID is this server's Config.ID.
	ID string
	// Token is the peer token; every member has the same.
	Token []byte
	// TLS is the mutual TLS of links, both ends (PeerTLS).
	TLS *tls.Config
	// Dial connects to a peer's listener (nil: TCP). With Listen it is the
	// seam under the links: tests run them over real TCP or memory.
	Dial func(ctx context.Context, address string) (net.Conn, error)
	// Heartbeat is how often an idle link says it is alive; a link that
	// hears nothing for Timeout is dead. Zero: 1 s and 4 s.
	Heartbeat, Timeout time.Duration
	// HandshakeTimeout bounds a link's TLS and auth, and a forwarded
	// connection's header and reply. Zero: 10 s.
	HandshakeTimeout time.Duration
	Log              *slog.Logger
}

// ErrPeerAuth is wrapped by the error of a link whose other end failed
// authentication (wrong token, wrong certificate, not a peer).
var ErrPeerAuth = errors.New("peer authentication failed")

// Peers is this server's end of its peer links. Serve accepts links on a
// listener; Open forwards a connection over the link to a member, dialing
// it first when there is none; each forwarded connection that arrives is
// given to the handler, which answers it with Conn.Accept or Conn.Refuse
// (and then owns it). Drop closes the links to a member that left. Close
// ends everything, and returns once every goroutine Peers started has
// ended, handlers included. Methods are safe for concurrent use.
type Peers struct {
	cfg    PeerConfig
	handle func(*Conn)
	log    *slog.Logger

	mu        sync.Mutex
	closed    bool
	links     map[string][]*link // by peer ID; the first is used to open streams
	dialing   map[string]*dialOp
	listeners []net.Listener
	stats     map[string]*PeerStats
	failed    map[string]dialFailure // the last failed dial per member, for dialBackoff

	handshakes chan struct{} // one token per link in its handshake (maxHandshakes)

	wg   sync.WaitGroup
	die  chan struct{}
	once sync.Once
}

// PeerStats counts one peer's forwarded connections, both ways.
type PeerStats struct {
	// Out counts connections this server forwarded to the peer, In those
	// it received from it.
	Out, In atomic.Int64
	// Sent and Received count the payload bytes to and from the peer.
	Sent, Received atomic.Int64
}

// maxHandshakes caps the accepted links in their TLS and auth at once:
// what an unauthenticated stranger can make this server hold.
const maxHandshakes = 64

// dialBackoff: after a failed dial, the connections to forward to that
// member fail at once for this long instead of each dialing again (a
// dead member, or one with another token, until the registry drops it).
const dialBackoff = time.Second

type dialFailure struct {
	at  time.Time
	err error
}

type dialOp struct {
	done chan struct{}
	l    *link
	err  error
}

type link struct {
	id, addr string
	sess     *smux.Session
	stats    *PeerStats

	mu    sync.Mutex
	conns map[*Conn]struct{}
	dead  bool
}

// NewPeers returns the peer links of the server cfg.ID; handle takes the
// forwarded connections that arrive.
func NewPeers(cfg PeerConfig, handle func(*Conn)) *Peers {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 4 * time.Second
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Peers{cfg: cfg, handle: handle, log: log, links: make(map[string][]*link), dialing: make(map[string]*dialOp),
		stats: make(map[string]*PeerStats), failed: make(map[string]dialFailure), handshakes: make(chan struct{}, maxHandshakes), die: make(chan struct{})}
}

// Serve accepts links on l until l fails or Peers is closed (it closes
// l then). It returns nil after Close.
func (p *Peers) Serve(l net.Listener) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.Close()
		return nil
	}
	p.listeners = append(p.listeners, l)
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-p.die:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.Close()
			return err
		}
		select {
		case p.handshakes <- struct{}{}:
		default:
			p.log.Warn("peer link refused: too many in their handshake", "remote", c.RemoteAddr().String(), "max", maxHandshakes)
			c.Close()
			continue
		}
		if !p.goWG(func() { p.accept(c) }) {
			<-p.handshakes
			c.Close()
		}
	}
}

// goWG runs f in a goroutine Close waits for, unless closed.
func (p *Peers) goWG(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Go(f)
	return true
}

func (p *Peers) accept(raw net.Conn) {
	raw.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	c := tls.Server(raw, p.cfg.TLS)
	id, err := p.authAccept(c)
	<-p.handshakes
	if err != nil {
		p.log.Warn("peer link refused", "remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	raw.SetDeadline(time.Time{})
	sess, err := smux.Server(c, p.smuxConfig())
	if err != nil {
		raw.Close()
		return
	}
	p.log.Info("peer link up", "peer", id, "remote", raw.RemoteAddr().String(), "dialed", false)
	p.add(id, raw.RemoteAddr().String(), sess)
}

// authAccept runs the listener's side of a link's handshake.
func (p *Peers) authAccept(c *tls.Conn) (string, error) {
	if err := c.Handshake(); err != nil {
		return "", fmt.Errorf("%w: TLS: %w", ErrPeerAuth, err)
	}
	if c.ConnectionState().NegotiatedProtocol != PeerALPN {
		return "", fmt.Errorf("%w: not a warren peer (ALPN %q)", ErrPeerAuth, c.ConnectionState().NegotiatedProtocol)
	}
	binding, err := transport.ExportBinding(c)
	if err != nil {
		return "", err
	}
	id, theirNonce, err := readHello(c)
	if err != nil {
		return "", err
	}
	nonce, err := session.NewNonce()
	if err != nil {
		return "", err
	}
	hello := appendHello(nil, p.cfg.ID, nonce)
	hello = append(hello, session.MAC(acceptLabel, p.cfg.Token, theirNonce, binding)...)
	if _, err := c.Write(hello); err != nil {
		return "", err
	}
	mac := make([]byte, 32)
	if _, err := io.ReadFull(c, mac); err != nil {
		return "", fmt.Errorf("%w: peer %q: %w", ErrPeerAuth, id, err)
	}
	if !session.EqualMAC(mac, session.MAC(dialLabel, p.cfg.Token, nonce, binding)) {
		return "", fmt.Errorf("%w: peer %q: wrong peer token", ErrPeerAuth, id)
	}
	if id == p.cfg.ID {
		return "", fmt.Errorf("%w: peer has this server's own id %q", ErrPeerAuth, id)
	}
	if _, err := c.Write([]byte{0}); err != nil {
		return "", err
	}
	return id, nil
}

// dial opens a link to the member id at addr.
func (p *Peers) dial(ctx context.Context, id, addr string) (*link, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	raw, err := p.cfg.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("peer %s at %s: %w", id, addr, err)
	}
	dl, _ := ctx.Deadline()
	raw.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c := tls.Client(raw, p.cfg.TLS)
	if err := p.authDial(c, id); err != nil {
		raw.Close()
		return nil, fmt.Errorf("peer %s at %s: %w", id, addr, err)
	}
	if !stop() {
		raw.Close()
		return nil, fmt.Errorf("peer %s at %s: %w", id, addr, ctx.Err())
	}
	raw.SetDeadline(time.Time{})
	sess, err := smux.Client(c, p.smuxConfig())
	if err != nil {
		raw.Close()
		return nil, err
	}
	p.log.Info("peer link up", "peer", id, "remote", addr, "dialed", true)
	l := p.add(id, addr, sess)
	if l == nil {
		return nil, net.ErrClosed
	}
	return l, nil
}

// authDial runs the dialer's side of a link's handshake with member id.
func (p *Peers) authDial(c *tls.Conn, id string) error {
	if err := c.Handshake(); err != nil {
		return fmt.Errorf("%w: TLS: %w", ErrPeerAuth, err)
	}
	if c.ConnectionState().NegotiatedProtocol != PeerALPN {
		return fmt.Errorf("%w: not a warren peer (ALPN %q)", ErrPeerAuth, c.ConnectionState().NegotiatedProtocol)
	}
	binding, err := transport.ExportBinding(c)
	if err != nil {
		return err
	}
	nonce, err := session.NewNonce()
	if err != nil {
		return err
	}
	if _, err := c.Write(appendHello(nil, p.cfg.ID, nonce)); err != nil {
		return err
	}
	theirID, theirNonce, err := readHello(c)
	if err != nil {
		return err
	}
	mac := make([]byte, 32)
	if _, err := io.ReadFull(c, mac); err != nil {
		return fmt.Errorf("%w: %w", ErrPeerAuth, err)
	}
	if !session.EqualMAC(mac, session.MAC(acceptLabel, p.cfg.Token, nonce, binding)) {
		return fmt.Errorf("%w: wrong peer token", ErrPeerAuth)
	}
	if theirID != id {
		return fmt.Errorf("%w: the server there is %q, not %q", ErrPeerAuth, theirID, id)
	}
	if _, err := c.Write(session.MAC(dialLabel, p.cfg.Token, theirNonce, binding)); err != nil {
		return err
	}
	var ok [1]byte
	if _, err := io.ReadFull(c, ok[:]); err != nil || ok[0] != 0 {
		return fmt.Errorf("%w: refused by %s (wrong peer token?)", ErrPeerAuth, id)
	}
	return nil
}

func appendHello(b []byte, id string, nonce []byte) []byte {
	b = append(b, peerMagic...)
	b = append(b, byte(len(id)))
	b = append(b, id...)
	return append(b, nonce...)
}

// readHello reads a hello: at most 8 + 1 + 255 + 32 bytes.
func readHello(r io.Reader) (id string, nonce []byte, err error) {
	pre := make([]byte, len(peerMagic)+1)
	if _, err := io.ReadFull(r, pre); err != nil {
		return "", nil, fmt.Errorf("%w: hello: %w", ErrPeerAuth, err)
	}
	if !bytes.Equal(pre[:len(peerMagic)], []byte(peerMagic)) {
		return "", nil, fmt.Errorf("%w: not a warren peer hello", ErrPeerAuth)
	}
	rest := make([]byte, int(pre[len(peerMagic)])+session.NonceLen)
	if _, err := io.ReadFull(r, rest); err != nil {
		return "", nil, fmt.Errorf("%w: hello: %w", ErrPeerAuth, err)
	}
	id = string(rest[:len(rest)-session.NonceLen])
	if id == "" || strings.ContainsAny(id, "/ \t\n") {
		return "", nil, fmt.Errorf("%w: bad peer id %q", ErrPeerAuth, id)
	}
	return id, rest[len(rest)-session.NonceLen:], nil
}

func (p *Peers) smuxConfig() *smux.Config {
	c := smux.DefaultConfig()
	c.Version = 2 // a window per stream: one slow connection stalls only itself
	c.KeepAliveInterval = p.cfg.Heartbeat
	c.KeepAliveTimeout = p.cfg.Timeout
	c.MaxReceiveBuffer = 16 << 20
	c.MaxStreamBuffer = 1 << 20
	return c
}

// add records a new link and serves it; nil when Peers is closed.
func (p *Peers) add(id, addr string, sess *smux.Session) *link {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		sess.Close()
		return nil
	}
	l := &link{id: id, addr: addr, sess: sess, stats: p.statsLocked(id), conns: make(map[*Conn]struct{})}
	p.links[id] = append(p.links[id], l)
	p.wg.Go(func() { p.serveLink(l) })
	p.mu.Unlock()
	return l
}

func (p *Peers) statsLocked(id string) *PeerStats {
	st := p.stats[id]
	if st == nil {
		st = new(PeerStats)
		p.stats[id] = st
	}
	return st
}

// serveLink accepts the streams the other end opens until the link dies,
// then resets the forwarded connections it carried.
func (p *Peers) serveLink(l *link) {
	for {
		st, err := l.sess.AcceptStream()
		if err != nil {
			break
		}
		if !p.goWG(func() { p.serveStream(l, st) }) {
			st.Close()
		}
	}
	l.sess.Close()
	l.mu.Lock()
	l.dead = true
	conns := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.kill() // its relay sees ErrForwardReset, or its cut, and resets
	}
	p.mu.Lock()
	p.links[l.id] = slices.DeleteFunc(p.links[l.id], func(o *link) bool { return o == l })
	if len(p.links[l.id]) == 0 {
		delete(p.links, l.id)
	}
	p.mu.Unlock()
	select {
	case <-p.die:
	default:
		p.log.Info("peer link down", "peer", l.id, "remote", l.addr, "reset", len(conns))
	}
}

// serveStream reads a forwarded connection's header and hands it over.
func (p *Peers) serveStream(l *link, st *smux.Stream) {
	st.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	h, err := ReadHeader(st)
	if err != nil {
		p.log.Warn("forwarded connection refused", "peer", l.id, "err", err)
		st.Close()
		return
	}
	c := l.newConn(st, h)
	if c == nil {
		return
	}
	l.stats.In.Add(1)
	p.handle(c)
}

func (l *link) newConn(st *smux.Stream, h Header) *Conn {
	c := &Conn{st: st, hdr: h, peer: l.id, in: &l.stats.Received, out: &l.stats.Sent}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		st.Close()
		return nil
	}
	l.conns[c] = struct{}{}
	c.onDone = func() {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}
	return c
}

// Accept tells the forwarding server that this one serves the
// connection; from now on its bytes flow.
func (c *Conn) Accept() error {
	c.unwatch()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.st.Write(encodeReply(false, ""))
	c.st.SetDeadline(time.Time{})
	return err
}

// Refuse tells the forwarding server why this one does not serve the
// connection, and closes it.
func (c *Conn) Refuse(reason string) {
	c.unwatch()
	c.wmu.Lock()
	c.st.SetWriteDeadline(time.Now().Add(time.Second))
	c.st.Write(encodeReply(true, reason))
	c.wmu.Unlock()
	c.Close()
}

// Open forwards a connection to member m: over its link, dialed first
// when there is none (one dial at a time per member). It returns once m
// accepted the connection; a refusal wraps ErrRefused. ctx bounds the
// dial and the wait for the reply.
func (p *Peers) Open(ctx context.Context, m Member, h Header) (*Conn, error) {
	hdr, err := h.Encode()
	if err != nil {
		return nil, err
	}
	l, err := p.link(ctx, m)
	if err != nil {
		return nil, err
	}
	st, err := l.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", m.ID, err)
	}
	dl := time.Now().Add(p.cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	st.SetDeadline(dl)
	c := l.newConn(st, h)
	if c == nil {
		return nil, fmt.Errorf("peer %s: %w", m.ID, ErrForwardReset)
	}
	// ctx's end ends the wait too: the other server may wait before it
	// answers (a UDP flow for a session in its handshake), and the
	// caller's end must not wait out dl.
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Unix(1, 0)) })
	if _, err := st.Write(hdr); err != nil {
		stop()
		c.Close()
		return nil, fmt.Errorf("peer %s: %w", m.ID, err)
	}
	err = readReply(st)
	if !stop() && err == nil { // ctx ended as the reply came: st's deadline is past
		err = ctx.Err()
	}
	if err != nil {
		c.Close()
		var ne net.Error
		switch {
		case errors.Is(err, ErrRefused):
		case ctx.Err() != nil:
			return nil, fmt.Errorf("peer %s: waiting for the reply: %w", m.ID, ctx.Err())
		case errors.As(err, &ne) && ne.Timeout():
			return nil, fmt.Errorf("peer %s: no reply: %w", m.ID, err)
		case h.Kind != KindStream:
			// A server of the first cluster release reads version 1
			// headers only: it closes a flow's stream unanswered.
			return nil, fmt.Errorf("peer %s does not take forwarded UDP flows (a warren from before they were forwarded?): %w", m.ID, err)
		}
		return nil, fmt.Errorf("peer %s: %w", m.ID, err)
	}
	st.SetDeadline(time.Time{})
	l.stats.Out.Add(1)
	return c, nil
}

// link returns a live link to m, dialing one if needed.
func (p *Peers) link(ctx context.Context, m Member) (*link, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, net.ErrClosed
		}
		for _, l := range p.links[m.ID] {
			if !l.sess.IsClosed() {
				p.mu.Unlock()
				return l, nil
			}
		}
		if f, ok := p.failed[m.ID]; ok && time.Since(f.at) < dialBackoff {
			p.mu.Unlock()
			return nil, f.err
		}
		if op := p.dialing[m.ID]; op != nil {
			p.mu.Unlock()
			select {
			case <-op.done:
				if op.err != nil {
					return nil, op.err
				}
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		op := &dialOp{done: make(chan struct{})}
		p.dialing[m.ID] = op
		p.mu.Unlock()
		op.l, op.err = p.dial(ctx, m.ID, m.PeerAddress)
		p.mu.Lock()
		delete(p.dialing, m.ID)
		if op.err != nil && ctx.Err() == nil {
			p.failed[m.ID] = dialFailure{at: time.Now(), err: op.err}
		} else {
			delete(p.failed, m.ID)
		}
		p.mu.Unlock()
		close(op.done)
		if op.err != nil {
			p.log.Warn("peer link failed", "peer", m.ID, "address", m.PeerAddress, "err", op.err)
			return nil, op.err
		}
		return op.l, nil
	}
}

// Drop closes the links to member id (it left the cluster): the
// connections forwarded over them are reset.
func (p *Peers) Drop(id string) {
	p.mu.Lock()
	delete(p.failed, id)
	ls := slices.Clone(p.links[id])
	p.mu.Unlock()
	for _, l := range ls {
		l.sess.Close()
	}
}

// LinkInfo describes the links to one peer.
type LinkInfo struct {
	ID string
	// Links counts the live links (1, or 2 while both dialed at once).
	Links int
	// Streams counts the forwarded connections open over them.
	Streams int
}

// Links lists the live links, by peer ID.
func (p *Peers) Links() []LinkInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]LinkInfo, 0, len(p.links))
	for id, ls := range p.links {
		li := LinkInfo{ID: id, Links: len(ls)}
		for _, l := range ls {
			li.Streams += l.sess.NumStreams()
		}
		out = append(out, li)
	}
	slices.SortFunc(out, func(a, b LinkInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Stats returns the counters of peer id (created at its first link).
func (p *Peers) Stats(id string) *PeerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statsLocked(id)
}

// StatsIDs lists the peers with counters.
func (p *Peers) StatsIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]string, 0, len(p.stats))
	for id := range p.stats {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Close closes the listeners and every link, and waits for the goroutines
// of Peers, handlers included. Idempotent.
func (p *Peers) Close() error {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		close(p.die)
		ls := p.listeners
		var links []*link
		for _, l := range p.links {
			links = append(links, l...)
		}
		p.mu.Unlock()
		for _, l := range ls {
			l.Close()
		}
		for _, l := range links {
			l.sess.Close()
		}
	})
	p.wg.Wait()
	return nil
}
