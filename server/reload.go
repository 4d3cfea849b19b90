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

	s.mu.Lock()
	old := make(map[string]*clientEntry, len(s.clients))
	oldToken := make(map[string][]byte, len(s.clients))
	for i, c := range s.clients {
		old[c.name] = c
		oldToken[c.name] = s.tokens[i]
	}
	var (
		clients []*clientEntry
		tokens  [][]byte
		gone    = make(map[*clientEntry]string) // why its sessions end
		added   []string
	)
	for _, c := range cfg.Clients {
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
	s.clients, s.tokens = clients, tokens
	s.cfg.Clients = cfg.Clients

	// Sessions that may not stay, and routes held for clients that left.
	var closing []*clientSession
	reasons := make(map[*clientSession]string)
	for cs := range s.sessions {
		why, ok := gone[cs.client]
		if !ok {
			if _, rej := s.checkServices(cs.client, cs.granted); rej != nil {
				why, ok = "its claims are no longer allowed: "+rej.Reason, true
			}
		}
		if ok {
			cs.released = true
			closing = append(closing, cs)
			reasons[cs] = why
		}
	}
	for _, r := range s.routes {
		if _, ok := gone[r.client]; ok && len(r.members) == 0 {
			s.removeRouteLocked(r)
		}
	}
	s.mu.Unlock()

	var removed []string
	for e := range gone {
		removed = append(removed, e.name)
	}
	slices.Sort(removed)
	s.log.Info("configuration reloaded", "clients", len(clients), "added", added, "removed_or_rotated", removed, "sessions_closed", len(closing))
	for _, cs := range closing {
		cs.log.Warn("closing session after reload", "reason", reasons[cs])
		go cs.sess.Close(session.CodeClosed, "client "+cs.client.name+": "+reasons[cs])
	}
	return nil
}
