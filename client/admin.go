package client

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/version"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// SetMetrics makes the client record its metrics in reg; nil records
// none. Call it before Run.
func (c *Client) SetMetrics(reg *metrics.Registry) {
	c.metrics = reg
	reg.SetPacingSource(c.pacing)
}

// pacing lists the pacing state of the KCP sessions up, to every server,
// for the metrics.
func (c *Client) pacing() []metrics.Pacing {
	var out []metrics.Pacing
	for _, s := range c.pool.states() {
		for i, sess := range s.sessions {
			if ps, ok := transport.KCPPaceState(s.conns[i]); ok {
				out = append(out, metrics.PacingOf(sess.Info().Client, s.conns[i].LocalAddr().String(), ps))
			}
		}
	}
	return out
}

// AdminSource returns the client as the admin listener sees it: its
// session to show. It disconnects nothing; reloading is the business of
// the command that read the config file (admin.WithReload).
func (c *Client) AdminSource() admin.Daemon { return adminSource{c} }

// adminSource implements admin.Daemon for a Client. (Client.Status is
// already the client's own connection state.)
type adminSource struct{ c *Client }

// Ready reports whether min_servers servers have a session up that
// takes new connections (pool.go, rule 6).
func (a adminSource) Ready() (bool, string) { return a.c.pool.ready() }

// Status describes the servers, the sessions to each and the services.
func (a adminSource) Status() admin.Status {
	c := a.c
	st := admin.Status{
		Role:      admin.RoleClient,
		Version:   version.Version,
		Uptime:    admin.Duration(c.edges.clock.Now().Sub(c.started)),
		Server:    c.eps[0].entry,
		Transport: c.eps[0].t.String(),
	}
	c.mu.Lock()
	for _, v := range c.visitors {
		vs := admin.VisitorStatus{Name: v.Name, Service: v.Service, Bind: v.Bind}
		if v.IsUDP() {
			vs.Protocol = session.ProtoUDP
		}
		if a := c.visitorAddrs[v.Name]; a != nil {
			vs.Bind = a.String()
		}
		var counts admin.ServiceStatus
		c.visitorStats[v.Name].Fill(&counts)
		vs.Connections, vs.BytesIn, vs.BytesOut = counts.Connections, counts.BytesIn, counts.BytesOut
		st.Visitors = append(st.Visitors, vs)
	}
	if c.status.LastError != nil {
		st.LastError = c.status.LastError.Error()
	}
	c.mu.Unlock()
	tab := c.table.Load()
	live := 0
	for _, s := range c.pool.states() {
		srv := admin.ServerStatus{Server: s.Server, Address: s.Address, Transport: s.Transport, State: s.State, Sessions: []admin.SessionStatus{}}
		if s.LastError != nil {
			srv.LastError = s.LastError.Error()
		}
		for i, sess := range s.sessions {
			if st.Session == nil { // the first, with the client's counters
				first := sessionStatus(sess, s.conns[i], s.Transport, tab, true)
				st.Session = &first
				// What the server said of each visitor, as the first
				// session's server answered.
				for _, v := range sess.Info().Visitors {
					if i := slices.IndexFunc(st.Visitors, func(s admin.VisitorStatus) bool { return s.Name == v.Name }); i >= 0 {
						st.Visitors[i].Refused = v.Error
					}
				}
			}
			srv.Sessions = append(srv.Sessions, sessionStatus(sess, s.conns[i], s.Transport, tab, false))
			live++
		}
		st.Servers = append(st.Servers, srv)
	}
	if len(c.eps) > 1 || c.cfg.Connections > 1 || live > 1 {
		st.Connections = live
	}
	return st
}

// sessionStatus describes sess, over its tunnel connection conn; with
// counts, its services carry the client's counters (every session of the
// client serves them together).
func sessionStatus(sess *session.Session, conn net.Conn, kind string, tab *serviceTable, counts bool) admin.SessionStatus {
	info := sess.Info()
	ss := admin.SessionStatus{
		Client:    info.Client,
		ID:        info.ID,
		Transport: kind,
		Uptime:    admin.Duration(time.Since(info.Started)),
		RTT:       admin.Duration(sess.RTT()),
		Streams:   sess.NumStreams(),
		Services:  []admin.ServiceStatus{},
	}
	if ps, ok := transport.KCPPaceState(conn); ok {
		ss.Pacing = admin.PacingOf(ps)
	}
	if info.Remote != nil {
		ss.Remote = info.Remote.String()
	}
	for _, g := range info.Services {
		svc := admin.ServiceStatus{Name: g.Name, RemotePort: g.RemotePort, Domains: g.Domains, Target: tab.services[g.Name].Target}
		if s := tab.stats[g.Name]; s != nil && counts {
			s.Fill(&svc)
		}
		if g.IsUDP() {
			svc.Protocol, svc.Flows = session.ProtoUDP, svc.Connections
		}
		ss.Services = append(ss.Services, svc)
	}
	for _, g := range info.PrivateServices {
		svc := admin.ServiceStatus{Name: g.Name, Private: true, Target: tab.services[g.Name].Target}
		if s := tab.stats[g.Name]; s != nil && counts {
			s.Fill(&svc)
		}
		ss.Services = append(ss.Services, svc)
	}
	slices.SortFunc(ss.Services, func(a, b admin.ServiceStatus) int { return cmp.Compare(a.Name, b.Name) })
	return ss
}

// Disconnect is the server's business.
func (a adminSource) Disconnect(string) error {
	return fmt.Errorf("client: %w: disconnect clients on the server's admin API", admin.ErrNotSupported)
}

// serverMetrics records whether server r has a session up.
func (c *Client) serverMetrics(r *remote) {
	c.metrics.ServerSessions(r.label, c.pool.upCount(r))
}

// watchRTT records the heartbeat round trip of sess, to server r, every
// heartbeat interval until it ends.
func (c *Client) watchRTT(r *remote, sess *session.Session) {
	t := c.edges.clock.NewTimer(c.sessCfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-sess.Done():
			return
		case <-t.C():
			t.Reset(c.sessCfg.HeartbeatInterval)
			if rtt := sess.RTT(); rtt > 0 {
				c.metrics.SetServerRTT(r.label, sess.Info().Client, rtt)
			}
		}
	}
}
