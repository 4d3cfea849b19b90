package client

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/cfgdiff"
	"github.com/warren-tunnel/warren/session"
)

// serviceTable is the client's services as one value, replaced whole when
// a reload changes them, so that streams read it without a lock.
type serviceTable struct {
	services map[string]Service
	claims   []session.Service // public ones
	private  []session.Service
	// stats counts each service's connections and bytes for the status
	// API; a service kept across a reload keeps its counters.
	stats map[string]*admin.ServiceCounters
}

func newServiceTable(svcs []Service, old *serviceTable) *serviceTable {
	t := &serviceTable{services: make(map[string]Service), stats: make(map[string]*admin.ServiceCounters)}
	for _, s := range svcs {
		t.services[s.Name] = s
		if old != nil && old.stats[s.Name] != nil {
			t.stats[s.Name] = old.stats[s.Name]
		} else {
			t.stats[s.Name] = new(admin.ServiceCounters)
		}
		entry := s.Entry
		if entry == "" && len(s.Domains) > 0 {
			entry = session.EntryHTTP
		}
		cl := session.Service{Name: s.Name, RemotePort: s.RemotePort, Domains: s.Domains, Entry: entry, Shared: s.Shared}
		if s.Private {
			cl = session.Service{Name: s.Name}
		}
		if s.IsUDP() {
			cl.Protocol = session.ProtoUDP
			if s.IdleTimeout > 0 || s.MaxFlows > 0 || s.MaxDatagram > 0 {
				cl.UDP = &session.UDPLimits{IdleMillis: s.IdleTimeout.Milliseconds(), MaxFlows: s.MaxFlows, MaxDatagram: s.MaxDatagram}
			}
		}
		if s.Private {
			t.private = append(t.private, cl)
			continue
		}
		t.claims = append(t.claims, cl)
	}
	return t
}

// remember keeps the ports the server picked for any-port services.
func (c *Client) remember(granted []session.Service) {
	c.stickyMu.Lock()
	defer c.stickyMu.Unlock()
	tab := c.table.Load()
	for _, g := range granted {
		if tab.services[g.Name].RemotePort == 0 && g.RemotePort > 0 {
			c.sticky[g.Name] = g.RemotePort
		}
	}
}

// Reload applies a new configuration to the running client. Only
// [[client.services]], [[client.visitors]] and [client.dial] may change.
// Visitors that are new or changed start listening, those gone or
// changed stop (a visitor that cannot bind leaves every visitor as it
// was, and the error names it); a new dial allow list applies to the next
// dial. Then services are added, removed or changed on the live session
// without ending it or its other streams (the server checks the new
// claims; if it refuses them, the old ones stay and the error says why).
// Any other change, or an invalid cfg, is refused with the reason and the
// running configuration stays.
func (c *Client) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if key := cfgdiff.Changed(c.cfg, cfg, "services", "visitors", "dial"); key != "" {
		return fmt.Errorf("client.%s changed: it takes effect only at a restart; nothing was reloaded", key)
	}
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	next := newServiceTable(cfg.Services, c.table.Load())
	if err := c.checkServicesLocked(next); err != nil {
		return err
	}
	if err := c.checkVisitorsLocked(cfg.Visitors); err != nil {
		return err
	}
	if err := c.reloadVisitorsLocked(cfg.Visitors); err != nil {
		return err
	}
	c.reloadDial(cfg.Dial)
	return c.reloadServicesLocked(next)
}

// checkServicesLocked refuses services that cannot be reloaded: changed
// private services (their claims are made at connect time only), UDP
// services on a server without UDP. reloadMu is held.
func (c *Client) checkServicesLocked(next *serviceTable) error {
	if !slices.EqualFunc(c.table.Load().private, next.private, func(a, b session.Service) bool { return reflect.DeepEqual(a, b) }) {
		return errors.New("client.services: the private services changed: they take effect only at a restart; nothing was reloaded")
	}
	if live := c.pool.live(); len(live) > 0 {
		for _, cl := range next.claims {
			if cl.IsUDP() && !live[0].Info().UDP {
				return fmt.Errorf("service %q: %w; nothing was reloaded", cl.Name, session.ErrNoUDP)
			}
		}
	}
	return nil
}

// checkVisitorsLocked refuses visitors the live sessions' server cannot
// serve: any, on a server without private services; UDP ones, on one
// without private UDP. reloadMu is held.
func (c *Client) checkVisitorsLocked(vs []Visitor) error {
	live := c.pool.live()
	if len(live) == 0 || len(vs) == 0 {
		return nil
	}
	info := live[0].Info()
	for i, v := range vs {
		switch {
		case !info.Private:
			return fmt.Errorf("client.visitors[%d] (%s): %w; nothing was reloaded", i, v.Name, session.ErrNoPrivate)
		case v.IsUDP() && !info.PrivateUDP:
			return fmt.Errorf("client.visitors[%d] (%s): %w; nothing was reloaded", i, v.Name, session.ErrNoPrivateUDP)
		}
	}
	return nil
}

