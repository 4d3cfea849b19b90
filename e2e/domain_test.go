package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/leaktest"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/session"
)

// domainServerConfig is serverConfig with both entry points on free
// loopback ports; "office" may claim *.office.example.com, "other"
// *.other.example.com, and both shared.example.com.
func domainServerConfig(t *testing.T, kind string) server.Config {
	cfg := serverConfig(t, kind)
	cfg.HTTP.Address = "127.0.0.1:0"
	cfg.HTTPS.Address = "127.0.0.1:0"
	cfg.Clients[0].Domains = []string{"*.office.example.com", "shared.example.com"}
	cfg.Clients[1].Domains = []string{"*.other.example.com", "shared.example.com"}
	return cfg
}

func (s *testServer) entryAddr(name string) string { return s.EntryAddr(name).String() }

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
func httpBackend(t *testing.T, name string) string {
	t.Helper()
	s := httptest.NewServer(httpHandler(name))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// tlsBackend is a net/http server with TLS behind a client; it returns the
// target and the certificate it presents.
func tlsBackend(t *testing.T, name string) (string, *x509.Certificate) {
	t.Helper()
	s := httptest.NewUnstartedServer(httpHandler(name))
	s.StartTLS()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String(), s.Certificate()
}

// entryClient is an HTTP client whose every connection goes to addr (an
// entry point), whatever the URL's host; the URL's host becomes the Host
// header or the TLS server name.
func entryClient(t *testing.T, addr string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the backend's test certificate
		DisableKeepAlives: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitTimeout}
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
func rawExchange(t *testing.T, addr string, msg []byte) []byte {
	t.Helper()
	c := dialPublic(t, addr)
	c.SetDeadline(time.Now().Add(waitTimeout))
	go func() {
		c.Write(msg)
		c.CloseWrite()
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
	forEachTransport(t, func(t *testing.T, kind string) {
		backA, backB := httpBackend(t, "A"), httpBackend(t, "B")
		backWild, backExact := httpBackend(t, "wild"), httpBackend(t, "exact")
		backEcho := backend(t, echo)
		secure, secureCert := tlsBackend(t, "secure")
		otherTLS, otherCert := tlsBackend(t, "other-tls")

		srv := startServer(t, domainServerConfig(t, kind))
		office := startClient(t, clientConfig(srv, tokenOffice,
			client.Service{Name: "a", Target: backA, Domains: []string{"a.office.example.com", "bücher.office.example.com"}},
			client.Service{Name: "wild", Target: backWild, Domains: []string{"*.app.office.example.com"}},
			client.Service{Name: "exact", Target: backExact, Domains: []string{"api.app.office.example.com"}},
			client.Service{Name: "echo", Target: backEcho, Domains: []string{"echo.office.example.com"}},
			client.Service{Name: "secure", Target: secure, Domains: []string{"secure.office.example.com"}, Entry: "https"},
		))
		other := startClient(t, clientConfig(srv, tokenOther,
			client.Service{Name: "b", Target: backB, Domains: []string{"b.other.example.com"}, Entry: "http"},
			client.Service{Name: "tls", Target: otherTLS, Domains: []string{"*.other.example.com"}, Entry: "https"},
		))
		office.waitSession(t, 1)
		other.waitSession(t, 1)
		httpAddr, httpsAddr := srv.entryAddr("http"), srv.entryAddr("https")
		hc := entryClient(t, httpAddr)

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
			srv.logs.waitFor(t, "no service for this host", "host=nobody.example.org", "entry=http")
			// A body the server never reads does not cost the client
			// the answer.
			req, _ := http.NewRequest(http.MethodPost, "http://nobody.example.org/", bytes.NewReader(make([]byte, 100<<10)))
			resp, body, err := domainDo(hc, req)
			if err != nil || resp.StatusCode != 404 || !strings.Contains(body, "nobody.example.org") {
				t.Fatalf("POST to an unknown host: %v, %v, %q", resp, err, body)
			}
		})

		t.Run("missing host", func(t *testing.T) {
			got := string(rawExchange(t, httpAddr, []byte("GET / HTTP/1.0\r\nAccept: */*\r\n\r\n")))
			if !strings.HasPrefix(got, "HTTP/1.1 404 Not Found\r\n") || !strings.Contains(got, "names no host") {
				t.Fatalf("request without Host: answered %q", got)
			}
			got = string(rawExchange(t, httpAddr, []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")))
			if !strings.HasPrefix(got, "HTTP/1.1 400 Bad Request\r\n") {
				t.Fatalf("TLS on the HTTP entry point: answered %q", got)
			}
		})

		t.Run("large request", func(t *testing.T) {
			// Through net/http, to an HTTP backend: 100 KiB body, far more
			// than the sniffer's first read.
			body := streamBytes(7, 100<<10)
			req, _ := http.NewRequest(http.MethodPost, "http://a.office.example.com/upload", bytes.NewReader(body))
			resp, got, err := domainDo(hc, req)
			want := fmt.Sprintf("backend=A host=a.office.example.com path=/upload len=%d sha=%x", len(body), sha256.Sum256(body))
			if err != nil || resp.StatusCode != 200 || got != want {
				t.Fatalf("POST 100 KiB: %v %q, want %q", err, got, want)
			}
			// Raw, to an echo backend: every byte comes back as sent.
			msg := append([]byte(fmt.Sprintf("POST /raw HTTP/1.1\r\nHost: echo.office.example.com\r\nContent-Length: %d\r\n\r\n", len(body))), body...)
			if echoed := rawExchange(t, httpAddr, msg); !bytes.Equal(echoed, msg) {
				t.Fatalf("echo: %d bytes back, want the %d sent, unchanged", len(echoed), len(msg))
			}
		})

		t.Run("pipelined requests", func(t *testing.T) {
			// Two requests in one write; the connection stays with the
			// backend the first chose, whatever the second names.
			c := dialPublic(t, httpAddr)
			c.SetDeadline(time.Now().Add(waitTimeout))
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
			c := dialPublic(t, httpAddr)
			c.SetDeadline(time.Now().Add(waitTimeout))
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
				want = streamBytes(uint64(i), int64(1+i*997))
				c.Write(want)
			}
		})

		t.Run("tls by sni", func(t *testing.T) {
			tc := entryClient(t, httpsAddr)
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
				c := dialPublic(t, httpsAddr)
				c.SetDeadline(time.Now().Add(waitTimeout))
				err := tls.Client(c, &tls.Config{ServerName: name, InsecureSkipVerify: true}).Handshake()
				if !errors.Is(err, io.EOF) {
					t.Fatalf("SNI %q: handshake %v, want a clean close (EOF)", name, err)
				}
			}
			srv.logs.waitFor(t, "no service for this host", "host=a.office.example.com", "entry=https")
			srv.logs.waitFor(t, "did not name a host", "entry=https", "no server name")
		})
	})
}

