// Package server is warren's public side: it accepts client sessions on its
// tunnel listeners, authenticates them, binds the public ports they claim,
// and carries every public connection to its client over a new stream.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/domain"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/relay"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// acceptBackoff is how long an accept loop waits after an error that is not
// its listener closing (for example, out of file descriptors).
const acceptBackoff = 100 * time.Millisecond

// acceptBackoffMax caps the wait after accepts failing in a row for want
// of file descriptors (acceptWait).
const acceptBackoffMax = 2 * time.Second

// acceptWait is the wait after an accept error, the fails-th in a row for
// want of descriptors (0: another error): acceptBackoff, doubling with
// fails up to acceptBackoffMax.
func acceptWait(fails int) time.Duration {
	d := acceptBackoff
	for i := 1; i < fails && d < acceptBackoffMax; i++ {
		d *= 2
	}
	return min(d, acceptBackoffMax)
}

// Server is a warren server. Create it with New and run it with Run.
type Server struct {
	cfg         Config
	log         *slog.Logger
	edges       edges
	tls         *tls.Config // nil: plaintext
	fingerprint string
	certCreated bool
	sessCfg     session.Config
	poll        *relay.Poller     // the process's, set by Run (nil: none)
	acceptSeq   atomic.Uint64     // tunnel connections accepted (clientSession.accepted)
	table       *table            // the routes and the sessions serving them (table.go)
	metrics     *metrics.Registry // nil: none (SetMetrics)
	rec         *admin.Recorder   // nil: none (SetRecorder)
	started     time.Time
	changed     signal // sessions, routes or handshakes changed (Changed)
	node        *node  // in a cluster (WithRegistry): forward.go

	ready chan struct{}

	adm *admission // tunnel connections not yet authenticated (admission.go)
	fds *fdWarner  // binds and accepts failing for want of descriptors (fdlimit.go)

	mu        sync.Mutex
	running   bool
	closing   bool       // shutdown began: new clients are refused
	stopped   bool       // listeners closed: new connections are dropped
	listeners []listener // tunnel listeners, set before ready closes
	entries   entryState // the HTTP and HTTPS entry points (entry.go)

	reloadMu sync.Mutex // one Reload at a time; s.cfg changes only under it

	stopping chan struct{}  // closed when shutdown begins
	acceptWG sync.WaitGroup // accept loops of public listeners
	relays   sync.WaitGroup // public connections, waiting or relayed
	active   atomic.Int64   // public connections, for the shutdown log
}

// listener is a bound tunnel endpoint.
type listener struct {
	l    transport.Listener
	kind string
	name string // the transport as users see it: "kcp+tls"
}

// clientEntry is a configured client, its claims normalized.
type clientEntry struct {
	name     string
	ports    []PortRange
	udpPorts []PortRange
	domains  []string
	dial     bool     // [[server.clients]] dial
	visit    []string // [[server.clients]] visit patterns
}

// portsOf is the client's ports of a protocol.
func (c *clientEntry) portsOf(udp bool) []PortRange {
	if udp {
		return c.udpPorts
	}
	return c.ports
}

