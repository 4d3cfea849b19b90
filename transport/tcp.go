package transport

import (
	"context"
	"crypto/tls"
	"net"
)

// TCP is TLS 1.3 over TCP, or plain TCP when TLS is nil.
type TCP struct {
	// TLS is the client or server TLS configuration (see ServerTLS and
	// ClientTLS); nil means plaintext.
	TLS *tls.Config
}

var _ Transport = (*TCP)(nil)

// Dial connects to addr and, when encrypted, completes the TLS handshake.
func (t *TCP) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if t.TLS == nil {
		return c, nil
	}
	return clientHandshake(ctx, c, t.TLS, addr)
}

// Listen binds a TCP listener on addr. Accepted connections are *tls.Conn
// whose handshake runs on first use, when encrypted.
func (t *TCP) Listen(addr string) (Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if t.TLS == nil {
		return l, nil
	}
	return tls.NewListener(l, t.TLS), nil
}

func (t *TCP) String() string { return kindName(KindTCP, t.TLS != nil) }
