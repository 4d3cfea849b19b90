// Package client is warren's private side: it keeps one session to the
// server, claims its services, and for every stream the server opens dials
// the service's target and relays.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/clock"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// Client is a warren client. Create it with New and run it with Run.
type Client struct {
	cfg       Config
	log       *slog.Logger
	edges     edges
	transport transport.Transport
	sessCfg   session.Config
	token     []byte
	instance  string
	// table is the services, swapped whole by Reload.
	table atomic.Pointer[serviceTable]

	// sticky holds the ports the server picked for services that asked for
	// any port (remote_port 0), to ask for the same again on reconnect.
	stickyMu sync.Mutex
	sticky   map[string]int

	reloadMu sync.Mutex // one Reload at a time
	// claimed is the table each live session's claims came from, when a
	// Reload or syncClaims updated it; guarded by reloadMu.
	claimed map[*session.Session]*serviceTable

	metrics *metrics.Registry // nil: none (SetMetrics)
	rec     *admin.Recorder   // nil: none (SetRecorder)
	started time.Time

	firstUp     chan struct{} // closed when the first session is welcomed
	firstUpOnce sync.Once

	mu      sync.Mutex
	status  Status
	sess    []*session.Session // by connection: the session up now, nil while down
	changed chan struct{}
	running bool
}

// Status is the client's connection state.
type Status struct {
	// Connected is true while a session is up.
	Connected bool
	// Up counts the sessions up now, of Config.Connections.
	Up int
	// Session describes the current (or last) session: the name the server
	// knows this client by, and the services as granted, with ports.
	Session session.Info
	// Sessions counts the sessions established so far.
	Sessions int
	// LastError is why the last session or attempt ended.
	LastError error
}

// New checks cfg and prepares the client; Run connects. log nil discards
// logs. Without options the client uses the real network and clock;
// options replace them (see edges.go).
func New(cfg Config, log *slog.Logger, opts ...Option) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := newEdges(opts)
	t := e.transport
	if t == nil {
		var tlsCfg *tls.Config
		if !cfg.TLS.Disabled {
			var err error
			if tlsCfg, err = cfg.TLS.Config(); err != nil {
				return nil, fmt.Errorf("client.%w", err)
			}
		}
		var err error
		if t, err = transport.New(cfg.Transport, transport.Config{KCP: cfg.KCP, TCP: cfg.TCP, TLS: tlsCfg}); err != nil {
			return nil, fmt.Errorf("client.transport: %w", err)
		}
	}
	c := &Client{
		cfg:       cfg,
		log:       log,
		edges:     e,
		transport: t,
		sessCfg:   cfg.session(),
		token:     []byte(cfg.Token),
		instance:  session.NewID(),
		changed:   make(chan struct{}),
		firstUp:   make(chan struct{}),
		sess:      make([]*session.Session, cfg.Connections),
		sticky:    make(map[string]int),
		claimed:   make(map[*session.Session]*serviceTable),
		started:   e.clock.Now(),
	}
	c.table.Store(newServiceTable(cfg.Services, nil))
	return c, nil
}

// Status returns the current connection state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Changed returns a channel that is closed at the next change of Status.
func (c *Client) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// setStatus changes the status with f and counts the sessions up.
func (c *Client) setStatus(f func(*Status)) {
	c.mu.Lock()
	f(&c.status)
	c.status.Up = len(c.liveLocked())
	c.status.Connected = c.status.Up > 0
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Run keeps Config.Connections sessions to the server until ctx is done,
// each reconnecting with backoff after transient failures. It returns nil
// when ctx ends it, and an error when retrying cannot help: the server
// rejected the client (unknown token, port not allowed, ...), the server's
// certificate failed verification, or another session of this client
// replaced this one; then the other sessions stop too. It returns after
// every session has ended. A Client runs once.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("client: Run called twice")
	}
	c.running = true
	c.mu.Unlock()
	c.logStart()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		fatalErr error
	)
	for i := range c.cfg.Connections {
		wg.Go(func() {
			if err := c.keep(ctx, i); err != nil {
				once.Do(func() { fatalErr = err })
				cancel()
			}
		})
	}
	wg.Wait()
	if fatalErr != nil {
		return fatalErr
	}
	c.log.Info("client stopped")
	return nil
}

