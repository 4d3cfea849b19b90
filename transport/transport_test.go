package transport_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/impair"
	"github.com/warren-tunnel/warren/internal/leaktest"
	"github.com/warren-tunnel/warren/transport"
	"github.com/warren-tunnel/warren/transport/transporttest"
)

// pair is a server and a client transport of one kind that work together.
type pair struct {
	name           string
	server, client transport.Transport
	addr           string // what the server listens on
	encrypted      bool
}

// pairs returns every transport kind the behaviour suite runs over, with
// TLS verified by a pinned self-signed certificate.
func pairs(t *testing.T) []pair {
	t.Helper()
	srvTLS, fp, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, err := transport.ClientTLS{Fingerprint: fp}.Config()
	if err != nil {
		t.Fatal(err)
	}
	kcpCfg := transport.DefaultKCPConfig()
	mem := &transporttest.Network{}
	return []pair{
		{"tcp+tls", &transport.TCP{TLS: srvTLS}, &transport.TCP{TLS: cliTLS}, "127.0.0.1:0", true},
		{"kcp+tls", &transport.KCP{Config: kcpCfg, TLS: srvTLS}, &transport.KCP{Config: kcpCfg, TLS: cliTLS}, "127.0.0.1:0", true},
		{"tcp", &transport.TCP{}, &transport.TCP{}, "127.0.0.1:0", false},
		{"kcp", &transport.KCP{Config: kcpCfg}, &transport.KCP{Config: kcpCfg}, "127.0.0.1:0", false},
		{"memory", mem, mem, "memory-server", false},
	}
}

// forEach runs fn as a subtest for every transport pair.
func forEach(t *testing.T, fn func(t *testing.T, p pair)) {
	for _, p := range pairs(t) {
		t.Run(p.name, func(t *testing.T) { fn(t, p) })
	}
}

// connect listens, dials and accepts; both conns and the listener are
// closed when the test ends.
func connect(t *testing.T, p pair) (srv, cli net.Conn, l transport.Listener) {
	t.Helper()
	l, err := p.server.Listen(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		// The first byte drives the server's side of the TLS handshake
		// and, for plain KCP, is what tells the listener of the session.
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Error(err)
		}
		c.SetDeadline(time.Time{})
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err = p.client.Dial(ctx, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { srv.Close() })
	return srv, cli, l
}

func TestTransfer(t *testing.T) {
	leaktest.Check(t)
	forEach(t, func(t *testing.T, p pair) {
		srv, cli, _ := connect(t, p)
		const size = 4 << 20
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rand.Uint32())
		}
		want := sha256.Sum256(data)
		// The server echoes everything back. It must not close before the
		// client has it all: a KCP Close drops what is not yet acknowledged.
		go io.CopyN(srv, srv, size)
		cli.SetDeadline(time.Now().Add(60 * time.Second))
		writeErr := make(chan error, 1)
		go func() {
			_, err := cli.Write(data)
			writeErr <- err
		}()
		h := sha256.New()
		if _, err := io.CopyN(h, cli, size); err != nil {
			t.Fatal(err)
		}
		if err := <-writeErr; err != nil {
			t.Fatal(err)
		}
		if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatal("echoed data differs")
		}
	})
}

