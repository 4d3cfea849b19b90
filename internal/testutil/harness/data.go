package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
)

// RandomStream writes n pseudo-random bytes from seed to w and returns
// their SHA-256.
func RandomStream(w io.Writer, seed uint64, n int64) ([32]byte, error) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for n > 0 {
		b := buf[:min(int64(len(buf)), n)]
		for i := 0; i+8 <= len(b); i += 8 {
			v := r.Uint64()
			for j := range 8 {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		h.Write(b)
		if _, err := w.Write(b); err != nil {
			return [32]byte{}, err
		}
		n -= int64(len(b))
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// StreamBytes is what RandomStream writes for seed: the reference a test
// compares received bytes with.
func StreamBytes(seed uint64, n int64) []byte {
	var b bytes.Buffer
	RandomStream(&b, seed, n)
	return b.Bytes()
}

// SumAll reads r to EOF and returns the SHA-256 and length.
func SumAll(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

// SlowDownload is a backend handler that sends size bytes of seed's
// stream in 64 KiB pieces, pausing between them, then closes; started is
// closed at the first piece.
func SlowDownload(seed uint64, size int, pause time.Duration, started chan<- struct{}) func(net.Conn) {
	want := StreamBytes(seed, int64(size))
	var once sync.Once
	return func(c net.Conn) {
		for off := 0; off < size; off += 64 << 10 {
			if _, err := c.Write(want[off:min(off+64<<10, size)]); err != nil {
				return
			}
			once.Do(func() { close(started) })
			time.Sleep(pause)
		}
	}
}

// CheckDownload reads c to its end and compares it with seed's stream.
func CheckDownload(t testing.TB, c net.Conn, seed uint64, size int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(WaitTimeout))
	got, err := io.ReadAll(c)
	if err != nil || len(got) != size {
		t.Fatalf("download: %d of %d bytes, %v", len(got), size, err)
	}
	if !bytes.Equal(got, StreamBytes(seed, int64(size))) {
		t.Fatal("download: the bytes differ from what the backend sent")
	}
}

// Transfer sends size bytes of seed's stream through an echo service at
// the public address addr and checks they come back intact.
func (w *World) Transfer(addr string, seed uint64, size int64) {
	w.t.Helper()
	c := w.Dial(addr)
	c.SetDeadline(time.Now().Add(2 * WaitTimeout))
	sent := make(chan [32]byte, 1)
	go func() {
		sum, _ := RandomStream(c, seed, size)
		CloseWrite(c)
		sent <- sum
	}()
	got, n, err := SumAll(c)
	if err != nil || n != size || got != <-sent {
		w.t.Fatalf("transfer via %s: %d of %d bytes back, %v", addr, n, size, err)
	}
}

// HTTPBackend serves h over HTTP on the private network and returns the
// address, a target for a client's service.
func (w *World) HTTPBackend(h http.Handler) string {
	w.t.Helper()
	return w.httpBackend(h, false).Listener.Addr().String()
}

// TLSBackend serves h over HTTPS (httptest's certificate) on the private
// network and returns the address and the certificate.
func (w *World) TLSBackend(h http.Handler) (string, *x509.Certificate) {
	w.t.Helper()
	s := w.httpBackend(h, true)
	return s.Listener.Addr().String(), s.Certificate()
}

func (w *World) httpBackend(h http.Handler, secure bool) *httptest.Server {
	l, err := w.Private.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = l
	if secure {
		s.StartTLS()
	} else {
		s.Start()
	}
	w.t.Cleanup(s.Close)
	return s
}

// HTTPClient is an HTTP client whose every connection goes to the public
// address addr (an entry point), whatever the URL's host; the URL's host
// becomes the Host header or the TLS server name. It accepts any
// certificate (the backends' test ones).
func (w *World) HTTPClient(addr string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return w.Public.Dial(ctx, "tcp", addr)
		},
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		DisableKeepAlives: true,
	}
	w.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: WaitTimeout}
}

// Download is a transfer under way through a tunnel, to see what stopping
// one side does to it: a server and a client that let open connections
// finish for up to WaitTimeout when they stop, a backend that sends Size
// bytes of Seed's stream slowly (64 KiB every 30 ms), and Conn, the
// public connection reading it, whose first piece has arrived.
type Download struct {
	Server *Server
	Client *Client
	// Addr is the service's public address.
	Addr string
	Conn net.Conn
	Seed uint64
	Size int
}

// StartDownload starts a Download of 2 MiB of seed's stream.
func (w *World) StartDownload(seed uint64) *Download {
	w.t.Helper()
	d := &Download{Seed: seed, Size: 2 << 20}
	started := make(chan struct{})
	target := w.Backend(SlowDownload(seed, d.Size, 30*time.Millisecond, started))
	scfg := w.ServerConfig()
	scfg.ShutdownTimeout = WaitTimeout
	d.Server = w.StartServer(scfg)
	ccfg := w.ClientConfig(d.Server, TokenOffice, client.Service{Name: "dl", Target: target})
	ccfg.ShutdownTimeout = WaitTimeout
	d.Client = w.StartClient(ccfg)
	d.Client.WaitSession(1)
	d.Addr = d.Client.PublicAddr("dl")
	d.Conn = w.Dial(d.Addr)
	<-started
	return d
}

// Finish checks that the download arrives whole, then hangs up: nothing
// is open any more.
func (d *Download) Finish() {
	d.Client.w.t.Helper()
	CheckDownload(d.Client.w.t, d.Conn, d.Seed, d.Size)
	d.Conn.Close()
}
