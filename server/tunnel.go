package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/domain"
	"github.com/warren-tunnel/warren/session"
)

// clientSession is one authenticated client session and the routes it
// serves. Its fields but sess are set before it is registered; sess is set,
// under Server.mu, once Welcome is sent: until then routes hold it as a
// member that pick skips.
type clientSession struct {
	client    *clientEntry
	id        string
	instance  string
	group     string // the client process's parallel sessions share it; "" for none
	transport string
	remote    string
	sess      *session.Session
	log       *slog.Logger
	routes    []*route // guarded by Server.mu
	draining  bool     // the client said Drain; guarded by Server.mu
	released  bool     // a reload closes it: its routes are not held; guarded by Server.mu
	granted   []session.Service
	stats     map[string]*serviceStats // by service name; fixed once sess is set
}

// Entry points of domain routes.
const (
	EntryHTTP  = "http"
	EntryHTTPS = "https"
)

// service is a claim being checked: a public port (0: any free port the
// client may claim) and/or domains on an entry point.
type service struct {
	name    string
	port    int
	domains []string
	entry   string
	shared  bool
}

// serveTunnel runs one client connection from handshake to the end of its
// session.
func (s *Server) serveTunnel(c net.Conn, transportName string) {
	remote := c.RemoteAddr().String()
	log := s.log.With("remote", remote, "transport", transportName)
	if !s.addPending(c) {
		c.Close()
		return
	}
	defer s.removePending(c)
	p, err := session.Accept(c, s.sessCfg, log)
	if err != nil {
		log.Debug("handshake failed", "err", err)
		s.metrics.HandshakeFailed(handshakeReason(err))
		s.recordFailed(remote, "", err)
		return
	}
	s.mu.Lock()
	clients, tokens := s.clients, s.tokens // Reload replaces them
	s.mu.Unlock()
	idx := p.Request.Match(tokens)
	if idx < 0 {
		log.Warn("auth failed: unknown token", "code", session.CodeUnknownToken)
		rej := session.Rejectf(session.CodeUnknownToken, "unknown token")
		p.Reject(rej)
		s.metrics.HandshakeFailed(session.CodeUnknownToken)
		s.recordFailed(remote, "", rej)
		return
	}
	cs := &clientSession{client: clients[idx], id: session.NewID(), instance: p.Request.Instance, group: p.Request.Group, transport: transportName, remote: remote}
	log = log.With("client", cs.client.name, "session", cs.id)
	cs.log = log
	granted, victims, rej := s.claim(cs, p.Request.Services)
	for _, v := range victims {
		log.Warn("new session replaces an older one of the same client", "old_session", v.id, "old_remote", v.remote)
		go v.sess.Close(session.CodeReplaced, fmt.Sprintf("replaced by a new session of client %q from %s", cs.client.name, remote))
	}
	if rej != nil {
		log.Warn("session rejected", "code", rej.Code, "reason", rej.Reason)
		p.Reject(rej)
		s.metrics.HandshakeFailed(rej.Code)
		s.recordFailed(remote, cs.client.name, rej)
		return
	}
	cs.granted = granted
	cs.stats = make(map[string]*serviceStats, len(granted))
	for _, g := range granted {
		cs.stats[g.Name] = new(serviceStats)
	}
	sess, err := p.Welcome(session.Welcome{Client: cs.client.name, Session: cs.id, Services: granted, Groups: true})
	if err != nil {
		s.mu.Lock()
		s.leaveLocked(cs, true) // routes it adopted from a hold go back on hold
		s.mu.Unlock()
		log.Warn("handshake failed after auth", "err", err)
		s.metrics.HandshakeFailed(handshakeReason(err))
		s.recordFailed(remote, cs.client.name, err)
		return
	}
	s.mu.Lock()
	if !slices.Contains(s.clients, cs.client) { // a reload revoked it meanwhile
		s.leaveLocked(cs, false)
		s.mu.Unlock()
		log.Warn("client removed or its token changed by a reload during the handshake; closing")
		sess.Close(session.CodeClosed, "client "+cs.client.name+" was removed from the server's configuration")
		return
	}
	cs.sess = sess
	s.removePendingLocked(c) // authenticated: shutdown says goodbye instead
	s.sessions[cs] = struct{}{}
	for _, r := range cs.routes {
		r.wakeLocked() // connections waiting for this client may go
	}
	s.notifyLocked()
	closing := s.closing
	s.mu.Unlock()
	if closing { // shutdown began while we were answering
		sess.Close(session.CodeShuttingDown, "shutting down")
	}
	log.Info("session up", "services", describe(granted))
	s.rec.Event(admin.Event{Kind: admin.EventSessionUp, Client: cs.client.name, Remote: remote, Reason: transportName + ", session " + cs.id + ": " + describe(granted)})
	s.metrics.SessionUp(cs.client.name, transportName)
	if s.metrics != nil {
		go s.watchRTT(cs)
	}

	err = sess.Run(context.Background(), session.Handlers{
		Drain: func() {
			s.mu.Lock()
			cs.draining = true
			s.leaveLocked(cs, false)
			s.mu.Unlock()
			log.Info("client draining: no new connections for it")
		},
		Update: func(reqs []session.Service) ([]session.Service, *session.RejectError) {
			granted, _, rej := s.claim(cs, reqs)
			if rej != nil {
				log.Warn("services update rejected; the old claims stay", "code", rej.Code, "reason", rej.Reason)
				s.rec.Event(admin.Event{Kind: admin.EventUpdateRejected, Client: cs.client.name, Remote: remote, Code: rej.Code, Reason: rej.Reason})
				return nil, rej
			}
			log.Info("services updated", "services", describe(granted))
			return granted, nil
		},
	})

	// A client that left on purpose (stopping) frees its routes; one that
	// dropped keeps them for the reconnect grace.
	var g *session.GoodbyeError
	dropped := !errors.As(err, &g) || g.Code != session.CodeShuttingDown
	s.mu.Lock()
	if _, ok := s.sessions[cs]; ok {
		delete(s.sessions, cs)
		s.notifyLocked()
	}
	// A client removed or given a new token by a reload has no claim to
	// return to.
	dropped = dropped && slices.Contains(s.clients, cs.client) && !cs.released
	held := dropped && len(cs.routes) > 0 && s.cfg.ReconnectGrace > 0 && !s.closing
	s.leaveLocked(cs, dropped)
	s.mu.Unlock()
	attrs := []any{"reason", err, "after", time.Since(sess.Info().Started).Round(time.Millisecond).String()}
	if held {
		attrs = append(attrs, "held_for", s.cfg.ReconnectGrace.String())
	}
	s.metrics.SessionDown(cs.client.name, transportName)
	log.Info("session down", attrs...)
	s.rec.Event(admin.Event{Kind: admin.EventSessionDown, Client: cs.client.name, Remote: remote, Reason: downReason(err, held, s.cfg.ReconnectGrace)})
}

