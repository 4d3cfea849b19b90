package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"syscall"
)

// TCP is TLS 1.3 over TCP, or plain TCP when TLS is nil.
type TCP struct {
	// TLS is the client or server TLS configuration (see ServerTLS and
	// ClientTLS); nil means plaintext.
	TLS *tls.Config
	// Congestion is the TCP congestion control of the tunnel connections
	// ("bbr", "cubic", ...; Linux only); "" leaves the system's default.
	// New resolves the setting "auto" to one of these.
	Congestion string
}

var _ Transport = (*TCP)(nil)

// Dial connects to addr and, when encrypted, completes the TLS handshake.
func (t *TCP) Dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		if t.Congestion != "" {
			if err := setCongestion(rc, t.Congestion); err != nil {
				return err
			}
		}
		return setNotSentLowat(rc)
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if t.TLS == nil {
		return c, nil
	}
	return clientHandshake(ctx, c, t.TLS, addr, true)
}

// Listen binds a TCP listener on addr. Accepted connections are *tls.Conn
// whose handshake runs on first use, when encrypted.
func (t *TCP) Listen(addr string) (Listener, error) {
	lc := net.ListenConfig{}
	if t.Congestion != "" {
		// Accepted connections inherit the listening socket's choice.
		lc.Control = func(_, _ string, rc syscall.RawConn) error { return setCongestion(rc, t.Congestion) }
	}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	l = lowatListener{l}
	if t.TLS == nil {
		return l, nil
	}
	return tlsListener{l, t.TLS}, nil
}

func (t *TCP) String() string { return kindName(KindTCP, t.TLS != nil) }

// TCPConfig is the [server.tcp] / [client.tcp] table.
type TCPConfig struct {
	// Congestion is the congestion control of the tunnel's TCP
	// connections. CongestionAuto ("auto", the default) is "bbr" where the
	// kernel offers it and the system's default otherwise; "" is the
	// system's default; any other name must be available, or listening
	// and dialing fail. "bbr" keeps a lossy path busy where loss-based
	// "cubic" collapses.
	Congestion string `toml:"congestion"`
}

// CongestionAuto is congestion = "auto".
const CongestionAuto = "auto"

// DefaultTCPConfig returns congestion = "auto".
func DefaultTCPConfig() TCPConfig { return TCPConfig{Congestion: CongestionAuto} }

// Validate reports an invalid setting, naming its key.
func (c TCPConfig) Validate() error {
	if len(c.Congestion) > 15 {
		return fmt.Errorf("congestion: %q is longer than a congestion control name can be", c.Congestion)
	}
	for _, r := range c.Congestion {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("congestion: %q is not a congestion control name (e.g. \"auto\", \"bbr\", \"cubic\")", c.Congestion)
		}
	}
	return nil
}

// lowatListener sets TCP_NOTSENT_LOWAT on every connection it accepts,
// which, unlike the congestion control, do not inherit it.
type lowatListener struct{ net.Listener }

func (l lowatListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			setNotSentLowat(rc) // a socket that refuses it only loses the bound
		}
	}
	return c, nil
}

// resolve turns "auto" into "bbr" when this kernel lets a socket use it,
// and into "" (the system's default) with one info line otherwise; other
// settings stay as they are.
func (c TCPConfig) resolve(log *slog.Logger) string {
	if c.Congestion != CongestionAuto {
		return c.Congestion
	}
	def, err := probeCongestion("bbr")
	if err == nil {
		return "bbr"
	}
	log.Info(`tcp congestion = "auto": bbr is not available here; using the system's default`, "default", def, "reason", err)
	return ""
}
