package server

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/relay"
	"github.com/warren-tunnel/warren/session"
)

// servePort accepts public connections on a port route until its listener
// is closed.
func (s *Server) servePort(r *route) {
	s.accept(r.l, r.done, func(c net.Conn) { s.relays.Go(func() { s.serveConn(r, c, nil) }) },
		"accepting public connection failed", "route", r.key)
}

// serveConn carries one public connection over a stream of a session
// serving r; prefix is what was read from c already (to route it) and goes
// first. It waits for a member while the route is held, and tries another
// member when opening a stream fails.
func (s *Server) serveConn(r *route, c net.Conn, prefix []byte) {
	s.serveConnFrom(r, c, prefix, false)
}

// serveConnFrom is serveConn; in a cluster, a connection with no live
// session here goes to a server that holds r (forward), unless it was
// forwarded here (forwarded: no second hop).
func (s *Server) serveConnFrom(r *route, c net.Conn, prefix []byte, forwarded bool) {
	s.active.Add(1)
	relayed := false // the relay's end, not this return, counts it out
	defer func() {
		if !relayed {
			s.active.Add(-1)
		}
	}()
	accepted := s.edges.clock.Now()
	peer := c.RemoteAddr().String()
	tried := make(map[*member]bool)
	service, owner := s.table.owner(r) // service: the metrics label until a member takes it
	var failed metrics.Outcome         // why the last member tried did not take it
	var skip map[string]bool           // servers that failed to take it
	if s.node != nil && !forwarded {
		skip = make(map[string]bool)
	}
	if prefix == nil {
		// What the public peer sent already (a client speaks first, most
		// often at once) goes with the stream's header: one write and one
		// wake-up fewer on the way to the target.
		bp, n, err := readReady(c)
		if err != nil { // reset already: nothing to carry
			s.log.Debug("public connection reset before it was relayed", "route", r.key, "peer", peer, "err", err)
			c.Close()
			s.metrics.PublicConn(service, metrics.OutcomeAborted)
			return
		}
		if n > 0 {
			defer putReady(bp)
			prefix = bp[:n]
		}
	}
	for {
		m, h, err := s.table.pickFor(r, tried, skip, s.stopping)
		if h != nil {
			if s.forward(r, c, prefix, *h) {
				return
			}
			skip[h.Server] = true
			failed = metrics.OutcomeAborted
			continue
		}
		if err != nil {
			reason := refusedReason(err, len(tried), failed, "limits.max_streams or limits.max_streams_per_service")
			s.log.Info("public connection refused", "route", r.key, "peer", peer, "reason", reason)
			s.rec.Event(admin.Event{Kind: admin.EventConnRefused, Client: owner, Remote: peer, Route: describeRoute(r), Reason: reason})
			refuseRoute(r, c, reason)
			s.metrics.PublicConn(service, refusedOutcome(err, failed, s.stopping))
			return
		}
		log := m.cs.log
		service = m.service
		// UDP flows have their own cap (udp.max_session_flows).
		if m.cs.sess.NumStreams()-int(m.cs.flows.Load()) >= s.cfg.Limits.MaxStreams {
			log.Warn("session at limits.max_streams; public connection not given to it", "route", r.key, "peer", peer, "max_streams", s.cfg.Limits.MaxStreams)
			tried[m] = true
			failed = metrics.OutcomeRefusedLimit
			continue
		}
		if !m.cs.takeStream(m.service, s.cfg.Limits.MaxStreamsPerService) {
			log.Warn("service at limits.max_streams_per_service in this session; public connection not given to it", "service", m.service, "route", r.key, "peer", peer, "max_streams_per_service", s.cfg.Limits.MaxStreamsPerService)
			tried[m] = true
			failed = metrics.OutcomeRefusedLimit
			continue
		}
		// The prefix goes with the stream's header, in one write.
		st, err := m.cs.sess.OpenWith(session.Header{Service: m.service, Peer: peer, Local: c.LocalAddr().String()}, prefix)
		if err != nil {
			m.cs.dropStream(m.service)
			log.Debug("cannot open a stream; trying another session", "route", r.key, "peer", peer, "err", err)
			tried[m] = true
			failed = metrics.OutcomeAborted
			continue
		}
		s.metrics.StreamOpened(s.edges.clock.Now().Sub(accepted))
		client := m.cs.client.name
		stats := m.cs.stats[m.service]
		meter := s.meter(client, m.service, stats)
		meter(int64(len(prefix)), 0) // the sniffed bytes, written above
		st.SetMeter(meter)
		if stats != nil {
			stats.Opened()
		}
		s.metrics.StreamUp(client)
		start := s.edges.clock.Now()
		rc, held := gatewayConn(r, c)
		// The relay holds no goroutine while the connection is idle, and
		// this one returns now: its end is counted and logged by done.
		relayed = true
		s.relays.Add(1)
		relay.Start(rc, st, s.poll, func(res relay.Result) {
			defer s.relays.Done()
			defer s.active.Add(-1)
			if held {
				endGateway(rc, res)
			}
			s.metrics.StreamDown(client)
			if k := session.KillReason(res.Err); k != "" {
				s.metrics.RelayAborted(k)
			}
			s.metrics.PublicConn(m.service, metrics.OutcomeOK)
			if stats != nil {
				stats.Closed()
			}
			m.cs.dropStream(m.service)
			level, reason := session.EndReason(res.Err, m.cs.sess)
			log.Log(context.Background(), level, "public connection closed",
				"service", m.service, "route", r.key, "peer", peer,
				"bytes_from_public", res.Sent+int64(len(prefix)), "bytes_to_public", res.Received,
				"duration", s.edges.clock.Now().Sub(start).Round(time.Millisecond).String(),
				"reason", reason)
		})
		return
	}
}

