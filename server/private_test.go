package server_test

// Dialing through a client (Server.Dial) and private services reached by
// visitors, over real TCP+TLS and KCP+TLS sockets.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/session"
)

var realKinds = []string{harness.TCP, harness.KCP}

// countingListener is a backend that counts the connections it accepts:
// proof that a refused dial reached nothing.
type countingListener struct {
	addr    string
	accepts atomic.Int64
}

func countingBackend(t *testing.T, w *harness.World) *countingListener {
	t.Helper()
	l, err := w.Private.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{}
	cl.addr = w.BackendOn(l, func(c net.Conn) { cl.accepts.Add(1) })
	return cl
}

// dialWorld is a server whose client "office" may be dialed through,
// with a client that allows allow.
func dialWorld(t *testing.T, kind string, allow ...string) (*harness.World, *harness.Server, *harness.Client) {
	w := harness.NewWorldOf(t, kind)
	cfg := w.ServerConfig()
	cfg.Clients[0].Dial = true
	srv := w.StartServer(cfg)
	ccfg := w.ClientConfig(srv, harness.TokenOffice)
	ccfg.Dial.Allow = allow
	cli := w.StartClient(ccfg)
	cli.WaitSession(1)
	srv.WaitSessions(1)
	return w, srv, cli
}

func dial(t *testing.T, srv *harness.Server, client, addr string) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Dial(ctx, client, "tcp", addr)
}

// TestDial: a connection dialed through the client echoes, carries bulk
// byte-exact both ways, and carries each half-close.
func TestDial(t *testing.T) {
	leaktest.Check(t)
	for _, kind := range realKinds {
		t.Run(kind, func(t *testing.T) {
			w := harness.NewWorldOf(t, kind)
			target := w.Backend(harness.Echo)
			_, port, _ := net.SplitHostPort(target)
			_, srv, _ := dialWorld(t, kind, "127.0.0.0/8:"+port)
			_ = w
			c, err := dial(t, srv, "office", target)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.RemoteAddr().String(); got != target {
				t.Errorf("RemoteAddr %s, want the address the client dialed, %s", got, target)
			}
			harness.EchoOn(t, c)
			// Bulk, then our half-close: the echo's own half-close follows
			// the last byte back.
			const size = 16 << 20
			c.SetDeadline(time.Now().Add(harness.WaitTimeout))
			sent := make(chan [32]byte, 1)
			go func() {
				sum, _ := harness.RandomStream(c, 7, size)
				c.(interface{ CloseWrite() error }).CloseWrite()
				sent <- sum
			}()
			got, n, err := harness.SumAll(c)
			if err != nil || n != size-0 || got != <-sent {
				t.Fatalf("bulk through the dialed conn: %d of %d bytes back, %v", n, size, err)
			}
		})
	}
}