func TestAcceptAfterCloseIsErrClosed(t *testing.T) {
	leaktest.Check(t)
	forEach(t, func(t *testing.T, p pair) {
		l, err := p.server.Listen(p.addr)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := l.Accept()
			done <- err
		}()
		l.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func TestConnOutlivesListener(t *testing.T) {
	leaktest.Check(t)
	forEach(t, func(t *testing.T, p pair) {
		srv, cli, l := connect(t, p)
		l.Close()
		msg := []byte("still here")
		go cli.Write(msg)
		got := make([]byte, len(msg))
		srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(srv, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("got %q", got)
		}
	})
}

func TestCloseUnblocksRead(t *testing.T) {
	leaktest.Check(t)
	forEach(t, func(t *testing.T, p pair) {
		_, cli, _ := connect(t, p)
		done := make(chan error, 1)
		go func() {
			_, err := cli.Read(make([]byte, 1))
			done <- err
		}()
		cli.Close()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("Read after Close returned no error")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not unblock Read")
		}
		cli.Close() // idempotent
	})
}

func TestChannelBinding(t *testing.T) {
	forEach(t, func(t *testing.T, p pair) {
		srv, cli, _ := connect(t, p)
		srvBinding := make(chan []byte, 1)
		go func() {
			srv.SetDeadline(time.Now().Add(10 * time.Second))
			b, err := transport.ExportBinding(srv)
			if err != nil {
				t.Error(err)
			}
			srvBinding <- b
		}()
		cb, err := transport.ExportBinding(cli)
		if err != nil {
			t.Fatal(err)
		}
		sb := <-srvBinding
		if !p.encrypted {
			if cb != nil || sb != nil {
				t.Fatal("plaintext connection has a binding")
			}
			return
		}
		if len(cb) != 32 || !bytes.Equal(cb, sb) {
			t.Fatalf("bindings differ or short: %x / %x", cb, sb)
		}
		// A second connection has a different binding.
		_, cli2, _ := connect(t, p)
		cb2, err := transport.ExportBinding(cli2)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(cb, cb2) {
			t.Fatal("two connections share a binding")
		}
	})
}

// TestDialDeadServer: Dial itself reports a server that is not there, at
// once when the host says so (TCP RST, ICMP port unreachable for KCP's
// connected UDP socket), for KCP too, although KCP has no handshake.
func TestDialDeadServer(t *testing.T) {
	leaktest.Check(t)
	for _, p := range pairs(t) {
		if p.name == "memory" {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			// Bind and close to get an address nobody serves.
			l, err := p.server.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			c, err := p.client.Dial(ctx, addr)
			if err == nil && !p.encrypted && p.name == "kcp" {
				// Plain KCP learns of the refusal at the first read.
				c.Write([]byte{0})
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Read(make([]byte, 1))
				c.Close()
			} else if err == nil {
				c.Close()
				t.Fatal("Dial to a dead server succeeded")
			}
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want a refusal", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %v to notice", d)
			}
		})
	}
}

func TestFingerprintMismatch(t *testing.T) {
	leaktest.Check(t)
	srvTLS, _, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Pin some other server's certificate.
	_, other, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, err := transport.ClientTLS{Fingerprint: other}.Config()
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{transport.KindTCP, transport.KindKCP} {
		t.Run(kind, func(t *testing.T) {
			srvT, _ := transport.New(kind, transport.Config{KCP: transport.DefaultKCPConfig(), TLS: srvTLS})
			cliT, _ := transport.New(kind, transport.Config{KCP: transport.DefaultKCPConfig(), TLS: cliTLS})
			l, err := srvT.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				handshakeIgnoreErr(c)
				c.Close()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := cliT.Dial(ctx, l.Addr().String())
			if err == nil {
				c.Close()
				t.Fatal("Dial with the wrong pin succeeded")
			}
			if !errors.Is(err, transport.ErrFingerprintMismatch) || !errors.Is(err, transport.ErrHandshake) {
				t.Fatalf("err = %v, want fingerprint mismatch", err)
			}
		})
	}
}

func handshakeIgnoreErr(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		tc.Handshake()
	}
}

// TestVerifyByCA trusts the server's certificate as a CA file and checks
// the name in it.
func TestVerifyByCA(t *testing.T) {
	dir := t.TempDir()
	srvTLS, _, _, err := transport.ServerTLS{}.Config(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "server.crt")
	cases := []struct {
		name       string
		serverName string
		ok         bool
	}{
		{"name in certificate", "warren", true},
		{"wrong name", "example.com", false},
		{"default name is the dialled IP", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cliTLS, err := transport.ClientTLS{CA: ca, ServerName: tc.serverName}.Config()
			if err != nil {
				t.Fatal(err)
			}
			p := pair{server: &transport.TCP{TLS: srvTLS}, client: &transport.TCP{TLS: cliTLS}, addr: "127.0.0.1:0"}
			l, err := p.server.Listen(p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				handshakeIgnoreErr(c)
				c.Close()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := p.client.Dial(ctx, l.Addr().String())
			if (err == nil) != tc.ok {
				t.Fatalf("Dial err = %v, want ok=%v", err, tc.ok)
			}
			if c != nil {
				c.Close()
			}
		})
	}
}