// keep runs connection i (of Config.Connections) until ctx ends or an
// error that retrying cannot help. Connections after the first wait until
// a session has been welcomed, so that they claim the ports the server
// picked for any-port services instead of racing for others.
func (c *Client) keep(ctx context.Context, i int) error {
	if i > 0 {
		select {
		case <-c.firstUp:
		case <-ctx.Done():
			return nil
		}
	}
	b := backoff{min: minBackoff, max: maxBackoff}
	for {
		upFor, sticky, err := c.connect(ctx, i)
		err = tlsHint(err, c.cfg.TLS)
		if ctx.Err() != nil {
			return nil
		}
		c.setStatus(func(s *Status) { s.LastError = err })
		c.recordEnd(upFor, err)
		if sticky && c.dropSticky(err) {
			continue // ask again for any free port, at once
		}
		if fatal(err) {
			c.log.Error("giving up", "err", err)
			return err
		}
		var wait time.Duration
		if upFor >= stableAfter {
			// The loss of a session that was stable is met with a new one
			// at once: the transport reported it (a reset, a server that
			// hung up) or the heartbeats did, and public connections wait
			// on the server meanwhile. Failing attempts back off from here.
			b.reset()
		} else {
			wait = b.next()
		}
		c.log.Warn("not connected; retrying", "err", err, "in", wait.Round(time.Millisecond).String())
		if wait == 0 {
			continue
		}
		t := c.edges.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

func (c *Client) logStart() {
	switch {
	case c.cfg.TLS.Disabled:
		c.log.Warn("TLS is off (tls = false): the session is not encrypted and the server is not authenticated; use only on a trusted network")
	case c.cfg.TLS.InsecureSkipVerify:
		c.log.Warn("insecure_skip_verify is set: the server's certificate is not checked, so anyone on the path can impersonate it; pin its fingerprint instead")
	}
}

// connect runs one session of connection i from dial to its end. upFor is
// how long it was authenticated, 0 if it never got that far; sticky says
// whether it asked for remembered ports.
func (c *Client) connect(ctx context.Context, i int) (upFor time.Duration, sticky bool, err error) {
	// One deadline for dial, TLS and auth together, as handshake_timeout says.
	deadline := time.Now().Add(c.cfg.HandshakeTimeout)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	conn, err := c.transport.Dial(dctx, c.cfg.Server)
	cancel()
	if err != nil {
		return 0, false, fmt.Errorf("connecting to %s over %s: %w", c.cfg.Server, c.transport, err)
	}
	if time.Until(deadline) <= 0 {
		conn.Close()
		return 0, false, fmt.Errorf("connecting to %s over %s: handshake_timeout %v passed", c.cfg.Server, c.transport, c.cfg.HandshakeTimeout)
	}
	claimed := c.table.Load()
	instance, group := c.instance, ""
	if c.cfg.Connections > 1 {
		instance, group = c.instance+"/"+strconv.Itoa(i), c.instance
	}
	claims, sticky := c.withSticky(claimed)
	sess, err := session.ConnectBy(deadline, conn, c.sessCfg, c.log, c.token, instance, group, claims)
	if err != nil {
		return 0, sticky, err
	}
	info := sess.Info()
	if group != "" && !info.Groups {
		sess.Close(session.CodeClosed, "this server does not support parallel sessions")
		return 0, sticky, errNoGroups
	}
	up := c.edges.clock.Now()
	c.remember(info.Services)
	c.firstUpOnce.Do(func() { close(c.firstUp) })
	tab := c.table.Load()
	log := c.log.With("client", info.Client, "session", info.ID, "server", c.cfg.Server, "transport", c.transport.String())
	if c.cfg.Connections > 1 {
		log = log.With("connection", i)
	}
	c.mu.Lock()
	c.sess[i] = sess
	first := len(c.liveLocked()) == 1
	c.mu.Unlock()
	c.setStatus(func(s *Status) {
		s.Session, s.LastError = info, nil
		s.Sessions++
	})
	if first { // the status API counts bytes since the client connected
		for _, s := range tab.stats {
			s.ResetBytes()
		}
	}
	c.metrics.SessionUp(info.Client, c.transport.String())
	if c.metrics != nil {
		go c.watchRTT(sess)
	}
	for _, svc := range info.Services {
		log.Info("serving", "service", svc.Name, "target", tab.services[svc.Name].Target, "remote_port", svc.RemotePort, "domains", svc.Domains)
	}
	log.Info("session up")
	c.rec.Event(admin.Event{Kind: admin.EventSessionUp, Client: info.Client, Remote: c.cfg.Server, Reason: c.transport.String() + ", session " + info.ID})
	var open streams
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
			c.drain(log, sess, &open)
		case <-sess.Done():
		}
	})
	// A reload while the handshake ran found no session to update.
	wg.Go(func() { c.syncClaims(log, sess, claimed) })
	err = sess.Run(context.Background(), session.Handlers{Stream: func(st *session.Stream) {
		open.add(1)
		defer open.add(-1)
		c.serveStream(log, sess, st)
	}})
	wg.Wait()
	c.reloadMu.Lock()
	delete(c.claimed, sess)
	c.reloadMu.Unlock()
	c.mu.Lock()
	c.sess[i] = nil
	c.mu.Unlock()
	c.setStatus(func(s *Status) {
		if up := c.liveLocked(); len(up) > 0 {
			s.Session = up[0].Info() // one still up, not the one gone
		}
	})
	c.metrics.SessionDown(info.Client, c.transport.String())
	upFor = c.edges.clock.Now().Sub(up)
	if ctx.Err() == nil {
		log.Warn("session down", "reason", err, "after", upFor.Round(time.Millisecond).String())
	}
	return upFor, sticky, err
}