// TestDialUDP: Dial over "udp" returns a connected-UDP-like conn through
// the client: datagrams keep their boundaries both ways (0, 1, 1200 and
// 65507 bytes), a longer one is refused with nothing sent, a read
// deadline times out and the conn reads again after it, a target outside
// allow is refused on the client, and Close ends the client's flow.
func TestDialUDP(t *testing.T) {
	leaktest.Check(t)
	for _, kind := range realKinds {
		t.Run(kind, func(t *testing.T) {
			w, srv, cli := dialWorld(t, kind, "127.0.0.1:*")
			target := w.UDPEcho()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := srv.Dial(ctx, "office", "udp", target)
			if err != nil {
				t.Fatal(err)
			}
			if ua, ok := c.RemoteAddr().(*net.UDPAddr); !ok || ua.String() != target {
				t.Errorf("RemoteAddr %T %v, want the *net.UDPAddr the client dialed, %s", c.RemoteAddr(), c.RemoteAddr(), target)
			}
			c.SetDeadline(time.Now().Add(harness.WaitTimeout))
			buf := make([]byte, 1<<16)
			for _, size := range []int{1, 0, 1200, session.MaxUDPPayload} {
				msg := bytes.Repeat([]byte{byte(size)}, size)
				if _, err := c.Write(msg); err != nil {
					t.Fatalf("write %d bytes: %v", size, err)
				}
				n, err := c.Read(buf)
				if err != nil || !bytes.Equal(buf[:n], msg) {
					t.Fatalf("datagram of %d bytes came back as %d bytes, %v", size, n, err)
				}
			}
			if _, err := c.Write(make([]byte, session.MaxUDPPayload+1)); !errors.Is(err, syscall.EMSGSIZE) {
				t.Fatalf("a datagram over 65507 bytes: %v, want EMSGSIZE", err)
			}
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read past its deadline: %v", err)
			}
			c.SetReadDeadline(time.Time{})
			c.Write([]byte("after the timeout"))
			if n, err := c.Read(buf); err != nil || string(buf[:n]) != "after the timeout" {
				t.Fatalf("read after a timeout: %q, %v", buf[:n], err)
			}
			c.Close()
			if _, err := c.Read(buf); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read after Close: %v", err)
			}
			// The client's end of the flow goes with it (no change signal
			// for a stream count: poll).
			for deadline := time.Now().Add(harness.WaitTimeout); cli.AdminSource().Status().Session.Streams != 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the client's flow outlived the conn's Close")
				}
			}

			if _, err := srv.Dial(ctx, "office", "udp", "10.1.2.3:53"); !errors.Is(err, server.ErrDialRefused) {
				t.Fatalf("udp dial outside allow: %v, want ErrDialRefused", err)
			}
		})
	}
}

// TestDialRefused: targets outside allow are refused on the client with a
// typed error on the server, and nothing is dialed; a client without
// dial = true on the server is refused before anything reaches it.
func TestDialRefused(t *testing.T) {
	leaktest.Check(t)
	for _, kind := range realKinds {
		t.Run(kind, func(t *testing.T) {
			w := harness.NewWorldOf(t, kind)
			allowed := w.Backend(harness.Echo)
			_, aport, _ := net.SplitHostPort(allowed)
			cfg := w.ServerConfig()
			cfg.Clients[0].Dial = true
			srv := w.StartServer(cfg)
			ccfg := w.ClientConfig(srv, harness.TokenOffice)
			dead := strconv.Itoa(deadPort(t, w))
			ccfg.Dial.Allow = []string{"10.0.0.0/8:*", "127.0.0.1:" + aport, "127.0.0.1:" + dead, "db.internal:5432"}
			cli := w.StartClient(ccfg)
			cli.WaitSession(1)
			// "other" runs too, with an allow list, but dial = false on
			// the server.
			ocfg := w.ClientConfig(srv, harness.TokenOther, client.Service{Name: "x", Target: allowed})
			ocfg.Dial.Allow = []string{"127.0.0.0/8:*"}
			other := w.StartClient(ocfg)
			other.WaitSession(1)
			srv.WaitSessions(2)

			counted := countingBackend(t, w)
			_, cport, _ := net.SplitHostPort(counted.addr)
			cases := []struct {
				name, client, addr string
				want               error
				reason             string
			}{
				{"ip outside allow", "office", counted.addr, server.ErrDialRefused, "in no allowed CIDR"},
				{"name resolving outside allow", "office", "localhost:" + cport, server.ErrDialRefused, "resolves to"},
				{"name not in the list", "office", "nothing.invalid:" + cport, server.ErrDialRefused, "matches no allowed name"},
				{"dial = false on the server", "other", counted.addr, server.ErrDialNotAllowed, ""},
				{"no such client", "nobody", counted.addr, server.ErrNoSuchClient, ""},
			}
			for _, tc := range cases {
				c, err := dial(t, srv, tc.client, tc.addr)
				if c != nil {
					c.Close()
					t.Fatalf("%s: dial succeeded", tc.name)
				}
				var de *server.DialError
				if !errors.As(err, &de) {
					t.Fatalf("%s: %T %v, want a *server.DialError", tc.name, err, err)
				}
				if tc.want != nil && !errors.Is(err, tc.want) {
					t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
				}
				if !strings.Contains(de.Reason, tc.reason) {
					t.Errorf("%s: reason %q, want it to say %q", tc.name, de.Reason, tc.reason)
				}
				t.Logf("%s: %v", tc.name, err)
			}
			if n := counted.accepts.Load(); n != 0 {
				t.Fatalf("the refused dials reached the target %d times", n)
			}
			// The allowed target on a port nothing listens on: the
			// client tried, and says why.
			_, err := dial(t, srv, "office", "127.0.0.1:"+dead)
			if !errors.Is(err, server.ErrUnreachable) || !strings.Contains(err.Error(), "refused") {
				t.Errorf("dead port: %v, want ErrUnreachable", err)
			}
			// Offline: configured, dial = true, not connected.
			cfg.Clients[1].Dial = true
			if err := srv.Reload(cfg); err != nil {
				t.Fatal(err)
			}
			other.Stop()
			harness.Poll(t, "other offline", func() (bool, string) {
				_, err := dial(t, srv, "other", counted.addr)
				return errors.Is(err, server.ErrNotConnected), fmt.Sprint(err)
			})
		})
	}
}

