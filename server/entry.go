package server

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/domain"
	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/sniff"
)

// The entry points, [server.http] and [server.https], route public
// connections by domain. Per connection: read the HTTP request head up to
// its Host header, or the TLS ClientHello up to its server name (within
// limits.sniff_timeout and limits.sniff_max), look the name up among the
// domain routes of that entry point, and relay the connection to the
// route's client like a port route's, the bytes read so far first. TLS is
// not terminated, and nothing is rewritten: a keep-alive connection stays
// with the backend its first request chose.

// Timing of refusals: the answer's write deadline, and how long the
// connection is then read and discarded (at most lingerMax bytes) so that
// closing it with unread bytes does not reset it before the client has
// read the answer.
const (
	refuseWriteTimeout = 5 * time.Second
	lingerTimeout      = time.Second
	lingerMax          = 256 << 10
)

// entryPoint is a bound [server.http] or [server.https] listener.
type entryPoint struct {
	name string // session.EntryHTTP or EntryHTTPS
	l    net.Listener
}

// entryState is the entry points' part of Server, guarded by Server.mu.
type entryState struct {
	points []*entryPoint
	// sniffing are the accepted connections that have not been routed
	// yet, in sniffOrder (oldest first, with when they came); shutdown
	// closes them.
	sniffing       map[net.Conn]*list.Element
	sniffOrder     *list.List
	refused        int       // over limits.max_sniffing since the last log
	lastRefusedLog time.Time // when that was logged
}

// listenEntries binds the entry points that have an address, or none.
func (s *Server) listenEntries() ([]*entryPoint, error) {
	var eps []*entryPoint
	for _, e := range []struct{ name, addr string }{
		{session.EntryHTTP, s.cfg.HTTP.Address},
		{session.EntryHTTPS, s.cfg.HTTPS.Address},
	} {
		if e.addr == "" {
			continue
		}
		l, err := s.edges.listen("tcp", e.addr)
		if err != nil {
			for _, ep := range eps {
				ep.l.Close()
			}
			return nil, fmt.Errorf("server.%s.address: %w", e.name, err)
		}
		eps = append(eps, &entryPoint{name: e.name, l: l})
	}
	return eps, nil
}

// startEntries records the bound entry points and starts their accept
// loops; Run calls it before Ready closes.
func (s *Server) startEntries(eps []*entryPoint) {
	s.mu.Lock()
	s.entries.points = eps
	s.entries.sniffing = make(map[net.Conn]*list.Element)
	s.entries.sniffOrder = list.New()
	s.mu.Unlock()
	for _, ep := range eps {
		s.log.Info("listening for connections routed by domain", "entry", ep.name, "address", ep.l.Addr().String())
		s.acceptWG.Go(func() { s.acceptEntry(ep) })
	}
}

// EntryAddr returns the bound address of the entry point "http" or
// "https", or nil when it is off. Valid after Ready.
func (s *Server) EntryAddr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.entries.points {
		if ep.name == name {
			return ep.l.Addr()
		}
	}
	return nil
}

// Sniffing is the number of entry point connections that have not been
// routed yet: still sending their request head or ClientHello, or being
// refused.
func (s *Server) Sniffing() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries.sniffing)
}

// closeEntriesLocked closes the entry listeners and the connections that
// have not been routed yet; shutdown calls it with s.mu held.
func (s *Server) closeEntriesLocked() {
	for _, ep := range s.entries.points {
		ep.l.Close()
	}
	for c := range s.entries.sniffing {
		c.Close()
	}
}

// acceptEntry accepts connections on an entry point until it is closed;
// each is served in its own goroutine.
func (s *Server) acceptEntry(ep *entryPoint) {
	err := s.accept(ep.l, s.stopping, func(c net.Conn) {
		if !s.addSniffing(c, ep) {
			c.Close()
			return
		}
		s.relays.Go(func() { s.serveEntry(ep, c) })
	}, "accepting public connection failed", "entry", ep.name)
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if !closing {
		s.log.Error("entry point listener failed; no more connections on it", "entry", ep.name, "address", ep.l.Addr().String(), "err", err)
	}
}

// sniffConn is an entry point connection in its sniff phase.
type sniffConn struct {
	c  net.Conn
	at time.Time
}

// addSniffing admits a connection to its sniff phase, within
// limits.max_sniffing: at the limit it drops the oldest connection still
// sniffing when that is older than evictAfter (idle connections must not
// lock real requests out), and refuses the new one otherwise. It reports
// false, and the caller closes the connection, when it refuses, and once
// shutdown has begun.
func (s *Server) addSniffing(c net.Conn, ep *entryPoint) bool {
	now := s.edges.clock.Now()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false
	}
	e := &s.entries
	var evicted net.Conn
	if len(e.sniffing) >= s.cfg.Limits.MaxSniffing {
		if old := e.sniffOrder.Front().Value.(*sniffConn); now.Sub(old.at) >= evictAfter {
			evicted = old.c
			s.forgetSniffingLocked(evicted)
		}
		e.refused++
		if now.Sub(e.lastRefusedLog) >= time.Second {
			what := "closing new ones"
			if evicted != nil {
				what = "dropping the oldest"
			}
			s.log.Warn("too many connections that have not named their host yet; "+what,
				"limit", "limits.max_sniffing", "entry", ep.name, "peer", c.RemoteAddr().String(), "dropped", e.refused)
			e.lastRefusedLog, e.refused = now, 0
		}
		if evicted == nil {
			s.mu.Unlock()
			return false
		}
	}
	e.sniffing[c] = e.sniffOrder.PushBack(&sniffConn{c: c, at: now})
	s.mu.Unlock()
	if evicted != nil {
		evicted.Close()
	}
	return true
}

