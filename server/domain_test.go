package server_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/session"
)

// domainServerConfig is serverConfig with both entry points on free
// loopback ports; "office" may claim *.office.example.com, "other"
// *.other.example.com, and both shared.example.com.
func domainServerConfig(w *harness.World) server.Config {
	cfg := w.ServerConfig()
	cfg.HTTP.Address = "127.0.0.1:0"
	cfg.HTTPS.Address = "127.0.0.1:0"
	cfg.Clients[0].Domains = []string{"*.office.example.com", "shared.example.com"}
	cfg.Clients[1].Domains = []string{"*.other.example.com", "shared.example.com"}
	return cfg
}

// httpHandler answers every request with the backend's name, the Host and
// path it received, and the length and SHA-256 of the body. A request with
// an Upgrade header is answered 101 and its connection then echoes raw
// bytes, as a WebSocket server's would carry frames.
func httpHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			upgradeEcho(w)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "backend=%s host=%s path=%s len=%d sha=%x", name, r.Host, r.URL.Path, len(body), sha256.Sum256(body))
	})
}

func upgradeEcho(w http.ResponseWriter) {
	conn, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	if brw.Flush() != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := brw.Read(buf) // bytes buffered before the hijack first
		if n > 0 {
			if _, err := conn.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// httpBackend is a net/http server behind a client; it returns the target.
func httpBackend(w *harness.World, name string) string { return w.HTTPBackend(httpHandler(name)) }

// tlsBackend is a net/http server with TLS behind a client; it returns the
// target and the certificate it presents.
func tlsBackend(w *harness.World, name string) (string, *x509.Certificate) {
	return w.TLSBackend(httpHandler(name))
}

// domainDo sends req and returns the status and body.
func domainDo(c *http.Client, req *http.Request) (*http.Response, string, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// domainGet fetches url with the given Host header ("" keeps the URL's) and
// fails t unless the answer has the status and contains every one of want.
func domainGet(t *testing.T, c *http.Client, url, host string, status int, want ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, body, err := domainDo(c, req)
	if err != nil {
		t.Fatalf("GET %s (Host %q): %v", url, host, err)
	}
	if resp.StatusCode != status {
		t.Fatalf("GET %s (Host %q): %s %q, want status %d", url, host, resp.Status, body, status)
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Fatalf("GET %s (Host %q): body %q lacks %q", url, host, body, w)
		}
	}
	return resp
}

// rawExchange writes msg to a new connection to addr, half-closes it and
// returns everything read back.
func rawExchange(t *testing.T, w *harness.World, addr string, msg []byte) []byte {
	t.Helper()
	c := w.Dial(addr)
	c.SetDeadline(time.Now().Add(harness.WaitTimeout))
	go func() {
		c.Write(msg)
		harness.CloseWrite(c)
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer: %v (read %q)", err, got)
	}
	return got
}

// TestDomainRouting: the HTTP entry point routes by Host and the HTTPS
// entry point by SNI, to the right client and backend, most specific
// route first, with every byte as sent; unknown and missing names are
// refused.
func TestDomainRouting(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	backA, backB := httpBackend(w, "A"), httpBackend(w, "B")
	backWild, backExact := httpBackend(w, "wild"), httpBackend(w, "exact")
	backEcho := w.Backend(harness.Echo)
	secure, secureCert := tlsBackend(w, "secure")
	otherTLS, otherCert := tlsBackend(w, "other-tls")

	srv := w.StartServer(domainServerConfig(w))
	office := w.StartClient(w.ClientConfig(srv, harness.TokenOffice,
		client.Service{Name: "a", Target: backA, Domains: []string{"a.office.example.com", "bücher.office.example.com"}},
		client.Service{Name: "wild", Target: backWild, Domains: []string{"*.app.office.example.com"}},
		client.Service{Name: "exact", Target: backExact, Domains: []string{"api.app.office.example.com"}},
		client.Service{Name: "echo", Target: backEcho, Domains: []string{"echo.office.example.com"}},
		client.Service{Name: "secure", Target: secure, Domains: []string{"secure.office.example.com"}, Entry: "https"},
	))
	other := w.StartClient(w.ClientConfig(srv, harness.TokenOther,
		client.Service{Name: "b", Target: backB, Domains: []string{"b.other.example.com"}, Entry: "http"},
		client.Service{Name: "tls", Target: otherTLS, Domains: []string{"*.other.example.com"}, Entry: "https"},
	))
	office.WaitSession(1)
	other.WaitSession(1)
	httpAddr, httpsAddr := srv.EntryAddr("http"), srv.EntryAddr("https")
	hc := w.HTTPClient(httpAddr)

	t.Run("two domains on two clients", func(t *testing.T) {
		domainGet(t, hc, "http://a.office.example.com/x", "", 200, "backend=A host=a.office.example.com path=/x")
		domainGet(t, hc, "http://b.other.example.com/y", "", 200, "backend=B host=b.other.example.com path=/y")
		// Case, trailing dot and port do not matter, and the backend
		// sees the Host exactly as sent.
		domainGet(t, hc, "http://x/", "A.Office.EXAMPLE.com.:8080", 200, "backend=A host=A.Office.EXAMPLE.com.:8080")
		// An IDN: net/http sends the punycode form, which the claim
		// was normalized to.
		domainGet(t, hc, "http://bücher.office.example.com/", "", 200, "backend=A host=xn--bcher-kva.office.example.com")
		// The HTTP entry point does not serve https routes, and the
		// other way round.
		domainGet(t, hc, "http://secure.office.example.com/", "", 404)
	})

	t.Run("wildcard and exact", func(t *testing.T) {
		domainGet(t, hc, "http://x.app.office.example.com/", "", 200, "backend=wild")
		domainGet(t, hc, "http://deep.x.app.office.example.com/", "", 200, "backend=wild")
		domainGet(t, hc, "http://api.app.office.example.com/", "", 200, "backend=exact")
		domainGet(t, hc, "http://API.App.Office.Example.COM/", "", 200, "backend=exact")
		// A wildcard does not match its bare suffix.
		domainGet(t, hc, "http://app.office.example.com/", "", 404, `"app.office.example.com"`)
	})

	t.Run("unknown host", func(t *testing.T) {
		resp := domainGet(t, hc, "http://nobody.example.org/", "", 404, `no service for host "nobody.example.org"`)
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("Content-Type %q", ct)
		}
		if !resp.Close {
			t.Error("the 404 does not close the connection")
		}
		// A body the server never reads does not cost the client
		// the answer.
		req, _ := http.NewRequest(http.MethodPost, "http://nobody.example.org/", bytes.NewReader(make([]byte, 100<<10)))
		resp, body, err := domainDo(hc, req)
		if err != nil || resp.StatusCode != 404 || !strings.Contains(body, "nobody.example.org") {
			t.Fatalf("POST to an unknown host: %v, %v, %q", resp, err, body)
		}
	})

	t.Run("missing host", func(t *testing.T) {
		got := string(rawExchange(t, w, httpAddr, []byte("GET / HTTP/1.0\r\nAccept: */*\r\n\r\n")))
		if !strings.HasPrefix(got, "HTTP/1.1 404 Not Found\r\n") || !strings.Contains(got, "names no host") {
			t.Fatalf("request without Host: answered %q", got)
		}
		got = string(rawExchange(t, w, httpAddr, []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")))
		if !strings.HasPrefix(got, "HTTP/1.1 400 Bad Request\r\n") {
			t.Fatalf("TLS on the HTTP entry point: answered %q", got)
		}
	})

	t.Run("large request", func(t *testing.T) {
		// Through net/http, to an HTTP backend: 100 KiB body, far more
		// than the sniffer's first read.
		body := harness.StreamBytes(7, 100<<10)
		req, _ := http.NewRequest(http.MethodPost, "http://a.office.example.com/upload", bytes.NewReader(body))
		resp, got, err := domainDo(hc, req)
		want := fmt.Sprintf("backend=A host=a.office.example.com path=/upload len=%d sha=%x", len(body), sha256.Sum256(body))
		if err != nil || resp.StatusCode != 200 || got != want {
			t.Fatalf("POST 100 KiB: %v %q, want %q", err, got, want)
		}
		// Raw, to an echo backend: every byte comes back as sent.
		msg := append([]byte(fmt.Sprintf("POST /raw HTTP/1.1\r\nHost: echo.office.example.com\r\nContent-Length: %d\r\n\r\n", len(body))), body...)
		if echoed := rawExchange(t, w, httpAddr, msg); !bytes.Equal(echoed, msg) {
			t.Fatalf("echo: %d bytes back, want the %d sent, unchanged", len(echoed), len(msg))
		}
	})

	t.Run("pipelined requests", func(t *testing.T) {
		// Two requests in one write; the connection stays with the
		// backend the first chose, whatever the second names.
		c := w.Dial(httpAddr)
		c.SetDeadline(time.Now().Add(harness.WaitTimeout))
		c.Write([]byte("GET /one HTTP/1.1\r\nHost: a.office.example.com\r\n\r\n" +
			"GET /two HTTP/1.1\r\nHost: b.other.example.com\r\nConnection: close\r\n\r\n"))
		br := bufio.NewReader(c)
		for _, want := range []string{"backend=A host=a.office.example.com path=/one", "backend=A host=b.other.example.com path=/two"} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("reading the answer %q: %v", want, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !strings.HasPrefix(string(body), want) {
				t.Fatalf("answer %q, %v; want %q", body, err, want)
			}
		}
	})

	t.Run("websocket upgrade", func(t *testing.T) {
		c := w.Dial(httpAddr)
		c.SetDeadline(time.Now().Add(harness.WaitTimeout))
		// The client speaks right after the head, before the 101:
		// bytes the sniffer may have read past the head arrive too.
		early := []byte("early bytes")
		c.Write(append([]byte("GET /ws HTTP/1.1\r\nHost: a.office.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), early...))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v, %v", resp, err)
		}
		want := early
		for i := range 20 {
			got := make([]byte, len(want))
			if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("round %d: got %q, %v; want %q", i, got, err, want)
			}
			want = harness.StreamBytes(uint64(i), int64(1+i*997))
			c.Write(want)
		}
	})

	t.Run("tls by sni", func(t *testing.T) {
		tc := w.HTTPClient(httpsAddr)
		for _, tt := range []struct {
			url, want string
			cert      *x509.Certificate
		}{
			{"https://secure.office.example.com/s", "backend=secure host=secure.office.example.com path=/s", secureCert},
			{"https://tls.other.example.com/t", "backend=other-tls host=tls.other.example.com path=/t", otherCert},
			{"https://Deep.TLS.other.example.com/u", "backend=other-tls", otherCert},
		} {
			resp := domainGet(t, tc, tt.url, "", 200, tt.want)
			// The backend's own certificate arrives: TLS went
			// through the tunnel end to end.
			if resp.TLS == nil || !resp.TLS.PeerCertificates[0].Equal(tt.cert) {
				t.Fatalf("%s: the certificate is not the backend's", tt.url)
			}
		}
	})

	t.Run("tls unknown or no sni", func(t *testing.T) {
		for _, name := range []string{"nobody.example.org", "a.office.example.com", ""} {
			c := w.Dial(httpsAddr)
			c.SetDeadline(time.Now().Add(harness.WaitTimeout))
			err := tls.Client(c, &tls.Config{ServerName: name, InsecureSkipVerify: true}).Handshake()
			if !errors.Is(err, io.EOF) {
				t.Fatalf("SNI %q: handshake %v, want a clean close (EOF)", name, err)
			}
		}
	})
}

// TestDomainClaims: a token cannot claim a domain it does not allow, and a
// domain one client holds unshared cannot be taken by another.
func TestDomainClaims(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	backOffice := httpBackend(w, "office")
	srv := w.StartServer(domainServerConfig(w))
	holder := w.StartClient(w.ClientConfig(srv, harness.TokenOffice,
		client.Service{Name: "a", Target: backOffice, Domains: []string{"a.office.example.com", "shared.example.com"}}))
	holder.WaitSession(1)
	hc := w.HTTPClient(srv.EntryAddr("http"))

	cases := []struct {
		name    string
		svc     client.Service
		code    string
		message []string
	}{
		{"hijack a name", client.Service{Name: "x", Target: backOffice, Domains: []string{"a.office.example.com"}},
			session.CodeDomainNotAllowed, []string{"domain not allowed", "a.office.example.com", `client "other"`}},
		{"hijack by wildcard", client.Service{Name: "x", Target: backOffice, Domains: []string{"*.example.com"}},
			session.CodeDomainNotAllowed, []string{"domain not allowed", "*.example.com"}},
		{"in use", client.Service{Name: "x", Target: backOffice, Domains: []string{"shared.example.com"}},
			session.CodeDomainInUse, []string{"domain shared.example.com (http)", `held by client "office"`}},
		{"in use, asking to share", client.Service{Name: "x", Target: backOffice, Domains: []string{"shared.example.com"}, Shared: true},
			session.CodeDomainInUse, []string{`held by client "office" and not shared`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := w.StartClient(w.ClientConfig(srv, harness.TokenOther, tc.svc))
			err := c.WaitExit()
			wantRejected(t, err, tc.code, tc.message...)
			domainGet(t, hc, "http://a.office.example.com/", "", 200, "backend=office")
			domainGet(t, hc, "http://shared.example.com/", "", 200, "backend=office")
		})
	}
	if st := holder.Status(); st.Sessions != 1 || !st.Connected {
		t.Fatalf("the holder was disturbed: %+v", st)
	}
	// The same domain on the other entry point is another route.
	c := w.StartClient(w.ClientConfig(srv, harness.TokenOther, client.Service{Name: "x", Target: backOffice, Domains: []string{"shared.example.com"}, Entry: "https"}))
	c.WaitSession(1)
}

// TestSharedDomain: two clients serving one domain with shared = true
// both get connections; when one dies, every request after the server has
// noticed goes to the other.
func TestSharedDomain(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	back1, back2 := httpBackend(w, "one"), httpBackend(w, "two")
	cfg := domainServerConfig(w)
	cfg.ReconnectGrace = 0
	srv := w.StartServer(cfg)
	link := w.Link(srv)
	c1cfg := w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "web", Target: back1, Domains: []string{"shared.example.com"}, Shared: true})
	c1cfg = link.Through(c1cfg)
	c1cfg.HandshakeTimeout = 2 * time.Second
	c1 := w.StartClient(c1cfg, link.Options()...)
	c1.WaitSession(1)
	c2 := w.StartClient(w.ClientConfig(srv, harness.TokenOther, client.Service{Name: "web", Target: back2, Domains: []string{"shared.example.com"}, Shared: true}))
	c2.WaitSession(1)
	if s := c2.Status().Session.Services[0]; !s.Shared || s.Entry != "http" {
		t.Fatalf("granted %+v, want shared on http", s)
	}
	hc := w.HTTPClient(srv.EntryAddr("http"))

	count := func(n int) map[string]int {
		seen := make(map[string]int)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://shared.example.com/%d", i), nil)
				resp, body, err := domainDo(hc, req)
				if err != nil || resp.StatusCode != 200 {
					t.Errorf("request %d: %v %q", i, err, body)
					return
				}
				name, _, _ := strings.Cut(strings.TrimPrefix(body, "backend="), " ")
				mu.Lock()
				seen[name]++
				mu.Unlock()
			})
			if i%4 == 3 {
				wg.Wait() // a few at a time
			}
		}
		wg.Wait()
		return seen
	}
	const n = 40
	seen := count(n)
	t.Logf("%d requests: %v", n, seen)
	if seen["one"] == 0 || seen["two"] == 0 || seen["one"]+seen["two"] != n {
		t.Fatalf("%d requests went %v; want both backends used", n, seen)
	}

	link.Kill()
	srv.WaitSessions(1) // the server noticed office go
	seen = count(n)
	if seen["two"] != n {
		t.Fatalf("after client office died, %d requests went %v; want all to two", n, seen)
	}
}

