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
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/clock"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/relay"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// Client is a warren client. Create it with New and run it with Run.
type Client struct {
	cfg      Config
	log      *slog.Logger
	edges    edges
	eps      []*endpoint // the server list (servers.go)
	pool     *pool       // the servers and their sessions (pool.go)
	sessCfg  session.Config
	policy   atomic.Pointer[dialPolicy] // [client.dial], swapped by Reload
	poll     *relay.Poller              // the process's, set by Run (nil: none)
	token    []byte
	instance string
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

	mu      sync.Mutex
	status  Status
	changed chan struct{}
	running bool
	// visitors are the [[client.visitors]] in force, in config order;
	// Reload replaces them.
	visitors []Visitor
	// visitorAddrs: where each visitor listens, once Run bound it.
	visitorAddrs map[string]net.Addr
	// visitorStats counts each visitor's connections and bytes, by name;
	// a visitor kept across a reload keeps its counters.
	visitorStats map[string]*admin.ServiceCounters

	// The visitors running (visitor.go); guarded by reloadMu.
	visitorRuns map[string]*visitorRun
	visitorCtx  context.Context // Run's; nil when no visitor may start
	visitorWG   sync.WaitGroup
}

// Status is the client's connection state.
type Status struct {
	// Connected is true while a session is up.
	Connected bool
	// Up counts the sessions up now, to every server.
	Up int
	// Servers are the servers the client knows, held or not, in the
	// order it learned of them.
	Servers []ServerState
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
	eps, _ := cfg.endpoints() // Validate checked them
	ts, err := transports(cfg, eps, e.transport, log)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:      cfg,
		log:      log,
		edges:    e,
		eps:      eps,
		pool:     newPool(cfg, eps),
		sessCfg:  cfg.session(),
		token:    []byte(cfg.Token),
		instance: session.NewID(),
		changed:  make(chan struct{}),
		sticky:   make(map[string]int),
		claimed:  make(map[*session.Session]*serviceTable),
		started:  e.clock.Now(),
	}
	for i, ep := range eps {
		ep.t = ts[i]
	}
	c.pool.changed = func() { c.setStatus(func(*Status) {}) }
	c.pool.forgot = func(label string) { c.metrics.ForgetServer(label) }
	policy, _ := parseDialPolicy(cfg.Dial.Allow) // Validate checked it
	c.policy.Store(&policy)
	c.table.Store(newServiceTable(cfg.Services, nil))
	c.setVisitors(cfg.Visitors)
	return c, nil
}