// addPending admits a connection to its handshake, within the limits on
// handshakes per source IP and in all, and records it so shutdown can drop
// it. It reports false, and the caller closes the connection, over the
// per-IP limit or once shutdown has closed the listeners. At the limit in
// all it drops the oldest handshake instead: forged sources (spoofed UDP
// above all) could otherwise hold every slot for a handshake_timeout each
// and lock real clients out, while a real handshake finishes in a few
// round trips and so outlives max_handshakes newer arrivals.
func (s *Server) addPending(c net.Conn) bool {
	ip := sourceIP(c)
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return false
	}
	var evicted net.Conn
	limit := ""
	switch {
	case s.pendingIP[ip] >= s.cfg.Limits.MaxHandshakesPerIP:
		limit = "limits.max_handshakes_per_ip"
	case len(s.pending) >= s.cfg.Limits.MaxHandshakes:
		limit = "limits.max_handshakes"
		evicted = s.pendingOrder.Front().Value.(net.Conn)
		s.removePendingLocked(evicted)
	}
	if limit != "" {
		s.refused++
		if now := s.edges.clock.Now(); now.Sub(s.lastRefusedLog) >= time.Second {
			what := "closing new ones"
			if evicted != nil {
				what = "dropping the oldest"
			}
			s.log.Warn("too many connections in their handshake; "+what, "limit", limit, "source", ip, "dropped", s.refused)
			s.lastRefusedLog, s.refused = now, 0
		}
	}
	admit := limit == "" || evicted != nil
	if admit {
		s.pending[c] = s.pendingOrder.PushBack(c)
		s.pendingIP[ip]++
		s.notifyLocked()
	}
	s.mu.Unlock()
	if evicted != nil {
		evicted.Close()
	}
	return admit
}

