package transporttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/transport"
)

// Pair is a server and a client transport of one kind that work
// together: what Run and RunConn test.
type Pair struct {
	Name           string
	Server, Client transport.Transport
	// Addr is what the server listens on: "127.0.0.1:0" for a real
	// transport, any name for Network.
	Addr string
	// Encrypted: connections are *tls.Conn with a channel binding.
	Encrypted bool
	// Refuses: dialling an address where nothing listens fails at once
	// (TCP's reset; the ICMP port unreachable a connected UDP socket
	// gets, for KCP), at the latest at the first read when the transport
	// has no handshake of its own.
	Refuses bool
}

// Run runs the behaviour suite of the transport.Transport contract over
// p, each behaviour a subtest: bulk transfer both ways, Accept after
// Close, connections outliving their listener, Close unblocking Read,
// the channel binding, and (when p.Refuses) a dead server reported by
// Dial. Goroutines left behind fail it. Run it from a test that does not
// call t.Parallel.
func Run(t *testing.T, p Pair) {
	t.Run("Transfer", func(t *testing.T) { leaktest.Check(t); testTransfer(t, p) })
	t.Run("AcceptAfterClose", func(t *testing.T) { leaktest.Check(t); testAcceptAfterClose(t, p) })
	t.Run("ConnOutlivesListener", func(t *testing.T) { leaktest.Check(t); testConnOutlivesListener(t, p) })
	t.Run("CloseUnblocksRead", func(t *testing.T) { leaktest.Check(t); testCloseUnblocksRead(t, p) })
	t.Run("ChannelBinding", func(t *testing.T) { testChannelBinding(t, p) })
	if p.Refuses {
		t.Run("DialDeadServer", func(t *testing.T) { leaktest.Check(t); testDialDeadServer(t, p) })
	}
}

// RunConn runs golang.org/x/net/nettest.TestConn, the standard suite of
// the net.Conn contract, over connections of p.
//
// Two parts of it do not hold for every transport, and the caller skips
// them with -test.skip (see the transport package's TestMain):
//   - KCP has no FIN and drops what the peer has not acknowledged when
//     it closes, so BasicIO and PingPong, which read to the EOF of a
//     Close, never end.
//   - After a Write times out, a TLS connection's writes fail for good
//     (crypto/tls: its record state is lost), so the tests that write
//     again after a write deadline passed (PastTimeout, FutureTimeout,
//     ConcurrentMethods) fail on TLS.
func RunConn(t *testing.T, p Pair) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		srv, cli, l, err := dial(p)
		if err != nil {
			return nil, nil, nil, err
		}
		return cli, srv, func() { cli.Close(); srv.Close(); l.Close() }, nil
	})
}

// Connect listens, dials and accepts over p; both connections and the
// listener are closed when the test ends.
func Connect(t testing.TB, p Pair) (srv, cli net.Conn, l transport.Listener) {
	t.Helper()
	srv, cli, l, err := dial(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.Close()
		srv.Close()
		l.Close()
	})
	return srv, cli, l
}

// dial listens, dials and accepts over p, and exchanges one byte, which
// drives the server's side of the TLS handshake and, for plain KCP, is
// what tells the listener of the session.
func dial(p Pair) (srv, cli net.Conn, l transport.Listener, err error) {
	l, err = p.Server.Listen(p.Addr)
	if err != nil {
		return nil, nil, nil, err
	}
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err = io.ReadFull(c, make([]byte, 1)); err == nil {
				err = c.SetDeadline(time.Time{})
			}
			if err != nil {
				c.Close()
			}
		}
		accepted <- result{c, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err = p.Client.Dial(ctx, l.Addr().String())
	if err == nil {
		_, err = cli.Write([]byte{0})
	}
	if err != nil {
		l.Close()
		<-accepted
		if cli != nil {
			cli.Close()
		}
		return nil, nil, nil, err
	}
	r := <-accepted
	if r.err != nil {
		cli.Close()
		l.Close()
		return nil, nil, nil, r.err
	}
	return r.c, cli, l, nil
}

func testTransfer(t *testing.T, p Pair) {
	srv, cli, _ := Connect(t, p)
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
}

func testAcceptAfterClose(t *testing.T, p Pair) {
	l, err := p.Server.Listen(p.Addr)
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
}

func testConnOutlivesListener(t *testing.T, p Pair) {
	srv, cli, l := Connect(t, p)
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
}

func testCloseUnblocksRead(t *testing.T, p Pair) {
	_, cli, _ := Connect(t, p)
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
}

func testChannelBinding(t *testing.T, p Pair) {
	srv, cli, _ := Connect(t, p)
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
	if !p.Encrypted {
		if cb != nil || sb != nil {
			t.Fatal("plaintext connection has a binding")
		}
		return
	}
	if len(cb) != 32 || !bytes.Equal(cb, sb) {
		t.Fatalf("bindings differ or short: %x / %x", cb, sb)
	}
	// A second connection has a different binding.
	_, cli2, _ := Connect(t, p)
	cb2, err := transport.ExportBinding(cli2)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(cb, cb2) {
		t.Fatal("two connections share a binding")
	}
}

// testDialDeadServer: Dial itself reports a server that is not there, at
// once when the host says so (TCP RST, ICMP port unreachable for KCP's
// connected UDP socket), for KCP too, although KCP has no handshake: a
// transport without one learns of it at the first read.
func testDialDeadServer(t *testing.T, p Pair) {
	// Bind and close to get an address nobody serves.
	l, err := p.Server.Listen(p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := p.Client.Dial(ctx, addr)
	if err == nil && !p.Encrypted {
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
}
