package server

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/clock"
	"github.com/warren-tunnel/warren/internal/version"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// AdminSource returns the server as the admin listener sees it: its
// sessions to show, its clients to disconnect. Reloading is the business
// of the command that read the config file (admin.WithReload).
func (s *Server) AdminSource() admin.Daemon { return adminSource{s} }

// adminSource implements admin.Daemon for a Server. (Server.Ready is
// already the channel closed once Run has bound the listeners.)
type adminSource struct{ s *Server }

// SetMetrics makes the server record its metrics in reg; nil records
// none. Call it before Run.
func (s *Server) SetMetrics(reg *metrics.Registry) {
	s.metrics = reg
	reg.SetPacingSource(s.pacing)
}

// pacing lists the pacing state of the KCP sessions up, for the metrics.
func (s *Server) pacing() []metrics.Pacing {
	var out []metrics.Pacing
	for _, cs := range s.table.list() {
		if ps, ok := transport.KCPPaceState(cs.conn); ok {
			out = append(out, metrics.PacingOf(cs.client.name, cs.remote, ps))
		}
	}
	return out
}

// Ready reports whether the tunnel listeners and entry points are bound
// and the server is not shutting down.
func (a adminSource) Ready() (bool, string) {
	s := a.s
	select {
	case <-s.ready:
	default:
		return false, "listeners not bound yet"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false, "shutting down"
	}
	if s.node != nil {
		// Ready still: local routes and the last known remote ones are
		// served; only new claims wait for the registry.
		if err := s.node.reg.Err(); err != nil {
			return true, "cluster registry unavailable, new claims are refused for now: " + err.Error()
		}
	}
	return true, ""
}

// Status returns the listeners and every configured client with its
// sessions.
func (a adminSource) Status() admin.Status {
	s := a.s
	st := admin.Status{
		Role:        admin.RoleServer,
		Version:     version.Version,
		Uptime:      admin.Duration(s.edges.clock.Now().Sub(s.started)),
		Fingerprint: s.fingerprint,
	}
	s.mu.Lock()
	for _, l := range s.listeners {
		st.Listeners = append(st.Listeners, admin.Listener{Transport: l.name, Address: l.l.Addr().String()})
	}
	s.mu.Unlock()
	s.table.view(func(clients []*clientEntry, sessions map[*clientSession]struct{}) {
		byClient := make(map[*clientEntry][]admin.SessionStatus)
		for cs := range sessions {
			byClient[cs.client] = append(byClient[cs.client], cs.statusLocked())
		}
		for _, c := range clients {
			ss := byClient[c]
			slices.SortFunc(ss, func(a, b admin.SessionStatus) int { return cmp.Compare(b.Uptime, a.Uptime) })
			st.Clients = append(st.Clients, admin.ClientStatus{Name: c.name, Sessions: ss})
		}
	})
	slices.SortFunc(st.Clients, func(a, b admin.ClientStatus) int { return cmp.Compare(a.Name, b.Name) })
	st.Routes = s.table.routeStatus()
	st.Cluster = s.clusterStatus()
	return st
}

// statusLocked describes cs, whose sess is set; the table's lock is held.
func (cs *clientSession) statusLocked() admin.SessionStatus {
	ss := admin.SessionStatus{
		Client:    cs.client.name,
		ID:        cs.id,
		Transport: cs.transport,
		Remote:    cs.remote,
		Uptime:    admin.Duration(time.Since(cs.sess.Info().Started)),
		RTT:       admin.Duration(cs.sess.RTT()),
		Streams:   cs.sess.NumStreams(),
	}
	if ps, ok := transport.KCPPaceState(cs.conn); ok {
		ss.Pacing = admin.PacingOf(ps)
	}
	for _, g := range cs.granted {
		svc := admin.ServiceStatus{Name: g.Name, RemotePort: g.RemotePort, Domains: g.Domains}
		if st := cs.stats[g.Name]; st != nil {
			st.Fill(&svc)
		}
		if g.IsUDP() {
			svc.Protocol, svc.Flows = session.ProtoUDP, svc.Connections
		}
		ss.Services = append(ss.Services, svc)
	}
	for _, g := range cs.private {
		svc := admin.ServiceStatus{Name: g.Name, Private: true}
		if st := cs.stats[g.Name]; st != nil {
			st.Fill(&svc)
		}
		ss.Services = append(ss.Services, svc)
	}
	slices.SortFunc(ss.Services, func(a, b admin.ServiceStatus) int { return cmp.Compare(a.Name, b.Name) })
	return ss
}

// Disconnect closes every session of the client named name, telling it
// why; the client reconnects, and its routes are held for it meanwhile.
// It returns at once; the Goodbyes go out in the background.
func (a adminSource) Disconnect(name string) error {
	var known bool
	var victims []*clientSession
	a.s.table.view(func(clients []*clientEntry, sessions map[*clientSession]struct{}) {
		known = slices.ContainsFunc(clients, func(c *clientEntry) bool { return c.name == name })
		for cs := range sessions {
			if cs.client.name == name {
				victims = append(victims, cs)
			}
		}
	})
	if !known {
		return fmt.Errorf("%w %q", admin.ErrUnknownClient, name)
	}
	for _, cs := range victims {
		cs.log.Info("disconnecting the session (admin API)")
		go cs.sess.Close(session.CodeClosed, "disconnected by the server's admin")
	}
	return nil
}

// handshakeReason is the reason label of a failed handshake's error.
func handshakeReason(err error) string {
	var rej *session.RejectError
	var ne net.Error
	var rh tls.RecordHeaderError
	var ae tls.AlertError
	var cv *tls.CertificateVerificationError
	switch {
	case errors.As(err, &rej):
		return rej.Code
	case errors.Is(err, session.ErrVersion):
		return session.CodeVersion
	case errors.Is(err, session.ErrProtocol):
		return session.CodeProtocol
	case errors.As(err, &rh), errors.As(err, &ae), errors.As(err, &cv):
		return metrics.ReasonTLS
	case errors.As(err, &ne) && ne.Timeout():
		return metrics.ReasonTimeout
	}
	return metrics.ReasonOther
}

// watchRTT records cs's heartbeat round trip every heartbeat interval
// until stop is called, on a clock timer rather than in a goroutine of its
// own: with thousands of idle sessions, a goroutine each is a stack each.
// stop waits for a record under way.
func (s *Server) watchRTT(cs *clientSession) (stop func()) {
	var (
		mu      sync.Mutex
		stopped bool
		t       clock.Timer
	)
	tick := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if rtt := cs.sess.RTT(); rtt > 0 {
			s.metrics.SetRTT(cs.client.name, rtt)
		}
		t.Reset(s.sessCfg.HeartbeatInterval)
	}
	mu.Lock()
	t = s.edges.clock.AfterFunc(s.sessCfg.HeartbeatInterval, tick)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}
