package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/dgram"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
)

// A UDP visitor's flow: one local source address of a UDP visitor, on a
// stream its client opened (Header.Kind "udp", Service
// "client/service"), relayed to a datagram stream of its own to the
// serving client, which sends the datagrams to its target.
//
//	source --> visiting client --(stream v)--> server --(stream t)--> serving client --> target
//	source <-- visiting client <-(stream v)--- server <-(stream t)--- serving client <-- target
//
// The rules, those of a public UDP route's flows (udp.go) where they
// apply:
//
//  1. Limits. A private UDP route's limits are the [server.udp] ones as
//     its service lowered them: at most max_flows visitor flows (one
//     more is refused with the reason, its stream aborted: a visitor is
//     an authenticated client whose flows are its own, so none is
//     evicted); a datagram longer than max_datagram from either side
//     ends the flow (a protocol error of that side's). Both sessions
//     count the flow in their udp.max_session_flows, apart from
//     limits.max_streams.
//  2. Member. The flow waits for a member as a TCP visitor's connection
//     does (pick: the serving client's reconnect grace), its first
//     datagrams held by its own stream's window meanwhile, in no shared
//     queue; it stays with that member for its life.
//  3. Relay. Each direction moves one datagram at a time on a goroutine
//     of its own, without a copy: a slow side holds up its own flow only
//     (smux windows are per stream), and the UDP sockets at both ends
//     drop what their flow cannot take.
//  4. Ends. idle_timeout with no datagram either way; either side's end
//     (passed on as an end) or abort (passed on with its reason); either
//     stream failing; the member leaving the route (a drain, an update
//     without the service) or the route going. end wakes every call
//     under way at once (past deadlines); the streams are then ended
//     within visitLinger.

// visitLinger bounds the end or abort chunk written once a flow ended, as
// session.Conn's Close bounds its own (5 s).
const visitLinger = 5 * time.Second

// serveVisitorFlow relays the UDP visitor flow on stream vst, which
// session vcs opened, to private UDP route r, until the flow ends.
func (s *Server) serveVisitorFlow(vcs *clientSession, r *route, vst *session.Stream, log *slog.Logger) {
	h := vst.Header()
	full := h.Service
	lim := r.limits.Load()
	if lim == nil { // set with the route; the server's as a fallback
		l := s.cfg.UDP.lower(nil)
		lim = &l
	}
	refuse := func(why string, o metrics.Outcome) {
		log.Info("udp visitor flow refused", "reason", why)
		s.rec.Event(admin.Event{Kind: admin.EventConnRefused, Client: vcs.client.name, Remote: h.Peer, Route: "visit " + full, Reason: why})
		vst.Abort(why)
		s.metrics.VisitorConn(full, o)
	}
	if vcs.flows.Add(1) > int64(s.cfg.UDP.MaxSessionFlows) {
		vcs.flows.Add(-1)
		s.metrics.UDPDropped(r.service, metrics.DropSessionFlows, 1)
		refuse("the server's udp.max_session_flows is reached for the visiting session", metrics.OutcomeRefusedLimit)
		return
	}
	if r.visitorFlows.Add(1) > int64(lim.MaxFlows) {
		r.visitorFlows.Add(-1)
		vcs.flows.Add(-1)
		s.metrics.UDPDropped(r.service, metrics.DropMaxFlows, 1)
		refuse(fmt.Sprintf("%s has its max_flows (%d) flows open", describeRoute(r), lim.MaxFlows), metrics.OutcomeRefusedLimit)
		return
	}
	s.changed.Notify()
	defer func() {
		r.visitorFlows.Add(-1)
		vcs.flows.Add(-1)
		s.changed.Notify()
	}()
	m, tst, why, outcome := s.openVisitorFlow(r, h, vcs)
	if tst == nil {
		refuse(why, outcome)
		return
	}
	defer m.cs.flows.Add(-1)
	s.metrics.VisitorConn(full, metrics.OutcomeOK)
	stats := m.cs.stats[m.service]
	if stats != nil {
		stats.Opened()
	}
	s.metrics.UDPFlows(m.service, 1)
	clk := s.edges.clock
	f := &visitFlow{v: vst, t: tst, max: min(lim.MaxDatagram, session.MaxDatagram), now: func() int64 { return clk.Now().UnixNano() }, die: make(chan struct{})}
	f.last.Store(f.now())
	start := clk.Now()
	var wg sync.WaitGroup
	wg.Go(func() { f.pump(f.v, f.t, &f.in, &f.bytesIn) })
	wg.Go(func() { f.pump(f.t, f.v, &f.out, &f.bytesOut) })
	s.watchVisitorFlow(f, r, m, time.Duration(lim.IdleMillis)*time.Millisecond)
	wg.Wait()
	f.finish()

	in, out := f.bytesIn.Load(), f.bytesOut.Load()
	if stats != nil {
		stats.Add(in, out) // a flow's bytes show when it ends, as a public flow's
		stats.Closed()
	}
	s.metrics.UDPFlows(m.service, -1)
	s.metrics.AddDatagrams(m.service, f.in.Load(), f.out.Load())
	s.metrics.AddBytes(m.service, in, out)
	s.rec.AddBytes(m.cs.client.name, m.service, in, out)
	log.Debug("udp visitor flow ended", "service", m.service, "datagrams_from_visitor", f.in.Load(), "datagrams_to_visitor", f.out.Load(),
		"bytes_from_visitor", in, "bytes_to_visitor", out, "duration", clk.Now().Sub(start).Round(time.Millisecond).String(), "reason", f.why)
}

