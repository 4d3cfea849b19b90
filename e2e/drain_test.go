package e2e

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
)

// TestBackendKilledMidStream: a backend that dies (reset) in the middle of
// a download: the public side sees an abrupt end, not a clean one.
func TestBackendKilledMidStream(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		target := backend(t, func(c net.Conn) {
			c.Write(make([]byte, 1<<20))
			c.(*net.TCPConn).SetLinger(0)
		})
		srv := startServer(t, serverConfig(t, kind))
		cli := startClient(t, clientConfig(srv, tokenOffice, client.Service{Name: "svc", Target: target}))
		cli.waitSession(t, 1)
		c := dialPublic(t, cli.publicAddr(t, "svc"))
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		n, err := io.Copy(io.Discard, c)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("public side: %d bytes then %v; want a reset", n, err)
		}
	})
}

// TestBackendNotReading: one backend accepts and never reads, so its
// stream's window fills; another stream of the same session still moves
// 32 MiB each way.
func TestBackendNotReading(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		stuck := make(chan struct{})
		defer close(stuck)
		deaf := backend(t, func(c net.Conn) { <-stuck })
		target := backend(t, echo)
		srv := startServer(t, serverConfig(t, kind))
		cli := startClient(t, clientConfig(srv, tokenOffice,
			client.Service{Name: "deaf", Target: deaf},
			client.Service{Name: "echo", Target: target}))
		cli.waitSession(t, 1)

		d := dialPublic(t, cli.publicAddr(t, "deaf"))
		blocked := make(chan int64, 1)
		go func() {
			// Writes until every buffer on the way is full, then blocks:
			// past the transfer below, which took 30 s over KCP under
			// -race on a loaded machine.
			d.SetWriteDeadline(time.Now().Add(4 * waitTimeout))
			n, _ := io.Copy(d, io.LimitReader(zeros{}, 1<<30))
			blocked <- n
		}()

		transfer(t, cli.publicAddr(t, "echo"), 3, 32<<20) // the other stream, at full speed
		select {
		case n := <-blocked:
			t.Fatalf("the deaf backend's writer ended after %d bytes; it should still be blocked", n)
		default:
		}
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