// removePending forgets a connection once its handshake is over.
func (s *Server) removePending(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removePendingLocked(c)
}

func (s *Server) removePendingLocked(c net.Conn) {
	e, ok := s.pending[c]
	if !ok {
		return
	}
	s.pendingOrder.Remove(e)
	delete(s.pending, c)
	s.notifyLocked()
	ip := sourceIP(c)
	if s.pendingIP[ip]--; s.pendingIP[ip] <= 0 {
		delete(s.pendingIP, ip)
	}
}

// sourceIP is the IP address a connection comes from.
func sourceIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// claim checks the services a client asks for against what its token
// allows and what other sessions hold, binds new public ports, and makes cs
// a member of the routes (one that pick skips until cs.sess is set).
// Older sessions of the same client that are replaced (same instance, or
// holding a non-shared route it claims) come back as victims, already
// removed; the caller closes them.
//
// For a session already up (its client's Update after a config reload),
// reqs is the whole new list: routes it keeps stay as they are (an
// any-port service keeps its port), new ones are joined or bound, and
// routes it no longer claims are left and, when empty, released at once.
// An update replaces no other session.
func (s *Server) claim(cs *clientSession, reqs []session.Service) (granted []session.Service, victims []*clientSession, rej *session.RejectError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || cs.draining {
		return nil, nil, session.Rejectf(session.CodeShuttingDown, "server is shutting down")
	}
	if !slices.Contains(s.clients, cs.client) {
		return nil, nil, session.Rejectf(session.CodeUnknownToken, "unknown token") // removed by a reload meanwhile
	}
	svcs, rej := s.checkServices(cs.client, reqs)
	if rej != nil {
		return nil, nil, rej
	}

	updating := cs.sess != nil
	mine := make(map[*route]bool, len(cs.routes))
	for _, r := range cs.routes {
		mine[r] = true
	}
	isVictim := make(map[*clientSession]bool)
	inGroup := 0
	for other := range s.sessions {
		if !updating && other.client == cs.client && other.instance == cs.instance {
			isVictim[other] = true // our own stale session
		} else if cs.group != "" && other.client == cs.client && other.group == cs.group {
			inGroup++
		}
	}
	if !updating && inGroup >= session.MaxConnections {
		return nil, nil, session.Rejectf(session.CodeBadRequest, "client %q already has %d parallel sessions (connections is at most %d)", cs.client.name, inGroup, session.MaxConnections)
	}
	// Each claim, against the route it names if there is one.
	type want struct {
		svc         *service
		key         string
		port        int    // a port route, or
		entry, name string // a domain route
		r           *route
	}
	var wants []*want
	for _, svc := range svcs {
		if svc.port > 0 {
			wants = append(wants, &want{svc: svc, key: portKey(svc.port), port: svc.port})
		}
		for _, d := range svc.domains {
			wants = append(wants, &want{svc: svc, key: domainKey(svc.entry, d), entry: svc.entry, name: d})
		}
	}
	for _, w := range wants {
		r := s.routes[w.key]
		if r == nil {
			continue
		}
		w.r = r
		if mine[r] {
			continue
		}
		if rej := s.mayJoinLocked(cs, w.svc, r, isVictim); rej != nil {
			return nil, nil, rej
		}
	}
	if updating && len(isVictim) > 0 {
		return nil, nil, session.Rejectf(session.CodePortInUse, "a claim of the update is served by another session of client %q", cs.client.name)
	}

	// New port routes: named ports first, then any-port services, which
	// must not take a port another service of the request names. Nothing
	// is changed until all are bound.
	var fresh []*route
	fail := func(rej *session.RejectError) ([]session.Service, []*clientSession, *session.RejectError) {
		for _, r := range fresh {
			if r.l != nil {
				r.l.Close()
			}
		}
		return nil, nil, rej
	}
	named := make(map[int]bool)
	for _, svc := range svcs {
		if svc.port > 0 {
			named[svc.port] = true
		}
	}
	for _, w := range wants {
		if w.r != nil {
			continue
		}
		w.r = newRoute(w.key, w.svc.shared, cs.client)
		w.r.service = w.svc.name
		w.r.port, w.r.entry, w.r.name = w.port, w.entry, w.name
		if w.port > 0 {
			l, rej := s.bind(w.svc)
			if rej != nil {
				return fail(rej)
			}
			w.r.l = l
		}
		fresh = append(fresh, w.r)
	}
	for _, svc := range svcs {
		if svc.port == 0 && len(svc.domains) == 0 {
			if r := s.anyPortRouteLocked(cs, svc.name); r != nil && !named[r.port] {
				svc.port = r.port // kept across the update, or the group's
				wants = append(wants, &want{svc: svc, key: r.key, r: r})
				continue
			}
			l, rej := s.bindAny(cs.client, svc, named)
			if rej != nil {
				return fail(rej)
			}
			r := newRoute(portKey(svc.port), svc.shared, cs.client)
			r.port, r.l, r.service = svc.port, l, svc.name
			fresh = append(fresh, r)
			wants = append(wants, &want{svc: svc, key: r.key, r: r})
		}
	}

	// Apply: join first, so that routes the victims leave stay non-empty.
	for _, r := range fresh {
		s.routes[r.key] = r
		if r.l != nil {
			s.acceptWG.Go(func() { s.servePort(r) })
		}
	}
	if len(fresh) > 0 {
		s.notifyLocked()
	}
	kept := make(map[*route]bool)
	var routes []*route
	for _, w := range wants {
		if kept[w.r] {
			continue
		}
		kept[w.r] = true
		routes = append(routes, w.r)
		if mine[w.r] {
			for i, m := range w.r.members {
				if m.cs == cs && m.service != w.svc.name {
					// A new member, not a changed one: connections being
					// served read the old without a lock.
					w.r.members[i] = &member{cs: cs, service: w.svc.name}
				}
			}
			continue
		}
		s.addMemberLocked(w.r, &member{cs: cs, service: w.svc.name})
	}
	for _, r := range cs.routes {
		if !kept[r] {
			s.leaveRouteLocked(cs, r)
		}
	}
	cs.routes = routes
	for v := range isVictim {
		if _, ok := s.sessions[v]; ok {
			delete(s.sessions, v)
			s.notifyLocked()
		}
		s.leaveLocked(v, false)
		victims = append(victims, v)
	}
	for _, svc := range svcs {
		granted = append(granted, session.Service{Name: svc.name, RemotePort: svc.port, Domains: svc.domains, Entry: svc.entry, Shared: svc.shared})
	}
	if updating {
		cs.granted = granted // (byte counts of services new to the session start with its next one)
	}
	return granted, victims, nil
}

