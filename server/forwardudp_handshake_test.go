package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/internal/testutil/memnet"
	"github.com/warren-tunnel/warren/internal/testutil/metrictest"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// A UDP flow forwarded to a server whose session for the route is still
// in its handshake (its Welcome sent, not yet up) waits for it, as a flow
// arriving there does (TestUDPFlowWaitsForHandshake), before the holder
// answers: the forwarding server's flow queues its datagrams meanwhile,
// so none is lost. (Refused before: "no live session serves ...", and
// the forwarding server dropped what it had queued, no_session.) The
// wait ends with the handshake (its failure refuses the flow, saying
// so), at handshake_timeout, or when the forwarding server gives up.
// The holder is a real server on a manual clock, its session driven
// through the table as serveTunnel drives it; the forwarding server is a
// peer of its own over a real peer link (TCP, TLS), speaking as
// forwardFlow does.
func TestForwardedUDPFlowWaitsForHandshake(t *testing.T) {
	const handshakeTimeout = 7 * time.Second // no other timer of the server's is set for it
	for _, end := range []string{"up", "handshake fails", "handshake timeout", "forwarder gives up"} {
		t.Run(end, func(t *testing.T) {
			leaktest.Check(t)
			clk := clocktest.New()
			s, cs, reg := handshakeUDPServer(t, &memnet.Network{}, clk, handshakeTimeout, "s0")

			// The holder's peer end serves what is forwarded to it; the
			// forwarder's refuses all.
			certA, certB := peerCert(t, "s0"), peerCert(t, "s1")
			token := []byte("cluster-peer-token-for-tests-0123456789")
			pA := cluster.NewPeers(cluster.PeerConfig{ID: "s0", Token: token, TLS: pinnedPeerTLS(t, certA, certB)}, s.serveForwarded)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- pA.Serve(l) }()
			t.Cleanup(func() {
				pA.Close()
				<-served
			})
			pB := cluster.NewPeers(cluster.PeerConfig{ID: "s1", Token: token, TLS: pinnedPeerTLS(t, certB, certA)}, func(c *cluster.Conn) { c.Refuse("not here") })
			t.Cleanup(func() { pB.Close() })

			// The forwarder opens the flow's stream, as forwardFlow does,
			// and the holder waits for the session before it answers.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hdr := cluster.Header{Key: "udp:20001", Peer: "192.0.2.9:4000", Local: "192.0.2.1:20001", Kind: cluster.KindDatagram}
			type opened struct {
				c   *cluster.Conn
				err error
			}
			res := make(chan opened, 1)
			go func() {
				c, err := pB.Open(ctx, cluster.Member{ID: "s0", PeerAddress: l.Addr().String()}, hdr)
				res <- opened{c, err}
			}()
			waited, stop := context.WithTimeout(context.Background(), 10*time.Second)
			defer stop()
			timerSet := make(chan error, 1) // sessionFor's: the holder waits
			go func() { timerSet <- clk.WaitTimer(waited, handshakeTimeout) }()
			select {
			case r := <-res:
				t.Fatalf("the holder answered without waiting for the session in its handshake: %v", r.err)
			case err := <-timerSet:
				if err != nil {
					t.Fatalf("the holder does not wait for the session in its handshake: %v", err)
				}
			}
			select {
			case r := <-res:
				t.Fatalf("the flow was answered while its session was in its handshake: %v", r.err)
			default:
			}
			if n := cs.flows.Load(); n != 1 {
				t.Fatalf("the session counts %d flows while one waits for it, want 1 (udp.max_session_flows)", n)
			}

			switch end {
			case "handshake fails", "handshake timeout":
				if end == "handshake fails" {
					s.table.down(cs, true) // as serveTunnel does when its Welcome fails
				} else {
					clk.Advance(handshakeTimeout)
				}
				r := <-res
				want := map[string]string{
					"handshake fails":   "the session for udp port 20001 on server s0 did not come up: its handshake failed",
					"handshake timeout": "the session for udp port 20001 on server s0 did not come up: it was not up within handshake_timeout (7s)",
				}[end]
				if !errors.Is(r.err, cluster.ErrRefused) || !strings.Contains(r.err.Error(), want) {
					t.Fatalf("the flow got %v; want a refusal saying %q", r.err, want)
				}
				if n := cs.flows.Load(); n != 0 {
					t.Fatalf("the session counts %d flows after the refusal", n)
				}
				return
			case "forwarder gives up":
				cancel() // its flow ended (forwardFlow's ctx)
				if r := <-res; !errors.Is(r.err, context.Canceled) {
					t.Fatalf("Open after the forwarder gave up: %v", r.err)
				}
				// Nothing signals the holder's end of the wait but the count.
				waitUntil(t, "the holder's wait ended", func() bool { return cs.flows.Load() == 0 })
				return
			}

			// The session comes up: the flow is accepted, and its datagrams
			// reach the client from the original source.
			streams := upWithClient(t, s, cs)
			r := <-res
			if r.err != nil {
				t.Fatalf("the flow was not accepted once its session was up: %v", r.err)
			}
			fc := r.c
			defer fc.Close()
			if _, err := fc.Write(session.AppendDatagram(nil, []byte("early"))); err != nil {
				t.Fatal(err)
			}
			st := nextStream(t, streams)
			if h := st.Header(); h.Kind != session.KindDatagram || h.Service != "dns" || h.Peer != hdr.Peer || h.Local != hdr.Local {
				t.Fatalf("flow stream header %+v", h)
			}
			st.SetReadDeadline(time.Now().Add(10 * time.Second))
			p, err := st.ReadDatagram(session.MaxDatagram, func(n int) []byte { return make([]byte, n) })
			if err != nil || string(p) != "early" {
				t.Fatalf("the client read %q, %v; want the forwarded datagram", p, err)
			}
			if err := st.WriteDatagrams(session.AppendDatagram(nil, []byte("answer"))); err != nil {
				t.Fatal(err)
			}
			var dh [session.DatagramHeaderLen]byte
			fc.SetReadDeadline(time.Now().Add(10 * time.Second))
			p, err = session.ReadDatagramFrom(fc, dh[:], session.MaxDatagram, func(n int) []byte { return make([]byte, n) })
			if err != nil || string(p) != "answer" {
				t.Fatalf("the forwarder read %q, %v; want the client's answer", p, err)
			}
			// Counted before the relay began, which carried the answer.
			if n := metrictest.Value(t, reg, "warren_cluster_forwarded_connections_total", "peer", "s1", "direction", "in"); n != 1 {
				t.Fatalf("%v flows counted forwarded in, want 1", n)
			}
			// The forwarder ends the flow; the client hears it.
			fc.Write(session.AppendDatagramEnd(nil, false, ""))
			fc.CloseWrite()
			if _, err := st.ReadDatagram(session.MaxDatagram, func(n int) []byte { return make([]byte, n) }); err == nil {
				t.Fatal("the flow's stream still open after the forwarder ended it")
			}
		})
	}
}

// peerCert is a self-signed certificate for a peer link.
func peerCert(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// pinnedPeerTLS is a peer link's TLS with own, trusting peer's
// certificate (peer_fingerprints).
func pinnedPeerTLS(t *testing.T, own, peer tls.Certificate) *tls.Config {
	t.Helper()
	c := cluster.Config{PeerFingerprints: []string{transport.Fingerprint(peer.Certificate[0])}}
	tc, err := c.PeerTLS([]tls.Certificate{own})
	if err != nil {
		t.Fatal(err)
	}
	return tc
}