// TestEntrySlowloris: connections that never name their host hold neither
// the entry point nor the server: a request behind 500 of them is answered
// at once, they are dropped at limits.sniff_timeout, limits.max_sniffing
// bounds them, and shutdown does not wait for them.
func TestEntrySlowloris(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	back := httpBackend(w, "A")
	cfg := domainServerConfig(w)
	cfg.Limits.SniffTimeout = time.Minute
	srv := w.StartServer(cfg)
	cli := w.StartClient(w.ClientConfig(srv, harness.TokenOffice, client.Service{Name: "a", Target: back, Domains: []string{"a.office.example.com"}}))
	cli.WaitSession(1)
	addr := srv.EntryAddr("http")

	const silent = 500
	for i := range silent {
		c := w.Dial(addr)
		if i%2 == 1 { // half send a head that never ends
			c.Write([]byte("GET / HTTP/1.1\r\nUser-Agent: slow\r\n"))
		}
	}
	waitSniffing(t, srv, silent)

	start := time.Now()
	domainGet(t, w.HTTPClient(addr), "http://a.office.example.com/", "", 200, "backend=A")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the request took %v behind %d silent connections", d, silent)
	}

	start = time.Now()
	srv.Stop()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("shutdown took %v with %d silent connections (sniff_timeout %v)", d, silent, cfg.Limits.SniffTimeout)
	}
}

