package sniff

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
)

// chunkReader hands out data at most chunk bytes per Read (all of it if
// chunk is 0), like a connection whose bytes arrive in segments.
type chunkReader struct {
	data  []byte
	chunk int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if r.chunk > 0 && len(p) > r.chunk {
		p = p[:r.chunk]
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// strictReader serves data in chunks but never past limit: a Read there
// fails the test, as it would block on a real connection where the bytes
// after limit (a body, the next request) have not been sent yet.
type strictReader struct {
	t     *testing.T
	data  []byte
	limit int
	chunk int
	off   int
}

func (r *strictReader) Read(p []byte) (int, error) {
	if r.off >= r.limit {
		r.t.Errorf("Read past byte %d, where the message ends", r.limit)
		return 0, errors.New("read past the message")
	}
	if r.chunk > 0 && len(p) > r.chunk {
		p = p[:r.chunk]
	}
	n := copy(p, r.data[r.off:r.limit])
	r.off += n
	return n, nil
}

// clientHello returns the first flight of a crypto/tls client (the
// record carrying its ClientHello), captured over an in-memory pipe.
// serverName "" sends no server_name extension.
func clientHello(tb testing.TB, serverName string) []byte {
	tb.Helper()
	return capture(tb, &tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == ""})
}

// smallClientHello is clientHello with only the X25519 key share, not the
// post-quantum one of over a kilobyte: about 250 bytes rather than 1500,
// which the fuzzer mutates and minimizes much faster.
func smallClientHello(tb testing.TB, serverName string) []byte {
	tb.Helper()
	return capture(tb, &tls.Config{
		ServerName:         serverName,
		InsecureSkipVerify: serverName == "",
		CurvePreferences:   []tls.CurveID{tls.X25519},
	})
}

// capture returns the record holding the ClientHello a client with cfg
// writes.
func capture(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	c, s := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(c, cfg).Handshake() // fails once s closes
		c.Close()
	}()
	defer func() { s.Close(); <-done }()
	// crypto/tls writes a ClientHello in one record.
	var hdr [recordHeaderLen]byte
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		tb.Fatal(err)
	}
	msg := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(s, msg); err != nil {
		tb.Fatal(err)
	}
	if hdr[0] != recordHandshake || msg[0] != typeClientHello || 4+(int(msg[1])<<16|int(msg[2])<<8|int(msg[3])) != len(msg) {
		tb.Fatalf("crypto/tls wrote %x..., not one record holding one ClientHello", hdr)
	}
	return append(hdr[:], msg...)
}

// reframe splits the handshake message in hello, a single record, into
// records of at most size bytes each, as a client may send it.
func reframe(hello []byte, size int) []byte {
	var out []byte
	for msg := hello[recordHeaderLen:]; len(msg) > 0; {
		n := min(size, len(msg))
		out = append(out, hello[0], hello[1], hello[2], byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}