// anyPortRouteLocked is the port route that cs, or another session of its
// group, serves as the any-port service name: an update keeps the port,
// and parallel sessions share it even when they claim it at once.
func (s *Server) anyPortRouteLocked(cs *clientSession, name string) *route {
	for _, r := range s.routes {
		if r.port == 0 || r.l == nil {
			continue
		}
		for _, m := range r.members {
			sameGroup := cs.group != "" && m.cs.client == cs.client && m.cs.group == cs.group
			if (m.cs == cs || sameGroup) && m.service == name {
				return r
			}
		}
	}
	return nil
}

// mayJoinLocked decides whether cs may serve route r as svc: join a shared
// route, join the sessions of its own group (connections = N), adopt its
// own client's route that is held for it or served by older sessions
// (which become victims), or not.
func (s *Server) mayJoinLocked(cs *clientSession, svc *service, r *route, isVictim map[*clientSession]bool) *session.RejectError {
	what := fmt.Sprintf("%s (service %q)", describeRoute(r), svc.name)
	code := session.CodePortInUse
	if r.port == 0 {
		code = session.CodeDomainInUse
	}
	switch {
	case r.shared && svc.shared:
		return nil
	case r.shared:
		return session.Rejectf(code, "%s is shared by client(s) %s; set shared = true to serve it too", what, holders(r))
	case svc.shared:
		return session.Rejectf(code, "%s is held by client %q and not shared: shared = true needs every service on it to say so", what, r.client.name)
	case r.client != cs.client:
		if len(r.members) == 0 {
			return session.Rejectf(code, "%s is held by client %q for its reconnect grace", what, r.client.name)
		}
		return session.Rejectf(code, "%s is held by client %q", what, r.client.name)
	}
	for _, m := range r.members {
		if cs.group != "" && m.cs.group == cs.group {
			continue // a parallel session of the same process: serve together
		}
		if m.cs.sess == nil { // still in its handshake
			return session.Rejectf(code, "%s is being claimed by another session of client %q", what, r.client.name)
		}
		isVictim[m.cs] = true
	}
	return nil
}

