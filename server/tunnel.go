package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// clientSession is one authenticated client session and the routes it
// serves. Its fields but sess are set before it claims; sess is set, under
// the table's lock, once Welcome is sent: until then routes hold it as a
// member that pick skips.
type clientSession struct {
	client   *clientEntry
	id       string
	instance string
	// accepted orders the sessions' connections by when the server
	// accepted them (from 1; 0 for none): of two of one client instance,
	// the later is the client's current attempt (table.go, rule 4).
	accepted  uint64
	group     string // the client process's parallel sessions share it; "" for none
	transport string
	remote    string
	conn      net.Conn // the tunnel connection, for its transport's state
	sess      *session.Session
	log       *slog.Logger
	routes    []*route          // guarded by the table's lock
	draining  bool              // the client said Drain; guarded by the table's lock
	released  bool              // a reload closes it: its routes are not held; guarded by the table's lock
	granted   []session.Service // set before up, then guarded by the table's lock
	private   []session.Service // private services claimed (Auth.Private); fixed
	// claimsOther: the session claims visitors or takes dial streams,
	// so it may claim no service at all.
	claimsOther bool
	// unavailable: the client retries on registry_unavailable
	// (Auth.Unavailable).
	unavailable bool
	visitors    []session.Visitor                 // as answered in Welcome; fixed
	stats       map[string]*admin.ServiceCounters // by service name, during the session; fixed once sess is set

	streamsMu sync.Mutex
	streams   map[string]int // streams open by service, for limits.max_streams_per_service
	flows     atomic.Int64   // UDP flows open through the session (udp.go)
}

