package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/internal/domain"
	"github.com/warren-tunnel/warren/session"
)

// clientSession is one authenticated client session and what it holds.
type clientSession struct {
	client    *clientEntry
	id        string
	instance  string
	transport string
	sess      *session.Session // set once Welcome is sent
	log       *slog.Logger
	services  []*service
	wg        sync.WaitGroup // public accept loops and their relays
}

// service is a granted claim: a public listener and/or domains.
type service struct {
	name    string
	port    int
	domains []string
	l       net.Listener // nil for a domain-only service
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
		return
	}
	idx := p.Request.Match(s.tokens)
	if idx < 0 {
		log.Warn("auth failed: unknown token", "code", session.CodeUnknownToken)
		p.Reject(session.Rejectf(session.CodeUnknownToken, "unknown token"))
		return
	}
	cs := &clientSession{client: s.clients[idx], id: session.NewID(), instance: p.Request.Instance, transport: transportName}
	log = log.With("client", cs.client.name, "session", cs.id)
	cs.log = log
	granted, victims, rej := s.claim(cs, p.Request.Services)
	for _, v := range victims {
		log.Warn("new session replaces an older one of the same client", "old_session", v.id, "old_remote", v.sess.Info().Remote.String())
		go v.sess.Close(session.CodeReplaced, fmt.Sprintf("replaced by a new session of client %q from %s", cs.client.name, remote))
	}
	if rej != nil {
		log.Warn("session rejected", "code", rej.Code, "reason", rej.Reason)
		p.Reject(rej)
		return
	}
	sess, err := p.Welcome(session.Welcome{Client: cs.client.name, Session: cs.id, Services: granted})
	if err != nil {
		s.release(cs)
		log.Warn("handshake failed after auth", "err", err)
		return
	}
	cs.sess = sess
	s.mu.Lock()
	delete(s.pending, c) // authenticated: shutdown says goodbye instead
	s.sessions[cs] = struct{}{}
	s.notifyLocked()
	closing := s.closing
	s.mu.Unlock()
	if closing { // shutdown began while we were answering
		sess.Close(session.CodeShuttingDown, "shutting down")
	}
	log.Info("session up", "services", describe(granted))
	for _, svc := range cs.services {
		if svc.l != nil {
			cs.wg.Go(func() { cs.servePublic(svc) })
		}
	}
	err = sess.Run(context.Background(), nil)
	s.release(cs)
	cs.wg.Wait()
	log.Info("session down", "reason", err, "after", time.Since(sess.Info().Started).Round(time.Millisecond).String())
}

// addPending records a connection in its handshake, so shutdown can drop
// it; false once shutdown has closed the listeners.
func (s *Server) addPending(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.pending[c] = struct{}{}
	return true
}

func (s *Server) removePending(c net.Conn) {
	s.mu.Lock()
	delete(s.pending, c)
	s.mu.Unlock()
}

// claim checks the services a client asks for against what its token
// allows and what other sessions hold, binds their public ports, and
// registers them for cs. Sessions of the same client that are replaced
// (same instance, or holding a claimed port or domain) come back as victims,
// already unregistered; the caller closes them.
func (s *Server) claim(cs *clientSession, reqs []session.Service) (granted []session.Service, victims []*clientSession, rej *session.RejectError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, nil, session.Rejectf(session.CodeShuttingDown, "server is shutting down")
	}
	svcs, rej := s.checkServices(cs.client, reqs)
	if rej != nil {
		return nil, nil, rej
	}

	isVictim := make(map[*clientSession]bool)
	for other := range s.sessions {
		if other.client == cs.client && other.instance == cs.instance {
			isVictim[other] = true // our own stale session
		}
	}
	holderOK := func(what string, h *clientSession) *session.RejectError {
		_, established := s.sessions[h]
		if h.client == cs.client && established {
			isVictim[h] = true
			return nil
		}
		return session.Rejectf(codeInUse(what), "%s is held by client %q", what, h.client.name)
	}
	for _, svc := range svcs {
		if h := s.ports[svc.port]; svc.port > 0 && h != nil {
			if rej := holderOK(fmt.Sprintf("port %d (service %q)", svc.port, svc.name), h); rej != nil {
				return nil, nil, rej
			}
		}
		for _, d := range svc.domains {
			if h := s.domains[d]; h != nil {
				if rej := holderOK(fmt.Sprintf("domain %s (service %q)", d, svc.name), h); rej != nil {
					return nil, nil, rej
				}
			}
		}
	}

	// Bind what is free first, so that a failure leaves the victims alone:
	// named ports, then any-port services, which must not take a port
	// another service of the request names. Then free the victims' ports
	// and bind those; a failure there still returns the victims, which no
	// longer hold anything and must be closed.
	named := make(map[int]bool)
	for _, svc := range svcs {
		if svc.port > 0 {
			named[svc.port] = true
		}
	}
	for _, svc := range svcs {
		if svc.port > 0 && s.ports[svc.port] == nil {
			if rej := s.bind(svc); rej != nil {
				closeListeners(svcs)
				return nil, nil, rej
			}
		}
	}
	for _, svc := range svcs {
		if svc.port == 0 && len(svc.domains) == 0 {
			if rej := s.bindAny(cs.client, svc, named); rej != nil {
				closeListeners(svcs)
				return nil, nil, rej
			}
		}
	}
	for v := range isVictim {
		s.unregisterLocked(v)
		victims = append(victims, v)
	}
	for _, svc := range svcs {
		if svc.l == nil && svc.port > 0 {
			if rej := s.bind(svc); rej != nil {
				closeListeners(svcs)
				return nil, victims, rej
			}
		}
	}

	for _, svc := range svcs {
		if svc.port > 0 {
			s.ports[svc.port] = cs
		}
		for _, d := range svc.domains {
			s.domains[d] = cs
		}
		granted = append(granted, session.Service{Name: svc.name, RemotePort: svc.port, Domains: svc.domains})
	}
	cs.services = svcs
	return granted, victims, nil
}