// checkServices validates a client's requested services against its token.
func (s *Server) checkServices(c *clientEntry, reqs []session.Service) ([]*service, *session.RejectError) {
	if len(reqs) == 0 {
		return nil, session.Rejectf(session.CodeBadRequest, "no services claimed")
	}
	if len(reqs) > s.cfg.Limits.MaxServices {
		return nil, session.Rejectf(session.CodeBadRequest, "%d services claimed; the server allows %d per client (limits.max_services)", len(reqs), s.cfg.Limits.MaxServices)
	}
	names := make(map[string]bool)
	ports := make(map[int]bool)
	domains := make(map[string]bool) // entry:name
	var svcs []*service
	for _, r := range reqs {
		if !namePattern.MatchString(r.Name) {
			return nil, session.Rejectf(session.CodeBadRequest, "service name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", r.Name)
		}
		if names[r.Name] {
			return nil, session.Rejectf(session.CodeBadRequest, "service %q is claimed twice", r.Name)
		}
		names[r.Name] = true
		svc := &service{name: r.Name, port: r.RemotePort, shared: r.Shared, entry: r.Entry}
		switch {
		case len(r.Domains) == 0 && r.Entry != "":
			return nil, session.Rejectf(session.CodeBadRequest, "service %q: entry %q without domains", r.Name, r.Entry)
		case len(r.Domains) > 0 && r.Entry == "":
			svc.entry = EntryHTTP
		case len(r.Domains) > 0 && r.Entry != EntryHTTP && r.Entry != EntryHTTPS:
			return nil, session.Rejectf(session.CodeBadRequest, "service %q: entry %q is not \"http\" or \"https\"", r.Name, r.Entry)
		}
		if r.RemotePort < 0 || r.RemotePort > 65535 {
			return nil, session.Rejectf(session.CodeBadRequest, "service %q: remote_port %d is out of range", r.Name, r.RemotePort)
		}
		if r.RemotePort > 0 {
			if ports[r.RemotePort] {
				return nil, session.Rejectf(session.CodeBadRequest, "remote_port %d is claimed by two services", r.RemotePort)
			}
			ports[r.RemotePort] = true
			if !portAllowed(c.ports, r.RemotePort) {
				return nil, session.Rejectf(session.CodePortNotAllowed, "port not allowed: service %q remote_port %d is not in client %q's ports (%s)", r.Name, r.RemotePort, c.name, portList(c.ports))
			}
		}
		for _, d := range r.Domains {
			n, err := domain.Normalize(d)
			if err != nil {
				return nil, session.Rejectf(session.CodeBadRequest, "service %q: %v", r.Name, err)
			}
			if domains[svc.entry+":"+n] {
				return nil, session.Rejectf(session.CodeBadRequest, "domain %s is claimed twice", n)
			}
			domains[svc.entry+":"+n] = true
			if !domainAllowed(c.domains, n) {
				return nil, session.Rejectf(session.CodeDomainNotAllowed, "domain not allowed: service %q domain %s is not in client %q's domains (%s)", r.Name, n, c.name, strings.Join(c.domains, ", "))
			}
			svc.domains = append(svc.domains, n)
		}
		if svc.port == 0 && len(svc.domains) == 0 && len(c.ports) == 0 {
			return nil, session.Rejectf(session.CodePortNotAllowed, "port not allowed: service %q asks for any free port, but client %q may claim no ports", r.Name, c.name)
		}
		svcs = append(svcs, svc)
	}
	return svcs, nil
}

