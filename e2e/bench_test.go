package e2e

// Benchmarks of the tunnel against a direct loopback connection, measured in
// the same run (this machine is shared and noisy: compare ratios, not
// absolute figures). Run:
//
//	go test -run '^$' -bench . -benchtime 2s ./e2e/
//
// Sub-benchmarks: direct (no tunnel), chain (the least any TLS tunnel must
// do: two io.Copy proxies joined by one TLS 1.3 connection, no multiplexing,
// no protocol), tcp (warren over TCP+TLS), kcp (warren over KCP+TLS).

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/transport"
)

// benchPaths runs fn once per path: straight to the backend, and through
// the tunnel over each transport. fn gets the address to dial.
func benchPaths(b *testing.B, handle func(net.Conn), fn func(b *testing.B, addr string)) {
	for _, path := range []string{"direct", "chain", "tcp", "kcp"} {
		b.Run(path, func(b *testing.B) {
			target := benchBackend(b, handle)
			switch path {
			case "direct":
				fn(b, target)
				return
			case "chain":
				fn(b, tlsChain(b, target))
				return
			}
			port := benchTunnel(b, path, client.Service{Name: "bench", Target: target})
			fn(b, net.JoinHostPort("127.0.0.1", itoa(port)))
		})
	}
}

// benchTunnel starts a server and a client over transport kind serving
// svc, and returns the public port svc was granted.
func benchTunnel(b *testing.B, kind string, svc client.Service) int {
	srv := benchServer(b, kind)
	cfg := client.DefaultConfig()
	cfg.Server = srv.Addr(kind).String()
	cfg.Transport = kind
	cfg.Token = tokenOffice
	cfg.TLS.Fingerprint = srv.Fingerprint()
	cfg.Services = []client.Service{svc}
	cli, err := client.New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	ctx, cancel := contextWithCancel()
	go func() { cli.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	for ch := cli.Changed(); !cli.Status().Connected; ch = cli.Changed() {
		<-ch
	}
	return cli.Status().Session.Services[0].RemotePort
}

// tlsChain is the reference tunnel: a TCP listener whose connections an
// io.Copy proxy carries over TLS 1.3 to a second proxy, which carries them
// to target. It returns the first listener's address.
func tlsChain(b *testing.B, target string) string {
	srvTLS, fp, _, err := transport.ServerTLS{}.Config(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	cliTLS, _ := transport.ClientTLS{Fingerprint: fp}.Config()
	cliTLS.ServerName = "warren"
	pipe := func(a, z net.Conn) {
		done := make(chan struct{})
		go func() { io.Copy(z, a); closeWriteAny(z); close(done) }()
		io.Copy(a, z)
		closeWriteAny(a)
		<-done
		a.Close()
		z.Close()
	}
	back, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		b.Fatal(err)
	}
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { back.Close(); front.Close() })
	serve := func(l net.Listener, dial func() (net.Conn, error)) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				d, err := dial()
				if err != nil {
					c.Close()
					return
				}
				pipe(c, d)
			}()
		}
	}
	go serve(back, func() (net.Conn, error) { return net.Dial("tcp", target) })
	go serve(front, func() (net.Conn, error) { return tls.Dial("tcp", back.Addr().String(), cliTLS) })
	return front.Addr().String()
}

