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
// controller (rate_mbit = "auto", the default), unpaced (0), and at a
// fixed rate. With "auto", both ends' controllers saw the transfer: what they
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

// sendLog records the time and the data segments of every datagram sent.
type sendLog struct {
	net.PacketConn
	mu    sync.Mutex
	times []time.Time
	segs  [][]segment
}

type segment struct{ sn, ln uint32 }

func (s *sendLog) WriteTo(b []byte, addr net.Addr) (int, error) {
	var segs []segment
	transport.PushSegments(b, func(sn, ln uint32) { segs = append(segs, segment{sn, ln}) })
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	s.segs = append(s.segs, segs)
	s.mu.Unlock()
	return s.PacketConn.WriteTo(b, addr)
}

// TestKCPRate: with rate_mbit set, new data leaves no faster than the
// rate allows: by any datagram, the data sent for the first time since
// Write began is at most the pacer's burst plus the rate times the time
// since. With FEC the data's rate is the rate less the parity's share
// (10+3: 10/13 of it), so that data and parity together keep the rate.
// Resends and ACKs are not paced, by design, and not counted; a loaded
// machine can only send later than the pacer allows, never earlier, so
// the bound holds however slow the machine. Unpaced, loopback sends the
// whole transfer in milliseconds; not scaled for the parity, the data
// would go 30% faster than its rate: both fail it.
func TestKCPRate(t *testing.T) {
	const rateMbit = 16 // 2 MB/s: 2 MiB takes about a second
	for _, tc := range []struct {
		name         string
		data, parity int
	}{
		{"no FEC", 0, 0},
		{"FEC 10+3", 10, 3},
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
			log.mu.Lock()
			before := len(log.times) // the handshake's datagrams
			log.mu.Unlock()
			t0 := time.Now()
			if _, err := cli.Write(make([]byte, size)); err != nil {
				t.Fatal(err)
			}
			if err := <-got; err != nil {
				t.Fatal(err)
			}
			log.mu.Lock()
			defer log.mu.Unlock()
			dataRate := float64(rateMbit) * 1e6 / 8 // bytes a second
			if tc.data > 0 {
				dataRate = dataRate * float64(tc.data) / float64(tc.data+tc.parity)
			}
			seen := make(map[uint32]bool)
			sent := 0
			for i := before; i < len(log.times); i++ {
				for _, s := range log.segs[i] {
					if !seen[s.sn] {
						seen[s.sn] = true
						sent += int(s.ln)
					}
				}
				since := log.times[i].Sub(t0)
				// One segment of slack for the rounding of the pacer's
				// nanoseconds.
				if allowed := transport.PaceBurst + cfg.MTU + int(dataRate*since.Seconds()); sent > allowed {
					t.Fatalf("%d bytes of new data sent %v after Write began; %d Mbit/s allows %d", sent, since, rateMbit, allowed)
				}
			}
			if sent != size {
				t.Fatalf("%d bytes of new data sent for a %d-byte transfer", sent, size)
			}
		})
	}
}

// TestKCPPacedWriteEnds: a paced Write that waits for the pacer (a fixed
// rate far below what it writes) or for ACKs that never come (rate_mbit =
// "auto", the peer blackholed) ends when the write deadline passes, when
// a deadline in the past is set while it waits, and when the connection
// closes, with what it wrote so far and the error net.Conn promises.
func TestKCPPacedWriteEnds(t *testing.T) {
	for _, rate := range []transport.Rate{1, transport.RateAuto} {
		for _, end := range []string{"deadline", "deadline set while waiting", "close"} {
			t.Run("rate_mbit="+rate.String()+"/"+end, func(t *testing.T) {
				leaktest.Check(t)
				cfg := transport.DefaultKCPConfig()
				cfg.RateMbit = rate
				var hole *impair.PacketConn
				srvT := &transport.KCP{Config: cfg}
				cliT := &transport.KCP{Config: cfg, WrapPacketConn: func(pc net.PacketConn) net.PacketConn {
					hole = impair.Wrap(pc, impair.Config{})
					return hole
				}}
				_, cli, _ := transporttest.Connect(t, transporttest.Pair{Name: "paced kcp", Server: srvT, Client: cliT, Addr: "127.0.0.1:0"})
				if rate == transport.RateAuto {
					hole.SetBlackhole(true) // no ACK comes back: the in-flight cap holds the data
				}
				const size = 64 << 20 // over a minute at 1 Mbit/s, and many windows
				if end == "deadline" {
					cli.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				}
				type result struct {
					n   int
					err error
				}
				done := make(chan result, 1)
				go func() {
					n, err := cli.Write(make([]byte, size))
					done <- result{n, err}
				}()
				switch end {
				case "deadline set while waiting":
					cli.SetWriteDeadline(time.Now())
				case "close":
					cli.Close()
				}
				var r result
				select {
				case r = <-done:
				case <-time.After(time.Minute):
					t.Fatal("the paced Write is still blocked a minute on")
				}
				if r.err == nil || r.n >= size {
					t.Fatalf("Write returned %d, %v; want fewer than %d bytes and an error", r.n, r.err, size)
				}
				if end == "close" {
					return // kcp-go's own error or net.ErrClosed: either ends it
				}
				var ne net.Error
				if !errors.Is(r.err, os.ErrDeadlineExceeded) || !errors.As(r.err, &ne) || !ne.Timeout() {
					t.Fatalf("Write: %v; want a timeout wrapping os.ErrDeadlineExceeded", r.err)
				}
			})
		}
	}
}

