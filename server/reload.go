package server

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/warren-tunnel/warren/internal/cfgdiff"
	"github.com/warren-tunnel/warren/internal/domain"
	"github.com/warren-tunnel/warren/session"
)

// Reload applies a new configuration to the running server. Only
// [[server.clients]] may change: clients are added and removed, tokens
// rotated, ports and domains changed. A session whose client was removed,
// whose token changed, or whose claims its client may no longer make is
// closed (Goodbye "closed"; the client reconnects and is checked anew);
// every other session goes on untouched. Any other change, or an invalid
// cfg, is refused with the reason and the running configuration stays.
func (s *Server) Reload(cfg Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if key := cfgdiff.Changed(s.cfg, cfg, "clients"); key != "" {
		return fmt.Errorf("server.%s changed: it takes effect only at a restart; nothing was reloaded", key)
	}

	clients, closing, reasons, added, removed := s.table.reload(cfg.Clients)
	s.cfg.Clients = cfg.Clients

	s.log.Info("configuration reloaded", "clients", len(clients), "added", added, "removed_or_rotated", removed, "sessions_closed", len(closing))
	for _, cs := range closing {
		cs.log.Warn("closing session after reload", "reason", reasons[cs])
		go cs.sess.Close(session.CodeClosed, "client "+cs.client.name+": "+reasons[cs])
	}
	return nil
}

// reload replaces the configured clients with cfg's (Validate checked
// them) and returns the sessions that may not stay (rule 14), already
// released, with the reason of each, and the names of the clients added
// and of those removed or given a new token.
func (t *table) reload(cfg []Client) (clients []*clientEntry, closing []*clientSession, reasons map[*clientSession]string, added, removed []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := make(map[string]*clientEntry, len(t.clients))
	oldToken := make(map[string][]byte, len(t.clients))
	for i, c := range t.clients {
		old[c.name] = c
		oldToken[c.name] = t.tokens[i]
	}
	var tokens [][]byte
	gone := make(map[*clientEntry]string) // why its sessions end
	for _, c := range cfg {
		e := old[c.Name]
		switch {
		case e == nil:
			e = &clientEntry{name: c.Name}
			added = append(added, c.Name)
		case !bytes.Equal(oldToken[c.Name], []byte(c.Token)):
			gone[e] = "its token was changed"
			e = &clientEntry{name: c.Name} // a new identity: old routes are not its
		}
		e.ports = c.Ports
		e.udpPorts = c.UDPPorts
		e.dial, e.visit = c.Dial, c.Visit
		e.domains = nil
		for _, d := range c.Domains {
			n, _ := domain.Normalize(d) // Validate checked it
			e.domains = append(e.domains, n)
		}
		clients = append(clients, e)
		tokens = append(tokens, []byte(c.Token))
		delete(old, c.Name)
	}
	for _, e := range old {
		gone[e] = "it was removed from the server's configuration"
	}
	t.setClientsLocked(clients, tokens)

	// Sessions that may not stay, and routes held for clients that left.
	reasons = make(map[*clientSession]string)
	for cs := range t.sessions {
		why, ok := gone[cs.client]
		if !ok {
			if _, rej := t.checkServices(cs.client, cs.granted, cs.private, cs.claimsOther); rej != nil {
				why, ok = "its claims are no longer allowed: "+rej.Reason, true
			}
		}
		if ok {
			cs.released = true
			closing = append(closing, cs)
			reasons[cs] = why
		}
	}
	for _, r := range t.routes {
		if _, ok := gone[r.client]; ok && len(r.members) == 0 {
			t.removeRouteLocked(r)
		}
	}
	for e := range gone {
		removed = append(removed, e.name)
	}
	slices.Sort(removed)
	return clients, closing, reasons, added, removed
}