// reloadDial puts a new [client.dial] allow list in force for the next
// dial. The server learns at connect time whether the client takes dial
// streams at all (Auth.Dial): a list that was empty and is not applies
// from the next connection; one emptied refuses every dial at once.
func (c *Client) reloadDial(d DialConfig) {
	policy, _ := parseDialPolicy(d.Allow) // Validate checked it
	before := len(c.policy.Load().rules)
	c.policy.Store(&policy)
	if before == 0 && len(policy.rules) > 0 && len(c.pool.live()) > 0 {
		c.log.Warn("client.dial.allow was empty: the server opens dial streams to this client from its next connection on")
	}
}

// reloadServicesLocked claims cfg's services on the live sessions;
// reloadMu is held.
func (c *Client) reloadServicesLocked(next *serviceTable) error {
	old := c.table.Load()
	c.stickyMu.Lock()
	for name := range c.sticky { // only any-port services keep a port
		if svc, ok := next.services[name]; !ok || svc.RemotePort != 0 || len(svc.Domains) > 0 {
			delete(c.sticky, name)
		}
	}
	c.stickyMu.Unlock()
	// Streams for a new service may arrive as soon as the server has
	// granted it, so the new table is in place before the answer; it goes
	// back if the server refuses.
	c.table.Store(next)
	live := c.pool.live()
	if len(live) == 0 {
		c.log.Info("services reloaded; they are claimed at the next connection", "services", len(next.claims))
		return nil
	}
	// One session after the other: the first learns the ports the server
	// picks for any-port services, the others claim the same. A refusal
	// before any session took them puts the old services back; a session
	// whose update fails otherwise is closed, to claim the new services
	// when it reconnects.
	var errs []error
	first := true
	for _, sess := range live {
		if sess.Err() != nil {
			continue // it reconnects with the new table
		}
		err := c.update(sess, next)
		var rej *session.RejectError
		switch {
		case err == nil:
			first = false
		case first && errors.As(err, &rej):
			c.table.Store(old)
			return fmt.Errorf("the server refused the new services, the old ones stay: %w", err)
		default:
			if sess.Err() == nil {
				sess.Close(session.CodeClosed, "services update failed: "+err.Error())
			}
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("the new services are claimed at the next connection: %w", errors.Join(errs...))
	}
	return nil
}

// update claims tab's services on the live session sess; reloadMu is
// held. When the server does not answer (it may or may not have applied
// them), the session is closed, so that the reconnection claims them for
// sure.
func (c *Client) update(sess *session.Session, tab *serviceTable) error {
	claims, _ := c.withSticky(tab)
	granted, err := sess.Update(claims)
	if err != nil {
		var rej *session.RejectError
		if !errors.As(err, &rej) && sess.Err() == nil {
			sess.Close(session.CodeClosed, "services update unanswered: "+err.Error())
		}
		return err
	}
	c.claimed[sess] = tab
	c.remember(granted)
	c.setStatus(func(s *Status) { s.Session = sess.Info() })
	c.log.Info("services reloaded", "services", len(granted))
	return nil
}

// syncClaims brings a new session up to date with a reload that happened
// during its handshake, when the session's claims come from an older
// table than the current one (and no Reload has updated it since). A
// refusal that retrying cannot change puts the session's table back,
// unless another session has claimed the new one; a temporary one (the
// server shutting down) leaves the new table for the next connection.
func (c *Client) syncClaims(log *slog.Logger, sess *session.Session, claimed *serviceTable) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	tab := c.table.Load()
	if cur := c.claimed[sess]; cur != nil {
		claimed = cur
	}
	if tab == claimed || sess.Err() != nil {
		return
	}
	if err := c.update(sess, tab); err != nil {
		var rej *session.RejectError
		if errors.As(err, &rej) && !rej.Temporary() && !c.claimedLocked(tab) {
			c.table.Store(claimed)
		}
		log.Error("the server refused the reloaded services; the session serves the ones it claimed", "err", err)
	}
}

// claimedLocked reports whether a live session has claimed tab's
// services; reloadMu is held.
func (c *Client) claimedLocked(tab *serviceTable) bool {
	for _, t := range c.claimed {
		if t == tab {
			return true
		}
	}
	return false
}
