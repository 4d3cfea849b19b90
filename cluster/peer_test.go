package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/transport"
)

// newCert makes a certificate signed by parent (nil: self-signed), and
// its DER.
func newCert(t *testing.T, name string, isCA bool, parent *tls.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IsCA:         isCA, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	signer, signKey := tmpl, any(key)
	if parent != nil {
		signer, signKey = parent.Leaf, parent.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// peerPair starts two Peers ("a" and "b") over real TCP and TLS; b's
// handler accepts every connection and echoes it.
type peerEnd struct {
	p    *Peers
	addr string
}

func startPeers(t *testing.T, id string, cfg PeerConfig, handle func(*Conn)) peerEnd {
	t.Helper()
	cfg.ID = id
	p := NewPeers(cfg, handle)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(l) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve %s: %v", id, err)
		}
	})
	return peerEnd{p: p, addr: l.Addr().String()}
}

func pinnedTLS(t *testing.T, own tls.Certificate, pins ...tls.Certificate) *tls.Config {
	t.Helper()
	c := Config{}
	for _, p := range pins {
		c.PeerFingerprints = append(c.PeerFingerprints, transport.Fingerprint(p.Certificate[0]))
	}
	cfg, err := c.PeerTLS([]tls.Certificate{own})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// echo accepts c and sends back what it reads, then its end.
func echo(c *Conn) {
	if err := c.Accept(); err != nil {
		c.Close()
		return
	}
	io.Copy(c, c)
	c.CloseWrite()
	c.Close()
}

func TestForwardEcho(t *testing.T) {
	ca, cb := newCert(t, "a", false, nil), newCert(t, "b", false, nil)
	token := []byte("peer-secret")
	var got Header
	b := startPeers(t, "b", PeerConfig{Token: token, TLS: pinnedTLS(t, cb, ca, cb)}, func(c *Conn) {
		got = c.Header()
		echo(c)
	})
	a := startPeers(t, "a", PeerConfig{Token: token, TLS: pinnedTLS(t, ca, ca, cb)}, echo)
	ctx := context.Background()
	want := Header{Key: "http:www.example.com", Peer: "192.0.2.7:4242", Local: "127.0.0.1:80"}
	for i := range 3 { // the first dials the link, the others reuse it
		c, err := a.p.Open(ctx, Member{ID: "b", PeerAddress: b.addr}, want)
		if err != nil {
			t.Fatal(err)
		}
		if c.RemoteAddr().String() != want.Peer || c.LocalAddr().String() != want.Local {
			t.Fatalf("addresses %v %v", c.RemoteAddr(), c.LocalAddr())
		}
		data := bytes.Repeat([]byte{byte(i), 1, 2, 3, 4, 5, 6}, 50000)
		go func() {
			c.Write(data)
			c.CloseWrite()
		}()
		back, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("echo: %d bytes, %v (want %d)", len(back), err, len(data))
		}
		c.Close()
	}
	if got != want {
		t.Fatalf("header: %+v, want %+v", got, want)
	}
	if ls := a.p.Links(); len(ls) != 1 || ls[0].ID != "b" || ls[0].Links != 1 {
		t.Fatalf("links: %+v", ls)
	}
	if st := a.p.Stats("b"); st.Out.Load() != 3 || st.Sent.Load() != 3*350000 || st.Received.Load() != 3*350000 {
		t.Fatalf("stats: out %d sent %d received %d", st.Out.Load(), st.Sent.Load(), st.Received.Load())
	}
}