// New checks cfg and prepares the server: it loads or creates the TLS
// certificate (in cfg.StateDir when self-signed) but binds nothing; Run
// does. log nil discards logs. Without options the server uses the real
// network and clock; options replace them (see edges.go).
func New(cfg Config, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := newEdges(opts)
	s := &Server{
		cfg:      cfg,
		log:      log,
		edges:    e,
		sessCfg:  cfg.session(),
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
		started:  e.clock.Now(),
	}
	s.table = newTable(tableConfig{
		grace:            cfg.ReconnectGrace,
		handshakeTimeout: cfg.Limits.HandshakeTimeout,
		maxWaiting:       cfg.Limits.MaxWaiting,
		maxServices:      cfg.Limits.MaxServices,
		udp:              cfg.UDP,
	}, e.clock, log, &s.changed, s.bindPublic, s.serveRoute)
	s.fds = &fdWarner{clock: e.clock, log: log}
	s.table.fds = s.fds
	s.adm = newAdmission(cfg.Limits.MaxHandshakes, cfg.Limits.MaxHandshakesPerIP, e.clock, log, &s.changed)
	if !cfg.TLS.Disabled {
		tc, fingerprint, created, err := cfg.TLS.Config(cfg.StateDir)
		if err != nil {
			return nil, fmt.Errorf("server.%w", err)
		}
		s.tls, s.fingerprint, s.certCreated = s.adm.gate(tc), fingerprint, created
	}
	var clients []*clientEntry
	var tokens [][]byte
	for _, c := range cfg.Clients {
		e := &clientEntry{name: c.Name, ports: c.Ports, udpPorts: c.UDPPorts, dial: c.Dial, visit: c.Visit}
		for _, d := range c.Domains {
			n, _ := domain.Normalize(d) // Validate checked it
			e.domains = append(e.domains, n)
		}
		clients = append(clients, e)
		tokens = append(tokens, []byte(c.Token))
	}
	s.table.setClientsLocked(clients, tokens) // nothing else has the table yet
	if e.registry != nil {
		if err := s.newNode(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// bindPublic opens a public port (0: any free one), TCP or UDP.
func (s *Server) bindPublic(udp bool, port int) (socket, error) {
	addr := net.JoinHostPort(s.cfg.PublicAddress, strconv.Itoa(port))
	if udp {
		pc, err := s.edges.listenPacket("udp", addr)
		return socket{pc: pc}, err
	}
	l, err := s.edges.listen("tcp", addr)
	return socket{l: l}, err
}

// serveRoute starts the loop of a new port route, under the table's lock.
func (s *Server) serveRoute(r *route) {
	if r.udp {
		s.serveUDP(r)
		return
	}
	s.acceptWG.Go(func() { s.servePort(r) })
}

// Fingerprint is the server certificate's fingerprint in the form clients
// pin ("sha256:..."), empty without TLS.
func (s *Server) Fingerprint() string { return s.fingerprint }

// Ready is closed once Run has bound every tunnel listener and entry point.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the bound address of the first tunnel listener of the
// given kind ("tcp" or "kcp"), or nil. Valid after Ready.
func (s *Server) Addr(kind string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		if l.kind == kind {
			return l.l.Addr()
		}
	}
	return nil
}

// Run binds the tunnel listeners, serves clients until ctx is done, then
// closes every session (telling clients the server is shutting down) and
// returns once all its goroutines have. It returns an error only when it
// cannot start; a Server runs once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("server: Run called twice")
	}
	s.running = true
	s.mu.Unlock()
	// The process's one relay poller, for as long as relays may run.
	poll, release := relay.Acquire()
	defer release()
	s.poll = poll

	var peerL net.Listener
	if s.node != nil {
		l, err := s.edges.listen("tcp", s.node.addr)
		if err != nil {
			return fmt.Errorf("server.cluster.peer_listen: %w", err)
		}
		peerL = l
	}
	ls, err := s.listen()
	if err != nil {
		if peerL != nil {
			peerL.Close()
		}
		return err
	}
	eps, err := s.listenEntries()
	if err != nil {
		for _, l := range ls {
			l.l.Close()
		}
		if peerL != nil {
			peerL.Close()
		}
		return err
	}
	s.mu.Lock()
	s.listeners = ls
	s.mu.Unlock()
	s.logStart()
	s.startEntries(eps)
	close(s.ready)

	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() { s.acceptTunnel(l, &wg) })
	}
	nodeStop := make(chan struct{})
	var nodeWG sync.WaitGroup
	if s.node != nil {
		nodeWG.Go(func() { s.runNode(peerL, nodeStop) })
	}
	<-ctx.Done()
	s.shutdown()
	close(nodeStop)
	nodeWG.Wait()
	wg.Wait()
	s.log.Info("server stopped")
	return nil
}

// listen binds every [[server.listen]] entry, or none.
func (s *Server) listen() ([]listener, error) {
	var ls []listener
	for i, lc := range s.cfg.Listen {
		t, err := s.edges.transports[lc.Transport], error(nil)
		if t == nil {
			t, err = transport.New(lc.Transport, transport.Config{KCP: s.cfg.KCP, TCP: s.cfg.TCP, TLS: s.tls, Log: s.log})
		}
		if err == nil {
			var l transport.Listener
			if l, err = t.Listen(lc.Address); err == nil {
				ls = append(ls, listener{l: l, kind: lc.Transport, name: t.String()})
				continue
			}
		}
		for _, l := range ls {
			l.l.Close()
		}
		return nil, fmt.Errorf("server.listen[%d]: %s %s: %w", i, lc.Transport, lc.Address, err)
	}
	return ls, nil
}

