package sniff

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
)

// HTTPHost reads the head of an HTTP/1.x request from r until it knows
// the host the request is for, and returns it in the form the package
// comment describes: "Example.COM.:8080" comes back as "example.com", an
// IPv6 literal ("[::1]:80") as the bare address ("::1").
//
// It reads in chunks, each Read into the free part of a buffer that never
// grows past max bytes, and issues no further Read once the bytes so far
// hold the Host header line, an absolute-form request line, or the end of
// the head: it never waits for a body or for the rest of a head it does
// not need. consumed holds every byte read, also on error: it is a prefix
// of the stream, at most max bytes long, and may run past the Host line or
// the head (into a body or a pipelined request) by what the last Read
// returned.
//
// Lines end in "\r\n" or a bare "\n", as net/http accepts. An
// absolute-form target ("GET http://example.com/ HTTP/1.1") or a CONNECT
// target names the host itself and the Host header is ignored, as RFC 9112
// has servers do. Errors, each wrapping one sentinel or a Read error:
//   - ErrNotHTTP: the first line is not "METHOD SP target SP HTTP/1.x";
//     the method is checked byte by byte, so binary input fails at once.
//   - ErrNoHost: the head ended without a Host header, or with an empty one.
//   - ErrAmbiguous: a second Host header among the bytes read. As HTTPHost
//     stops at the first, a second one that arrives after it is not seen.
//   - ErrMalformed: a header line that is not "Name: value".
//   - ErrBadName: the host is not a host name or IP address.
//   - ErrTooLarge: max bytes read without finding the host.
//   - io.EOF if r ended before its first byte, io.ErrUnexpectedEOF if it
//     ended inside the head, or r's own error (a deadline, say), wrapped.
func HTTPHost(r io.Reader, max int) (host string, consumed []byte, err error) {
	max = clamp(max)
	var h head
	buf := make([]byte, 0, min(1024, max))
	var rerr error
	for {
		done, err := h.scan(buf)
		if err != nil {
			return "", buf, err
		}
		if done {
			host, err := h.host()
			return host, buf, err
		}
		if rerr != nil {
			return "", buf, readError(rerr, len(buf), "HTTP request head")
		}
		if len(buf) >= max {
			return "", buf, fmt.Errorf("%w: no Host header in the first %d bytes of the request", ErrTooLarge, max)
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), max-len(buf)))
		}
		var n int
		n, rerr = r.Read(buf[len(buf):min(cap(buf), max)])
		buf = buf[:len(buf)+n]
	}
}

// head follows a request head as it arrives; scan is called with the
// bytes so far, which only ever grow.
type head struct {
	checked   int    // bytes of the method checked so far
	method    bool   // the method is complete
	scanned   int    // bytes searched for line ends
	lineStart int    // where the current line starts
	lines     int    // complete lines, the request line included
	authority string // host[:port] from an absolute-form or CONNECT target
	hosts     int    // Host headers seen
	hostValue string // the Host header's value, trimmed
}

// scan handles the complete lines in buf it has not seen yet. done means
// the host is known or the head has ended.
func (h *head) scan(buf []byte) (done bool, err error) {
	// Check the method byte by byte, so that a TLS ClientHello or other
	// binary fails at once rather than after max bytes.
	for ; !h.method && h.checked < len(buf); h.checked++ {
		c := buf[h.checked]
		if c == ' ' && h.checked > 0 {
			h.method = true
		} else if !isTokenByte(c) {
			return false, fmt.Errorf("%w: request starts with %.16q", ErrNotHTTP, buf[:h.checked+1])
		}
	}
	for {
		i := bytes.IndexByte(buf[h.scanned:], '\n')
		if i < 0 {
			h.scanned = len(buf)
			break
		}
		end := h.scanned + i
		line := bytes.TrimSuffix(buf[h.lineStart:end], []byte("\r"))
		h.scanned, h.lineStart = end+1, end+1
		if len(line) == 0 && h.lines > 0 {
			return true, nil // end of head
		}
		if err := h.line(line); err != nil {
			return false, err
		}
		h.lines++
	}
	return h.authority != "" || h.hosts > 0, nil
}

