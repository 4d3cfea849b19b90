package sniff

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

const testMax = 16 << 10

// netHTTPRequest returns what net/http writes for a POST with a body to
// target with the given Host, and where its head ends.
func netHTTPRequest(tb testing.TB, target, host string, proxy bool) (req []byte, headLen int) {
	tb.Helper()
	r, err := http.NewRequest("POST", target, strings.NewReader("the body, which HTTPHost must not need"))
	if err != nil {
		tb.Fatal(err)
	}
	r.Host = host
	r.Header.Set("Cookie", strings.Repeat("c", 200))
	var b bytes.Buffer
	if proxy {
		err = r.WriteProxy(&b)
	} else {
		err = r.Write(&b)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return b.Bytes(), bytes.Index(b.Bytes(), []byte("\r\n\r\n")) + 4
}

func TestHTTPHost(t *testing.T) {
	real, _ := netHTTPRequest(t, "http://ignored.example/path?q=1", "Www.Example.COM:8080", false)
	proxy, _ := netHTTPRequest(t, "http://ignored.example/x", "Proxy.Example:3128", true)
	big := "GET / HTTP/1.1\r\nCookie: " + strings.Repeat("c", testMax) + "\r\nHost: example.com\r\n\r\n"
	cases := []struct {
		name string
		in   string
		max  int // testMax if 0
		host string
		err  error // a sentinel or a Read error
		// lazy is the host found when the request arrives a byte at a
		// time, if that differs: HTTPHost then stops at the first Host
		// line and does not see what follows.
		lazy string
	}{
		{name: "net/http request", in: string(real), host: "www.example.com"},
		{name: "net/http proxy request, absolute form", in: string(proxy), host: "proxy.example"},
		{name: "minimal", in: "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", host: "example.com"},
		{name: "HTTP/1.0", in: "GET / HTTP/1.0\r\nHost: example.com\r\n\r\n", host: "example.com"},
		{name: "port", in: "GET / HTTP/1.1\r\nHost: example.com:80\r\n\r\n", host: "example.com"},
		{name: "empty port", in: "GET / HTTP/1.1\r\nHost: example.com:\r\n\r\n", host: "example.com"},
		{name: "upper case", in: "GET / HTTP/1.1\r\nHOST: EXAMPLE.Com\r\n\r\n", host: "example.com"},
		{name: "header name case", in: "GET / HTTP/1.1\r\nhOsT: example.com\r\n\r\n", host: "example.com"},
		{name: "trailing dot", in: "GET / HTTP/1.1\r\nHost: example.com.:443\r\n\r\n", host: "example.com"},
		{name: "white space", in: "GET / HTTP/1.1\r\nHost: \t example.com \t\r\n\r\n", host: "example.com"},
		{name: "no white space", in: "GET / HTTP/1.1\r\nHost:example.com\r\n\r\n", host: "example.com"},
		{name: "Host not first", in: "GET / HTTP/1.1\r\nAccept: */*\r\nUser-Agent: x\r\nHost: example.com\r\n\r\n", host: "example.com"},
		{name: "bare LF", in: "GET / HTTP/1.1\nHost: example.com\n\n", host: "example.com"},
		{name: "IPv4", in: "GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n", host: "192.0.2.1"},
		{name: "IPv6 with port", in: "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", host: "::1"},
		{name: "IPv6 without port", in: "GET / HTTP/1.1\r\nHost: [2001:DB8::A]\r\n\r\n", host: "2001:db8::a"},
		{name: "absolute form wins over Host", in: "GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", host: "a.example"},
		{name: "absolute form with user and port", in: "GET https://u:p@A.example:8443?x HTTP/1.1\r\n\r\n", host: "a.example"},
		{name: "CONNECT", in: "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", host: "a.example"},
		{name: "pipelined", in: "GET / HTTP/1.1\r\nHost: a.example\r\n\r\nGET / HTTP/1.1\r\nHost: b.example\r\n\r\n", host: "a.example"},
		{name: "pipelined, first without Host", in: "GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\nHost: b.example\r\n\r\n", err: ErrNoHost},

		{name: "no Host", in: "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", err: ErrNoHost},
		{name: "empty Host", in: "GET / HTTP/1.1\r\nHost: \r\n\r\n", err: ErrNoHost},
		{name: "two Host headers", in: "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", err: ErrAmbiguous, lazy: "a.example"},
		{name: "two Host headers, same", in: "GET / HTTP/1.1\r\nHost: a.example\r\nhost: a.example\r\n\r\n", err: ErrAmbiguous, lazy: "a.example"},
		{name: "head larger than max", in: big, err: ErrTooLarge},
		{name: "negative max", in: "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", max: -1, err: ErrTooLarge},
		{name: "TLS", in: "\x16\x03\x01\x02\x00\x01", err: ErrNotHTTP},
		{name: "HTTP/2 preface", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", err: ErrNotHTTP},
		{name: "SSH", in: "SSH-2.0-OpenSSH_9.6\r\n", err: ErrNotHTTP},
		{name: "leading space", in: " GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", err: ErrNotHTTP},
		{name: "no version", in: "GET /\r\nHost: a.example\r\n\r\n", err: ErrNotHTTP},
		{name: "two spaces", in: "GET  / HTTP/1.1\r\nHost: a.example\r\n\r\n", err: ErrNotHTTP},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", err: ErrMalformed},
		{name: "folded line", in: "GET / HTTP/1.1\r\nX: a\r\n b\r\nHost: a.example\r\n\r\n", err: ErrMalformed},
		{name: "no colon", in: "GET / HTTP/1.1\r\nHost a.example\r\n\r\n", err: ErrMalformed},
		{name: "wildcard", in: "GET / HTTP/1.1\r\nHost: *.example.com\r\n\r\n", err: ErrBadName},
		{name: "space in host", in: "GET / HTTP/1.1\r\nHost: a example\r\n\r\n", err: ErrBadName},
		{name: "UTF-8", in: "GET / HTTP/1.1\r\nHost: bücher.example\r\n\r\n", err: ErrBadName},
		{name: "port not a number", in: "GET / HTTP/1.1\r\nHost: a.example:https\r\n\r\n", err: ErrBadName},
		{name: "IPv6 unbracketed", in: "GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", err: ErrBadName},
		{name: "IPv6 unclosed", in: "GET / HTTP/1.1\r\nHost: [::1:80\r\n\r\n", err: ErrBadName},
		{name: "IPv6 stray bytes", in: "GET / HTTP/1.1\r\nHost: [::1]x:80\r\n\r\n", err: ErrBadName},
		{name: "IPv6 with zone", in: "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", err: ErrBadName},
		{name: "IPv4 in brackets", in: "GET / HTTP/1.1\r\nHost: [192.0.2.1]\r\n\r\n", err: ErrBadName},
		{name: "empty", in: "", err: io.EOF},
		{name: "cut in request line", in: "GET / HT", err: io.ErrUnexpectedEOF},
		{name: "cut before Host", in: "GET / HTTP/1.1\r\nAccept: */*\r\n", err: io.ErrUnexpectedEOF},
		{name: "cut in Host line", in: "GET / HTTP/1.1\r\nHost: a.exam", err: io.ErrUnexpectedEOF},
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
				wantHost, wantErr := tc.host, tc.err
				if tc.lazy != "" && rd.name != "whole" {
					wantHost, wantErr = tc.lazy, nil
				}
				host, consumed, err := HTTPHost(rd.wrap(strings.NewReader(tc.in)), max)
				if !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
					t.Fatalf("error %v, want %v", err, wantErr)
				}
				if host != wantHost {
					t.Errorf("host %q, want %q", host, wantHost)
				}
				if !strings.HasPrefix(tc.in, string(consumed)) || len(consumed) > clamp(max) {
					t.Errorf("consumed %d bytes %.40q..., not a prefix of the input within max %d", len(consumed), consumed, max)
				}
			})
		}
	}
}