// liveLocked returns the sessions up now, by connection.
func (c *Client) liveLocked() []*session.Session {
	var up []*session.Session
	for _, s := range c.sess {
		if s != nil {
			up = append(up, s)
		}
	}
	return up
}

// drain stops the session gently: the server routes no new connection to
// this client, the open ones finish (for up to ShutdownTimeout, telling the
// server included), then the session ends with a goodbye, which resets
// the connections still open. So a stopping client is gone within
// ShutdownTimeout plus the Goodbye wait (2 s), whatever its peers do.
func (c *Client) drain(log *slog.Logger, sess *session.Session, open *streams) {
	start := c.edges.clock.Now()
	if err := sess.Drain(time.Now().Add(c.cfg.ShutdownTimeout)); err == nil {
		if n := open.count(); n > 0 {
			log.Info("shutting down: letting open connections finish", "open", n, "timeout", c.cfg.ShutdownTimeout.String())
		}
		left := c.cfg.ShutdownTimeout - c.edges.clock.Now().Sub(start)
		if !open.waitIdle(c.edges.clock, left, sess.Done()) {
			log.Warn("shutdown timeout: closing the connections still open", "open", open.count())
		}
	}
	sess.Close(session.CodeShuttingDown, "shutting down")
}

// streams counts a session's open streams and tells when there are none.
type streams struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while nobody waits
}

