package session

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/internal/testutil/tcppair"
)

// tcpState is c's TCP state (unix.BPF_TCP_*).
func tcpState(t testing.TB, c *net.TCPConn) uint8 { return tcppair.State(t, c) }

// busyStream reports whether a stream of l has a write under way.
func busyStream(l *ledger) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.accts {
		if a.st != nil && a.st.busy.Load() > 0 {
			return true
		}
	}
	return false
}

// bufs sizes a socket's buffers before it connects (0: the default):
// shrinking them later makes the kernel drop what the window let in.
func bufs(rcv, snd int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) {
			if rcv > 0 {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcv)
			}
			if err == nil && snd > 0 {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, snd)
			}
		})
		return err
	}
}

// TestRelayCleanCloseWhileWriterBlocked: a relay whose connection closed
// cleanly, a FIN each way, while its writer into the slow stream waits with
// the connection's last bytes still unread, is not reset. The kernel shows
// such a connection in state CLOSE, as it does a reset one: the ledger's
// "connection gone" rule once killed these relays, and every
// request/response over a tunnel slow enough to hold a write 1 s (a paced
// KCP link) lost its response's tail. Each relay here waits past that
// rule; both must deliver every byte and end cleanly.
//
// "download": the public side sends a request and half-closes, the backend
// answers and closes; the client's relay has the answer's tail unread.
// "upload": the public side sends a body and half-closes, the backend
// answers at once, unread body and all, and half-closes; the server's relay
// has the body's tail unread.
func TestRelayCleanCloseWhileWriterBlocked(t *testing.T) {
	leaktest.Check(t)
	// Past what the way to the held-up reader holds (its smallest socket
	// buffers, a 16 KiB stream window, a chunk each side), and within what
	// the blocked relay's connection takes in unread (1 MiB asked; the
	// kernel's default rmem_max grants 416 KiB).
	const size = 192 << 10
	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	small, large := bufs(1, 1), bufs(1<<20, 0) // the kernel's minimum, and room
	for _, dir := range []string{"download", "upload"} {
		for name, trs := range transports(t) {
			t.Run(dir+"/"+name, func(t *testing.T) {
				cfg := testConfig()
				cfg.Mux.FrameSize, cfg.Mux.StreamWindow = 4<<10, 16<<10
				m := &miniTunnel{}
				// The side whose writer blocks, its connection, and the
				// reader that holds it up.
				var blocked **Session
				// far writes to reader.
				var conn, reader, far *net.TCPConn
				if dir == "download" {
					m.public, m.srvConn = tcpPairOf(t, net.Dialer{Control: small}, net.ListenConfig{Control: small})
					m.backend, m.cliConn = tcpPairOf(t, net.Dialer{}, net.ListenConfig{Control: large})
					blocked, conn, reader, far = &m.cli, m.cliConn, m.public, m.srvConn
				} else {
					m.public, m.srvConn = tcpPairOf(t, net.Dialer{}, net.ListenConfig{Control: large})
					m.backend, m.cliConn = tcpPairOf(t, net.Dialer{Control: small}, net.ListenConfig{Control: small})
					blocked, conn, reader, far = &m.srv, m.srvConn, m.backend, m.cliConn
				}
				m.start(t, trs, cfg)
				// A round trip first: each side has read data, so each has
				// the other's window (smux starts every stream at 256 KiB).
				m.public.SetDeadline(time.Now().Add(10 * time.Second))
				m.backend.SetDeadline(time.Now().Add(10 * time.Second))
				var b [1]byte
				m.public.Write([]byte("?"))
				if _, err := io.ReadFull(m.backend, b[:]); err != nil {
					t.Fatal(err)
				}
				m.backend.Write([]byte("!"))
				if _, err := io.ReadFull(m.public, b[:]); err != nil {
					t.Fatal(err)
				}

				var reply []byte
				if dir == "download" {
					m.public.Write([]byte("GET /big"))
					m.public.CloseWrite()
					if req, err := io.ReadAll(m.backend); err != nil || string(req) != "GET /big" {
						t.Fatalf("backend read %q, %v", req, err)
					}
					if _, err := m.backend.Write(payload); err != nil {
						t.Fatal(err)
					}
					m.backend.Close()
				} else {
					reply = []byte("201 created, unread")
					if _, err := m.public.Write(payload); err != nil {
						t.Fatal(err)
					}
					m.public.CloseWrite()
					m.backend.Write(reply)
					m.backend.CloseWrite()
				}
				tcppair.WaitFor(t, "closed cleanly both ways", func() bool { return tcpState(t, conn) == unix.BPF_TCP_CLOSE })
				tcppair.WaitFor(t, "blocked writing into the stream", func() bool { return busyStream((*blocked).led) })
				// What the ledger's tick does once the write has waited
				// stuckAfter, on both sides.
				for _, s := range []*Session{m.srv, m.cli} {
					s.led.check(time.Now().Add(stuckAfter))
				}

				// Room now, for speed: a window of a few KiB crawls (growing
				// buffers is safe, unlike shrinking them).
				reader.SetReadBuffer(1 << 20)
				far.SetWriteBuffer(1 << 20)
				m.public.SetDeadline(time.Now().Add(10 * time.Second))
				m.backend.SetDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(reader)
				if err != nil || !bytes.Equal(got, payload) {
					t.Errorf("%d of %d bytes delivered, then %v", len(got), len(payload), err)
				}
				if dir == "upload" {
					if got, err := io.ReadAll(m.public); err != nil || !bytes.Equal(got, reply) {
						t.Errorf("public read %q, %v; want %q", got, err, reply)
					}
				}
				rs, rc := waitResult(t, m.srvRelay, "server"), waitResult(t, m.cliRelay, "client")
				if rs.Err != nil || rc.Err != nil {
					t.Errorf("relays ended with %v (server), %v (client); want both clean", rs.Err, rc.Err)
				}
			})
		}
	}
}

// TestRelayResetWhileWriterBlocked: the rule's own case. The public side
// uploads to a backend that does not read, so the server's relay waits to
// write into the stream and reads public no more; public then resets. Once
// that write has waited stuckAfter, the ledger kills the stream: the relay
// ends with the reset, and the backend is cut off.
func TestRelayResetWhileWriterBlocked(t *testing.T) {
	leaktest.Check(t)
	for name, trs := range transports(t) {
		t.Run(name, func(t *testing.T) {
			m := newMiniTunnelOver(t, trs, testConfig())
			publicErr := fillBackend(t, m)
			m.public.SetLinger(0)
			m.public.Close()
			<-publicErr
			tcppair.WaitFor(t, "reset", func() bool { return tcpState(t, m.srvConn) == unix.BPF_TCP_CLOSE })
			if !busyStream(m.srv.led) {
				t.Fatal("the server's relay is not writing into the stream")
			}
			m.srv.led.check(time.Now().Add(stuckAfter))
			rs := waitResult(t, m.srvRelay, "server")
			if !errors.Is(rs.Err, ErrTruncated) || !strings.Contains(rs.Err.Error(), "connection was reset") {
				t.Errorf("server relay ended with %v, want its connection reset", rs.Err)
			}
			waitResult(t, m.cliRelay, "client")
			m.backend.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, m.backend); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("backend: %v, want a reset", err)
			}
		})
	}
}
