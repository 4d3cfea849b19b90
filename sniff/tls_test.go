package sniff

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

// handshake frames a ClientHello body as one handshake record.
func handshake(body []byte) []byte {
	n := len(body)
	msg := append([]byte{typeClientHello, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
	return append([]byte{recordHandshake, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

// helloBody returns the body of a ClientHello with the given extensions,
// or with no extensions block at all if there are none.
func helloBody(exts ...[]byte) []byte {
	if len(exts) == 0 {
		return helloStart()
	}
	return withExtensions(bytes.Join(exts, nil))
}

// helloStart returns the body of a ClientHello up to its extensions.
func helloStart() []byte {
	b := []byte{3, 3}                  // legacy_version
	b = append(b, make([]byte, 32)...) // random
	b = append(b, 0)                   // legacy_session_id
	b = append(b, 0, 2, 0x13, 0x01)    // cipher_suites
	return append(b, 1, 0)             // legacy_compression_methods
}

// withExtensions returns the body of a ClientHello whose extensions block
// holds raw.
func withExtensions(raw []byte) []byte {
	return append(append(helloStart(), byte(len(raw)>>8), byte(len(raw))), raw...)
}

// strayByte adds a byte to the record of a one-record ClientHello, after
// the handshake message.
func strayByte(hello []byte) []byte {
	hello = append(bytes.Clone(hello), 0)
	n := len(hello) - recordHeaderLen
	hello[3], hello[4] = byte(n>>8), byte(n)
	return hello
}

// ext returns an extension of type typ.
func ext(typ uint16, data []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ), byte(len(data) >> 8), byte(len(data))}, data...)
}

// serverName returns a server_name extension listing the entries.
func serverName(entries ...[]byte) []byte {
	list := bytes.Join(entries, nil)
	return ext(extServerName, append([]byte{byte(len(list) >> 8), byte(len(list))}, list...))
}

// entry returns a ServerName of type typ.
func entry(typ byte, name string) []byte {
	return append([]byte{typ, byte(len(name) >> 8), byte(len(name))}, name...)
}

func TestTLSServerName(t *testing.T) {
	real := clientHello(t, "www.example.com")
	noSNI := clientHello(t, "")
	upper := clientHello(t, "WWW.Example.COM.")
	alpn := ext(16, []byte{0, 3, 2, 'h', '2'})
	// Records that do not carry a ClientHello, appended after a record
	// holding the first 4 bytes of one, so that more must be read.
	start := reframe(real, 4)[: recordHeaderLen+4 : recordHeaderLen+4] // appends copy
	cases := []struct {
		name string
		in   []byte
		max  int // testMax if 0
		host string
		err  error // a sentinel or a Read error
	}{
		{"crypto/tls", real, 0, "www.example.com", nil},
		{"crypto/tls, X25519 only", smallClientHello(t, "www.example.com"), 0, "www.example.com", nil},
		{"crypto/tls, upper case and trailing dot", upper, 0, "www.example.com", nil},
		{"crypto/tls in 1-byte records", reframe(real, 1), 0, "www.example.com", nil},
		{"crypto/tls in 3-byte records", reframe(real, 3), 0, "www.example.com", nil},
		{"crypto/tls in 500-byte records", reframe(real, 500), 0, "www.example.com", nil},
		{"crypto/tls with exactly max", real, len(real), "www.example.com", nil},
		{"crypto/tls without server name", noSNI, 0, "", ErrNoSNI},
		{"crypto/tls without server name in records", reframe(noSNI, 100), 0, "", ErrNoSNI},
		{"crypto/tls, max one short", real, len(real) - 1, "", ErrTooLarge},
		{"crypto/tls, record beyond max", reframe(real, 100), 300, "", ErrTooLarge},
		{"SSL 3.0 record version", append([]byte{22, 3, 0}, real[3:]...), 0, "www.example.com", nil},

		{"upper case, trailing dot", handshake(helloBody(serverName(entry(0, "A.Example.")))), 0, "a.example", nil},
		{"other extensions around", handshake(helloBody(alpn, serverName(entry(0, "a.example")), alpn)), 0, "a.example", nil},
		{"other name type first", handshake(helloBody(serverName(entry(7, "x"), entry(0, "a.example")))), 0, "a.example", nil},
		{"no extensions", handshake(helloBody()), 0, "", ErrNoSNI},
		{"other extensions only", handshake(helloBody(alpn)), 0, "", ErrNoSNI},
		{"other name types only", handshake(helloBody(serverName(entry(7, "a.example")))), 0, "", ErrNoSNI},
		{"two host names", handshake(helloBody(serverName(entry(0, "a.example"), entry(0, "b.example")))), 0, "", ErrAmbiguous},
		{"two server_name extensions", handshake(helloBody(serverName(entry(0, "a.example")), serverName(entry(0, "a.example")))), 0, "", ErrAmbiguous},
		{"wildcard", handshake(helloBody(serverName(entry(0, "*.example.com")))), 0, "", ErrBadName},
		{"IPv6 address", handshake(helloBody(serverName(entry(0, "::1")))), 0, "", ErrBadName},
		{"NUL in name", handshake(helloBody(serverName(entry(0, "a.example\x00.evil")))), 0, "", ErrBadName},
		{"empty host name", handshake(helloBody(serverName(entry(0, "")))), 0, "", ErrMalformed},
		{"empty server name list", handshake(helloBody(ext(extServerName, []byte{0, 0}))), 0, "", ErrMalformed},
		{"server name list overruns", handshake(helloBody(ext(extServerName, []byte{0, 9, 0, 0, 1, 'a'}))), 0, "", ErrMalformed},
		{"host name overruns", handshake(helloBody(ext(extServerName, []byte{0, 4, 0, 0, 9, 'a'}))), 0, "", ErrMalformed},
		{"bytes after server name list", handshake(helloBody(ext(extServerName, append(entryList("a.example"), 0)))), 0, "", ErrMalformed},
		{"extension overruns", handshake(withExtensions([]byte{0, 16, 0, 9, 0, 3})), 0, "", ErrMalformed},
		{"extensions overrun", handshake(withExtensions(alpn)[:len(withExtensions(alpn))-1]), 0, "", ErrMalformed},
		{"bytes after extensions", handshake(append(withExtensions(alpn), 0)), 0, "", ErrMalformed},
		{"too short for random", handshake([]byte{3, 3, 0}), 0, "", ErrMalformed},
		{"session id too long", handshake(append(append([]byte{3, 3}, make([]byte, 32)...), 33)), 0, "", ErrMalformed},
		{"odd cipher suites", handshake(append(append([]byte{3, 3}, make([]byte, 33)...), 0, 1, 0)), 0, "", ErrMalformed},

		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), 0, "", ErrNotTLS},
		{"alert record", []byte{21, 3, 1, 0, 2, 2, 40}, 0, "", ErrNotTLS},
		{"SSL 2 record version", []byte{22, 2, 0, 0, 4, 1, 0, 0, 0}, 0, "", ErrNotTLS},
		{"server hello", []byte{22, 3, 3, 0, 4, 2, 0, 0, 0}, 0, "", ErrMalformed},
		{"zero-length record", []byte{22, 3, 1, 0, 0}, 0, "", ErrMalformed},
		{"record too long", []byte{22, 3, 1, 0x40, 1}, 0, "", ErrMalformed},
		{"application data inside the hello", append(start, 23, 3, 3, 0, 1, 0), 0, "", ErrMalformed},
		{"other version inside the hello", append(start, 22, 4, 0, 0, 1, 0), 0, "", ErrMalformed},
		{"stray bytes after the hello", strayByte(handshake(helloBody())), 0, "", ErrMalformed},
		{"empty", nil, 0, "", io.EOF},
		{"cut in record header", real[:3], 0, "", io.ErrUnexpectedEOF},
		{"cut in record", real[:100], 0, "", io.ErrUnexpectedEOF},
		{"cut between records", reframe(real, 100)[:315], 0, "", io.ErrUnexpectedEOF},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte per Read", iotest.OneByteReader},
	}
	for _, tc := range cases {
		for _, rd := range readers {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				max := tc.max
				if max == 0 {
					max = testMax
				}
				name, consumed, err := TLSServerName(rd.wrap(bytes.NewReader(tc.in)), max)
				if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
					t.Fatalf("error %v, want %v", err, tc.err)
				}
				if name != tc.host {
					t.Errorf("name %q, want %q", name, tc.host)
				}
				if !bytes.HasPrefix(tc.in, consumed) || len(consumed) > max {
					t.Errorf("consumed %d bytes, not a prefix of the input within max %d", len(consumed), max)
				}
				if err == nil && len(consumed) != len(tc.in) {
					t.Errorf("consumed %d bytes of a %d-byte ClientHello", len(consumed), len(tc.in))
				}
			})
		}
	}
}

