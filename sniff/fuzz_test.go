package sniff

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// The fuzz targets feed arbitrary bytes, in arbitrary chunks, with an
// arbitrary max, and check the contract both sniffers share:
//   - no panic;
//   - consumed is a prefix of the input and at most max bytes (neither
//     sniffer reads past max, so no allowance for a last chunk is needed);
//   - a name found is non-empty, lower case, without a trailing dot;
//   - every error wraps a sentinel or the reader's io.EOF or
//     io.ErrUnexpectedEOF, so callers can tell each failure apart.

func FuzzHTTPHost(f *testing.F) {
	real, _ := netHTTPRequest(f, "http://a.example/", "Www.Example.COM:8080", false)
	proxy, _ := netHTTPRequest(f, "http://a.example/", "[2001:db8::1]:8443", true)
	for _, seed := range [][]byte{
		real,
		proxy,
		[]byte("GET / HTTP/1.0\r\n\r\n"),
		[]byte("GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
		[]byte("CONNECT a.example:443 HTTP/1.1\r\n\r\n"),
		[]byte("GET / HTTP/1.1\nX: y\nHost: [::1]\n\nGET / HTTP/1.1\n"),
	} {
		f.Add(seed, uint16(testMax), uint8(0))
		f.Add(seed, uint16(len(seed)/2), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, max uint16, chunk uint8) {
		host, consumed, err := HTTPHost(&chunkReader{data: in, chunk: int(chunk)}, int(max))
		check(t, in, int(max), host, consumed, err,
			ErrNotHTTP, ErrNoHost, ErrAmbiguous, ErrBadName, ErrMalformed, ErrTooLarge)
	})
}

func FuzzTLSServerName(f *testing.F) {
	for _, seed := range [][]byte{
		smallClientHello(f, "www.example.com"),
		reframe(smallClientHello(f, "a.example"), 100),
		smallClientHello(f, ""),
		handshake(helloBody(serverName(entry(0, "a.example"), entry(0, "b.example")))),
		handshake(helloBody(serverName(entry(7, "x"), entry(0, "A.Example.")))),
	} {
		f.Add(seed, uint16(testMax), uint8(0))
		f.Add(seed, uint16(len(seed)-1), uint8(7))
	}
	f.Fuzz(func(t *testing.T, in []byte, max uint16, chunk uint8) {
		name, consumed, err := TLSServerName(&chunkReader{data: in, chunk: int(chunk)}, int(max))
		check(t, in, int(max), name, consumed, err,
			ErrNotTLS, ErrNoSNI, ErrAmbiguous, ErrBadName, ErrMalformed, ErrTooLarge)
		// TLSServerName reads exact lengths, so how the bytes arrive
		// cannot change the outcome.
		name2, consumed2, err2 := TLSServerName(bytes.NewReader(in), int(max))
		if name2 != name || !bytes.Equal(consumed2, consumed) || (err2 == nil) != (err == nil) {
			t.Fatalf("in chunks of %d: %q, %d bytes, %v; at once: %q, %d bytes, %v",
				chunk, name, len(consumed), err, name2, len(consumed2), err2)
		}
	})
}

// check asserts the shared contract on one result; sentinels are the
// errors the sniffer may return.
func check(t *testing.T, in []byte, max int, name string, consumed []byte, err error, sentinels ...error) {
	t.Helper()
	if !bytes.HasPrefix(in, consumed) {
		t.Fatalf("consumed %q is not a prefix of the input", consumed)
	}
	if len(consumed) > max {
		t.Fatalf("consumed %d bytes, more than max %d", len(consumed), max)
	}
	if err == nil {
		if name == "" || name != strings.ToLower(name) || strings.HasSuffix(name, ".") {
			t.Fatalf("name %q", name)
		}
		return
	}
	if name != "" {
		t.Fatalf("name %q with error %v", name, err)
	}
	for _, s := range append(sentinels, io.EOF, io.ErrUnexpectedEOF) {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("error %v wraps no sentinel", err)
}