func TestForwardRefusedAndReset(t *testing.T) {
	ca, cb := newCert(t, "a", false, nil), newCert(t, "b", false, nil)
	token := []byte("peer-secret")
	hold := make(chan *Conn, 1)
	b := startPeers(t, "b", PeerConfig{Token: token, TLS: pinnedTLS(t, cb, ca)}, func(c *Conn) {
		if c.Header().Key == "port:1" {
			c.Refuse("no session serves port:1 here")
			return
		}
		c.Accept()
		hold <- c
	})
	a := startPeers(t, "a", PeerConfig{Token: token, TLS: pinnedTLS(t, ca, cb)}, echo)
	m := Member{ID: "b", PeerAddress: b.addr}
	ctx := context.Background()
	if _, err := a.p.Open(ctx, m, Header{Key: "port:1"}); !errors.Is(err, ErrRefused) {
		t.Fatalf("refused: %v", err)
	}
	c, err := a.p.Open(ctx, m, Header{Key: "port:2"})
	if err != nil {
		t.Fatal(err)
	}
	held := <-hold
	defer held.Close()
	// The member leaves: its link goes and the connection resets, on
	// both ends.
	a.p.Drop("b")
	if _, err := io.ReadAll(c); !errors.Is(err, ErrForwardReset) {
		t.Fatalf("after Drop: %v", err)
	}
	held.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(held); !errors.Is(err, ErrForwardReset) {
		t.Fatalf("the other end after Drop: %v", err)
	}
	c.Close()
}

// A handler may wait before it answers (a UDP flow for a session in its
// handshake): the opener waits for the late reply, and the data after an
// accept reaches the handler whole (Gone's watch took none of it). The
// opener's ctx ends its wait, and the handler learns it from Gone; so
// does a handler whose link is dropped.
func TestForwardLateReply(t *testing.T) {
	leaktest.Check(t)
	ca, cb := newCert(t, "a", false, nil), newCert(t, "b", false, nil)
	token := []byte("peer-secret")
	type waiting struct {
		c    *Conn
		gone <-chan struct{}
	}
	held := make(chan waiting, 1)
	b := startPeers(t, "b", PeerConfig{Token: token, TLS: pinnedTLS(t, cb, ca)}, func(c *Conn) {
		held <- waiting{c, c.Gone()}
	})
	// A reply deadline far beyond the 5 s the test allows an Open whose
	// ctx ended.
	a := startPeers(t, "a", PeerConfig{Token: token, TLS: pinnedTLS(t, ca, cb), HandshakeTimeout: time.Minute}, echo)
	m := Member{ID: "b", PeerAddress: b.addr}
	type opened struct {
		c   *Conn
		err error
	}
	open := func(ctx context.Context) chan opened {
		ch := make(chan opened, 1)
		go func() {
			c, err := a.p.Open(ctx, m, Header{Key: "udp:1", Kind: KindDatagram})
			ch <- opened{c, err}
		}()
		return ch
	}

	// Accepted late: the opener's data reaches the handler.
	res := open(context.Background())
	w := <-held
	select {
	case r := <-res:
		t.Fatalf("Open returned before the reply: %v", r.err)
	case <-w.gone:
		t.Fatal("Gone closed while the opener waits")
	default:
	}
	if err := w.c.Accept(); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := r.c.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	r.c.CloseWrite()
	w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(w.c); err != nil || string(got) != "first" {
		t.Fatalf("the handler read %q, %v", got, err)
	}
	if w.c.Gone() != nil {
		t.Fatal("Gone after Accept")
	}
	w.c.Close()
	r.c.Close()

	// The opener gives up (its flow ended): Open returns at once, and the
	// handler's Gone closes.
	ctx, cancel := context.WithCancel(context.Background())
	res = open(ctx)
	w = <-held
	cancel()
	select {
	case r := <-res:
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("Open after its ctx ended: %v", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Open waits for the reply after its ctx ended")
	}
	<-w.gone
	w.c.Refuse("too late")

	// The link goes: Gone closes, Open fails.
	res = open(context.Background())
	w = <-held
	a.p.Drop("b")
	<-w.gone
	if r := <-res; r.err == nil {
		t.Fatal("Open succeeded over a dropped link")
	}
	w.c.Close()
}

func TestPeerAuthRefused(t *testing.T) {
	ca, cb, stranger := newCert(t, "a", false, nil), newCert(t, "b", false, nil), newCert(t, "x", false, nil)
	root := newCert(t, "cluster CA", true, nil)
	la, lb := newCert(t, "a", false, &root), newCert(t, "b", false, &root)
	other := newCert(t, "other CA", true, nil)
	lx := newCert(t, "x", false, &other)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate[0]}), 0o600)
	caTLS := func(own tls.Certificate) *tls.Config {
		c := Config{CA: caFile}
		cfg, err := c.PeerTLS([]tls.Certificate{own})
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	token := []byte("peer-secret")
	for _, tc := range []struct {
		name       string
		a, b       PeerConfig
		ok         bool
		wantErrStr string
	}{
		{"pins", PeerConfig{Token: token, TLS: pinnedTLS(t, ca, cb)}, PeerConfig{Token: token, TLS: pinnedTLS(t, cb, ca)}, true, ""},
		{"wrong token", PeerConfig{Token: []byte("guess"), TLS: pinnedTLS(t, ca, cb)}, PeerConfig{Token: token, TLS: pinnedTLS(t, cb, ca)}, false, "wrong peer token"},
		{"unpinned certificate", PeerConfig{Token: token, TLS: pinnedTLS(t, stranger, cb)}, PeerConfig{Token: token, TLS: pinnedTLS(t, cb, ca)}, false, ""},
		{"cluster CA", PeerConfig{Token: token, TLS: caTLS(la)}, PeerConfig{Token: token, TLS: caTLS(lb)}, true, ""},
		{"certificate of another CA", PeerConfig{Token: token, TLS: caTLS(lx)}, PeerConfig{Token: token, TLS: caTLS(lb)}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			served := make(chan struct{}, 1)
			b := startPeers(t, "b", tc.b, func(c *Conn) { served <- struct{}{}; echo(c) })
			a := startPeers(t, "a", tc.a, echo)
			c, err := a.p.Open(context.Background(), Member{ID: "b", PeerAddress: b.addr}, Header{Key: "port:22"})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("link made")
			}
			if !errors.Is(err, ErrPeerAuth) || (tc.wantErrStr != "" && !bytes.Contains([]byte(err.Error()), []byte(tc.wantErrStr))) {
				t.Fatalf("err: %v", err)
			}
			if len(b.p.Links()) != 0 {
				t.Fatalf("b has links: %+v", b.p.Links())
			}
			select {
			case <-served:
				t.Fatal("a connection was forwarded")
			default:
			}
		})
	}
}