func (s *Server) logStart() {
	for _, l := range s.listeners {
		s.log.Info("listening for clients", "transport", l.name, "address", l.l.Addr().String())
	}
	switch {
	case s.tls == nil:
		s.log.Warn("TLS is off (tls = false): sessions are not encrypted and the server is not authenticated; use only on a trusted network")
	case s.cfg.TLS.Cert == "":
		msg := "using self-signed certificate; clients pin it with [client.tls] fingerprint"
		if s.certCreated {
			msg = "created self-signed certificate; clients pin it with [client.tls] fingerprint"
		}
		s.log.Info(msg, "fingerprint", s.fingerprint, "state_dir", s.cfg.StateDir)
	default:
		s.log.Info("using certificate", "cert", s.cfg.TLS.Cert, "fingerprint", s.fingerprint)
	}
}

// acceptTunnel accepts client connections on l until it is closed. Each is
// served in a goroutine counted by wg.
func (s *Server) acceptTunnel(l listener, wg *sync.WaitGroup) {
	err := s.accept(l.l, nil, func(c net.Conn) { wg.Go(func() { s.serveTunnel(c, l.name) }) },
		"accepting client connection failed", "transport", l.name)
	s.mu.Lock()
	stopped := s.stopped || (s.closing && l.kind == transport.KindTCP)
	s.mu.Unlock()
	if !stopped {
		s.log.Error("tunnel listener failed; no more clients on it", "transport", l.name, "address", l.l.Addr().String(), "err", err)
	}
}

// accept hands every connection l accepts to serve until l is closed,
// which it returns. Once shutdown has begun and stopAccepting set l's
// deadline, it empties l's accept queue into serve and closes l
// (emptyQueue). Other accept errors (out of file descriptors, say) are
// logged as failed with attrs, and accepting resumes after acceptBackoff
// unless stop (nil: never) is closed meanwhile. Running out of file
// descriptors is logged once a while (fdWarner), and the wait doubles
// while it lasts (acceptWait): the failed accept left the connection in
// the queue, so retrying at once would only spin.
func (s *Server) accept(l interface{ Accept() (net.Conn, error) }, stop <-chan struct{}, serve func(net.Conn), failed string, attrs ...any) error {
	fails := 0 // in a row for want of descriptors
	for {
		c, err := l.Accept()
		if err == nil {
			fails = 0
			serve(c)
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return err
		}
		if dl, ok := l.(deadliner); ok && errors.Is(err, os.ErrDeadlineExceeded) && s.isStopping() {
			emptyQueue(dl, serve)
			return net.ErrClosed
		}
		if outOfFDs(err) {
			s.fds.fail("accept", err)
			fails++
		} else {
			s.log.Warn(failed, append(attrs, "err", err)...)
		}
		t := s.edges.clock.NewTimer(acceptWait(fails))
		select {
		case <-stop:
			t.Stop()
			return err
		case <-t.C():
		}
	}
}

// deadliner is a listener with a deadline, as net.TCPListener is.
type deadliner interface {
	net.Listener
	SetDeadline(time.Time) error
}

// Emptying a public listener's accept queue at shutdown (emptyQueue):
// connections arriving within drainPoll of the last are taken too, for at
// most drainMax. On loopback a connection reaches the queue within
// microseconds of its SYN; 5 ms covers a scheduler hiccup, and a 50 per
// second load leaves a gap of 5 ms within a few connections.
const (
	drainPoll = 5 * time.Millisecond
	drainMax  = time.Second
)

// stopAccepting makes l's accept loop (accept) empty its queue and close
// it; a listener without a deadline, or a UDP socket, is closed at once.
func stopAccepting(l io.Closer) {
	if d, ok := l.(deadliner); ok && d.SetDeadline(time.Now()) == nil {
		return
	}
	l.Close()
}

// emptyQueue serves the connections l has queued, and those that arrive
// while it does, until none came for drainPoll (or drainMax passed), then
// closes l. Closing a listener resets the connections in its accept
// queue, which their peers saw established: a TCP balancer in front
// counts them failed, where a refused connect (after the close) makes it
// try another server. Only the few that arrive between the last Accept
// and the close are reset.
func emptyQueue(l deadliner, serve func(net.Conn)) {
	end := time.Now().Add(drainMax)
	for time.Now().Before(end) {
		l.SetDeadline(time.Now().Add(drainPoll))
		c, err := l.Accept()
		if err != nil {
			break
		}
		serve(c)
	}
	l.Close()
}

