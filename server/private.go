package server

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strings"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/name"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
)

// Private services and visitors. A private service is a route like a port
// or a domain (table.go's rules all hold: owners, holds, picking), keyed
// "private:client/service" ("private-udp:client/service" for a UDP one),
// with no listener: nothing public reaches it. Its connections come from
// visitors, streams that other clients open (Header.Service
// "client/service"), each checked as it comes against the visiting
// client's visit patterns, then relayed as a public connection would be
// (serveConn), waiting for the serving client in its reconnect grace. A
// UDP visitor's stream (Header.Kind "udp") is one flow, relayed to a
// datagram stream of the serving client's (visitudp.go).

func privateKey(full string, udp bool) string {
	if udp {
		return "private-udp:" + full
	}
	return "private:" + full
}

// protoName names a protocol in messages.
func protoName(udp bool) string {
	if udp {
		return session.ProtoUDP
	}
	return session.ProtoTCP
}

// grantPrivate returns the private claims as granted: a UDP one with the
// limits in force.
func (t *table) grantPrivate(private []session.Service) []session.Service {
	out := make([]session.Service, len(private))
	for i, p := range private {
		out[i] = session.Service{Name: p.Name}
		if p.IsUDP() {
			lim := t.cfg.udp.lower(p.UDP)
			out[i].Protocol, out[i].UDP = session.ProtoUDP, &lim
		}
	}
	return out
}

// checkVisitPattern validates a [[server.clients]] visit pattern.
func checkVisitPattern(p string) error {
	c, s, ok := strings.Cut(p, "/")
	if !ok || c == "" || s == "" || strings.Contains(s, "/") {
		return errors.New(`want "client/service", where * matches any name`)
	}
	if _, err := path.Match(p, ""); err != nil {
		return err
	}
	return nil
}

// mayVisit reports whether a client with visit patterns may reach the
// private service full ("client/service").
func mayVisit(patterns []string, full string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, full); ok {
			return true
		}
	}
	return false
}

// splitVisit splits "client/service", checking both names.
func splitVisit(full string) (client, service string, err error) {
	c, s, ok := strings.Cut(full, "/")
	if !ok || !name.Valid(c) || !name.Valid(s) {
		return "", "", fmt.Errorf("visitor service %q: want \"client/service\"", full)
	}
	return c, s, nil
}

// checkVisitorLocked says why the visitor of client c to full (a UDP
// visitor when udp) is refused now, "" when it is not: a name that is not
// a private service of a configured client, a pattern that does not allow
// it, a service that is public or of the other protocol. A serving client
// that is offline is no refusal: its visitors' connections wait or are
// refused until it is back.
func (t *table) checkVisitorLocked(c *clientEntry, full string, udp bool) string {
	owner, svc, err := splitVisit(full)
	if err != nil {
		return err.Error()
	}
	if !mayVisit(c.visit, full) {
		return fmt.Sprintf("client %q may not visit %s (server.clients visit = %v)", c.name, full, c.visit)
	}
	oc := t.named[owner]
	if oc == nil {
		return fmt.Sprintf("no client %q is configured on the server", owner)
	}
	if t.routes[privateKey(full, udp)] != nil {
		return ""
	}
	if t.routes[privateKey(full, !udp)] != nil {
		return fmt.Sprintf("service %s is a private %s service; the visitor has protocol %q", full, protoName(!udp), protoName(udp))
	}
	online := false
	for cs := range t.byClient[oc] {
		online = true
		for _, g := range cs.granted {
			if g.Name == svc {
				return fmt.Sprintf("service %s is not private: it is public, so visit it on its port or domain", full)
			}
		}
	}
	if online {
		return fmt.Sprintf("client %q has no private service %q", owner, svc)
	}
	return ""
}