// entryList returns a ServerNameList holding one host name.
func entryList(name string) []byte {
	e := entry(0, name)
	return append([]byte{byte(len(e) >> 8), byte(len(e))}, e...)
}

// TestTLSServerNameTruncated cuts a ClientHello, in one record and in
// many, at every byte: each cut is io.ErrUnexpectedEOF with every byte
// consumed, never a name or another error.
func TestTLSServerNameTruncated(t *testing.T) {
	real := clientHello(t, "www.example.com")
	for _, in := range [][]byte{real, reframe(real, 200)} {
		for n := 1; n < len(in); n++ {
			name, consumed, err := TLSServerName(bytes.NewReader(in[:n]), testMax)
			if !errors.Is(err, io.ErrUnexpectedEOF) || name != "" || len(consumed) != n {
				t.Fatalf("cut at %d of %d: %q, %d bytes, %v", n, len(in), name, len(consumed), err)
			}
		}
	}
}

// TestTLSServerNameReadsNoMore: with the client's next bytes after the
// ClientHello not yet sent, TLSServerName does not try to read them.
func TestTLSServerNameReadsNoMore(t *testing.T) {
	real := clientHello(t, "www.example.com")
	for _, in := range [][]byte{real, reframe(real, 64)} {
		for _, chunk := range []int{1, 5, 100, 0} {
			data := append(bytes.Clone(in), 23, 3, 3, 0, 1, 0) // early data
			r := &strictReader{t: t, data: data, limit: len(in), chunk: chunk}
			name, consumed, err := TLSServerName(r, testMax)
			if err != nil || name != "www.example.com" || !bytes.Equal(consumed, in) {
				t.Errorf("chunks of %d: %q, %d of %d bytes, %v", chunk, name, len(consumed), len(in), err)
			}
		}
	}
}

