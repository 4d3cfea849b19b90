//go:build linux

package relay

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/warren-tunnel/warren/internal/testutil/tcppair"
)

// tcpState is c's TCP state (unix.BPF_TCP_*).
func tcpState(t testing.TB, c *net.TCPConn) uint8 { return tcppair.State(t, c) }

// TestConnReset: only a reset (or a connection that died) reads as reset;
// a half-close either way, a clean close with data still unread, and a
// connection this side closed do not. Asking consumes nothing: the reader
// still sees the reset.
func TestConnReset(t *testing.T) {
	unread := make([]byte, 100<<10)
	for _, tc := range []struct {
		name string
		// do acts on our end a and its peer b, and returns the TCP state
		// to wait for on a (0: none).
		do    func(a, b *net.TCPConn) uint8
		reset bool
	}{
		{"open", func(a, b *net.TCPConn) uint8 { return unix.BPF_TCP_ESTABLISHED }, false},
		{"peer half-closed", func(a, b *net.TCPConn) uint8 {
			b.Write(unread)
			b.CloseWrite()
			return unix.BPF_TCP_CLOSE_WAIT
		}, false},
		{"half-closed here", func(a, b *net.TCPConn) uint8 {
			a.CloseWrite()
			return unix.BPF_TCP_FIN_WAIT2
		}, false},
		{"FIN here, then the peer's, data unread", func(a, b *net.TCPConn) uint8 {
			a.CloseWrite()
			b.Write(unread)
			b.Close()
			return unix.BPF_TCP_CLOSE
		}, false},
		{"the peer's FIN, then here, data unread", func(a, b *net.TCPConn) uint8 {
			b.Write(unread)
			b.CloseWrite()
			tcppair.WaitFor(t, "CLOSE_WAIT", func() bool { return tcpState(t, a) == unix.BPF_TCP_CLOSE_WAIT })
			a.CloseWrite()
			return unix.BPF_TCP_CLOSE
		}, false},
		{"closed here", func(a, b *net.TCPConn) uint8 {
			a.Close()
			return 0
		}, false},
		{"peer reset", func(a, b *net.TCPConn) uint8 {
			b.SetLinger(0)
			b.Close()
			return unix.BPF_TCP_CLOSE
		}, true},
		{"peer reset after its FIN", func(a, b *net.TCPConn) uint8 {
			b.Write(unread)
			b.CloseWrite()
			tcppair.WaitFor(t, "CLOSE_WAIT", func() bool { return tcpState(t, a) == unix.BPF_TCP_CLOSE_WAIT })
			b.SetLinger(0)
			b.Close()
			return unix.BPF_TCP_CLOSE
		}, true},
		{"peer reset after a half-close here", func(a, b *net.TCPConn) uint8 {
			a.CloseWrite()
			b.Write(unread)
			b.SetLinger(0)
			b.Close()
			return unix.BPF_TCP_CLOSE
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tcpPair(t)
			if st := tc.do(a, b); st != 0 {
				tcppair.WaitFor(t, "in the state wanted", func() bool { return tcpState(t, a) == st })
			}
			if got := connReset(a); got != tc.reset {
				t.Fatalf("connReset = %v, want %v", got, tc.reset)
			}
			if !tc.reset {
				return
			}
			connReset(a) // asking twice changes nothing
			rc, _ := a.SyscallConn()
			var soErr int
			rc.Control(func(fd uintptr) { soErr, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) })
			if soErr == 0 {
				t.Error("connReset consumed the socket's error: its reader would take the reset for a clean end")
			}
		})
	}
}