// TestHTTPHostReadsNoMore sends requests in chunks of several sizes over a
// reader that fails the test on a Read past the part HTTPHost needs: the
// Host line, or the whole head if there is no Host.
func TestHTTPHostReadsNoMore(t *testing.T) {
	real, head := netHTTPRequest(t, "http://a.example/", "a.example", false)
	hostEnd := bytes.Index(real, []byte("a.example\r\n")) + len("a.example\r\n")
	noHost := []byte("GET / HTTP/1.0\r\nAccept: */*\r\n\r\nGET / HTTP/1.1\r\nHost: b.example\r\n\r\n")
	noHostHead := bytes.Index(noHost, []byte("\r\n\r\n")) + 4
	cases := []struct {
		name  string
		in    []byte
		limit int // the bytes that may be read
		host  string
		err   error
	}{
		{"net/http request up to its Host line", real, hostEnd, "a.example", nil},
		{"net/http request up to its head's end", real, head, "a.example", nil},
		{"request without Host, pipelined", noHost, noHostHead, "", ErrNoHost},
	}
	for _, tc := range cases {
		for _, chunk := range []int{1, 2, 7, 64, 0} {
			r := &strictReader{t: t, data: tc.in, limit: tc.limit, chunk: chunk}
			host, consumed, err := HTTPHost(r, testMax)
			if host != tc.host || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Errorf("%s, chunks of %d: got %q, %v; want %q, %v", tc.name, chunk, host, err, tc.host, tc.err)
			}
			if !bytes.Equal(consumed, tc.in[:r.off]) {
				t.Errorf("%s, chunks of %d: consumed %d bytes, read %d", tc.name, chunk, len(consumed), r.off)
			}
		}
	}
}

// TestHTTPHostReadError: an error of the reader, a deadline say, comes
// back wrapped, with the bytes read before it.
func TestHTTPHostReadError(t *testing.T) {
	sent := "GET / HTTP/1.1\r\nAccept: */*\r\n"
	r := io.MultiReader(strings.NewReader(sent), iotest.ErrReader(os.ErrDeadlineExceeded))
	host, consumed, err := HTTPHost(r, testMax)
	if !errors.Is(err, os.ErrDeadlineExceeded) || host != "" || string(consumed) != sent {
		t.Fatalf("got %q, %q, %v", host, consumed, err)
	}
}

// TestHTTPHostMaxBound: with the Host line just past max, HTTPHost reads
// exactly max bytes and gives up; with max one byte longer it succeeds.
func TestHTTPHostMaxBound(t *testing.T) {
	in := "GET / HTTP/1.1\r\nX: " + strings.Repeat("x", 3000) + "\r\nHost: a.example\r\n\r\n"
	max := strings.Index(in, "a.example\r\n") + len("a.example\r\n")
	_, consumed, err := HTTPHost(strings.NewReader(in), max-1)
	if !errors.Is(err, ErrTooLarge) || len(consumed) != max-1 {
		t.Fatalf("max %d: %d bytes, %v", max-1, len(consumed), err)
	}
	host, consumed, err := HTTPHost(strings.NewReader(in), max)
	if err != nil || host != "a.example" || len(consumed) != max {
		t.Fatalf("max %d: %q, %d bytes, %v", max, host, len(consumed), err)
	}
}
