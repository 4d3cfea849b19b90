package client_test

// The client's policy, run over the harness: in memory by default, over
// real sockets with -warren.tunnel=tcp or kcp. (Moved from e2e, where
// they ran over both real transports.)

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/proxyproto"
	"github.com/warren-tunnel/warren/session"
)

// TestBackendDown: a service whose target refuses closes the public
// connection at once, the client counts the failed dial, and the session
// stays up.
func TestBackendDown(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	dead := w.DeadAddr()
	live := w.Backend(harness.Echo)
	srv := w.StartServer(w.ServerConfig())
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice,
		client.Service{Name: "down", Target: dead},
		client.Service{Name: "up", Target: live}))
	cli.WaitSession(1)

	start := time.Now()
	c, err := w.DialErr(cli.PublicAddr("down"))
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		// The server's reset came before the dialer, slow under -race
		// on a busy machine, saw its connect complete.
	case err != nil:
		t.Fatal(err)
	default:
		err := harness.IsClosed(c, 5*time.Second)
		c.Close()
		if err != nil {
			t.Fatalf("public connection to a dead target still open: %v", err)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closing took %v", d)
	}
	harness.WaitMetric(t, cli.Metrics, 1, "warren_public_connections_total", "service", "down", "outcome", string(metrics.OutcomeBackendDialFailed))

	// The same session still serves the other service.
	w.RoundTrip(cli.PublicAddr("up"))
	if st := cli.Status(); st.Sessions != 1 || !st.Connected {
		t.Fatalf("session did not survive: %+v", st)
	}
}

// proxyBackend is a backend that reads a PROXY protocol header, reports
// it, then echoes what follows it.
func proxyBackend(t *testing.T, w *harness.World) (addr string, headers <-chan *proxyproto.Header) {
	ch := make(chan *proxyproto.Header, 8)
	addr = w.Backend(func(c net.Conn) {
		c.SetDeadline(time.Now().Add(harness.WaitTimeout))
		r := bufio.NewReader(c)
		h, err := proxyproto.Read(r)
		if err != nil {
			t.Errorf("backend: %v", err)
			return
		}
		ch <- h
		io.Copy(c, r) // r holds what came after the header already
		harness.CloseWrite(c)
	})
	return addr, ch
}

// TestProxyProtocol: a service with proxy_protocol makes the client send
// the backend a header of that version, naming the public peer and the
// public address it dialed, before the public side's bytes, which arrive
// intact.
func TestProxyProtocol(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	target1, headers1 := proxyBackend(t, w)
	target2, headers2 := proxyBackend(t, w)
	srv := w.StartServer(w.ServerConfig())
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice,
		client.Service{Name: "pp1", Target: target1, ProxyProtocol: "v1"},
		client.Service{Name: "pp2", Target: target2, ProxyProtocol: "v2"},
	))
	cli.WaitSession(1)

	for _, tc := range []struct {
		service string
		version proxyproto.Version
		headers <-chan *proxyproto.Header
	}{
		{"pp1", proxyproto.V1, headers1},
		{"pp2", proxyproto.V2, headers2},
	} {
		t.Run(tc.version.String(), func(t *testing.T) {
			public := cli.PublicAddr(tc.service)
			c := w.Dial(public)
			c.SetDeadline(time.Now().Add(harness.WaitTimeout))
			// Sent at once, before the client has dialed the backend: it
			// must still come after the header.
			payload := bytes.Repeat([]byte("PROXY TCP4 not a header\r\n\x00\xff"), 4096)
			go func() {
				c.Write(payload)
				harness.CloseWrite(c)
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("echo: %d bytes back of %d sent, or different", len(got), len(payload))
			}

			var h *proxyproto.Header
			select {
			case h = <-tc.headers:
			case <-time.After(harness.WaitTimeout):
				t.Fatal("backend read no header")
			}
			wantSrc := c.LocalAddr().(*net.TCPAddr).AddrPort()
			wantDst := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			if wantDst.String() != public {
				t.Fatalf("dialed %s, connected to %s", public, wantDst)
			}
			if h.Version != tc.version || h.Command != proxyproto.Proxy {
				t.Errorf("header %v %v, want %v PROXY", h.Version, h.Command, tc.version)
			}
			if h.Src != wantSrc {
				t.Errorf("header Src %v, want the public peer %v", h.Src, wantSrc)
			}
			if h.Dst != wantDst {
				t.Errorf("header Dst %v, want the public address %v", h.Dst, wantDst)
			}
		})
	}
}