func portAllowed(rs []PortRange, p int) bool {
	for _, r := range rs {
		if r.Contains(p) {
			return true
		}
	}
	return false
}

func domainAllowed(allowed []string, claim string) bool {
	for _, a := range allowed {
		if domain.Covers(a, claim) {
			return true
		}
	}
	return false
}

// maxPortProbes bounds the search for a free port among a client's ranges.
const maxPortProbes = 4096

// bind opens a public listener on svc's port. Called with s.mu held.
func (s *Server) bind(svc *service) (net.Listener, *session.RejectError) {
	l, err := s.edges.listen("tcp", net.JoinHostPort(s.cfg.PublicAddress, strconv.Itoa(svc.port)))
	if err != nil {
		return nil, session.Rejectf(session.CodePortInUse, "port in use: service %q remote_port %d: %v", svc.name, svc.port, err)
	}
	return l, nil
}

// bindAny opens a public listener on a free port the client may claim,
// other than those in skip, and sets svc.port to it. Called with s.mu held.
func (s *Server) bindAny(c *clientEntry, svc *service, skip map[int]bool) (net.Listener, *session.RejectError) {
	free := func(p int) bool { return portAllowed(c.ports, p) && s.routes[portKey(p)] == nil && !skip[p] }
	// First let the kernel pick (fast when the ranges cover its ephemeral
	// range), then probe the ranges in order.
	for range 3 {
		l, err := s.edges.listen("tcp", net.JoinHostPort(s.cfg.PublicAddress, "0"))
		if err != nil {
			break
		}
		if p := l.Addr().(*net.TCPAddr).Port; free(p) {
			svc.port = p
			return l, nil
		}
		l.Close()
	}
	probes := 0
	for _, r := range c.ports {
		for p := r.Lo; p <= r.Hi && probes < maxPortProbes; p++ {
			if !free(p) {
				continue
			}
			probes++
			l, err := s.edges.listen("tcp", net.JoinHostPort(s.cfg.PublicAddress, strconv.Itoa(p)))
			if err == nil {
				svc.port = p
				return l, nil
			}
		}
	}
	return nil, session.Rejectf(session.CodePortInUse, "port in use: service %q asks for any free port, and none of client %q's ports (%s) is free", svc.name, c.name, portList(c.ports))
}

// describe summarizes granted services for the log.
func describe(svcs []session.Service) string {
	parts := make([]string, 0, len(svcs))
	for _, s := range svcs {
		var claims []string
		if s.RemotePort > 0 {
			claims = append(claims, "port "+strconv.Itoa(s.RemotePort))
		}
		claims = append(claims, s.Domains...)
		parts = append(parts, s.Name+" ("+strings.Join(claims, ", ")+")")
	}
	return strings.Join(parts, ", ")
}
