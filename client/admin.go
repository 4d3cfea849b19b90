package client

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/version"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
)

// SetMetrics makes the client record its metrics in reg; nil records
// none. Call it before Run.
func (c *Client) SetMetrics(reg *metrics.Registry) { c.metrics = reg }

// AdminSource returns the client as the admin listener sees it: its
// session to show. It disconnects nothing; reloading is the business of
// the command that read the config file (admin.WithReload).
func (c *Client) AdminSource() admin.Daemon { return adminSource{c} }

// adminSource implements admin.Daemon for a Client. (Client.Status is
// already the client's own connection state.)
type adminSource struct{ c *Client }

// Ready reports whether a session is up.
func (a adminSource) Ready() (bool, string) {
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.liveLocked()) > 0 {
		return true, ""
	}
	if c.status.LastError != nil {
		return false, "no session: " + c.status.LastError.Error()
	}
	return false, "no session yet"
}

// Status describes the server, the transport and the current session.
func (a adminSource) Status() admin.Status {
	c := a.c
	st := admin.Status{
		Role:      admin.RoleClient,
		Version:   version.Version,
		Uptime:    admin.Duration(c.edges.clock.Now().Sub(c.started)),
		Server:    c.cfg.Server,
		Transport: c.transport.String(),
	}
	c.mu.Lock()
	var sess *session.Session
	if up := c.liveLocked(); len(up) > 0 {
		sess = up[0]
		if c.cfg.Connections > 1 {
			st.Connections = len(up)
		}
	}
	if c.status.LastError != nil {
		st.LastError = c.status.LastError.Error()
	}
	c.mu.Unlock()
	if sess == nil {
		return st
	}
	info := sess.Info()
	ss := &admin.SessionStatus{
		Client:    info.Client,
		ID:        info.ID,
		Transport: c.transport.String(),
		Uptime:    admin.Duration(time.Since(info.Started)),
		RTT:       admin.Duration(sess.RTT()),
		Streams:   sess.NumStreams(),
	}
	if info.Remote != nil {
		ss.Remote = info.Remote.String()
	}
	tab := c.table.Load()
	for _, g := range info.Services {
		svc := admin.ServiceStatus{Name: g.Name, RemotePort: g.RemotePort, Domains: g.Domains, Target: tab.services[g.Name].Target}
		if s := tab.stats[g.Name]; s != nil {
			s.Fill(&svc)
		}
		if g.IsUDP() {
			svc.Protocol, svc.Flows = session.ProtoUDP, svc.Connections
		}
		ss.Services = append(ss.Services, svc)
	}
	slices.SortFunc(ss.Services, func(a, b admin.ServiceStatus) int { return cmp.Compare(a.Name, b.Name) })
	st.Session = ss
	return st
}

// Disconnect is the server's business.
func (a adminSource) Disconnect(string) error {
	return fmt.Errorf("client: %w: disconnect clients on the server's admin API", admin.ErrNotSupported)
}

// watchRTT records the session's heartbeat round trip every heartbeat
// interval until it ends.
func (c *Client) watchRTT(sess *session.Session) {
	t := c.edges.clock.NewTimer(c.sessCfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-sess.Done():
			return
		case <-t.C():
			t.Reset(c.sessCfg.HeartbeatInterval)
			if rtt := sess.RTT(); rtt > 0 {
				c.metrics.SetRTT(sess.Info().Client, rtt)
			}
		}
	}
}
