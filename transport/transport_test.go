package transport_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"flag"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil/impair"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/transport"
	"github.com/warren-tunnel/warren/transport/transporttest"
)

// pairs returns every transport kind the behaviour suite runs over, with
// TLS verified by a pinned self-signed certificate.
func pairs(t *testing.T) []transporttest.Pair {
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
	return []transporttest.Pair{
		{Name: "tcp+tls", Server: &transport.TCP{TLS: srvTLS}, Client: &transport.TCP{TLS: cliTLS}, Addr: "127.0.0.1:0", Encrypted: true, Refuses: true},
		{Name: "kcp+tls", Server: &transport.KCP{Config: kcpCfg, TLS: srvTLS}, Client: &transport.KCP{Config: kcpCfg, TLS: cliTLS}, Addr: "127.0.0.1:0", Encrypted: true, Refuses: true},
		{Name: "tcp", Server: &transport.TCP{}, Client: &transport.TCP{}, Addr: "127.0.0.1:0", Refuses: true},
		{Name: "kcp", Server: &transport.KCP{Config: kcpCfg}, Client: &transport.KCP{Config: kcpCfg}, Addr: "127.0.0.1:0", Refuses: true},
		{Name: "memory", Server: mem, Client: mem, Addr: "memory-server"},
	}
}

// TestContract runs the behaviour suite of the Transport contract
// (transporttest.Run) over every transport.
func TestContract(t *testing.T) {
	for _, p := range pairs(t) {
		t.Run(p.Name, func(t *testing.T) { transporttest.Run(t, p) })
	}
}

// TestNetConn runs nettest.TestConn over every transport's connections,
// less what TestMain skips where a transport's contract says otherwise.
func TestNetConn(t *testing.T) {
	for _, p := range pairs(t) {
		t.Run(p.Name, func(t *testing.T) { transporttest.RunConn(t, p) })
	}
}

// netConnSkips are the nettest.TestConn subtests a transport's contract
// does not promise (transporttest.RunConn says why): KCP has no FIN, and
// TLS writes fail for good after a write deadline passed.
var netConnSkips = []string{
	`^TestNetConn$/^kcp(\+tls)?$/^(BasicIO|PingPong)$`,
	`^TestNetConn$/\+tls$/^(PastTimeout|FutureTimeout|ConcurrentMethods)$`,
}

// TestMain adds netConnSkips to -test.skip: nettest.TestConn runs as one
// call, so its subtests can be left out only by name.
func TestMain(m *testing.M) {
	flag.Parse()
	skip := flag.Lookup("test.skip")
	pattern := strings.Join(netConnSkips, "|")
	if v := skip.Value.String(); v != "" {
		pattern = v + "|" + pattern
	}
	skip.Value.Set(pattern)
	os.Exit(m.Run())
}

// TestFingerprintPins: a dial succeeds when the server's certificate is
// any of the pinned ones (a client of several servers pins a list) and
// fails, naming the pins, when it is none of them.
func TestFingerprintPins(t *testing.T) {
	leaktest.Check(t)
	srvTLS, fp, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Other servers' certificates.
	_, other, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, other2, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		pins    transport.ClientTLS
		wantErr string // in the error; "" for a dial that succeeds
	}{
		{"another", transport.ClientTLS{Fingerprint: other}, "pinned " + other},
		{"list with it second", transport.ClientTLS{Fingerprints: []string{other, fp}}, ""},
		{"one and a list", transport.ClientTLS{Fingerprint: other, Fingerprints: []string{other2, fp}}, ""},
		{"list of others", transport.ClientTLS{Fingerprints: []string{other, other2}}, "pinned one of " + other + ", " + other2},
	}
	for _, tt := range tests {
		cliTLS, err := tt.pins.Config()
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{transport.KindTCP, transport.KindKCP} {
			t.Run(tt.name+"/"+kind, func(t *testing.T) {
				srvT, _ := transport.New(kind, transport.Config{KCP: transport.DefaultKCPConfig(), TLS: srvTLS})
				cliT, _ := transport.New(kind, transport.Config{KCP: transport.DefaultKCPConfig(), TLS: cliTLS})
				l, err := srvT.Listen("127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				served := make(chan struct{})
				go func() {
					defer close(served)
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
				if tt.wantErr == "" {
					if err != nil {
						t.Fatalf("Dial: %v", err)
					}
					c.Close()
					<-served
					return
				}
				if err == nil {
					c.Close()
					t.Fatal("Dial with the wrong pins succeeded")
				}
				if !errors.Is(err, transport.ErrFingerprintMismatch) || !errors.Is(err, transport.ErrHandshake) {
					t.Fatalf("err = %v, want fingerprint mismatch", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to say %q", err, tt.wantErr)
				}
				<-served
			})
		}
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
			p := transporttest.Pair{Server: &transport.TCP{TLS: srvTLS}, Client: &transport.TCP{TLS: cliTLS}, Addr: "127.0.0.1:0"}
			l, err := p.Server.Listen(p.Addr)
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
			c, err := p.Client.Dial(ctx, l.Addr().String())
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
// datagrams each way still delivers every byte intact, paced by the rate
// controller (rate_mbit = "auto", the default), unpaced, and at a fixed
// rate. With "auto", both ends' controllers saw the transfer: what they
// count delivered covers it, and they saw the resends.
func TestKCPLossyLink(t *testing.T) {
	for _, rate := range []transport.Rate{transport.RateAuto, 0, 400} {
		t.Run("rate_mbit="+rate.String(), func(t *testing.T) {
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
			cfg.RateMbit = rate
			srvT := &transport.KCP{Config: cfg, TLS: srvTLS, WrapPacketConn: lossy}
			cliT := &transport.KCP{Config: cfg, TLS: cliTLS, WrapPacketConn: lossy}
			const size = 8 << 20
			srv, cli := transferOver(t, transporttest.Pair{Name: "lossy kcp+tls", Server: srvT, Client: cliT, Addr: "127.0.0.1:0"}, size)
			for side, c := range map[string]net.Conn{"server": srv, "client": cli} {
				st, ok := transport.KCPPaceState(c)
				if !ok {
					t.Fatalf("%s: no pacing state on a KCP session", side)
				}
				if st.Rate != rate.String() {
					t.Errorf("%s: rate %q, want %q", side, st.Rate, rate)
				}
				if rate != transport.RateAuto {
					continue
				}
				// The last ACKs may still be on their way.
				if st.Delivered < size*9/10 || st.Resent == 0 || st.Bandwidth <= 0 || st.MinRTT <= 0 || st.PacingRate <= 0 {
					t.Errorf("%s: the controller did not follow the transfer: %+v", side, st)
				}
			}
		})
	}
}

// transferOver sends size random bytes each way through p and compares
// their SHA-256. It returns the connections, still open.
func transferOver(t *testing.T, p transporttest.Pair, size int) (srv, cli net.Conn) {
	t.Helper()
	srv, cli, _ = transporttest.Connect(t, p)
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
	return srv, cli
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
			srv, cli, _ := transporttest.Connect(t, transporttest.Pair{Name: "paced kcp", Server: srvT, Client: cliT, Addr: "127.0.0.1:0"})
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