// doneSniffing forgets a connection of the sniff phase.
func (s *Server) doneSniffing(c net.Conn) {
	s.mu.Lock()
	s.forgetSniffingLocked(c)
	s.mu.Unlock()
}

func (s *Server) forgetSniffingLocked(c net.Conn) {
	if el, ok := s.entries.sniffing[c]; ok {
		s.entries.sniffOrder.Remove(el)
		delete(s.entries.sniffing, c)
	}
}

// serveEntry routes one connection of an entry point by the host it
// names, and relays it.
func (s *Server) serveEntry(ep *entryPoint, c net.Conn) {
	defer s.doneSniffing(c) // a no-op once routed
	peer := c.RemoteAddr().String()
	log := s.log.With("entry", ep.name, "peer", peer)

	c.SetReadDeadline(time.Now().Add(s.cfg.Limits.SniffTimeout))
	var host string
	var consumed []byte
	var err error
	if ep.name == session.EntryHTTPS {
		host, consumed, err = sniff.TLSServerName(c, s.cfg.Limits.SniffMax)
	} else {
		host, consumed, err = sniff.HTTPHost(c, s.cfg.Limits.SniffMax)
	}
	if err != nil {
		s.refuseUnnamed(ep, c, log, err, len(consumed))
		return
	}
	c.SetReadDeadline(time.Time{})

	var r *route
	if name, err := domain.Normalize(host); err == nil {
		r = s.table.lookupDomain(ep.name, name)
	}
	s.mu.Lock()
	closing := s.closing
	if r != nil && !closing {
		s.forgetSniffingLocked(c) // shutdown no longer closes it
	}
	s.mu.Unlock()
	switch {
	case closing:
		c.Close()
		return
	case r == nil:
		log.Info("no service for this host; connection refused", "host", host)
		s.rec.Event(admin.Event{Kind: admin.EventUnknownHost, Remote: peer, Route: ep.name + " entry point", Reason: "no client serves host " + quote.Short(host)})
		if ep.name == session.EntryHTTP {
			refuseHTTP(c, 404, "no service for host "+strconv.QuoteToASCII(host)+" on this server")
		} else {
			lingerClose(c)
		}
		return
	}
	log.Debug("routing by domain", "host", host, "route", r.key)
	s.serveConn(r, c, consumed)
}

// refuseUnnamed ends a connection that did not name a usable host: a
// short HTTP error for requests that came whole enough to answer, a plain
// close otherwise (TLS, timeouts, connections closed by their peer).
func (s *Server) refuseUnnamed(ep *entryPoint, c net.Conn, log *slog.Logger, err error, n int) {
	log.Debug("connection did not name a host; closed", "bytes_read", n, "err", err)
	if ep.name != session.EntryHTTP {
		lingerClose(c)
		return
	}
	switch {
	case errors.Is(err, sniff.ErrNoHost):
		refuseHTTP(c, 404, "no service: the request names no host (Host header)")
	case errors.Is(err, sniff.ErrTooLarge):
		refuseHTTP(c, 431, "request head too large: no Host header in the first "+strconv.Itoa(s.cfg.Limits.SniffMax)+" bytes")
	case errors.Is(err, sniff.ErrNotHTTP), errors.Is(err, sniff.ErrMalformed),
		errors.Is(err, sniff.ErrBadName), errors.Is(err, sniff.ErrAmbiguous):
		refuseHTTP(c, 400, "bad request: not an HTTP/1.x request with one valid Host header")
	default: // a read error: the deadline, EOF, a reset
		c.Close()
	}
}

// refuseHTTP answers with a short plain-text response and closes c.
func refuseHTTP(c net.Conn, status int, text string) {
	body := text + "\n"
	resp := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, statusText(status), len(body), body)
	c.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
	if _, err := io.WriteString(c, resp); err != nil {
		c.Close()
		return
	}
	lingerClose(c)
}

func statusText(status int) string {
	switch status {
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 431:
		return "Request Header Fields Too Large"
	}
	return "Error"
}

// lingerClose half-closes c, reads and discards what the client still
// sends for a moment, and closes it: closing a TCP connection with unread
// bytes would reset it, and the client could lose the answer.
func lingerClose(c net.Conn) {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		hc.CloseWrite()
		c.SetReadDeadline(time.Now().Add(lingerTimeout))
		io.CopyN(io.Discard, c, lingerMax)
	}
	c.Close()
}