// TestEntrySniffLimits: a silent connection is dropped at sniff_timeout,
// and beyond max_sniffing new connections are closed at once.
func TestEntrySniffLimits(t *testing.T) {
	leaktest.Check(t)
	t.Run("sniff_timeout", func(t *testing.T) {
		w := harness.NewWorld(t)
		cfg := domainServerConfig(w)
		cfg.Limits.SniffTimeout = 300 * time.Millisecond
		srv := w.StartServer(cfg)
		c := w.Dial(srv.EntryAddr("http"))
		start := time.Now()
		if err := harness.IsClosed(c, harness.WaitTimeout); err != nil {
			t.Fatalf("a silent connection is still open: %v", err)
		}
		if d := time.Since(start); d < 200*time.Millisecond || d > 10*time.Second {
			t.Errorf("a silent connection was dropped after %v, sniff_timeout 300ms", d)
		}
	})
	t.Run("max_sniffing", func(t *testing.T) {
		w := harness.NewWorld(t)
		cfg := domainServerConfig(w)
		cfg.Limits.MaxSniffing = 3
		srv := w.StartServer(cfg)
		addr := srv.EntryAddr("https")
		for range 3 {
			w.Dial(addr)
		}
		waitSniffing(t, srv, 3)
		over := w.Dial(addr)
		if err := harness.IsClosed(over, 5*time.Second); err != nil { // sniff_timeout is 10s
			t.Fatalf("a connection over limits.max_sniffing is still open: %v", err)
		}
		if n := srv.Sniffing(); n != 3 {
			t.Fatalf("%d connections in their sniff phase, want 3", n)
		}
	})
}