func (s *streams) add(d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n += d
	if s.n == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

func (s *streams) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// waitIdle waits until no stream is open, timeout passes on clk or stop
// closes; it reports whether none is open.
func (s *streams) waitIdle(clk clock.Clock, timeout time.Duration, stop <-chan struct{}) bool {
	s.mu.Lock()
	if s.n == 0 {
		s.mu.Unlock()
		return true
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	s.mu.Unlock()
	t := clk.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-stop:
	case <-t.C():
	}
	return s.count() == 0
}

// withSticky returns the claims with remembered ports filled in, and
// whether there were any.
func (c *Client) withSticky(tab *serviceTable) ([]session.Service, bool) {
	c.stickyMu.Lock()
	defer c.stickyMu.Unlock()
	out := make([]session.Service, len(tab.claims))
	used := false
	for i, cl := range tab.claims {
		if p, ok := c.sticky[cl.Name]; ok && cl.RemotePort == 0 && len(cl.Domains) == 0 {
			cl.RemotePort = p
			used = true
		}
		out[i] = cl
	}
	return out, used
}

// dropSticky forgets the remembered ports when the server refuses a
// request that asked for them (the port is taken by now, or no longer
// allowed), and reports whether err is such a refusal: then any free port
// will do. Parallel sessions may each be refused the same port; the first
// clears it.
func (c *Client) dropSticky(err error) bool {
	var rej *session.RejectError
	if !errors.As(err, &rej) || (rej.Code != session.CodePortInUse && rej.Code != session.CodePortNotAllowed) {
		return false
	}
	c.stickyMu.Lock()
	defer c.stickyMu.Unlock()
	if len(c.sticky) > 0 {
		c.log.Warn("a port the server picked before is refused now; asking for any free port", "reason", rej.Reason)
		clear(c.sticky)
	}
	return true
}

// serveStream dials the target of the stream's service and relays.
func (c *Client) serveStream(log *slog.Logger, sess *session.Session, st *session.Stream) {
	h := st.Header()
	log = log.With("service", h.Service, "peer", h.Peer)
	tab := c.table.Load()
	svc, ok := tab.services[h.Service]
	if !ok {
		log.Warn("server opened a stream for an unknown service")
		st.Abort(fmt.Sprintf("client has no service %q", h.Service))
		return
	}
	if udp := h.Kind == session.KindDatagram; udp != svc.IsUDP() {
		log.Warn("server opened a stream of the wrong kind for the service", "kind", h.Kind, "protocol", svc.Protocol)
		st.Abort(fmt.Sprintf("client's service %q is not of protocol %q", h.Service, map[bool]string{true: "udp", false: "tcp"}[udp]))
		return
	} else if udp {
		c.serveFlow(log, sess, st, svc, tab.stats[h.Service])
		return
	}
	start := c.edges.clock.Now()
	conn, err := c.dialTarget(sess.Context(), svc.Target, c.cfg.DialTimeout)
	if err != nil {
		log.Warn("target dial failed", "target", svc.Target, "err", err)
		c.rec.Event(admin.Event{Kind: admin.EventTargetFailed, Client: sess.Info().Client, Route: h.Service, Reason: err.Error()})
		st.Abort(fmt.Sprintf("client %s could not reach target %s: %v", sess.Info().Client, svc.Target, err))
		c.metrics.PublicConn(h.Service, metrics.OutcomeBackendDialFailed)
		return
	}
	// The PROXY header goes first: the relay, which forwards the public
	// side's bytes, starts only after it is written.
	if err := writeProxyHeader(svc, h, conn, c.cfg.DialTimeout); err != nil {
		conn.Close()
		log.Warn("PROXY header not written", "target", svc.Target, "err", err)
		st.Abort(fmt.Sprintf("client %s could not send the PROXY protocol header to target %s: %v", sess.Info().Client, svc.Target, err))
		c.metrics.PublicConn(h.Service, metrics.OutcomeBackendDialFailed)
		return
	}
	stats := tab.stats[h.Service]
	name := sess.Info().Client
	st.SetMeter(func(sent, received int64) { // received is from the public peer
		c.metrics.AddBytes(h.Service, received, sent)
		c.rec.AddBytes(name, h.Service, received, sent)
		stats.Add(received, sent)
	})
	stats.Opened()
	c.metrics.StreamUp(sess.Info().Client)
	res := session.Relay(conn, st)
	c.metrics.StreamDown(sess.Info().Client)
	if k := session.KillReason(res.Err); k != "" {
		c.metrics.RelayAborted(k)
	}
	c.metrics.PublicConn(h.Service, metrics.OutcomeOK)
	stats.Closed()
	level, reason := session.EndReason(res.Err, sess)
	if svc.AccessLog {
		level = max(level, slog.LevelInfo)
	}
	log.Log(context.Background(), level, "connection closed",
		"target", svc.Target, "bytes_from_public", res.Received, "bytes_to_public", res.Sent,
		"duration", c.edges.clock.Now().Sub(start).Round(time.Millisecond).String(), "reason", reason)
}

// errNoGroups: the server does not let parallel sessions serve together.
var errNoGroups = errors.New("the server does not support parallel sessions (connections above 1): upgrade the server, or set client.connections = 1")

// fatal reports whether retrying cannot fix err.
func fatal(err error) bool {
	var rej *session.RejectError
	if errors.As(err, &rej) {
		return !rej.Temporary()
	}
	var g *session.GoodbyeError
	if errors.As(err, &g) && g.Code == session.CodeReplaced {
		return true
	}
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	return errors.Is(err, transport.ErrFingerprintMismatch) || errors.Is(err, session.ErrVersion) || errors.Is(err, errNoGroups) || errors.Is(err, session.ErrNoUDP) ||
		errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr)
}