// TestDomainClaims: a token cannot claim a domain it does not allow, and a
// domain one client holds unshared cannot be taken by another.
func TestDomainClaims(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		backOffice := httpBackend(t, "office")
		srv := startServer(t, domainServerConfig(t, kind))
		holder := startClient(t, clientConfig(srv, tokenOffice,
			client.Service{Name: "a", Target: backOffice, Domains: []string{"a.office.example.com", "shared.example.com"}}))
		holder.waitSession(t, 1)
		hc := entryClient(t, srv.entryAddr("http"))

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
				c := startClient(t, clientConfig(srv, tokenOther, tc.svc))
				err := c.waitExit(t)
				var rej *session.RejectError
				if !errors.As(err, &rej) || rej.Code != tc.code {
					t.Fatalf("client ended with %v, want rejection %s", err, tc.code)
				}
				for _, m := range tc.message {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("client error %q lacks %q", err, m)
					}
				}
				domainGet(t, hc, "http://a.office.example.com/", "", 200, "backend=office")
				domainGet(t, hc, "http://shared.example.com/", "", 200, "backend=office")
			})
		}
		if st := holder.Status(); st.Sessions != 1 || !st.Connected {
			t.Fatalf("the holder was disturbed: %+v", st)
		}
		// The same domain on the other entry point is another route.
		c := startClient(t, clientConfig(srv, tokenOther, client.Service{Name: "x", Target: backOffice, Domains: []string{"shared.example.com"}, Entry: "https"}))
		c.waitSession(t, 1)
	})
}