// transports returns the transport to each endpoint: t for all when it
// is set (WithTransport), else the kind of each with TLS verifying its
// host name (or server_name), also when it is dialled at an address, and
// logging to log.
func transports(cfg Config, eps []*endpoint, t transport.Transport, log *slog.Logger) ([]transport.Transport, error) {
	out := make([]transport.Transport, len(eps))
	if t != nil {
		for i := range out {
			out[i] = t
		}
		return out, nil
	}
	var base *tls.Config
	if !cfg.TLS.Disabled {
		var err error
		if base, err = cfg.TLS.Config(); err != nil {
			return nil, fmt.Errorf("client.%w", err)
		}
	}
	made := make(map[string]transport.Transport) // by kind and name
	for i, ep := range eps {
		var tlsCfg *tls.Config
		name := ""
		if base != nil {
			tlsCfg = base
			if base.ServerName == "" && !base.InsecureSkipVerify && ep.name() != "" {
				name = ep.name()
				tlsCfg = base.Clone()
				tlsCfg.ServerName = name
			}
		}
		key := ep.kind + " " + name
		if made[key] == nil {
			t, err := transport.New(ep.kind, transport.Config{KCP: cfg.KCP, TCP: cfg.TCP, TLS: tlsCfg, Log: log})
			if err != nil {
				return nil, fmt.Errorf("client.transport: %w", err)
			}
			made[key] = t
		}
		out[i] = made[key]
	}
	return out, nil
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

// setStatus changes the status with f and takes the servers' state.
func (c *Client) setStatus(f func(*Status)) {
	c.mu.Lock()
	f(&c.status)
	c.status.Up = len(c.pool.live())
	// Connected once a welcomed session's info is in the status too: the
	// pool counts a session up a moment before its info is set.
	c.status.Connected = c.status.Up > 0 && c.status.Session.ID != ""
	c.status.Servers = c.pool.states()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Run keeps Config.Connections sessions to every server it holds (each
// server of the list, or Config.MaxServers of them) until ctx is done,
// each reconnecting on its own with backoff after transient failures. It
// returns nil when ctx ends it, and an error when retrying cannot help:
// every server refused the client (unknown token, port not allowed, ...),
// failed certificate verification, or replaced this client's session by
// another's (pool.go, rule 5: with one server, the first such answer).
// Then the other sessions stop too. It returns after every session has
// ended. A Client runs once.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("client: Run called twice")
	}
	c.running = true
	c.mu.Unlock()
	c.logStart()
	// The process's one relay poller, for as long as relays may run.
	poll, release := relay.Acquire()
	defer release()
	c.poll = poll

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waitVisitors, err := c.runVisitors(ctx)
	if err != nil {
		return err
	}
	defer waitVisitors()
	defer cancel() // before the wait: the visitors stop with Run
	var (
		wg       sync.WaitGroup
		once     sync.Once
		fatalErr error
	)
	stop := func(err error) {
		once.Do(func() { fatalErr = err })
		cancel()
	}
	// Slots start from Run, the watchers and other slots, always while
	// one of them runs, so never after wg.Wait has begun to return.
	c.pool.start = func(r *remote, slot int, released, firstUp <-chan struct{}) {
		if slot == 0 {
			c.serverMetrics(r) // a series for every server held, at 0 until up
		}
		wg.Go(func() { c.keep(ctx, r, slot, released, firstUp, stop) })
	}
	for _, ep := range c.eps {
		switch {
		case !ep.all:
			c.pool.add(c.newRemote(ep, ""))
		case ep.ip.IsValid():
			c.pool.add(c.newRemote(ep, ep.addr()))
		default:
			wg.Go(func() { c.watch(ctx, ep) })
		}
	}
	c.pool.fill()
	wg.Go(func() {
		<-ctx.Done()
		c.pool.close()
	})
	wg.Wait()
	if fatalErr != nil {
		return fatalErr
	}
	c.log.Info("client stopped")
	return nil
}

// newRemote returns the server of ep at addr ("" to resolve ep at each
// dial).
func (c *Client) newRemote(ep *endpoint, addr string) *remote {
	label := ep.entry
	if addr != "" && !ep.ip.IsValid() { // one of the name's servers
		host, _, _ := net.SplitHostPort(addr)
		label += "@" + host
	}
	return &remote{ep: ep, addr: addr, label: label, t: ep.t}
}

// watch keeps the servers of ep, an entry whose name stands for a server
// at each of its addresses (resolve = "all"), in step with what the name
// resolves to: at start, and again whenever one of them reconnects. A
// name that does not resolve is tried again with backoff.
func (c *Client) watch(ctx context.Context, ep *endpoint) {
	b := backoff{min: minBackoff, max: maxBackoff}
	for {
		rctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
		addrs, err := ep.resolve(rctx, c.edges.resolver)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.pool.resolved(ep, err)
		if err == nil {
			b.reset()
			c.pool.sync(ep, addrs, func(addr string) *remote { return c.newRemote(ep, addr) })
			select {
			case <-ctx.Done():
				return
			case <-ep.again:
			}
			continue
		}
		wait := b.next()
		c.log.Warn("server name not resolved; retrying", "server", ep.entry, "err", err, "in", wait.Round(time.Millisecond).String())
		t := c.edges.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-ep.again:
			t.Stop()
		}
	}
}

// keep runs slot (of Config.Connections) of server r until ctx ends, r is
// released, or every server refused the client (then it calls stop).
// Slots after the first wait until a session of r has been welcomed, so
// that they claim the ports the server picked for any-port services
// instead of racing for others.
func (c *Client) keep(ctx context.Context, r *remote, slot int, released, firstUp <-chan struct{}, stop func(error)) {
	defer c.pool.slotDone(r)
	if slot > 0 {
		select {
		case <-firstUp:
		case <-released:
			return
		case <-ctx.Done():
			return
		}
	}
	b := backoff{min: minBackoff, max: maxBackoff}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			r.ep.resolveAgain()
		}
		upFor, welcomed, sticky, err := c.connect(ctx, r, slot)
		err = tlsHint(err, c.cfg.TLS)
		if ctx.Err() != nil || errors.Is(err, errReleased) {
			return
		}
		c.setStatus(func(s *Status) { s.LastError = err })
		c.recordEnd(r, upFor, err)
		if sticky && c.dropSticky(err) {
			c.pool.ended(r, slot, welcomed, nil)
			continue // ask again for any free port, at once
		}
		if stopErr := c.pool.ended(r, slot, welcomed, err); stopErr != nil {
			c.log.Error("giving up", "err", stopErr)
			stop(stopErr)
			return
		}
		select {
		case <-released:
			c.log.Info("server released; the client serves through others", "server", r.label, "err", err)
			return
		default:
		}
		wait := c.nextWait(r, slot, &b, upFor, err)
		if fatal(err) {
			c.log.Error("server refused the client; retrying it while the others serve", "server", r.label, "err", err, "in", wait.Round(time.Millisecond).String())
		} else {
			c.log.Warn("not connected; retrying", "server", r.label, "err", err, "in", wait.Round(time.Millisecond).String())
		}
		if wait == 0 {
			continue
		}
		t := c.edges.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-released:
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// nextWait is how long slot backoff b waits before reconnecting to r,
// after a session that was up for upFor or an attempt that failed, with
// err: when r's server drained, the time it said to come back after
// (jittered up to half as much again); 0 (at once) after the loss of a
// stable session; otherwise backoff, capped low toward a server that was
// serving (it is likely restarting), unless it refused the client or
// turned the attempt away (turnedAway: it is up, and busy).
func (c *Client) nextWait(r *remote, slot int, b *backoff, upFor time.Duration, err error) time.Duration {
	if back := c.pool.comeBack(r, slot); back > 0 {
		b.reset()
		return back + rand.N(back/2+1)
	}
	if upFor >= stableAfter {
		// The loss of a session that was stable is met with a new one
		// at once: the transport reported it (a reset, a server that
		// hung up) or the heartbeats did, and public connections wait
		// on the server meanwhile. Failing attempts back off from here.
		b.reset()
		return 0
	}
	b.max = maxBackoff
	if !fatal(err) && c.pool.served(r) && !(upFor == 0 && turnedAway(err)) {
		b.max = servedBackoff
	}
	return b.next()
}