// serveTunnel runs one client connection from handshake to the end of its
// session.
func (s *Server) serveTunnel(c net.Conn, transportName string) {
	remote := c.RemoteAddr().String()
	accepted := s.acceptSeq.Add(1)
	log := s.log.With("remote", remote, "transport", transportName)
	raw := c // admission's key: what the TLS hook sees (admission.go)
	tc, _ := c.(*tls.Conn)
	if tc != nil {
		raw = tc.NetConn()
	}
	if !s.adm.admit(raw) {
		c.Close()
		return
	}
	defer s.adm.done(raw)
	deadline := time.Now().Add(s.sessCfg.HandshakeTimeout)
	err := s.handshakeTLS(tc, raw, deadline)
	var p *session.Pending
	if err == nil {
		p, err = session.AcceptBy(deadline, c, s.sessCfg, log)
	}
	if err != nil {
		log.Debug("handshake failed", "err", err)
		s.metrics.HandshakeFailed(handshakeReason(err))
		s.recordFailed(remote, "", err)
		return
	}
	clients, tokens := s.table.credentials() // Reload replaces them
	idx := p.Request.Match(tokens)
	if idx < 0 {
		log.Warn("auth failed: unknown token", "code", session.CodeUnknownToken)
		rej := session.Rejectf(session.CodeUnknownToken, "unknown token")
		p.Reject(rej)
		s.metrics.HandshakeFailed(session.CodeUnknownToken)
		s.recordFailed(remote, "", rej)
		return
	}
	cs := &clientSession{client: clients[idx], id: session.NewID(), instance: p.Request.Instance, accepted: accepted, group: p.Request.Group, transport: transportName, remote: remote, conn: c,
		private: p.Request.Private, claimsOther: len(p.Request.Visitors) > 0 || p.Request.Dial, unavailable: p.Request.Unavailable}
	log = log.With("client", cs.client.name, "session", cs.id)
	cs.log = log
	visitors, rej := s.table.checkVisitors(cs.client, p.Request.Visitors)
	if rej != nil {
		log.Warn("session rejected", "code", rej.Code, "reason", rej.Reason)
		p.Reject(rej)
		s.metrics.HandshakeFailed(rej.Code)
		s.recordFailed(remote, cs.client.name, rej)
		return
	}
	cs.visitors = visitors
	for _, v := range visitors {
		if v.Error != "" {
			log.Warn("visitor refused; its connections are refused until the service is available to it", "visitor", v.Name, "service", v.Service, "reason", v.Error)
		}
	}
	granted, victims, rej := s.table.claim(cs, p.Request.Services)
	for _, v := range victims {
		log.Warn("new session replaces an older one of the same client", "old_session", v.id, "old_remote", v.remote)
		go v.sess.Close(session.CodeReplaced, fmt.Sprintf("replaced by a new session of client %q from %s", cs.client.name, remote))
	}
	if rej != nil {
		log.Warn("session rejected", "code", rej.Code, "reason", rej.Reason)
		p.Reject(rej)
		s.metrics.HandshakeFailed(rej.Code)
		s.recordFailed(remote, cs.client.name, rej)
		return
	}
	cs.granted = granted
	cs.stats = make(map[string]*admin.ServiceCounters, len(granted)+len(cs.private))
	for _, g := range granted {
		cs.stats[g.Name] = new(admin.ServiceCounters)
	}
	for _, g := range cs.private {
		cs.stats[g.Name] = new(admin.ServiceCounters)
	}
	sess, err := p.Welcome(session.Welcome{Client: cs.client.name, Session: cs.id, Services: granted, Groups: true,
		Private: true, PrivateServices: s.table.grantPrivate(cs.private), Visitors: visitors})
	if err != nil {
		s.table.down(cs, true) // routes it adopted from a hold go back on hold
		log.Warn("handshake failed after auth", "err", err)
		s.metrics.HandshakeFailed(handshakeReason(err))
		s.recordFailed(remote, cs.client.name, err)
		return
	}
	s.adm.done(raw) // authenticated: shutdown says goodbye instead
	ok, closing := s.table.up(cs, sess)
	if !ok { // a reload revoked it meanwhile
		log.Warn("client removed or its token changed by a reload during the handshake; closing")
		sess.Close(session.CodeClosed, "client "+cs.client.name+" was removed from the server's configuration")
		return
	}
	if closing { // shutdown began while we were answering
		sess.Close(session.CodeShuttingDown, "shutting down")
	}
	log.Info("session up", "services", describe(granted), "private", describe(cs.private), "visitors", len(visitors), "dial", p.Request.Dial)
	s.rec.Event(admin.Event{Kind: admin.EventSessionUp, Client: cs.client.name, Remote: remote, Reason: transportName + ", session " + cs.id + ": " + describe(granted)})
	s.metrics.SessionUp(cs.client.name, transportName)
	if s.metrics != nil {
		stop := s.watchRTT(cs)
		defer stop()
	}

	err = sess.Run(context.Background(), session.Handlers{
		Stream: func(st *session.Stream) {
			s.active.Add(1)
			defer s.active.Add(-1)
			s.serveVisitor(cs, st)
		},
		Drain: func() {
			s.table.drain(cs)
			log.Info("client draining: no new connections for it")
		},
		Update: func(reqs []session.Service) ([]session.Service, *session.RejectError) {
			granted, _, rej := s.table.claim(cs, reqs)
			if rej != nil {
				log.Warn("services update rejected; the old claims stay", "code", rej.Code, "reason", rej.Reason)
				s.rec.Event(admin.Event{Kind: admin.EventUpdateRejected, Client: cs.client.name, Remote: remote, Code: rej.Code, Reason: rej.Reason})
				return nil, rej
			}
			log.Info("services updated", "services", describe(granted))
			return granted, nil
		},
	})

	// A client that left on purpose (stopping) frees its routes; one that
	// dropped keeps them for the reconnect grace.
	var g *session.GoodbyeError
	dropped := !errors.As(err, &g) || g.Code != session.CodeShuttingDown
	held := s.table.down(cs, dropped)
	attrs := []any{"reason", err, "after", time.Since(sess.Info().Started).Round(time.Millisecond).String()}
	if held {
		attrs = append(attrs, "held_for", s.cfg.ReconnectGrace.String())
	}
	s.metrics.SessionDown(cs.client.name, transportName)
	log.Info("session down", attrs...)
	s.rec.Event(admin.Event{Kind: admin.EventSessionDown, Client: cs.client.name, Remote: remote, Reason: downReason(err, held, s.cfg.ReconnectGrace)})
}

// handshakeTLS runs tc's TLS handshake (none for nil) by deadline; its
// CPU waits for a slot of the admission's (through the hook of
// admission.gate). Once it is done the peer is proven. On error tc is
// closed.
func (s *Server) handshakeTLS(tc *tls.Conn, raw net.Conn, deadline time.Time) error {
	if tc == nil {
		return nil
	}
	tc.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		tc.Close()
		return fmt.Errorf("%w: %w", transport.ErrHandshake, err)
	}
	s.adm.proven(raw)
	return nil
}