// TestClientReload: services added to and removed from a running client
// are claimed on its live session, while a transfer through a service the
// reload keeps carries on intact; a reload the server refuses leaves the
// old services in place.
func TestClientReload(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	const seed, size = 22, 2 << 20
	started := make(chan struct{})
	dl := w.Backend(harness.SlowDownload(seed, size, 30*time.Millisecond, started))
	target := w.Backend(harness.Echo)
	srv := w.StartServer(w.ServerConfig())
	ccfg := w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "dl", Target: dl})
	cli := w.StartClient(ccfg)
	cli.WaitSession(1)
	c := w.Dial(cli.PublicAddr("dl"))
	<-started

	added := ccfg
	added.Services = append([]client.Service{}, ccfg.Services...)
	added.Services = append(added.Services, client.Service{Name: "echo", Target: target})
	if err := cli.Reload(added); err != nil {
		t.Fatal(err)
	}
	echoAddr := cli.PublicAddr("echo")
	w.RoundTrip(echoAddr)

	refused := added
	refused.Services = append([]client.Service{}, added.Services...)
	refused.Services = append(refused.Services, client.Service{Name: "low", Target: target, RemotePort: 80})
	err := cli.Reload(refused)
	var rej *session.RejectError
	if !errors.As(err, &rej) || rej.Code != session.CodePortNotAllowed {
		t.Fatalf("reload claiming port 80: %v, want port_not_allowed", err)
	}
	w.RoundTrip(echoAddr) // the old claims stay

	if err := cli.Reload(ccfg); err != nil { // echo removed again
		t.Fatal(err)
	}
	if c2, err := w.DialErr(echoAddr); err == nil {
		c2.Close()
		t.Error("a removed service's port still accepts connections")
	}

	harness.CheckDownload(t, c, seed, size)
	c.Close()
	if st := cli.Status(); st.Sessions != 1 || !st.Connected {
		t.Errorf("%d sessions, connected %v; want the first session still up", st.Sessions, st.Connected)
	}
}

// TestClientReloadKeepsAnyPortFree: after a reload, a service that asked
// for any port still does: when its old port is taken while the server
// restarts, the client takes another instead of giving up, and a service
// a reload gives a fixed port asks for that one.
func TestClientReloadKeepsAnyPortFree(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	target := w.Backend(harness.Echo)
	srv := w.StartServer(w.ServerConfig())
	ccfg := w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "any", Target: target}, client.Service{Name: "fixed", Target: target})
	cli := w.StartClient(ccfg)
	cli.WaitSession(1)
	anyPort := cli.Port("any")
	fixedPort := w.PublicPort(1) // outside the ephemeral range: the reconnect's own source port cannot take it

	next := ccfg
	next.Services = []client.Service{{Name: "any", Target: target}, {Name: "fixed", Target: target, RemotePort: fixedPort}}
	if err := cli.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := cli.Port("fixed"); got != fixedPort {
		t.Fatalf("fixed: port %d after the reload, want %d", got, fixedPort)
	}

	srv.Stop()
	squat, err := w.Public.Listen("tcp", harness.PublicAddr(anyPort))
	if err != nil {
		t.Fatal(err)
	}
	defer squat.Close()
	srv.Again()
	cli.WaitSession(2)
	if got := cli.Port("any"); got == anyPort {
		t.Fatalf("any: port %d, which is taken", got)
	}
	if got := cli.Port("fixed"); got != fixedPort {
		t.Fatalf("fixed: port %d after reconnecting, want %d", got, fixedPort)
	}
	w.RoundTrip(cli.PublicAddr("any"))
}

// TestClientDrain: a client told to stop tells the server (which sends it
// no new connections), lets its open transfer finish, then says goodbye.
func TestClientDrain(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	d := w.StartDownload(12)
	key := "port:" + strconv.Itoa(d.Client.Port("dl"))
	d.Client.Cancel()
	// The server hears the drain: the client's route goes.
	d.Server.WaitFor("the draining client's route gone", func() (bool, string) {
		for _, r := range d.Server.Routes() {
			if r.Key == key {
				return false, "route " + key + " still there"
			}
		}
		return true, ""
	})
	if c2, err := w.DialErr(d.Addr); err == nil {
		c2.Close()
		t.Error("a public connection was accepted while the client drained")
	}
	if n := d.Server.Sessions(); len(n) != 1 {
		t.Fatalf("the draining client's session ended before its transfer: %d sessions", len(n))
	}
	d.Finish()
	select {
	case <-d.Client.Done():
	case <-time.After(harness.WaitTimeout):
		t.Fatal("the client did not stop after the transfer ended")
	}
	if err := d.Client.Err(); err != nil {
		t.Errorf("client Run: %v", err)
	}
	d.Server.WaitSessions(0)
}

// TestAccessLog: a service with access_log logs each connection's end at
// info, with its peer and byte counts; one without logs it at debug. (The
// log line is the behaviour here, so this test waits on the log.)
func TestAccessLog(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	srv := w.StartServer(w.ServerConfig())
	target := w.Backend(harness.Echo)
	c := w.StartClient(w.ClientConfig(srv, harness.TokenOffice,
		client.Service{Name: "logged", Target: target, AccessLog: true},
		client.Service{Name: "quiet", Target: target}))
	c.WaitSession(1)
	w.RoundTrip(c.PublicAddr("logged"))
	w.RoundTrip(c.PublicAddr("quiet"))
	line := c.Logs.WaitLine(t, "level=INFO", `msg="connection closed"`, "service=logged")
	for _, want := range []string{"peer=127.0.0.1:", "target=" + target, "bytes_from_public=24", "bytes_to_public=24", "duration=", "reason=closed"} {
		if !strings.Contains(line, want) {
			t.Errorf("access log line %q lacks %q", line, want)
		}
	}
	c.Logs.WaitLine(t, "level=DEBUG", `msg="connection closed"`, "service=quiet")
}