// checkVisitors answers a session's visitor claims.
func (t *table) checkVisitors(c *clientEntry, vs []session.Visitor) ([]session.Visitor, *session.RejectError) {
	if len(vs) > t.cfg.maxServices {
		return nil, session.Rejectf(session.CodeBadRequest, "%d visitors claimed; the server allows %d per client (limits.max_services)", len(vs), t.cfg.maxServices)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]session.Visitor, len(vs))
	names := make(map[string]bool)
	for i, v := range vs {
		if !name.Valid(v.Name) {
			return nil, session.Rejectf(session.CodeBadRequest, "visitor name %q: want "+name.Rule, v.Name)
		}
		if names[v.Name] {
			return nil, session.Rejectf(session.CodeBadRequest, "visitor %q is claimed twice", v.Name)
		}
		names[v.Name] = true
		var udp bool
		switch v.Protocol {
		case "", session.ProtoTCP:
		case session.ProtoUDP:
			udp = true
		default:
			return nil, session.Rejectf(session.CodeBadRequest, "visitor %q: protocol %q is not \"tcp\" or \"udp\"", v.Name, v.Protocol)
		}
		out[i] = session.Visitor{Name: v.Name, Service: v.Service, Protocol: v.Protocol, Error: t.checkVisitorLocked(c, v.Service, udp)}
	}
	return out, nil
}

// visitRoute returns the route of the private service a visitor stream
// names (a UDP one for a UDP visitor's flow), or why it is refused.
func (t *table) visitRoute(c *clientEntry, full string, udp bool) (*route, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if why := t.checkVisitorLocked(c, full, udp); why != "" {
		return nil, why
	}
	r := t.routes[privateKey(full, udp)]
	if r == nil {
		owner, _, _ := splitVisit(full)
		return nil, fmt.Sprintf("service %s is not available: client %q is not connected", full, owner)
	}
	return r, ""
}

// visitorAddr is the local address of a visitor connection on the server.
type visitorAddr string

func (a visitorAddr) Network() string { return "warren-visitor" }
func (a visitorAddr) String() string  { return string(a) }

// serveVisitor relays a stream that client session cs opened to reach a
// private service, as a public connection of that service's route.
func (s *Server) serveVisitor(cs *clientSession, st *session.Stream) {
	h := st.Header()
	full := h.Service
	log := cs.log.With("visit", full, "peer", h.Peer)
	if h.Dial() {
		log.Warn("client opened a dial stream, which only the server may; closed it")
		st.Abort("a client may not open a dial stream")
		return
	}
	udp := h.Kind == session.KindDatagram // its flows have their own cap (visitudp.go)
	if !udp && cs.sess.NumStreams()-int(cs.flows.Load()) > s.cfg.Limits.MaxStreams {
		log.Warn("session at limits.max_streams; visitor connection refused", "max_streams", s.cfg.Limits.MaxStreams)
		st.Abort("the server's limits.max_streams is reached for this session")
		s.metrics.VisitorConn(full, metrics.OutcomeRefusedLimit)
		return
	}
	r, why := s.table.visitRoute(cs.client, full, udp)
	if r == nil {
		log.Info("visitor connection refused", "reason", why)
		s.rec.Event(admin.Event{Kind: admin.EventConnRefused, Client: cs.client.name, Remote: h.Peer, Route: "visit " + full, Reason: why})
		st.Abort(why)
		s.metrics.VisitorConn(full, metrics.OutcomeNoSession)
		return
	}
	if udp {
		s.serveVisitorFlow(cs, r, st, log)
		return
	}
	var remote net.Addr = visitorAddr(cs.client.name)
	if ap, err := netip.ParseAddrPort(h.Peer); err == nil {
		remote = net.TCPAddrFromAddrPort(ap) // the visitor's own peer, as a PROXY header names it
	}
	c := session.NewConn(st, visitorAddr("visitor "+cs.client.name), remote)
	s.metrics.VisitorConn(full, metrics.OutcomeOK)
	s.serveConn(r, c, nil)
}