// waitSniffing waits until n entry point connections wait to be routed.
func waitSniffing(t *testing.T, srv *harness.Server, n int) {
	t.Helper()
	harness.Poll(t, "connections in their sniff phase", func() (bool, string) { // no change signal for this count
		got := srv.Sniffing()
		return got == n, strconv.Itoa(got) + ", want " + strconv.Itoa(n)
	})
}

// TestHTTPEntryGatewayAnswers: on the HTTP entry point, a route whose
// backend refuses answers 502, and one whose client is gone (after the
// reconnect grace, on the server's clock) 503, each with a short body; a
// backend that answers is relayed as always. The HTTPS entry point and
// public ports, which are not HTTP, keep closing the connection.
func TestHTTPEntryGatewayAnswers(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorld(t)
	cfg := domainServerConfig(w)
	const grace = time.Second
	cfg.ReconnectGrace = grace
	clk := clocktest.New()
	srv := w.StartServer(cfg, server.WithClock(clk))
	dead := w.DeadAddr()
	office := w.StartClient(w.ClientConfig(srv, harness.TokenOffice,
		client.Service{Name: "down", Target: dead, Domains: []string{"down.office.example.com"}},
		client.Service{Name: "tlsdown", Target: dead, Domains: []string{"tlsdown.office.example.com"}, Entry: "https"},
		client.Service{Name: "portdown", Target: dead},
	))
	link := w.Link(srv)
	ocfg := link.Through(w.ClientConfig(srv, harness.TokenOther,
		client.Service{Name: "web", Target: httpBackend(w, "B"), Domains: []string{"web.other.example.com"}},
	))
	other := w.StartClient(ocfg, append(link.Options(), client.WithClock(clocktest.New()))...)
	office.WaitSession(1)
	other.WaitSession(1)
	hc := w.HTTPClient(srv.EntryAddr("http"))

	domainGet(t, hc, "http://web.other.example.com/x", "", 200, "backend=B")
	resp := domainGet(t, hc, "http://down.office.example.com/", "", 502, "bad gateway")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("502 Content-Type %q", ct)
	}

	// Not HTTP: a close, no answer. (The reset may come before the dialer
	// saw its connect complete, as in TestBackendDown.)
	pc, err := w.DialErr(office.PublicAddr("portdown"))
	switch {
	case errors.Is(err, syscall.ECONNRESET):
	case err != nil:
		t.Fatal(err)
	default:
		pc.SetDeadline(time.Now().Add(harness.WaitTimeout))
		pc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if got, err := io.ReadAll(pc); len(got) != 0 || isTimeoutErr(err) {
			t.Errorf("public port of a refused target answered %q, %v; want a close or reset", got, err)
		}
		pc.Close()
	}
	tlsc := w.Dial(srv.EntryAddr("https"))
	tlsc.SetDeadline(time.Now().Add(harness.WaitTimeout))
	conn := tls.Client(tlsc, &tls.Config{ServerName: "tlsdown.office.example.com", InsecureSkipVerify: true})
	if err := conn.Handshake(); err == nil {
		t.Errorf("TLS handshake through the HTTPS entry point to a refused target succeeded")
	}
	tlsc.Close()

	// The client's link dies: its route is held for the grace, a request
	// waits, and gets 503 when the grace is over. (other's backoff runs on
	// a clock of its own that nothing advances: it stays away.)
	const key = "http:web.other.example.com"
	link.Kill()
	waitRoute(srv, key, "held", func(r server.RouteInfo, ok bool) bool { return ok && r.Held })
	got := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://web.other.example.com/x", nil)
		resp, body, err := domainDo(hc, req)
		if err == nil && (resp.StatusCode != 503 || !strings.Contains(body, "service unavailable")) {
			err = fmt.Errorf("%s %q, want 503 service unavailable", resp.Status, body)
		}
		got <- err
	}()
	waitRoute(srv, key, "with a request waiting", func(r server.RouteInfo, ok bool) bool { return ok && r.Waiting == 1 })
	harness.WaitTimer(t, clk, grace)
	clk.Advance(grace)
	if err := <-got; err != nil {
		t.Fatalf("a request waiting past the grace: %v", err)
	}
	// After the grace the route is gone: an unknown host.
	waitRoute(srv, key, "released", func(_ server.RouteInfo, ok bool) bool { return !ok })
	domainGet(t, hc, "http://web.other.example.com/x", "", 404)
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
