package session

import (
	"bytes"
	"io"

	"testing"

	"github.com/warren-tunnel/warren/transport"
	"github.com/warren-tunnel/warren/transport/transporttest"
)

// Micro-benchmarks of the hot paths, with allocations: control frames,
// the stream header, opening a stream, and the relay. The end-to-end
// figures are in e2e/bench_test.go and the bench/ tool.

func BenchmarkFrameEncode(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		writeFrame(io.Discard, typePing, Ping{Seq: 12345})
	}
}

func BenchmarkFrameDecode(b *testing.B) {
	var buf bytes.Buffer
	writeFrame(&buf, typePing, Ping{Seq: 12345})
	wire := buf.Bytes()
	b.ReportAllocs()
	b.SetBytes(int64(len(wire)))
	for b.Loop() {
		typ, payload, err := readFrame(bytes.NewReader(wire), 1<<16)
		var p Ping
		if err != nil || decodeFrame(typ, payload, &p) != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHeaderEncode(b *testing.B) {
	h := Header{Service: "web", Peer: "203.0.113.7:51234", Local: "198.51.100.1:443"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHeaderDecode(b *testing.B) {
	wire, _ := Header{Service: "web", Peer: "203.0.113.7:51234", Local: "198.51.100.1:443"}.encode()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := readHeader(bytes.NewReader(wire)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamOpen: the server opens a stream and the client has read
// its header (in-memory transport: the session layer alone).
func BenchmarkStreamOpen(b *testing.B) {
	mem := &transporttest.Network{}
	got := make(chan *Stream, 1)
	srv, _, _, _ := pair(b, [2]transport.Transport{mem, mem}, testConfig(), func(st *Stream) { got <- st })
	b.ReportAllocs()
	for b.Loop() {
		st, err := srv.Open(Header{Service: "web", Peer: "203.0.113.7:51234"})
		if err != nil {
			b.Fatal(err)
		}
		(<-got).Close()
		st.Close()
	}
}

// BenchmarkRelay: bytes from a public TCP connection through Relay, a
// session (in-memory transport) and Relay again to a backend TCP
// connection, on loopback.
func BenchmarkRelay(b *testing.B) { benchRelay(b, newMiniTunnel(b), 64<<10) }

// benchRelay writes buffers of size bytes into m's public end until the
// benchmark ends, and checks that the backend got every byte.
func benchRelay(b *testing.B, m *miniTunnel, size int) {
	buf := make([]byte, size)
	done := make(chan int64)
	go func() {
		n, _ := io.Copy(io.Discard, m.backend)
		done <- n
	}()
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := m.public.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	m.public.CloseWrite()
	if n := <-done; n != int64(b.N)*int64(len(buf)) {
		b.Fatalf("backend got %d bytes, want %d", n, int64(b.N)*int64(len(buf)))
	}
}

// tlsTunnel is newMiniTunnel over real TCP+TLS on loopback: the transport
// the daemons run by default.
func tlsTunnel(b *testing.B) *miniTunnel {
	srvTLS, cliTLS := testTLS(b)
	return newMiniTunnelOver(b, [2]transport.Transport{&transport.TCP{TLS: srvTLS}, &transport.TCP{TLS: cliTLS}}, testConfig())
}

// BenchmarkRelayTLS: BenchmarkRelay over TCP+TLS, public to backend (the
// bench suite's "up"); its CPU profile is the bulk path's.
func BenchmarkRelayTLS(b *testing.B) { benchRelay(b, tlsTunnel(b), 256<<10) }

// BenchmarkEchoTLS: one 64-byte message public -> backend and its echo
// back, over TCP+TLS: the latency path (ns/op is the round trip).
func BenchmarkEchoTLS(b *testing.B) {
	m := tlsTunnel(b)
	go io.Copy(m.backend, m.backend)
	msg := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.public.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(m.public, msg); err != nil {
			b.Fatal(err)
		}
	}
}