// turnedAway reports whether err says the server answered an attempt and
// sent it away before a session came up: it hung up in the handshake
// (its admission at a limit closes connections it has no room for), or
// rejected it as over a limit. Such a server is up and busy,
// so the attempt backs off in full instead of within servedBackoff, which
// is for a server that does not answer (restarting). In a restart storm
// of 10 000 sessions, 2 s retries toward the busy server made about 5 000
// attempts a second against the 100-200 it completed: 150 000 refused in
// 120 s, twice the server's CPU spent by the clients, and the storm did
// not finish; the cold start, whose backoff grows, finished in 54 s
// (docs/benchmarks.md, sessions).
func turnedAway(err error) bool {
	var rej *session.RejectError
	if errors.As(err, &rej) {
		return rej.Code == session.CodeLimit
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// errReleased: the session came up after its server was released.
var errReleased = errors.New("server released")

func (c *Client) logStart() {
	switch {
	case c.cfg.TLS.Disabled:
		c.log.Warn("TLS is off (tls = false): the session is not encrypted and the server is not authenticated; use only on a trusted network")
	case c.cfg.TLS.InsecureSkipVerify:
		c.log.Warn("insecure_skip_verify is set: the server's certificate is not checked, so anyone on the path can impersonate it; pin its fingerprint instead")
	}
}

// connect runs one session of slot of server r from dial to its end.
// upFor is how long it was authenticated, 0 if it never got that far;
// welcomed says it got that far; sticky says whether it asked for
// remembered ports.
func (c *Client) connect(ctx context.Context, r *remote, slot int) (upFor time.Duration, welcomed, sticky bool, err error) {
	// One deadline for resolving, dial, TLS and auth together, as
	// handshake_timeout says.
	deadline := time.Now().Add(c.cfg.HandshakeTimeout)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	conn, err := c.dialServer(dctx, r)
	cancel()
	if err != nil {
		return 0, false, false, err
	}
	if time.Until(deadline) <= 0 {
		conn.Close()
		return 0, false, false, fmt.Errorf("connecting to %s over %s: handshake_timeout %v passed", r.label, r.t, c.cfg.HandshakeTimeout)
	}
	claimed := c.table.Load()
	instance, group := c.instance, ""
	if c.cfg.Connections > 1 {
		instance, group = c.instance+"/"+strconv.Itoa(slot), c.instance
	}
	claims, sticky := c.withSticky(claimed)
	var visitors []session.Visitor
	for _, v := range c.visitorList() {
		visitors = append(visitors, session.Visitor{Name: v.Name, Service: v.Service, Protocol: v.Protocol})
	}
	sess, err := session.ConnectWith(deadline, conn, c.sessCfg, c.log, c.token, instance, group, session.Claims{
		Services: claims, Private: claimed.private, Visitors: visitors, Dial: len(c.policy.Load().rules) > 0,
	})
	if err != nil {
		return 0, false, sticky, err
	}
	info := sess.Info()
	if group != "" && !info.Groups {
		sess.Close(session.CodeClosed, "this server does not support parallel sessions")
		return 0, false, sticky, errNoGroups
	}
	if !c.pool.up(r, slot, sess, conn) {
		sess.Close(session.CodeShuttingDown, "the client serves through other servers now")
		return 0, false, sticky, errReleased
	}
	up := c.edges.clock.Now()
	c.remember(info.Services)
	tab := c.table.Load()
	log := c.log.With("client", info.Client, "session", info.ID, "server", r.label, "transport", r.t.String())
	if c.cfg.Connections > 1 {
		log = log.With("connection", slot)
	}
	first := len(c.pool.live()) == 1
	c.setStatus(func(s *Status) {
		s.Session, s.LastError = info, nil
		s.Sessions++
	})
	if first { // the status API counts bytes since the client connected
		for _, s := range tab.stats {
			s.ResetBytes()
		}
	}
	c.metrics.SessionUp(info.Client, r.t.String())
	c.serverMetrics(r)
	if c.metrics != nil {
		go c.watchRTT(r, sess)
	}
	for _, svc := range info.Services {
		log.Info("serving", "service", svc.Name, "target", tab.services[svc.Name].Target, "remote_port", svc.RemotePort, "domains", svc.Domains)
	}
	for _, svc := range info.PrivateServices {
		log.Info("serving privately, to visitors", "service", svc.Name, "target", tab.services[svc.Name].Target)
	}
	for _, v := range info.Visitors {
		if v.Error != "" {
			log.Warn("visitor refused by the server; its connections are refused until the service is available to it", "visitor", v.Name, "service", v.Service, "reason", v.Error)
		}
	}
	log.Info("session up")
	c.rec.Event(admin.Event{Kind: admin.EventSessionUp, Client: info.Client, Remote: r.label, Reason: r.t.String() + ", session " + info.ID})
	var open streams
	var relays sync.WaitGroup // relays outlive their stream handlers (relay.Start)
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
	err = sess.Run(context.Background(), session.Handlers{
		Stream: func(st *session.Stream) {
			open.add(1)
			relays.Add(1)
			c.serveStream(log, sess, st, func() {
				open.add(-1)
				relays.Done()
			})
		},
		Draining: func(back time.Duration) {
			log.Info("server draining: no new connections through it; coming back after its goodbye", "return_after", back.String())
			c.pool.drains(r, slot, back)
		},
	})
	wg.Wait()
	relays.Wait() // the session's end killed their streams: they end now
	c.reloadMu.Lock()
	delete(c.claimed, sess)
	c.reloadMu.Unlock()
	c.pool.down(r, slot)
	c.setStatus(func(s *Status) {
		if up := c.pool.live(); len(up) > 0 {
			s.Session = up[0].Info() // one still up, not the one gone
		}
	})
	c.metrics.SessionDown(info.Client, r.t.String())
	c.serverMetrics(r)
	upFor = c.edges.clock.Now().Sub(up)
	if ctx.Err() == nil {
		log.Warn("session down", "reason", err, "after", upFor.Round(time.Millisecond).String())
	}
	return upFor, true, sticky, err
}

// dialServer connects to server r within ctx: to its address, or to the
// addresses its name resolves to now, in order, each with an equal share
// of the time left (at least minDialShare), the first to connect winning.
func (c *Client) dialServer(ctx context.Context, r *remote) (net.Conn, error) {
	addrs := []string{r.addr}
	if r.addr == "" {
		var err error
		if addrs, err = r.ep.resolve(ctx, c.edges.resolver); err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", r.label, err)
		}
	}
	var first error // as net.Dialer, report the first address's error
	for i, addr := range addrs {
		c.pool.dialling(r, addr)
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && i < len(addrs)-1 {
			share := time.Until(dl) / time.Duration(len(addrs)-i)
			actx, cancel = context.WithTimeout(ctx, max(share, minDialShare))
		}
		conn, err := r.t.Dial(actx, addr)
		cancel()
		if err == nil {
			return conn, nil
		}
		if first == nil {
			first = fmt.Errorf("connecting to %s over %s: %w", r.label, r.t, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
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

// serveStream dials the target of the stream's service and relays;
// release is called once the stream is done with, which for a relayed
// connection is after serveStream returned (relay.Start).
func (c *Client) serveStream(log *slog.Logger, sess *session.Session, st *session.Stream, release func()) {
	defer func() {
		if release != nil {
			release()
		}
	}()
	h := st.Header()
	if h.Dial() {
		c.serveDial(log, sess, st)
		return
	}
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
	c.metrics.StreamUp(name)
	// The relay holds no goroutine while the connection is idle; its end
	// is counted and logged by done.
	done := release
	release = nil
	relay.Start(conn, st, c.poll, func(res relay.Result) {
		defer done()
		c.metrics.StreamDown(name)
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
	})
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
	return errors.Is(err, transport.ErrFingerprintMismatch) || errors.Is(err, session.ErrVersion) || errors.Is(err, errNoGroups) || errors.Is(err, session.ErrNoUDP) || errors.Is(err, session.ErrNoPrivateUDP) ||
		errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr)
}