// openVisitorFlow picks the member of r that takes a flow with header h
// (rule 2) and opens its datagram stream; or says why none did.
func (s *Server) openVisitorFlow(r *route, h session.Header, vcs *clientSession) (*member, *session.Stream, string, metrics.Outcome) {
	tried := make(map[*member]bool)
	var failed metrics.Outcome
	for {
		m, err := s.table.pick(r, tried, s.stopping)
		if err != nil {
			return nil, nil, refusedReason(err, len(tried), failed, "udp.max_session_flows"), refusedOutcome(err, failed, s.stopping)
		}
		if m.cs.flows.Add(1) > int64(s.cfg.UDP.MaxSessionFlows) {
			m.cs.flows.Add(-1)
			m.cs.log.Warn("session at udp.max_session_flows; udp visitor flow not given to it", "route", r.key, "max_session_flows", s.cfg.UDP.MaxSessionFlows)
			tried[m], failed = true, metrics.OutcomeRefusedLimit
			continue
		}
		st, err := m.cs.sess.Open(session.Header{Service: m.service, Peer: h.Peer, Local: "visitor " + vcs.client.name, Kind: session.KindDatagram})
		if err != nil {
			m.cs.flows.Add(-1)
			tried[m], failed = true, metrics.OutcomeAborted
			continue
		}
		return m, st, "", ""
	}
}

// watchVisitorFlow ends f when it has been idle for idle, when m leaves r
// or r goes (rule 4); it returns once f has ended.
func (s *Server) watchVisitorFlow(f *visitFlow, r *route, m *member, idle time.Duration) {
	clk := s.edges.clock
	for {
		wake, ok := s.table.memberWake(r, m)
		if !ok {
			f.end("its session no longer serves "+describeRoute(r), nil)
			return
		}
		left := time.Duration(f.last.Load() - f.now() + int64(idle))
		if left <= 0 {
			f.end(fmt.Sprintf("idle for %v (idle_timeout)", idle), nil)
			return
		}
		t := clk.NewTimer(left)
		select {
		case <-t.C():
		case <-wake:
		case <-f.die:
			t.Stop()
			return
		}
		t.Stop()
	}
}

// memberWake reports whether m still serves r, and the channel closed
// when r's members change next.
func (t *table) memberWake(r *route, m *member) (<-chan struct{}, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-r.done:
		return nil, false
	default:
	}
	for _, x := range r.members {
		if x == m {
			return r.wake, true
		}
	}
	return nil, false
}

// visitFlow is one UDP visitor flow's relay: the visitor's stream v and
// the serving client's stream t.
type visitFlow struct {
	v, t *session.Stream
	max  int
	now  func() int64
	last atomic.Int64 // unix ns of the last datagram either way

	in, out, bytesIn, bytesOut atomic.Int64 // in: from the visitor

	die     chan struct{}
	dieOnce sync.Once
	why     string          // set before die closes
	ended   *session.Stream // whose peer ended the flow cleanly; set before die closes
	cut     [2]atomic.Bool  // a write to v (0) or t (1) failed: its chunks may be cut
}

// end ends the flow for why (ended: the stream whose peer sent its end);
// the pumps wake at once.
func (f *visitFlow) end(why string, ended *session.Stream) {
	f.dieOnce.Do(func() {
		f.why, f.ended = why, ended
		close(f.die)
		past := time.Unix(1, 0)
		for _, st := range []*session.Stream{f.v, f.t} {
			st.SetReadDeadline(past)
			st.SetWriteDeadline(past)
		}
	})
}

// side names a stream of the flow in reasons.
func (f *visitFlow) side(st *session.Stream) string {
	if st == f.v {
		return "the visitor"
	}
	return "the serving client"
}

// pump moves datagrams from one stream to the other until the flow ends.
func (f *visitFlow) pump(from, to *session.Stream, n, bytes *atomic.Int64) {
	var rb *[]byte
	get := func(n int) []byte {
		rb = dgram.Get(n)
		return (*rb)[dgram.Head:]
	}
	for {
		p, err := from.ReadDatagram(f.max, get)
		if err != nil {
			var ab *session.AbortError
			switch {
			case err == io.EOF:
				f.end(f.side(from)+" ended it", from)
			case errors.As(err, &ab):
				f.end(ab.Reason, nil)
			default:
				f.end("the stream from "+f.side(from)+" failed: "+err.Error(), nil)
			}
			return
		}
		if err := to.WriteDatagram((*rb)[:dgram.Head+len(p)]); err != nil {
			if to == f.v {
				f.cut[0].Store(true)
			} else {
				f.cut[1].Store(true)
			}
			f.end("writing to "+f.side(to)+" failed: "+err.Error(), nil) // rb may still be in smux: not reused
			return
		}
		dgram.Put(rb)
		n.Add(1)
		bytes.Add(int64(len(p)))
		f.last.Store(f.now())
	}
}

// finish ends both streams once the pumps have stopped: an end for an
// end, else an abort with the reason; a stream whose write was cut is
// only closed (a chunk after a cut one would be misread).
func (f *visitFlow) finish() {
	for i, st := range []*session.Stream{f.v, f.t} {
		switch {
		case f.cut[i].Load():
		case f.ended != nil:
			st.SetWriteDeadline(time.Now().Add(visitLinger))
			st.CloseWrite()
		default:
			st.Abort(f.why)
		}
		st.Close()
	}
}