// TestKCPAcksAtOnceWhenSlow: on a 30 ms path a session that receives
// little acknowledges each datagram as it arrives (ackSwitch): about one
// datagram back for each one in, where kcp-go's batches would send one an
// interval (20 ms); one that receives fast batches its ACKs again. (That
// a short path batches however slow is TestAckSwitchShortPath's: a
// loopback's srtt under -race on a busy machine can be any.)
func TestKCPAcksAtOnceWhenSlow(t *testing.T) {
	leaktest.Check(t)
	const delay = 15 * time.Millisecond // each way
	srvTLS, fp, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, _ := transport.ClientTLS{Fingerprint: fp}.Config()
	cfg := transport.DefaultKCPConfig()
	cfg.RateMbit = 0 // the switch is the receiver's, whatever the sender's pacing
	var srvPC, cliPC *impair.PacketConn
	wrap := func(to **impair.PacketConn) func(net.PacketConn) net.PacketConn {
		return func(pc net.PacketConn) net.PacketConn {
			*to = impair.Wrap(pc, impair.Config{Delay: delay})
			return *to
		}
	}
	srv, cli, _ := transporttest.Connect(t, transporttest.Pair{Name: "kcp+tls",
		Server: &transport.KCP{Config: cfg, TLS: srvTLS, WrapPacketConn: wrap(&srvPC)},
		Client: &transport.KCP{Config: cfg, TLS: cliTLS, WrapPacketConn: wrap(&cliPC)}, Addr: "127.0.0.1:0"})
	deadline := time.Now().Add(time.Minute)
	srv.SetDeadline(deadline)
	cli.SetDeadline(deadline)
	// phase writes n messages of size, every gap (none: at once), and
	// returns the datagrams the server sent back for each the client sent.
	phase := func(n, size int, gap time.Duration) float64 {
		read := make(chan error, 1)
		go func() {
			_, err := io.CopyN(io.Discard, srv, int64(n*size))
			read <- err
		}()
		s0, _ := srvPC.Stats()
		c0, _ := cliPC.Stats()
		msg := make([]byte, size)
		for range n {
			if gap > 0 {
				time.Sleep(gap)
			}
			if _, err := cli.Write(msg); err != nil {
				t.Fatal(err)
			}
		}
		if err := <-read; err != nil {
			t.Fatal(err)
		}
		s1, _ := srvPC.Stats()
		c1, _ := cliPC.Stats()
		return float64(s1-s0) / float64(c1-c0)
	}
	// 1000 bytes every 2 ms at most (0.5 MB/s), far under the switch's
	// 3.7 MB/s.
	if r := phase(150, 1000, 2*time.Millisecond); r < 0.7 {
		t.Errorf("slow: %.2f datagrams back for each one in, want about 1: ACKs were batched", r)
	}
	// 16 MiB at once: tens of MB/s, but the first window of it, and any
	// window the machine slows it in, ACKs at once (0.21-0.49 seen
	// under -race).
	if r := phase(256, 64<<10, 0); r > 0.8 {
		t.Errorf("fast: %.2f datagrams back for each one in, want few: ACKs went one a datagram", r)
	}
}
