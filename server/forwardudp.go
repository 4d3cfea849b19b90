package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/internal/dgram"
	"github.com/warren-tunnel/warren/session"
)

// A UDP port another server holds has a socket on every member, read by
// its flow table (udp.go) as a port held here is. A new source with no
// live member here starts a flow whose stream is a forwarded one (kind
// KindDatagram) to a server that holds the route; that server opens a
// flow stream to a session of its own, with the original public source
// as its peer, and relays the datagram chunks both ways. Each side's end
// or abort chunk ends the flow on the other; a peer link that dies cuts
// the flows it carries.
//
//	public peer --> socket (B) --> flow (B) --peer link--> relay (A) --> session stream --> client
//	public peer <-- socket (B) <-- flow (B) <--peer link-- relay (A) <-- session stream <-- client
//
// The server that reads the socket keeps the flow table's rules: idle
// timeout, max_flows, queues, sizes. The holder keeps
// udp.max_session_flows, and a forwarded flow is never forwarded again.
// A holder whose session for the route is still in its handshake waits
// for it before it answers, as a flow arriving there would: the
// forwarding server's flow queues its datagrams meanwhile.

// forwardFlow opens the stream of f, which has no member here: to the
// holding pickFlow gave it, else to another holding of its route, in
// turn, until one takes it.
func (s *Server) forwardFlow(f *flow) (flowStream, error) {
	n, r := s.node, f.ft.r
	h := f.remote
	skip := map[string]bool{}
	var last error
	for h != nil {
		skip[h.Server] = true
		fc, err := s.openFlow(n, r, f, *h)
		if err == nil {
			f.remote = h
			fs := &forwardedFlow{c: fc}
			fc.OnCut(func() { f.end("the peer link to server " + h.Server + " was lost") })
			s.metrics.Forwarded(h.Server, "out")
			return fs, nil
		}
		last = err
		select {
		case <-f.die:
			return nil, err
		default:
		}
		s.log.Info("cannot forward a UDP flow; trying another server", "route", r.key, "peer", f.peer.String(), "server", h.Server, "err", err)
		h = s.table.pickRemote(r, skip)
	}
	if last == nil {
		last = errors.New("no server holds " + describeRoute(r))
	}
	return nil, last
}

