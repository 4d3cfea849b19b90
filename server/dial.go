package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
)

// Dialing through a client (the reverse dialer): code beside the server
// gets a net.Conn that a client opened to an address on its side. Two
// checks guard it: the server's ([[server.clients]] dial = true, before
// anything reaches the client) and the client's own allow list
// ([client.dial] allow), which the client applies before it dials.

// Sentinel errors of Dial; match them with errors.Is. Every error Dial
// returns is a *DialError wrapping one of them (or the context's error).
var (
	// ErrNoSuchClient: no client of that name is configured.
	ErrNoSuchClient = errors.New("no such client")
	// ErrNotConnected: the client has no session up that takes dials
	// (it is offline, or too old to take dial streams).
	ErrNotConnected = errors.New("client not connected")
	// ErrDialNotAllowed: the server's configuration does not let code
	// dial through this client ([[server.clients]] dial = false).
	ErrDialNotAllowed = errors.New("dialing through this client is not allowed by the server's configuration (server.clients dial = false)")
	// ErrDialRefused: the client's policy ([client.dial] allow) refused
	// the address; DialError.Reason says why.
	ErrDialRefused = errors.New("refused by the client's dial policy")
	// ErrUnreachable: the client tried and could not connect;
	// DialError.Reason is the client's dial error.
	ErrUnreachable = errors.New("target unreachable from the client")
	// ErrUnsupportedNetwork: network is not "tcp" or "udp" (or tcp4,
	// tcp6, udp4, udp6).
	ErrUnsupportedNetwork = errors.New("unsupported network")
)

// DialError is why Server.Dial failed: Err is one of the sentinels above
// (or the context's error, or the session's end), Reason what the client
// said, if it said anything.
type DialError struct {
	Client, Network, Address string
	Err                      error
	Reason                   string
}

func (e *DialError) Error() string {
	s := fmt.Sprintf("dial %s %s through client %q: %v", e.Network, e.Address, e.Client, e.Err)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

func (e *DialError) Unwrap() error { return e.Err }

// dialAddr is a Dial conn's local address: the client it goes through.
type dialAddr string

func (a dialAddr) Network() string { return "warren" }
func (a dialAddr) String() string  { return "client " + string(a) }

// Dial opens a connection to address, dialed by the client named client
// on its side, over network "tcp" or "udp" (or "tcp4", "tcp6", "udp4",
// "udp6": the client's policy and resolver decide the address family). With several sessions
// of the client up, the one with the fewest open streams serves. ctx
// bounds the wait for the client's answer (30 s without a deadline); the
// returned conn is not bound by ctx.
//
// The conn behaves as a TCP connection: CloseWrite sends end-of-stream
// (the target reads EOF), Close sends it too after what was written,
// deadlines work, and its RemoteAddr is the address the client dialed.
// Over "udp" the conn is a connected UDP socket's (session.DatagramConn):
// each Write one datagram, each Read one, its RemoteAddr a *net.UDPAddr;
// the client's socket to the target stays open until Close.
// Errors are *DialError, matching ErrNoSuchClient, ErrNotConnected,
// ErrDialNotAllowed, ErrDialRefused, ErrUnreachable with errors.Is.
func (s *Server) Dial(ctx context.Context, client, network, address string) (net.Conn, error) {
	fail := func(err error, reason string) (net.Conn, error) {
		return nil, &DialError{Client: client, Network: network, Address: address, Err: err, Reason: reason}
	}
	var kind string
	switch network {
	case "tcp", "tcp4", "tcp6":
		kind = "tcp"
	case "udp", "udp4", "udp6":
		kind = "udp"
	default:
		return fail(ErrUnsupportedNetwork, `want "tcp" or "udp"`)
	}
	if _, _, err := net.SplitHostPort(address); err != nil {
		return fail(ErrDialRefused, "not host:port: "+err.Error())
	}
	cs, err := s.table.dialSession(client)
	if err != nil {
		s.metrics.Dial(client, metrics.DialUnavailable)
		return fail(err, "")
	}
	st, dialed, err := cs.sess.Dial(ctx, kind, address)
	var de *session.DialError
	switch {
	case errors.As(err, &de) && de.Status == session.DialRefused:
		cs.log.Info("dial refused by the client", "network", network, "address", address, "reason", de.Message)
		s.metrics.Dial(client, metrics.DialRefused)
		return fail(ErrDialRefused, de.Message)
	case errors.As(err, &de):
		cs.log.Info("dial through the client failed", "network", network, "address", address, "reason", de.Message)
		s.metrics.Dial(client, metrics.DialFailed)
		return fail(ErrUnreachable, de.Message)
	case err != nil:
		s.metrics.Dial(client, metrics.DialFailed)
		return fail(err, "")
	}
	s.metrics.Dial(client, metrics.DialOK)
	cs.log.Debug("dialed through the client", "network", network, "address", address, "dialed", dialed)
	var remote net.Addr = dialAddr(dialed)
	ap, perr := netip.ParseAddrPort(dialed)
	if kind == "udp" {
		if perr == nil {
			remote = net.UDPAddrFromAddrPort(ap)
		}
		return session.NewDatagramConn(st, dialAddr(client), remote), nil
	}
	if perr == nil {
		remote = net.TCPAddrFromAddrPort(ap)
	}
	return session.NewConn(st, dialAddr(client), remote), nil
}

// Dialer returns Dial for one client, in the form of
// net.Dialer.DialContext: an http.Transport's DialContext, say.
func (s *Server) Dialer(client string) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		return s.Dial(ctx, client, network, address)
	}
}

// dialSession picks the session of client that serves a dial: the live
// one, taking dial streams, with the fewest open streams.
func (t *table) dialSession(client string) (*clientSession, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ce := t.named[client]
	if ce == nil {
		return nil, ErrNoSuchClient
	}
	if !ce.dial {
		return nil, ErrDialNotAllowed
	}
	var best *clientSession
	for cs := range t.byClient[ce] {
		if cs.sess == nil || cs.sess.Err() != nil || !cs.sess.Info().Dial || cs.draining {
			continue
		}
		if best == nil || cs.sess.NumStreams() < best.sess.NumStreams() {
			best = cs
		}
	}
	if best == nil {
		return nil, ErrNotConnected
	}
	return best, nil
}