func closeWriteAny(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

func benchServer(b *testing.B, kind string) *server.Server {
	cfg := server.DefaultConfig()
	cfg.PublicAddress = "127.0.0.1"
	cfg.StateDir = b.TempDir()
	cfg.Listen = []server.Listen{{Transport: kind, Address: "127.0.0.1:0"}}
	cfg.Clients = []server.Client{{Name: "office", Token: tokenOffice, Ports: []server.PortRange{{Lo: 1024, Hi: 65535}}, UDPPorts: []server.PortRange{{Lo: 1024, Hi: 65535}}}}
	srv, err := server.New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := contextWithCancel()
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	<-srv.Ready()
	return srv
}

// benchBackend is backend for benchmarks.
func benchBackend(b *testing.B, handle func(net.Conn)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().String()
}

const chunk = 1 << 20

// sink reads everything and acknowledges each MiB received with one byte.
func sink(c net.Conn) {
	buf := make([]byte, 64<<10)
	n := 0
	for {
		m, err := c.Read(buf)
		n += m
		for ; n >= chunk; n -= chunk {
			c.Write([]byte{1})
		}
		if err != nil {
			return
		}
	}
}

// source sends as many bytes as each 8-byte request asks for.
func source(c net.Conn) {
	buf := make([]byte, 64<<10)
	var req [8]byte
	for {
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		for left := int(binary.BigEndian.Uint64(req[:])); left > 0; {
			m, err := c.Write(buf[:min(left, len(buf))])
			if err != nil {
				return
			}
			left -= m
		}
	}
}

// BenchmarkThroughputUp: one connection, public side to backend.
func BenchmarkThroughputUp(b *testing.B) {
	benchPaths(b, sink, func(b *testing.B, addr string) {
		c := benchDial(b, addr)
		buf := make([]byte, chunk)
		ack := make([]byte, 1)
		b.SetBytes(chunk)
		b.ResetTimer()
		go func() {
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
		for range b.N {
			if _, err := io.ReadFull(c, ack); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkThroughputDown: one connection, backend to public side.
func BenchmarkThroughputDown(b *testing.B) {
	benchPaths(b, source, func(b *testing.B, addr string) {
		c := benchDial(b, addr)
		var req [8]byte
		binary.BigEndian.PutUint64(req[:], uint64(b.N)*chunk)
		b.SetBytes(chunk)
		buf := make([]byte, 64<<10) // as the sink reads: the same for every path
		b.ResetTimer()
		c.Write(req[:])
		for left := int64(b.N) * chunk; left > 0; {
			n, err := c.Read(buf[:min(int64(len(buf)), left)])
			if err != nil {
				b.Fatal(err)
			}
			left -= int64(n)
		}
	})
}

// BenchmarkLatency: 64-byte request/response on one connection; reports
// the median and 99th percentile besides the mean (ns/op).
func BenchmarkLatency(b *testing.B) {
	benchPaths(b, func(c net.Conn) { io.Copy(c, c) }, func(b *testing.B, addr string) {
		c := benchDial(b, addr)
		msg := make([]byte, 64)
		got := make([]byte, 64)
		times := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			c.Write(msg)
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
			times = append(times, time.Since(start))
		}
		reportPercentiles(b, times)
	})
}

// BenchmarkConnect: dial a new public connection and get the first byte
// echoed back: what a new visitor waits for.
func BenchmarkConnect(b *testing.B) {
	benchPaths(b, func(c net.Conn) { io.Copy(c, c) }, func(b *testing.B, addr string) {
		one := make([]byte, 1)
		times := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			c.Write(one)
			if _, err := io.ReadFull(c, one); err != nil {
				b.Fatal(err)
			}
			times = append(times, time.Since(start))
			c.Close()
		}
		reportPercentiles(b, times)
	})
}

// BenchmarkIdleMemory opens 2000 public connections, each having carried
// one byte each way, lets them go idle (relays hand quiet connections to
// the session's poller after 20 ms), and reports the process's resident
// memory per connection (after returning freed memory to the OS), and the
// Go heap alone. The direct path's figures are the test's own share (the
// dialing and backend sockets); the tunnel's minus them is what server and
// client add. It measures once per path, whatever -benchtime asks for.
func BenchmarkIdleMemory(b *testing.B) {
	const conns = 2000
	measured := map[string][2]float64{}
	benchPaths(b, func(c net.Conn) { io.Copy(c, c) }, func(b *testing.B, addr string) {
		if m, ok := measured[b.Name()]; ok {
			b.ReportMetric(m[0], "RSS-B/conn")
			b.ReportMetric(m[1], "heap-B/conn")
			return
		}
		settleMemory()
		rss0, heap0 := rss(), heapInUse()
		open := make([]net.Conn, 0, conns)
		one := make([]byte, 1)
		for range conns {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			c.Write(one)
			if _, err := io.ReadFull(c, one); err != nil {
				b.Fatal(err)
			}
			open = append(open, c)
		}
		settle()
		settleMemory()
		m := [2]float64{float64(rss()-rss0) / conns, float64(heapInUse()-heap0) / conns}
		measured[b.Name()] = m
		b.ReportMetric(m[0], "RSS-B/conn")
		b.ReportMetric(m[1], "heap-B/conn")
		for _, c := range open {
			c.Close()
		}
	})
}

// settle waits until idle connections' relays have handed over to the
// poller: past the relays' idle period, then until the number of
// goroutines has stopped falling.
func settle() {
	time.Sleep(200 * time.Millisecond)
	last, steady := runtime.NumGoroutine(), 0
	for deadline := time.Now().Add(15 * time.Second); steady < 5 && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n >= last {
			steady++
		} else {
			steady = 0
		}
		last = n
	}
}

// settleMemory collects garbage and returns freed memory to the OS.
func settleMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

func heapInUse() int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// rss is the process's resident set size in bytes (Linux), else 0.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res int64
	fmt.Sscan(string(b), &size, &res)
	return res * int64(os.Getpagesize())
}

func reportPercentiles(b *testing.B, times []time.Duration) {
	slices.Sort(times)
	p := func(q float64) float64 {
		return float64(times[min(len(times)-1, int(q*float64(len(times))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(p(0.50), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
}

func benchDial(b *testing.B, addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func itoa(i int) string { return strconv.Itoa(i) }