func deadPort(t *testing.T, w *harness.World) int {
	_, p, _ := net.SplitHostPort(w.DeadAddr())
	n, _ := strconv.Atoi(p)
	return n
}

// TestDialConn runs x/net/nettest's conformance suite on a connection
// dialed through the client, over TCP+TLS: c1 is the dialed conn, c2 the
// connection the target accepted.
func TestDialConn(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorldOf(t, harness.TCP)
	accepted := make(chan net.Conn, 1)
	l, err := w.Private.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	_, srv, _ := dialWorld(t, harness.TCP, "127.0.0.1:*")
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		c1, err = dial(t, srv, "office", l.Addr().String())
		if err != nil {
			return nil, nil, nil, err
		}
		select {
		case c2 = <-accepted:
		case <-time.After(10 * time.Second):
			return nil, nil, nil, errors.New("the target accepted nothing")
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

// TestDialerHTTP: Dialer as an http.Transport's DialContext fetches a
// page served on the client's side.
func TestDialerHTTP(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorldOf(t, harness.TCP)
	web := w.HTTPBackend(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(rw, "hello from %s", r.Host)
	}))
	_, srv, _ := dialWorld(t, harness.TCP, "127.0.0.1:*")
	tr := &http.Transport{DialContext: srv.Dialer("office")}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for range 3 { // keep-alive reuses the dialed conn
		resp, err := hc.Get("http://" + web + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello from "+web {
			t.Fatalf("body %q", body)
		}
	}
}

// visitWorld: "office" serves the private echo service "db"; "other" may
// visit office/* and has visitor "db" for it.
func visitWorld(t *testing.T, kind string) (*harness.World, *harness.Server, *harness.Client, *harness.Client, string) {
	w := harness.NewWorldOf(t, kind)
	target := w.Backend(harness.Echo)
	cfg := w.ServerConfig()
	cfg.Clients[1].Visit = []string{"office/*"}
	srv := w.StartServer(cfg)
	office := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "db", Target: target, Private: true}))
	office.WaitSession(1)
	vcfg := w.ClientConfig(srv, harness.TokenOther)
	vcfg.Visitors = []client.Visitor{{Name: "db", Service: "office/db", Bind: "127.0.0.1:0"}}
	laptop := w.StartClient(vcfg)
	laptop.WaitSession(1)
	srv.WaitSessions(2)
	return w, srv, office, laptop, laptop.VisitorAddr("db").String()
}

