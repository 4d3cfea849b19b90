//go:build unix

package transport_test

import (
	"crypto/tls"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/transport"
)

// BenchmarkTLSHandshake: one TLS handshake of a tunnel, as a client and
// the server do it (the server's self-signed ECDSA P-256 certificate, the
// client's pin, Go's default key exchange), both sides in this process
// over a pipe. cpu-ns/op is the CPU time of both ends (user and system,
// from getrusage: on a shared machine ns/op counts the waits for a core
// too), so 1e9/cpu-ns/op is how many handshakes one core completes a
// second, client and server together: the bound a reconnect storm on one
// machine meets before any session work (docs/benchmarks.md).
func BenchmarkTLSHandshake(b *testing.B) {
	srvTLS, fp, _, err := transport.ServerTLS{}.Config(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	cliTLS, err := transport.ClientTLS{Fingerprint: fp}.Config()
	if err != nil {
		b.Fatal(err)
	}
	cpu0 := cpuTime()
	for b.Loop() {
		c, s := net.Pipe()
		deadline := time.Now().Add(10 * time.Second)
		c.SetDeadline(deadline)
		s.SetDeadline(deadline)
		done := make(chan error, 1)
		go func() { done <- tls.Server(s, srvTLS).Handshake() }()
		if err := tls.Client(c, cliTLS).Handshake(); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		c.Close()
		s.Close()
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is this process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
