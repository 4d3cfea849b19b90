package transport

import (
	"crypto/tls"
	"net"
	"sync"
)

// corkConn sits under crypto/tls on every TCP+TLS tunnel connection.
// crypto/tls writes each record of a Write (16 KiB of plaintext at most)
// to its connection in a call of its own: a 64 KiB smux frame cost four
// write system calls, four loopback segments, four wake-ups of the
// peer's reader. Between cork and uncork (Batcher), corkConn gathers what
// TLS writes in one buffer, borrowed for the length of the batch, and
// writes it in one call. Uncorked it writes through, so the handshake,
// alerts and every write outside a batch behave as before.
//
// TCP only: on KCP a write is not a system call (kcp-go queues segments
// and the pacer cuts writes into its quanta), its gain was not measured
// (issue 19: KCP runs on the loaded machine stalled in both builds), and a
// frame-sized write meets the pacer differently; left for a quiet machine.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	bp     *[]byte // the batch's buffer while corked and written to
}

// corkPool holds the batch buffers, shared by every connection of the
// process: an idle session holds none. The size fits a smux frame of the
// largest size as TLS records (4 full ones and a short one).
var corkPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 72<<10)
	return &b
}}

func (c *corkConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.corked {
		if c.bp == nil {
			c.bp = corkPool.Get().(*[]byte)
		}
		*c.bp = append(*c.bp, b...)
		c.mu.Unlock()
		return len(b), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork writes what the batch gathered, in one call.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	bp := c.bp
	if bp == nil {
		return nil
	}
	c.bp = nil
	_, err := c.Conn.Write(*bp)
	if cap(*bp) <= 256<<10 { // an outsized batch is not kept
		*bp = (*bp)[:0]
		corkPool.Put(bp)
	}
	return err
}

// tlsServer is tls.Server over a corkConn.
func tlsServer(c net.Conn, cfg *tls.Config) *tls.Conn { return tls.Server(&corkConn{Conn: c}, cfg) }

// tlsClient is tls.Client over a corkConn.
func tlsClient(c net.Conn, cfg *tls.Config) *tls.Conn { return tls.Client(&corkConn{Conn: c}, cfg) }

// tlsListener is tls.NewListener with its connections over corkConns.
type tlsListener struct {
	net.Listener
	cfg *tls.Config
}

func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tlsServer(c, l.cfg), nil
}

// Batcher returns, for a connection c of this package whose TLS
// handshake has completed (a *tls.Conn over TCP), a function that
// runs write, which writes to c, with what c's TLS layer writes to its
// socket gathered into one system call at the end: all the records of one
// large Write in one segment train. It returns nil for any other
// connection (plaintext, KCP, in-memory), and before the handshake, whose
// messages must not wait. The error of the gathered write, if any, is
// returned when write itself succeeded; a connection whose write failed is
// broken (as crypto/tls's is after any failed write). One batch at a time:
// the caller serializes its writes.
func Batcher(c net.Conn) func(write func() (int, error)) (int, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	cc, ok := tc.NetConn().(*corkConn)
	if !ok || !tc.ConnectionState().HandshakeComplete {
		return nil
	}
	return func(write func() (int, error)) (int, error) {
		cc.cork()
		n, err := write()
		if uerr := cc.uncork(); err == nil && uerr != nil {
			return 0, uerr
		}
		return n, err
	}
}

// rawConn returns the connection under c's TLS and corking, or c.
func rawConn(c net.Conn) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cc, ok := c.(*corkConn); ok {
		c = cc.Conn
	}
	return c
}