// TestKCPLossyLink: KCP over a socket that drops 5% and reorders 5% of the
// datagrams each way still delivers every byte intact.
func TestKCPLossyLink(t *testing.T) {
	leaktest.Check(t)
	srvTLS, fp, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, _ := transport.ClientTLS{Fingerprint: fp}.Config()
	lossy := func(pc net.PacketConn) net.PacketConn {
		return impair.Wrap(pc, impair.Config{Loss: 0.05, Reorder: 0.05})
	}
	cfg := transport.DefaultKCPConfig()
	srvT := &transport.KCP{Config: cfg, TLS: srvTLS, WrapPacketConn: lossy}
	cliT := &transport.KCP{Config: cfg, TLS: cliTLS, WrapPacketConn: lossy}
	transferOver(t, pair{name: "lossy kcp+tls", server: srvT, client: cliT, addr: "127.0.0.1:0"}, 8<<20)
}

// transferOver sends size random bytes each way through p and compares
// their SHA-256.
func transferOver(t *testing.T, p pair, size int) {
	t.Helper()
	srv, cli, _ := connect(t, p)
	deadline := time.Now().Add(2 * time.Minute)
	srv.SetDeadline(deadline)
	cli.SetDeadline(deadline)
	sum := func(c net.Conn, res chan<- [32]byte) {
		h := sha256.New()
		if _, err := io.CopyN(h, c, int64(size)); err != nil {
			t.Error(err)
		}
		var s [32]byte
		copy(s[:], h.Sum(nil))
		res <- s
	}
	send := func(c net.Conn, seed uint64) [32]byte {
		r := rand.New(rand.NewPCG(seed, seed))
		buf := make([]byte, 64<<10)
		h := sha256.New()
		for left := size; left > 0; left -= len(buf) {
			b := buf[:min(left, len(buf))]
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			h.Write(b)
			if _, err := c.Write(b); err != nil {
				t.Error(err)
				break
			}
		}
		var s [32]byte
		copy(s[:], h.Sum(nil))
		return s
	}
	atSrv, atCli := make(chan [32]byte, 1), make(chan [32]byte, 1)
	go sum(srv, atSrv)
	go sum(cli, atCli)
	sentBySrv := make(chan [32]byte, 1)
	go func() { sentBySrv <- send(srv, 2) }()
	sentByCli := send(cli, 1)
	if got := <-atSrv; got != sentByCli {
		t.Error("client to server: data differs")
	}
	if got := <-atCli; got != <-sentBySrv {
		t.Error("server to client: data differs")
	}
}

// TestALPNRequired: a TLS server that does not speak warren's protocol is
// refused by the client's Dial, with a message that says so.
func TestALPNRequired(t *testing.T) {
	leaktest.Check(t)
	srvTLS, fp, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other := srvTLS.Clone()
	other.NextProtos = nil // some other TLS service with the same certificate
	l, err := tls.Listen("tcp", "127.0.0.1:0", other)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		handshakeIgnoreErr(c)
		io.Copy(io.Discard, c)
		c.Close()
	}()
	cliTLS, _ := transport.ClientTLS{Fingerprint: fp}.Config()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := (&transport.TCP{TLS: cliTLS}).Dial(ctx, l.Addr().String())
	if err == nil {
		c.Close()
		t.Fatal("Dial accepted a server without warren's ALPN")
	}
	if !errors.Is(err, transport.ErrHandshake) || !strings.Contains(err.Error(), "is it a warren server?") {
		t.Fatalf("err = %v", err)
	}
}

