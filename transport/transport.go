// Package transport carries one warren session between a client and a
// server: a reliable, ordered byte stream, by default TLS 1.3 over TCP
// ("tcp") or TLS 1.3 over KCP on UDP ("kcp").
//
// The layers above (session, server, client) see only net.Conn values
// produced through the Transport seam, so they run unchanged over TCP, KCP
// or the in-memory transport in transporttest.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// Transport makes and accepts connections of one kind.
//
// Dial connects to addr ("host:port") and returns a connection on which the
// bytes one side writes are read by the other in order and unaltered. When
// the transport is encrypted, Dial returns only after the TLS handshake has
// completed and the server's certificate has been verified, so a dead, wrong
// or impersonated server is reported by Dial itself (KCP has no handshake of
// its own; TLS supplies it). ctx bounds the whole dial, handshake included;
// cancelling ctx after Dial has returned does not affect the connection.
//
// Listen binds addr and returns a Listener for it.
//
// Connections from an encrypted transport are *tls.Conn, so callers can
// reach the TLS state (the channel binding used by warren's auth, see
// ExportBinding). A connection supports one concurrent reader and one
// concurrent writer; deadlines work as for net.Conn (a passed one fails
// Read or Write with an error that wraps os.ErrDeadlineExceeded), except
// that after a Write timed out an encrypted connection's writes fail for
// good, as crypto/tls's do. After Close, Read and
// Write return an error and the connection's resources are released; Close
// may be called more than once. Whether bytes written just before Close
// still reach the peer depends on the kind: TCP delivers them, KCP discards
// what the peer has not acknowledged (see KCP).
//
// A Transport value holds only configuration: it is safe for concurrent use
// and has nothing to close.
type Transport interface {
	Dial(ctx context.Context, addr string) (net.Conn, error)
	Listen(addr string) (Listener, error)
	// String names the transport as users see it: "tcp+tls", "kcp", ...
	String() string
}

// Listener accepts connections for a Transport.
//
// Accept returns a connection as soon as a peer has reached the listener.
// For an encrypted transport the server side of the TLS handshake has not
// run yet: it runs on the connection's first Read or Write (or an explicit
// Handshake), so one slow peer never delays Accept for the others. The caller
// bounds that handshake with a deadline on the connection.
//
// After Close, Accept returns an error that matches net.ErrClosed, and the
// bound address is released. Connections already accepted are not closed by
// Close; their owners close them. Close may be called more than once.
type Listener interface {
	Accept() (net.Conn, error)
	Close() error
	Addr() net.Addr
}

// Transport kinds as written in configuration files.
const (
	KindTCP = "tcp"
	KindKCP = "kcp"
)

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrUnknownKind is returned for a transport kind other than "tcp" or "kcp".
	ErrUnknownKind = errors.New(`unknown transport (want "tcp" or "kcp")`)
	// ErrFingerprintMismatch means the server presented a certificate other
	// than the pinned one.
	ErrFingerprintMismatch = errors.New("server certificate does not match the pinned fingerprint")
	// ErrHandshake wraps every failure of the TLS handshake.
	ErrHandshake = errors.New("TLS handshake failed")
)

// New returns the transport of the given kind ("tcp" or "kcp") configured by
// cfg. cfg.TLS nil makes it plaintext.
func New(kind string, cfg Config) (Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch kind {
	case KindTCP:
		return &TCP{TLS: cfg.TLS, Congestion: cfg.TCP.resolve(logger(cfg.Log))}, nil
	case KindKCP:
		return &KCP{Config: cfg.KCP, TLS: cfg.TLS, Log: cfg.Log}, nil
	}
	return nil, fmt.Errorf("%q: %w", kind, ErrUnknownKind)
}

// kindName is how String names a transport: kind plus "+tls" when encrypted.
func kindName(kind string, encrypted bool) string {
	if encrypted {
		return kind + "+tls"
	}
	return kind
}
