package e2e

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/leaktest"
)

// slowDownload is a backend that sends size bytes of seed's stream in
// 64 KiB pieces, pausing between them, then closes; started is closed at
// the first piece.
func slowDownload(seed uint64, size int, pause time.Duration, started chan<- struct{}) func(net.Conn) {
	want := streamBytes(seed, int64(size))
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

// readAllFrom reads c to its end and compares it with seed's stream.
func checkDownload(t *testing.T, c net.Conn, seed uint64, size int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	got, err := io.ReadAll(c)
	if err != nil || len(got) != size {
		t.Fatalf("download: %d of %d bytes, %v", len(got), size, err)
	}
	if !bytes.Equal(got, streamBytes(seed, int64(size))) {
		t.Fatal("download: the bytes differ from what the backend sent")
	}
}

// drainScenario starts a slow 2 MiB download through a tunnel of kind and,
// once it is under way, stops the server or (stopClient) the client. It
// checks what every drain must do: waitDraining sees the side say it lets
// the open connection finish, new public connections are refused, the
// download arrives whole, and the side's Run returns nil as soon as the
// public side hangs up.
func drainScenario(t *testing.T, kind string, seed uint64, stopClient bool,
	waitDraining func(srv *testServer, cli *testClient)) (*testServer, *testClient) {
	t.Helper()
	const size = 2 << 20
	started := make(chan struct{})
	target := backend(t, slowDownload(seed, size, 30*time.Millisecond, started))
	scfg := serverConfig(t, kind)
	scfg.ShutdownTimeout = waitTimeout
	srv := startServer(t, scfg)
	ccfg := clientConfig(srv, tokenOffice, client.Service{Name: "dl", Target: target})
	ccfg.ShutdownTimeout = waitTimeout
	cli := startClient(t, ccfg)
	cli.waitSession(t, 1)
	addr := cli.publicAddr(t, "dl")

	c := dialPublic(t, addr)
	<-started
	stopping, done, runErr := "server", srv.done, &srv.runErr
	if stopClient {
		stopping, done, runErr = "client", cli.done, &cli.runErr
		go cli.cancel()
	} else {
		go srv.cancel()
	}
	waitDraining(srv, cli)
	if c2, err := net.Dial("tcp", addr); err == nil {
		c2.Close()
		t.Errorf("a public connection was accepted while the %s drained", stopping)
	}
	checkDownload(t, c, seed, size)
	c.Close() // the public side hangs up: nothing is open any more
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatalf("the %s did not stop after the transfer ended", stopping)
	}
	if *runErr != nil {
		t.Errorf("%s Run: %v", stopping, *runErr)
	}
	return srv, cli
}

// TestServerDrain: a server told to stop lets an open transfer finish
// (within shutdown_timeout), refuses new connections meanwhile, and
// returns as soon as the transfer is done.
func TestServerDrain(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		_, cli := drainScenario(t, kind, 11, false, func(srv *testServer, _ *testClient) {
			srv.logs.waitFor(t, "shutting down: letting open connections finish", "open=1")
		})
		cli.logs.waitFor(t, "server closed session: shutting down")
	})
}

// TestServerDrainTimeout: a connection that does not end is cut when
// shutdown_timeout runs out, and the server stops then.
func TestServerDrainTimeout(t *testing.T) {
	leaktest.Check(t)
	hold := make(chan struct{})
	target := backend(t, func(c net.Conn) { <-hold })
	defer close(hold)
	cfg := serverConfig(t, "tcp")
	cfg.ShutdownTimeout = 500 * time.Millisecond
	srv := startServer(t, cfg)
	cli := startClient(t, clientConfig(srv, tokenOffice, client.Service{Name: "idle", Target: target}))
	cli.waitSession(t, 1)
	c := dialPublic(t, cli.publicAddr(t, "idle"))
	c.Write([]byte("x"))
	srv.waitStreams(t, 1)

	start := time.Now()
	srv.stop()
	took := time.Since(start)
	if took < cfg.ShutdownTimeout {
		t.Errorf("the server stopped after %v, before its shutdown_timeout %v with a connection open", took, cfg.ShutdownTimeout)
	}
	srv.logs.waitFor(t, "shutdown timeout: closing the connections still open", "open=1")
	if err := isClosed(c, waitTimeout); err != nil {
		t.Fatalf("the open connection was not closed: %v", err)
	}
}

// TestClientDrain: a client told to stop tells the server (which sends it
// no new connections), lets its open transfer finish, then says goodbye.
func TestClientDrain(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		srv, _ := drainScenario(t, kind, 12, true, func(srv *testServer, cli *testClient) {
			cli.logs.waitFor(t, "shutting down: letting open connections finish", "open=1")
			srv.logs.waitFor(t, "draining")
		})
		srv.logs.waitFor(t, "session down", "client closed session: shutting down")
	})
}

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
			// Writes until every buffer on the way is full, then blocks.
			d.SetWriteDeadline(time.Now().Add(waitTimeout))
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