// TestSharedDomain: two clients serving one domain with shared = true
// both get connections; when one dies, every request after the server has
// noticed goes to the other.
func TestSharedDomain(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		back1, back2 := httpBackend(t, "one"), httpBackend(t, "two")
		cfg := domainServerConfig(t, kind)
		cfg.ReconnectGrace = 0
		srv := startServer(t, cfg)
		link := newLinkProxy(t, srv)
		c1cfg := clientConfig(srv, tokenOffice, client.Service{Name: "web", Target: back1, Domains: []string{"shared.example.com"}, Shared: true})
		c1cfg.Server = link.addr
		c1cfg.HandshakeTimeout = 2 * time.Second
		c1 := startClient(t, c1cfg)
		c1.waitSession(t, 1)
		c2 := startClient(t, clientConfig(srv, tokenOther, client.Service{Name: "web", Target: back2, Domains: []string{"shared.example.com"}, Shared: true}))
		c2.waitSession(t, 1)
		if s := c2.Status().Session.Services[0]; !s.Shared || s.Entry != "http" {
			t.Fatalf("granted %+v, want shared on http", s)
		}
		hc := entryClient(t, srv.entryAddr("http"))

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

		link.kill()
		srv.logs.waitFor(t, "session down", "client=office")
		seen = count(n)
		if seen["two"] != n {
			t.Fatalf("after client office died, %d requests went %v; want all to two", n, seen)
		}
	})
}

// TestEntrySlowloris: connections that never name their host hold neither
// the entry point nor the server: a request behind 500 of them is answered
// at once, they are dropped at limits.sniff_timeout, limits.max_sniffing
// bounds them, and shutdown does not wait for them.
func TestEntrySlowloris(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		back := httpBackend(t, "A")
		cfg := domainServerConfig(t, kind)
		cfg.Limits.SniffTimeout = time.Minute
		srv := startServer(t, cfg)
		cli := startClient(t, clientConfig(srv, tokenOffice, client.Service{Name: "a", Target: back, Domains: []string{"a.office.example.com"}}))
		cli.waitSession(t, 1)
		addr := srv.entryAddr("http")

		const silent = 500
		for i := range silent {
			c := dialPublic(t, addr)
			if i%2 == 1 { // half send a head that never ends
				c.Write([]byte("GET / HTTP/1.1\r\nUser-Agent: slow\r\n"))
			}
		}
		waitSniffing(t, srv, silent)

		start := time.Now()
		domainGet(t, entryClient(t, addr), "http://a.office.example.com/", "", 200, "backend=A")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the request took %v behind %d silent connections", d, silent)
		}

		start = time.Now()
		srv.stop()
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("shutdown took %v with %d silent connections (sniff_timeout %v)", d, silent, cfg.Limits.SniffTimeout)
		}
	})
}

// TestEntrySniffLimits: a silent connection is dropped at sniff_timeout,
// and beyond max_sniffing new connections are closed at once.
func TestEntrySniffLimits(t *testing.T) {
	leaktest.Check(t)
	t.Run("sniff_timeout", func(t *testing.T) {
		cfg := domainServerConfig(t, "tcp")
		cfg.Limits.SniffTimeout = 300 * time.Millisecond
		srv := startServer(t, cfg)
		c := dialPublic(t, srv.entryAddr("http"))
		start := time.Now()
		if err := isClosed(c, waitTimeout); err != nil {
			t.Fatalf("a silent connection is still open: %v", err)
		}
		if d := time.Since(start); d < 200*time.Millisecond || d > 10*time.Second {
			t.Errorf("a silent connection was dropped after %v, sniff_timeout 300ms", d)
		}
		srv.logs.waitFor(t, "did not name a host", "i/o timeout")
	})
	t.Run("max_sniffing", func(t *testing.T) {
		cfg := domainServerConfig(t, "tcp")
		cfg.Limits.MaxSniffing = 3
		srv := startServer(t, cfg)
		addr := srv.entryAddr("https")
		for range 3 {
			dialPublic(t, addr)
		}
		waitSniffing(t, srv, 3)
		over := dialPublic(t, addr)
		if err := isClosed(over, 5*time.Second); err != nil { // sniff_timeout is 10s
			t.Fatalf("a connection over limits.max_sniffing is still open: %v", err)
		}
		srv.logs.waitFor(t, "limits.max_sniffing", "entry=https")
		if n := srv.Sniffing(); n != 3 {
			t.Fatalf("%d connections in their sniff phase, want 3", n)
		}
	})
}

// waitSniffing waits until n entry point connections wait to be routed.
func waitSniffing(t *testing.T, srv *testServer, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for srv.Sniffing() != n {
		if time.Now().After(deadline) {
			t.Fatalf("server has %d connections in their sniff phase, want %d", srv.Sniffing(), n)
		}
		time.Sleep(5 * time.Millisecond) // no change signal for this count
	}
}