// drainReturn is when a draining server tells its clients to come back
// after its Goodbye: about when a restarted process listens again, so
// that its clients neither hammer a port still closed nor wait long past
// it; their backoff (capped at 2 s toward a server that was serving)
// covers a longer restart. With 1 s the bench's rolling restart served
// each server again 1.1-1.6 s after it started, where the clients of
// servers that send no notice took 0.1-2.5 s.
const drainReturn = 500 * time.Millisecond

// sayDraining tells every client that reads the notice that the server
// drains and when to come back, in parallel; the WaitGroup tells when
// the notices are written (each write has a deadline of its own).
func (s *Server) sayDraining() *sync.WaitGroup {
	var told sync.WaitGroup
	for _, cs := range s.table.list() {
		told.Go(func() {
			if err := cs.sess.Draining(drainReturn); err == nil {
				cs.log.Debug("told the client the server drains", "return_after", drainReturn.String())
			}
		})
	}
	return &told
}

func (s *Server) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// shutdown ends service in order. New client sessions are refused at once
// (TCP listeners close, so the kernel refuses; KCP listeners stay open to
// answer "shutting down", since KCP has no refusal of its own). Public
// ports stop accepting: each serves what its accept queue holds, then
// closes (emptyQueue). Clients that read it are told the server drains
// and when to come back (a client of several servers serves through the
// others meanwhile, or replaces this one). Entry points close, and so do entry point
// connections that have not named their host yet; connections waiting for
// a client give up; open public connections may finish, for up to
// ShutdownTimeout; client sessions do not count. Then every session is
// told goodbye, the KCP listeners close, and connections still in their
// handshake drop.
func (s *Server) shutdown() {
	s.mu.Lock()
	s.closing = true
	close(s.stopping)
	ls := s.listeners
	s.closeEntriesLocked()
	s.mu.Unlock()
	s.changed.Notify() // the admin source is not ready any more
	for _, l := range s.table.close() {
		stopAccepting(l)
	}
	told := s.sayDraining()
	for _, l := range ls {
		if l.kind == transport.KindTCP {
			l.l.Close()
		}
	}
	s.acceptWG.Wait()

	drained := make(chan struct{})
	go func() {
		s.relays.Wait()
		close(drained)
	}()
	if n := s.active.Load(); n > 0 {
		s.log.Info("shutting down: letting open connections finish", "open", n, "timeout", s.cfg.ShutdownTimeout.String())
		t := s.edges.clock.NewTimer(s.cfg.ShutdownTimeout)
		select {
		case <-drained:
		case <-t.C():
			s.log.Warn("shutdown timeout: closing the connections still open", "open", s.active.Load())
		}
		t.Stop()
	}

	told.Wait()
	var wg sync.WaitGroup
	for _, cs := range s.table.list() {
		wg.Go(func() { cs.sess.Close(session.CodeShuttingDown, "shutting down") })
	}
	wg.Wait()
	if s.node != nil {
		// Forwarded connections, both ways, end with the peer links.
		s.node.peers.Close()
	}
	<-drained // the sessions' streams are gone, so their relays are

	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.adm.close()
	for _, l := range ls {
		l.l.Close()
	}
}

// SessionInfo describes a client session for status output and tests.
type SessionInfo struct {
	session.Info
	// Transport is how the client connected: "kcp+tls", "tcp+tls", ...
	Transport string
	RTT       time.Duration
	Streams   int
}

// Changed returns a channel that is closed at the next change of
// Sessions, Routes (their flows included) or Pending, or when shutdown
// begins.
func (s *Server) Changed() <-chan struct{} { return s.changed.Wait() }

// Routes lists the routes: what public connections arrive on.
func (s *Server) Routes() []RouteInfo { return s.table.info() }

// Sessions lists the authenticated sessions.
func (s *Server) Sessions() []SessionInfo {
	list := s.table.list()
	out := make([]SessionInfo, 0, len(list))
	for _, cs := range list {
		out = append(out, SessionInfo{Info: cs.sess.Info(), Transport: cs.transport, RTT: cs.sess.RTT(), Streams: cs.sess.NumStreams()})
	}
	return out
}

// Pending is the number of tunnel connections still in their handshake.
func (s *Server) Pending() int { return s.adm.pending() }
