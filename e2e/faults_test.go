package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/impair"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/session"
)

// linkProxy puts an impairment proxy between a client and srv: UDP for
// kcp, TCP for tcp. cut makes the path go silent (blackhole, freeze) or
// come back.
type linkProxy struct {
	addr   string
	silent func(bool)
	cut    func() // resets TCP connections; nil for UDP
}

// kill makes the path dead at once: silent, and TCP connections reset.
func (l *linkProxy) kill() {
	l.silent(true)
	if l.cut != nil {
		l.cut()
	}
}

func newLinkProxy(t *testing.T, srv *testServer) *linkProxy {
	t.Helper()
	if srv.kind == "kcp" {
		p, err := impair.NewUDPProxy(srv.addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return &linkProxy{addr: p.Addr(), silent: p.SetBlackhole}
	}
	p, err := impair.NewTCPProxy(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &linkProxy{addr: p.Addr(), silent: p.Freeze, cut: p.Cut}
}

// TestLinkBlackhole: the path between client and server goes silent (every
// UDP datagram dropped for KCP; a TCP proxy that stops forwarding for TCP).
// Both sides notice within the heartbeat bound, the public connection that
// was open ends with an error and without one wrong byte, and once the
// path is back the client reconnects and the port serves again.
func TestLinkBlackhole(t *testing.T) {
	leaktest.Check(t)
	silence := 30 * time.Second
	if testing.Short() {
		silence = 3 * time.Second
	}
	forEachTransport(t, func(t *testing.T, kind string) {
		t.Parallel()
		target := backend(t, echo)
		srv := startServer(t, serverConfig(t, kind))
		link := newLinkProxy(t, srv)
		ccfg := clientConfig(srv, tokenOffice, client.Service{Name: "echo", Target: target})
		ccfg.Server = link.addr
		ccfg.HandshakeTimeout = 3 * time.Second
		cli := startClient(t, ccfg)
		cli.waitSession(t, 1)
		addr := cli.publicAddr(t, "echo")

		// A transfer under way: 16 KiB every 2 ms, echoed back.
		const seed, size = 7, 32 << 20
		want := streamBytes(seed, size)
		c := dialPublic(t, addr)
		stopWriting := make(chan struct{})
		var wg sync.WaitGroup
		var werr error
		wg.Go(func() {
			for off := 0; off < size; off += 16 << 10 {
				select {
				case <-stopWriting:
					return
				case <-time.After(2 * time.Millisecond):
				}
				if _, werr = c.Write(want[off : off+16<<10]); werr != nil {
					return
				}
			}
		})
		defer func() {
			if stopWriting != nil {
				close(stopWriting)
				wg.Wait()
			}
		}()
		got := make([]byte, 0, 1<<20)
		buf := make([]byte, 64<<10)
		for len(got) < 256<<10 { // well under way
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("before the blackhole: %v", err)
			}
			got = append(got, buf[:n]...)
		}

		link.silent(true)
		start := time.Now()
		bound := ccfg.HeartbeatInterval * time.Duration(ccfg.HeartbeatMisses+1)
		cli.waitLastError(t, func(err error) bool { return errors.Is(err, session.ErrHeartbeat) })
		srv.waitSessions(t, 0) // no goodbye can come: the server timed it out too
		detected := time.Since(start)
		t.Logf("%s: silence detected after %v (heartbeat bound %v)", kind, detected.Round(time.Millisecond), bound)
		if detected > bound+5*time.Second {
			t.Errorf("detected after %v; the heartbeat bound is %v", detected, bound)
		}

		// The open connection ends abruptly, every byte before that right.
		// (The kernel reports the reset to the read or the write, whichever
		// comes first.)
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				close(stopWriting)
				wg.Wait()
				stopWriting = nil
				if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(werr, syscall.ECONNRESET) {
					t.Errorf("the open connection ended with read %v, write %v after %d bytes; want a reset", err, werr, len(got))
				}
				break
			}
		}
		if !bytes.Equal(got, want[:len(got)]) {
			t.Fatalf("the %d bytes that came back differ from what was sent", len(got))
		}

		time.Sleep(silence - time.Since(start)) // the blackhole lasts its time
		link.silent(false)
		cli.waitSession(t, 2)
		roundTrip(t, cli.publicAddr(t, "echo"))
	})
}

// TestForgedKCPReset is finding 6 of issue 11: one datagram forged with a
// client's address (another conversation id, sequence number 0) makes
// kcp-go end that client's KCP session on the server. The server's session
// ends at once (its transport failed); the client, whose side goes silent,
// notices by its heartbeats: with a public connection open, after the fast
// deadline (2 s here; 6 s would be the long one) instead of misses x
// interval, and reconnects; a public connection made meanwhile waits for
// it and is served.
func TestForgedKCPReset(t *testing.T) {
	leaktest.Check(t)
	scfg := serverConfig(t, "kcp")
	srv := startServer(t, scfg)
	px, err := impair.NewUDPProxy(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	ccfg := clientConfig(srv, tokenOffice, client.Service{Name: "echo", Target: backend(t, echo)})
	ccfg.Server = px.Addr()
	ccfg.HeartbeatInterval, ccfg.HeartbeatMisses = 200*time.Millisecond, 30 // the long deadline: 6 s
	cli := startClient(t, ccfg)
	cli.waitSession(t, 1)
	addr := cli.publicAddr(t, "echo")

	open := dialPublic(t, addr) // a public connection open: the fast deadline applies
	harness.EchoOn(t, open)
	time.Sleep(5 * ccfg.HeartbeatInterval) // a few heartbeats measure the RTT

	forged := make([]byte, 24) // a KCP segment header: conv, cmd, frg, wnd, ts, sn, una, len
	binary.LittleEndian.PutUint32(forged[0:], 0x5eed)
	forged[4] = 81 // IKCP_CMD_PUSH; sn (bytes 12-15) stays 0
	start := time.Now()
	px.Inject(forged)
	srv.logs.WaitLine(t, "session down", "connection lost")

	waiting := dialPublic(t, addr) // waits on the held port for the client
	line := cli.logs.WaitLine(t, "session down", "heartbeat timeout")
	noticed := time.Since(start)
	t.Logf("the client noticed after %v: %s", noticed.Round(time.Millisecond), line)
	if noticed > 4*time.Second {
		t.Errorf("the client noticed its session gone after %v; the fast deadline is 2 s", noticed)
	}
	harness.EchoOn(t, waiting)
	t.Logf("a public connection made meanwhile was served %v after the forged datagram", time.Since(start).Round(time.Millisecond))
	if err := isClosed(open, 5*time.Second); err != nil {
		t.Errorf("the connection open at the reset is still open: %v", err)
	}
}
