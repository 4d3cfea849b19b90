package server

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/warren-tunnel/warren/session"
)

// servePort accepts public connections on a port route until its listener
// is closed.
func (s *Server) servePort(r *route) {
	for {
		c, err := r.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accepting public connection failed", "route", r.key, "err", err)
			select {
			case <-r.done:
				return
			case <-time.After(acceptBackoff):
			}
			continue
		}
		s.relays.Go(func() { s.serveConn(r, c, nil) })
	}
}

// serveConn carries one public connection over a stream of a session
// serving r; prefix is what was read from c already (to route it) and goes
// first. It waits for a member while the route is held, and tries another
// member when opening a stream fails.
func (s *Server) serveConn(r *route, c net.Conn, prefix []byte) {
	s.active.Add(1)
	defer s.active.Add(-1)
	peer := c.RemoteAddr().String()
	tried := make(map[*member]bool)
	for {
		m, err := s.pick(r, tried, s.stopping)
		if err != nil {
			s.log.Info("public connection refused", "route", r.key, "peer", peer, "reason", err)
			c.Close()
			return
		}
		log := m.cs.log
		if m.cs.sess.NumStreams() >= s.cfg.Limits.MaxStreams {
			log.Warn("session at limits.max_streams; public connection not given to it", "route", r.key, "peer", peer, "max_streams", s.cfg.Limits.MaxStreams)
			tried[m] = true
			continue
		}
		st, err := m.cs.sess.Open(session.Header{Service: m.service, Peer: peer})
		if err != nil {
			log.Debug("cannot open a stream; trying another session", "route", r.key, "peer", peer, "err", err)
			tried[m] = true
			continue
		}
		if len(prefix) > 0 {
			if _, err := st.Write(prefix); err != nil {
				st.Close()
				tried[m] = true
				continue
			}
		}
		start := time.Now()
		res := session.Relay(c, st)
		level, reason := session.EndReason(res.Err, m.cs.sess)
		log.Log(context.Background(), level, "public connection closed",
			"service", m.service, "route", r.key, "peer", peer,
			"bytes_from_public", res.Sent+int64(len(prefix)), "bytes_to_public", res.Received,
			"duration", time.Since(start).Round(time.Millisecond).String(),
			"reason", reason)
		return
	}
}