// TestVisitor: a visitor reaches a private service: echo, 100 MiB intact,
// 200 connections at once; the service has no public port or domain.
func TestVisitor(t *testing.T) {
	leaktest.Check(t)
	for _, kind := range realKinds {
		t.Run(kind, func(t *testing.T) {
			w, srv, office, laptop, addr := visitWorld(t, kind)
			if v := laptop.Status().Session.Visitors; len(v) != 1 || v[0].Error != "" {
				t.Fatalf("visitors as granted: %+v", v)
			}
			// Private: no public route of any kind.
			if svcs := office.Status().Session.Services; len(svcs) != 0 {
				t.Fatalf("a private service was granted public claims: %+v", svcs)
			}
			for _, r := range srv.Routes() {
				if r.Key != "private:office/db" {
					t.Fatalf("route %s exists; only private:office/db should", r.Key)
				}
			}
			harness.EchoOn(t, w.Dial(addr))
			size := int64(100 << 20)
			if kind == harness.KCP && raceEnabled {
				// KCP twice over (visitor and serving sessions) under the
				// race detector on a shared 2-core machine moved ~1.2 MB/s:
				// 100 MiB would outlast the transfer's deadline.
				size = 16 << 20
			}
			w.Transfer(addr, 1, size)

			var wg sync.WaitGroup
			errs := make(chan error, 200)
			for i := range 200 {
				wg.Go(func() {
					c, err := w.DialErr(addr)
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(harness.WaitTimeout))
					msg := []byte("visitor " + strconv.Itoa(i))
					if _, err := c.Write(msg); err != nil {
						errs <- err
						return
					}
					got := make([]byte, len(msg))
					if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
						errs <- fmt.Errorf("connection %d: %q, %v", i, got, err)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestVisitorCounters: the visiting client's status counts each visitor's
// connections and bytes as they move (the stream's meter), the serving
// client's and the server's show the private service's, and all come
// back to no open connection when it ends.
func TestVisitorCounters(t *testing.T) {
	leaktest.Check(t)
	w, srv, office, laptop, addr := visitWorld(t, harness.TCP)
	c := w.Dial(addr)
	c.SetDeadline(time.Now().Add(harness.WaitTimeout))
	msg := bytes.Repeat([]byte("v"), 5000)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	n := int64(len(msg))
	visitor := func() admin.VisitorStatus { return laptop.AdminSource().Status().Visitors[0] }
	private := func(st admin.Status) admin.ServiceStatus {
		if st.Session != nil && len(st.Session.Services) == 1 {
			return st.Session.Services[0]
		}
		for _, cl := range st.Clients {
			for _, ss := range cl.Sessions {
				if cl.Name == "office" && len(ss.Services) == 1 {
					return ss.Services[0]
				}
			}
		}
		return admin.ServiceStatus{}
	}
	counted := func(what string, get func() (conns int, in, out int64, ok bool), wantConns int) {
		t.Helper()
		deadline := time.Now().Add(harness.WaitTimeout)
		for {
			conns, in, out, ok := get()
			if ok && conns == wantConns && in == n && out == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d connections, %d bytes in, %d out; want %d, %d, %d", what, conns, in, out, wantConns, n, n)
			}
			time.Sleep(10 * time.Millisecond) // counters have no change signal: poll
		}
	}
	for _, open := range []int{1, 0} {
		counted("laptop's visitor", func() (int, int64, int64, bool) {
			v := visitor()
			return v.Connections, v.BytesIn, v.BytesOut, v.Name == "db" && v.Service == "office/db" && v.Bind == addr && v.Refused == ""
		}, open)
		counted("office's private service", func() (int, int64, int64, bool) {
			s := private(office.AdminSource().Status())
			return s.Connections, s.BytesIn, s.BytesOut, s.Name == "db" && s.Private
		}, open)
		counted("the server's view of office's private service", func() (int, int64, int64, bool) {
			s := private(srv.AdminSource().Status())
			return s.Connections, s.BytesIn, s.BytesOut, s.Name == "db" && s.Private
		}, open)
		c.Close()
	}
}

// TestVisitorRefused: a client whose token may not visit is told so at
// claim time, and its connections are refused; a visitor of a service
// that is public, or that does not exist, too.
func TestVisitorRefused(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorldOf(t, harness.TCP)
	target := w.Backend(harness.Echo)
	cfg := w.ServerConfig()
	cfg.Clients[1].Visit = []string{"office/db", "office/web", "office/nothing"}
	cfg.Clients = append(cfg.Clients, server.Client{Name: "guest", Token: "guest-token-0123456789abcdef"})
	srv := w.StartServer(cfg)
	office := w.StartClient(w.ClientConfig(srv, harness.TokenOffice,
		client.Service{Name: "db", Target: target, Private: true},
		client.Service{Name: "web", Target: target}))
	office.WaitSession(1)

	guestCfg := w.ClientConfig(srv, "guest-token-0123456789abcdef")
	guestCfg.Visitors = []client.Visitor{{Name: "db", Service: "office/db", Bind: "127.0.0.1:0"}}
	guest := w.StartClient(guestCfg)
	vcfg := w.ClientConfig(srv, harness.TokenOther)
	vcfg.Visitors = []client.Visitor{
		{Name: "web", Service: "office/web", Bind: "127.0.0.1:0"},
		{Name: "nothing", Service: "office/nothing", Bind: "127.0.0.1:0"},
	}
	other := w.StartClient(vcfg)
	for _, tc := range []struct {
		cli           *harness.Client
		visitor, want string
	}{
		{guest, "db", "may not visit office/db"},
		{other, "web", "is not private"},
		{other, "nothing", "has no private service"},
	} {
		st := tc.cli.WaitSession(1)
		var got string
		for _, v := range st.Session.Visitors {
			if v.Name == tc.visitor {
				got = v.Error
			}
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("visitor %s: claim-time error %q, want %q", tc.visitor, got, tc.want)
		}
		// Its listener is up, and refuses: the connection ends with no
		// byte of the service.
		if err := refused(tc.cli.VisitorAddr(tc.visitor).String()); err != nil {
			t.Errorf("visitor %s: %v", tc.visitor, err)
		}
	}
}

// TestVisitorServingClientRestart: the serving client killed, visitor
// connections fail cleanly (they do not hang); once it is back, new ones
// succeed.
func TestVisitorServingClientRestart(t *testing.T) {
	leaktest.Check(t)
	for _, kind := range realKinds {
		t.Run(kind, func(t *testing.T) {
			w, srv, office, _, addr := visitWorld(t, kind)
			c := w.Dial(addr)
			harness.EchoOn(t, c)
			office.Stop()
			// The open connection ends abruptly or cleanly, never hangs.
			c.SetDeadline(time.Now().Add(harness.WaitTimeout))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("read data after the serving client stopped")
			} else if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
				t.Fatal("the visitor connection hung after the serving client stopped")
			}
			// New connections while it is gone: refused, not hung.
			if err := refused(addr); err != nil {
				t.Fatalf("a visitor connection while the service is gone: %v", err)
			}
			back := w.StartClient(office.Config)
			back.WaitSession(1)
			srv.WaitFor("private route served", func() (bool, string) {
				for _, r := range srv.Routes() {
					if r.Key == "private:office/db" && r.Sessions > 0 {
						return true, ""
					}
				}
				return false, fmt.Sprint(srv.Routes())
			})
			harness.EchoOn(t, w.Dial(addr))
			w.Transfer(addr, 3, 1<<20)
		})
	}
}

// refused checks that a visitor's listener at addr refuses a connection:
// it ends with no byte of the service, not by a timeout. The visitor may
// reset it before the dial has even returned (seen on a loaded machine).
func refused(addr string) error {
	c, err := net.DialTimeout("tcp", addr, harness.WaitTimeout)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(harness.WaitTimeout))
	c.Write([]byte("x"))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		return fmt.Errorf("read %d bytes, %v; want the connection refused", n, err)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