// A link that stops answering (its peer froze, or the path went) is
// noticed within the timeout, and its connections reset.
func TestPeerSilentLinkDies(t *testing.T) {
	ca, cb := newCert(t, "a", false, nil), newCert(t, "b", false, nil)
	token := []byte("peer-secret")
	hold := make(chan *Conn, 1)
	b := startPeers(t, "b", PeerConfig{Token: token, TLS: pinnedTLS(t, cb, ca), Heartbeat: 100 * time.Millisecond, Timeout: 500 * time.Millisecond}, func(c *Conn) { c.Accept(); hold <- c })
	// A path from a to b that can go silent: a proxy that stops copying.
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	freeze := make(chan struct{})
	var conns []net.Conn
	go func() {
		in, err := pl.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", b.addr)
		if err != nil {
			in.Close()
			return
		}
		conns = append(conns, in, out)
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 4096)
			for {
				n, err := src.Read(buf)
				select {
				case <-freeze:
					return
				default:
				}
				if err != nil {
					return
				}
				dst.Write(buf[:n])
			}
		}
		go pipe(in, out)
		pipe(out, in)
	}()
	a := startPeers(t, "a", PeerConfig{Token: token, TLS: pinnedTLS(t, ca, cb), Heartbeat: 100 * time.Millisecond, Timeout: 500 * time.Millisecond}, echo)
	c, err := a.p.Open(context.Background(), Member{ID: "b", PeerAddress: pl.Addr().String()}, Header{Key: "port:2"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	held := <-hold
	defer held.Close()
	close(freeze)
	start := time.Now()
	held.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(held); !errors.Is(err, ErrForwardReset) {
		t.Fatalf("b's end: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); !errors.Is(err, ErrForwardReset) {
		t.Fatalf("a's end: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("noticed after %v", d)
	}
	for _, c := range conns {
		c.Close()
	}
}