// refusedReason says why a connection that no session took was refused:
// pick failed with err, after tried members failed for failed, the last
// of them for being at the limits named by limits when failed says so.
func refusedReason(err error, tried int, failed metrics.Outcome, limits string) string {
	if !errors.Is(err, errRouteGone) || tried == 0 {
		return err.Error()
	}
	if failed == metrics.OutcomeRefusedLimit {
		return "every session serving it is at " + limits
	}
	return "every session serving it failed: " + string(failed)
}

// refusedOutcome is the metrics outcome of a public connection that no
// session took: pick failed with err, after the members tried failed for
// failed (empty when none was tried).
func refusedOutcome(err error, failed metrics.Outcome, stopping <-chan struct{}) metrics.Outcome {
	select {
	case <-stopping:
		return metrics.OutcomeShuttingDown
	default:
	}
	switch {
	case errors.Is(err, errTooManyWaiting):
		return metrics.OutcomeRefusedLimit
	case failed != "":
		return failed
	}
	return metrics.OutcomeNoSession
}

// takeStream counts a stream of service in the session, unless the
// session has max of them open already.
func (cs *clientSession) takeStream(service string, max int) bool {
	cs.streamsMu.Lock()
	defer cs.streamsMu.Unlock()
	if cs.streams[service] >= max {
		return false
	}
	if cs.streams == nil {
		cs.streams = make(map[string]int)
	}
	cs.streams[service]++
	return true
}

// dropStream uncounts a stream that takeStream counted.
func (cs *clientSession) dropStream(service string) {
	cs.streamsMu.Lock()
	defer cs.streamsMu.Unlock()
	if cs.streams[service]--; cs.streams[service] <= 0 {
		delete(cs.streams, service)
	}
}

// meter counts the bytes a stream of client's service moves, as they move
// (session.Stream.SetMeter): sent is from the public peer, received to it.
func (s *Server) meter(client, service string, stats *admin.ServiceCounters) func(sent, received int64) {
	return func(sent, received int64) {
		if sent == 0 && received == 0 {
			return
		}
		s.metrics.AddBytes(service, sent, received)
		s.rec.AddBytes(client, service, sent, received)
		if stats != nil {
			stats.Add(sent, received)
		}
	}
}