// TestTLSServerNameReadError: an error of the reader, a deadline say,
// comes back wrapped, with the bytes read before it.
func TestTLSServerNameReadError(t *testing.T) {
	sent := clientHello(t, "www.example.com")[:200]
	r := io.MultiReader(bytes.NewReader(sent), iotest.ErrReader(os.ErrDeadlineExceeded))
	name, consumed, err := TLSServerName(r, testMax)
	if !errors.Is(err, os.ErrDeadlineExceeded) || name != "" || !bytes.Equal(consumed, sent) {
		t.Fatalf("got %q, %d bytes, %v", name, len(consumed), err)
	}
}

// TestSniffersRefuseEachOther: each sniffer refuses the other's protocol at
// the first bytes, so a caller may try one after the other on one stream.
func TestSniffersRefuseEachOther(t *testing.T) {
	_, consumed, err := HTTPHost(bytes.NewReader(clientHello(t, "a.example")), testMax)
	if !errors.Is(err, ErrNotHTTP) {
		t.Errorf("HTTPHost on a ClientHello: %v after %d bytes", err, len(consumed))
	}
	_, consumed, err = TLSServerName(strings.NewReader("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), testMax)
	if !errors.Is(err, ErrNotTLS) || len(consumed) != recordHeaderLen {
		t.Errorf("TLSServerName on HTTP: %v after %d bytes", err, len(consumed))
	}
}