// sendLog is a PacketConn that records when each datagram left and its
// size.
type sendLog struct {
	net.PacketConn
	mu    sync.Mutex
	times []time.Time
	sizes []int
}

func (s *sendLog) WriteTo(b []byte, addr net.Addr) (int, error) {
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	s.sizes = append(s.sizes, len(b))
	s.mu.Unlock()
	return s.PacketConn.WriteTo(b, addr)
}

// TestKCPRate: with rate_mbit set, the sender's datagrams (FEC parity
// included) carry no more than the rate allows. From the first datagram:
// the rate within 5% (headers and ACKs) plus the pacer's burst (64 KiB of
// data, with headers and parity) twice over, since a slow machine makes
// KCP resend the first burst, unpaced, before its ACKs come. From 200 ms
// on: the rate within 10% plus a burst. Unpaced, loopback sends the whole
// transfer in a few milliseconds; with the parity not counted, 30% more
// than the rate.
func TestKCPRate(t *testing.T) {
	const rateMbit = 16 // 2 MB/s: 2 MiB takes about a second
	for _, tc := range []struct {
		name         string
		data, parity int
		burst        int
	}{
		{"no FEC", 0, 0, 80_000},
		{"FEC 10+3", 10, 3, 110_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaktest.Check(t)
			cfg := transport.DefaultKCPConfig()
			cfg.RateMbit = rateMbit
			cfg.DataShards, cfg.ParityShards = tc.data, tc.parity
			var log *sendLog
			srvT := &transport.KCP{Config: cfg}
			cliT := &transport.KCP{Config: cfg, WrapPacketConn: func(pc net.PacketConn) net.PacketConn {
				// impair sends with Write on the connected socket, where
				// WriteTo is refused.
				log = &sendLog{PacketConn: impair.Wrap(pc, impair.Config{})}
				return log
			}}
			srv, cli, _ := connect(t, pair{name: "paced kcp", server: srvT, client: cliT, addr: "127.0.0.1:0"})
			const size = 2 << 20
			got := make(chan error, 1)
			go func() {
				srv.SetReadDeadline(time.Now().Add(time.Minute))
				_, err := io.CopyN(io.Discard, srv, size)
				got <- err
			}()
			if _, err := cli.Write(make([]byte, size)); err != nil {
				t.Fatal(err)
			}
			if err := <-got; err != nil {
				t.Fatal(err)
			}
			log.mu.Lock()
			defer log.mu.Unlock()
			const bytesPerSec = rateMbit * 1_000_000 / 8
			t0 := log.times[0]
			steady := -1 // index of the first datagram 200 ms past t0
			total, atSteady := 0, 0
			for i, at := range log.times {
				total += log.sizes[i]
				since := at.Sub(t0)
				// 5% for KCP's and TLS's headers and the ACKs.
				if allowed := 2*tc.burst + int(bytesPerSec*since.Seconds()*1.05); total > allowed {
					t.Fatalf("%d bytes sent %v after the first datagram; %d Mbit/s allows %d", total, since, rateMbit, allowed)
				}
				if steady < 0 && since >= 200*time.Millisecond {
					steady, atSteady = i, total
				}
				if steady >= 0 {
					d := at.Sub(log.times[steady])
					// A burst: KCP holds paced data back while the
					// receiver's window is full, then sends it at once.
					if allowed := tc.burst + int(bytesPerSec*d.Seconds()*1.1); total-atSteady > allowed {
						t.Fatalf("%d bytes sent in the %v after the start; %d Mbit/s allows %d", total-atSteady, d, rateMbit, allowed)
					}
				}
			}
			if steady < 0 {
				t.Fatalf("the transfer took under 200 ms: %d Mbit/s needs about %v", rateMbit, time.Duration(size/bytesPerSec)*time.Second)
			}
			if total < size {
				t.Fatalf("only %d bytes sent for a %d-byte transfer", total, size)
			}
		})
	}
}