// openFlow opens a forwarded flow stream to the server of h.
func (s *Server) openFlow(n *node, r *route, f *flow, h cluster.Holding) (*cluster.Conn, error) {
	m, ok := n.member(h.Server)
	if !ok {
		return nil, fmt.Errorf("server %s is not a member", h.Server)
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	go func() { // the flow's end gives up the wait
		select {
		case <-f.die:
			cancel()
		case <-ctx.Done():
		}
	}()
	return n.peers.Open(ctx, m, cluster.Header{Key: r.key, Peer: f.peer.String(), Local: addrPortOf(f.ft.local), Kind: cluster.KindDatagram})
}

// addrPortOf is the "ip:port" of a socket's address, or "".
func addrPortOf(a string) string {
	if ap, err := netip.ParseAddrPort(a); err == nil {
		return ap.String()
	}
	return ""
}

// pickRemote is the next holding of r elsewhere not in skip, or nil.
func (t *table) pickRemote(r *route, skip map[string]bool) *cluster.Holding {
	t.mu.Lock()
	defer t.mu.Unlock()
	return r.pickRemoteLocked(skip)
}

// forwardedFlow is a flow's stream over a peer link: session.Stream's
// datagram methods on a forwarded stream, in the same chunk layout.
type forwardedFlow struct {
	c   *cluster.Conn
	hdr [session.DatagramHeaderLen]byte
}

func (s *forwardedFlow) WriteDatagram(b []byte) error {
	session.PutDatagramHeader(b)
	_, err := s.c.Write(b)
	return err
}

func (s *forwardedFlow) WriteDatagrams(b []byte) error {
	_, err := s.c.Write(b)
	return err
}

func (s *forwardedFlow) ReadDatagram(max int, buf func(n int) []byte) ([]byte, error) {
	return session.ReadDatagramFrom(s.c, s.hdr[:], max, buf)
}

func (s *forwardedFlow) SetReadDeadline(t time.Time) error  { return s.c.SetReadDeadline(t) }
func (s *forwardedFlow) SetWriteDeadline(t time.Time) error { return s.c.SetWriteDeadline(t) }

// Abort tells the holder why the flow ended, then closes the stream.
func (s *forwardedFlow) Abort(reason string) error {
	s.c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := s.c.Write(session.AppendDatagramEnd(nil, true, reason)); err == nil {
		s.c.CloseWrite()
	}
	return s.c.Close()
}

func (s *forwardedFlow) Close() error { return s.c.Close() }

// serveForwardedFlow serves a UDP flow another server forwarded here: a
// flow stream to a session here, with the original public source as its
// peer, and the datagram chunks relayed both ways until either side ends.
// Its member is picked as a flow's that arrives here (rule 1 of udp.go),
// never a holding elsewhere (no second hop): a live one, else one in its
// handshake, whose session it waits for before it answers, while the
// forwarding server queues the flow's datagrams as for any stream that
// opens (rule 3). The wait ends with the handshake, at handshake_timeout,
// or when the forwarding server gives up (c.Gone: the flow ended there,
// its wait for the reply ran out, the peer link went).
func (s *Server) serveForwardedFlow(c *cluster.Conn) {
	h := c.Header()
	var m *member
	r := s.table.servedHere(h.Key)
	if r != nil && r.udp && !s.isStopping() {
		m, _ = s.table.pickFlow(r, false)
	}
	if m == nil {
		c.Refuse(fmt.Sprintf("no live session serves %s on server %s", describeKey(h.Key), s.node.id))
		return
	}
	// Counted from now, as a flow that arrives here is: the flows that
	// wait for a session count against its udp.max_session_flows.
	if m.cs.flows.Add(1) > int64(s.cfg.UDP.MaxSessionFlows) {
		m.cs.flows.Add(-1)
		s.metrics.UDPDropped(m.service, dropReasons[dropSessionFlows], 1)
		c.Refuse(fmt.Sprintf("the session serving %s on server %s is at udp.max_session_flows", describeKey(h.Key), s.node.id))
		return
	}
	sess := s.table.sessionFor(r, m, c.Gone())
	if sess == nil {
		m.cs.flows.Add(-1)
		select {
		case <-c.Gone(): // no one waits for the reply any more
			c.Close()
			m.cs.log.Debug("forwarded udp flow ended while its session was in its handshake", "service", m.service, "route", h.Key, "peer", h.Peer, "forwarded_by", c.Peer(), "reason", "the forwarding server gave up")
			return
		default:
		}
		why := "its handshake failed, or it stopped serving the route"
		if s.table.members(r)[m] {
			why = "it was not up within handshake_timeout (" + s.table.cfg.handshakeTimeout.String() + ")"
		}
		why = fmt.Sprintf("the session for %s on server %s did not come up: %s", describeKey(h.Key), s.node.id, why)
		m.cs.log.Debug("forwarded udp flow refused", "service", m.service, "route", h.Key, "peer", h.Peer, "forwarded_by", c.Peer(), "reason", why)
		c.Refuse(why)
		return
	}
	maxDatagram := session.MaxDatagram
	if lim := r.limits.Load(); lim != nil {
		maxDatagram = lim.MaxDatagram
	}
	st, err := sess.Open(session.Header{Service: m.service, Peer: h.Peer, Local: h.Local, Kind: session.KindDatagram})
	if err != nil {
		m.cs.flows.Add(-1)
		c.Refuse("opening a flow stream to the client failed: " + err.Error())
		return
	}
	if err := c.Accept(); err != nil {
		m.cs.flows.Add(-1)
		st.Abort("the forwarding server went")
		c.Close()
		return
	}
	s.metrics.Forwarded(c.Peer(), "in")
	// The handshake fills cs.stats before up: read it only now.
	stats := m.cs.stats[m.service]
	if stats != nil {
		stats.Opened()
	}
	s.metrics.UDPFlows(m.service, 1)
	in, out, why := relayFlow(c, st, maxDatagram)
	s.metrics.UDPFlows(m.service, -1)
	m.cs.flows.Add(-1)
	if stats != nil {
		stats.Add(in.bytes, out.bytes)
		stats.Closed()
	}
	s.metrics.AddDatagrams(m.service, in.n, out.n)
	s.metrics.AddBytes(m.service, in.bytes, out.bytes)
	s.rec.AddBytes(m.cs.client.name, m.service, in.bytes, out.bytes)
	m.cs.log.Debug("forwarded udp flow ended", "service", m.service, "route", h.Key, "peer", h.Peer, "forwarded_by", c.Peer(),
		"datagrams_from_public", in.n, "datagrams_to_public", out.n, "bytes_from_public", in.bytes, "bytes_to_public", out.bytes, "reason", why)
}

// flowCount counts one direction of a relayed flow.
type flowCount struct{ n, bytes int64 }

// relayFlow relays datagram chunks between a forwarded flow's stream c
// and its flow stream st until either side ends it, whose end or abort it
// passes on; then it closes both. It returns the counts each way and why
// the flow ended.
func relayFlow(c *cluster.Conn, st *session.Stream, maxDatagram int) (in, out flowCount, why string) {
	var once sync.Once
	stop := func(reason string) { // wakes the other direction
		once.Do(func() {
			why = reason
			past := time.Unix(1, 0)
			c.SetDeadline(past)
			st.SetReadDeadline(past)
			st.SetWriteDeadline(past)
		})
	}
	c.OnCut(func() { stop("the peer link was lost") })
	var wg sync.WaitGroup
	wg.Go(func() { // forwarding server -> client
		var hdr [session.DatagramHeaderLen]byte
		var bp *[]byte
		get := func(n int) []byte {
			bp = dgram.Get(n)
			return (*bp)[dgram.Head:]
		}
		for {
			p, err := session.ReadDatagramFrom(c, hdr[:], maxDatagram, get)
			if err != nil {
				if bp != nil {
					dgram.Put(bp)
				}
				var ab *session.AbortError
				switch {
				case err == io.EOF:
					st.Abort("the forwarding server ended the flow")
					stop("the forwarding server ended it")
				case errors.As(err, &ab):
					st.Abort(ab.Reason)
					stop("the forwarding server ended it: " + ab.Reason)
				default:
					st.Abort("the forwarding server's stream failed")
					stop("the forwarding server's stream failed: " + err.Error())
				}
				return
			}
			if err := st.WriteDatagram((*bp)[:dgram.Head+len(p)]); err != nil {
				stop("writing to the client failed: " + err.Error())
				return // bp may still be in smux: not reused
			}
			dgram.Put(bp)
			bp = nil
			in.n++
			in.bytes += int64(len(p))
		}
	})
	wg.Go(func() { // client -> forwarding server
		var b []byte
		get := func(n int) []byte {
			if cap(b) < session.DatagramHeaderLen+n {
				b = make([]byte, session.DatagramHeaderLen+n)
			}
			return b[session.DatagramHeaderLen : session.DatagramHeaderLen+n]
		}
		for {
			p, err := st.ReadDatagram(maxDatagram, get)
			if err != nil {
				var ab *session.AbortError
				var end []byte
				reason := "the client ended it"
				switch {
				case err == io.EOF:
					end = session.AppendDatagramEnd(nil, false, "")
				case errors.As(err, &ab):
					end = session.AppendDatagramEnd(nil, true, ab.Reason)
					reason += ": " + ab.Reason
				default:
					reason = "its stream failed: " + err.Error()
					end = session.AppendDatagramEnd(nil, true, "the flow's stream to the client failed")
				}
				c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, werr := c.Write(end); werr == nil {
					c.CloseWrite()
				}
				stop(reason)
				return
			}
			msg := b[:session.DatagramHeaderLen+len(p)]
			session.PutDatagramHeader(msg)
			if _, err := c.Write(msg); err != nil {
				stop("writing to the forwarding server failed: " + err.Error())
				return
			}
			out.n++
			out.bytes += int64(len(p))
		}
	})
	wg.Wait()
	st.Close()
	c.Close()
	return in, out, why
}