// line handles one complete line without its line end.
func (h *head) line(line []byte) error {
	if h.lines == 0 {
		return h.requestLine(line)
	}
	if line[0] == ' ' || line[0] == '\t' {
		return fmt.Errorf("%w: header line %.64q starts with white space (obsolete line folding)", ErrMalformed, line)
	}
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok || !isToken(name) {
		return fmt.Errorf("%w: header line %.64q is not \"Name: value\"", ErrMalformed, line)
	}
	if bytes.EqualFold(name, []byte("Host")) { // ASCII only: isToken held
		h.hosts++
		if h.hosts > 1 {
			return fmt.Errorf("%w: two Host headers", ErrAmbiguous)
		}
		h.hostValue = string(bytes.Trim(value, " \t"))
	}
	return nil
}

// requestLine checks "METHOD SP target SP HTTP/1.x" and notes the
// authority of an absolute-form or CONNECT target.
func (h *head) requestLine(line []byte) error {
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, version, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || !isToken(method) || !isTarget(target) || !isHTTP1(version) {
		return fmt.Errorf("%w: request line %.64q is not \"METHOD target HTTP/1.x\"", ErrNotHTTP, line)
	}
	h.authority = authority(string(method), string(target))
	return nil
}

// authority returns the host[:port] an absolute-form target
// ("scheme://user@host:port/path") or a CONNECT target ("host:port")
// names, or "" for other targets.
func authority(method, target string) string {
	if method == "CONNECT" && target[0] != '/' {
		return target
	}
	scheme, rest, ok := strings.Cut(target, "://")
	if !ok || !isScheme(scheme) {
		return ""
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	return rest
}

// host returns the normalized host the head names.
func (h *head) host() (string, error) {
	switch {
	case h.authority != "":
		return hostPort(h.authority, "request target")
	case h.hosts == 0:
		return "", fmt.Errorf("%w: the request head ended without one", ErrNoHost)
	case h.hostValue == "":
		return "", fmt.Errorf("%w: the Host header is empty", ErrNoHost)
	}
	return hostPort(h.hostValue, "Host header")
}

// hostPort strips an optional port from hp and normalizes the host; what
// says where hp came from, for the error.
func hostPort(hp, what string) (string, error) {
	host, port := hp, ""
	literal := strings.HasPrefix(hp, "[") // RFC 3986 IP-literal: "[::1]:80"
	if literal {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return "", fmt.Errorf("%w: %s %.80q has no \"]\"", ErrBadName, what, hp)
		}
		host, port = hp[1:end], hp[end+1:]
		if port != "" && port[0] != ':' {
			return "", fmt.Errorf("%w: %s %.80q: stray bytes after \"]\"", ErrBadName, what, hp)
		}
		port = strings.TrimPrefix(port, ":")
	} else if i := strings.LastIndexByte(hp, ':'); i >= 0 {
		host, port = hp[:i], hp[i+1:]
	}
	// RFC 3986 allows an empty port ("example.com:").
	if strings.Trim(port, "0123456789") != "" {
		return "", fmt.Errorf("%w: %s %.80q: port %.16q is not a number", ErrBadName, what, hp, port)
	}
	if literal {
		return normalizeIPv6(host, what)
	}
	return normalize(host, what)
}

func isHTTP1(v []byte) bool {
	return len(v) == len("HTTP/1.x") && string(v[:7]) == "HTTP/1." && '0' <= v[7] && v[7] <= '9'
}

// isTarget reports whether t could be a request target: visible ASCII or
// bytes above it, no spaces or controls.
func isTarget(t []byte) bool {
	for _, c := range t {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return len(t) > 0
}

// isScheme reports whether s is a URI scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func isScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		alpha := 'a' <= c && c <= 'z'
		if !alpha && (i == 0 || !('0' <= s[i] && s[i] <= '9' || s[i] == '+' || s[i] == '-' || s[i] == '.')) {
			return false
		}
	}
	return s != ""
}

// isToken reports whether b is an RFC 9110 token, as methods and header
// names are.
func isToken(b []byte) bool {
	for _, c := range b {
		if !isTokenByte(c) {
			return false
		}
	}
	return len(b) > 0
}

func isTokenByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c < 0x80 && strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
