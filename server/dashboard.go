package server

import (
	"cmp"
	"errors"
	"slices"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/session"
)

// What the server tells the admin dashboard beyond its status: events as
// they happen and the bytes each service relayed (admin.Recorder).

// SetRecorder makes the server record events and traffic in rec; nil
// records none. Call it before Run.
func (s *Server) SetRecorder(rec *admin.Recorder) { s.rec = rec }

// recordFailed records a tunnel connection that did not become a
// session: refused by the server (a *session.RejectError) or failed in
// its handshake.
func (s *Server) recordFailed(remote, client string, err error) {
	e := admin.Event{Kind: admin.EventHandshakeFailed, Client: client, Remote: remote, Code: handshakeReason(err), Reason: err.Error()}
	if rej := (*session.RejectError)(nil); errors.As(err, &rej) {
		e.Kind, e.Reason = admin.EventRejected, rej.Reason
	}
	s.rec.Event(e)
}

// downReason says why a session ended, for its event.
func downReason(err error, held bool, grace time.Duration) string {
	reason := "ended"
	if err != nil {
		reason = err.Error()
	}
	if held {
		reason += "; its routes are held for " + grace.String()
	}
	return reason
}

// routeStatus describes the routes for the status API, ports first, then
// domains.
func (t *table) routeStatus() []admin.RouteStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock.Now()
	out := make([]admin.RouteStatus, 0, len(t.routes))
	for _, r := range t.routes {
		rs := admin.RouteStatus{Port: r.port, Domain: r.name, Entry: r.entry, Shared: r.shared, Waiting: r.waiting}
		if r.udp {
			rs.Protocol = session.ProtoUDP
		}
		if ft := r.flows.Load(); ft != nil {
			rs.Flows = ft.count()
		}
		rs.Flows += int(r.visitorFlows.Load())
		if r.client != nil && !r.shared {
			rs.Client = r.client.name
		}
		for _, m := range r.members {
			if m.cs.sess != nil { // not one still in its handshake
				rs.Members = append(rs.Members, admin.RouteMember{Client: m.cs.client.name, Session: m.cs.id, Service: m.service})
			}
		}
		if len(r.members) == 0 && !r.heldUntil.IsZero() {
			rs.Held = admin.Duration(max(r.heldUntil.Sub(now), 0))
		}
		out = append(out, rs)
	}
	isDomain := func(r admin.RouteStatus) int {
		if r.Port == 0 {
			return 1
		}
		return 0
	}
	slices.SortFunc(out, func(a, b admin.RouteStatus) int {
		return cmp.Or(cmp.Compare(isDomain(a), isDomain(b)), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Entry, b.Entry), cmp.Compare(a.Domain, b.Domain))
	})
	return out
}