func codeInUse(what string) string {
	if strings.HasPrefix(what, "domain") {
		return session.CodeDomainInUse
	}
	return session.CodePortInUse
}

// checkServices validates a client's requested services against its token.
func (s *Server) checkServices(c *clientEntry, reqs []session.Service) ([]*service, *session.RejectError) {
	if len(reqs) == 0 {
		return nil, session.Rejectf(session.CodeBadRequest, "no services claimed")
	}
	names := make(map[string]bool)
	ports := make(map[int]bool)
	domains := make(map[string]bool)
	var svcs []*service
	for _, r := range reqs {
		if !namePattern.MatchString(r.Name) {
			return nil, session.Rejectf(session.CodeBadRequest, "service name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", r.Name)
		}
		if names[r.Name] {
			return nil, session.Rejectf(session.CodeBadRequest, "service %q is claimed twice", r.Name)
		}
		names[r.Name] = true
		svc := &service{name: r.Name, port: r.RemotePort}
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
			if domains[n] {
				return nil, session.Rejectf(session.CodeBadRequest, "domain %s is claimed twice", n)
			}
			domains[n] = true
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

// bind opens svc's public listener on its port. Called with s.mu held.
func (s *Server) bind(svc *service) *session.RejectError {
	l, err := net.Listen("tcp", net.JoinHostPort(s.cfg.PublicAddress, strconv.Itoa(svc.port)))
	if err != nil {
		return session.Rejectf(session.CodePortInUse, "port in use: service %q remote_port %d: %v", svc.name, svc.port, err)
	}
	svc.l = l
	return nil
}

// bindAny opens svc's public listener on a free port the client may claim,
// other than those in skip. Called with s.mu held.
func (s *Server) bindAny(c *clientEntry, svc *service, skip map[int]bool) *session.RejectError {
	free := func(p int) bool { return portAllowed(c.ports, p) && s.ports[p] == nil && !skip[p] }
	// First let the kernel pick (fast when the ranges cover its ephemeral
	// range), then probe the ranges in order.
	for range 3 {
		l, err := net.Listen("tcp", net.JoinHostPort(s.cfg.PublicAddress, "0"))
		if err != nil {
			break
		}
		if p := l.Addr().(*net.TCPAddr).Port; free(p) {
			svc.l, svc.port = l, p
			return nil
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
			l, err := net.Listen("tcp", net.JoinHostPort(s.cfg.PublicAddress, strconv.Itoa(p)))
			if err == nil {
				svc.l, svc.port = l, p
				return nil
			}
		}
	}
	return session.Rejectf(session.CodePortInUse, "port in use: service %q asks for any free port, and none of client %q's ports (%s) is free", svc.name, c.name, portList(c.ports))
}

func closeListeners(svcs []*service) {
	for _, svc := range svcs {
		if svc.l != nil {
			svc.l.Close()
		}
	}
}

// release unregisters cs and closes its public listeners; claims it no
// longer holds (a newer session took them) are left alone.
func (s *Server) release(cs *clientSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unregisterLocked(cs)
}

func (s *Server) unregisterLocked(cs *clientSession) {
	if _, ok := s.sessions[cs]; ok {
		delete(s.sessions, cs)
		s.notifyLocked()
	}
	for _, svc := range cs.services {
		if svc.port > 0 && s.ports[svc.port] == cs {
			delete(s.ports, svc.port)
		}
		for _, d := range svc.domains {
			if s.domains[d] == cs {
				delete(s.domains, d)
			}
		}
	}
	closeListeners(cs.services)
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
