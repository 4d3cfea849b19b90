// Package sniff reads just enough of a public connection to route it by
// domain name without terminating it: the Host of an HTTP/1.x request head
// (HTTPHost) or the server_name of a TLS ClientHello (TLSServerName).
//
// Both return every byte they read, also on error, so the caller can
// replay them to the chosen backend, which then sees the connection exactly
// as sent. Both read at most max bytes and never wait for a byte they do
// not need; the caller bounds the time with a deadline on the connection,
// and a Read error such as that deadline's comes back wrapped, with the
// bytes read before it.
//
// A name comes back only if it is a DNS host name in ASCII (letters,
// digits and hyphens in dot-separated labels, RFC 1123; IPv4 addresses
// are of this form) or, from a Host header, a bracketed IPv6 address. It
// comes back in lower case, without a trailing dot or port, and is never
// empty. The caller still applies its own rules (IDNA, wildcards) when it
// matches it against routes.
//
// Only the standard library is used, so that this code, which sees every
// public connection before anything is known of it, stays small to audit.
package sniff

import (
	"errors"
	"fmt"
	"io"
)

// Sentinel errors; match them with errors.Is. Each is wrapped with detail.
var (
	// ErrNotHTTP means the connection does not start with an HTTP/1.x
	// request line.
	ErrNotHTTP = errors.New("not an HTTP/1.x request")
	// ErrNotTLS means the connection does not start with a TLS handshake
	// record.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrNoHost means the request head ended without a usable Host (none,
	// or an empty one), as HTTP/1.0 requests may.
	ErrNoHost = errors.New("no Host header")
	// ErrNoSNI means the ClientHello is well formed but carries no
	// server_name host name.
	ErrNoSNI = errors.New("no server name in the ClientHello")
	// ErrAmbiguous means the connection names more than one host: two Host
	// headers, or two server names in one ClientHello.
	ErrAmbiguous = errors.New("more than one host name")
	// ErrBadName means the host found is neither a DNS host name nor an IP
	// address (a wildcard, say, or bytes outside ASCII).
	ErrBadName = errors.New("invalid host name")
	// ErrMalformed means the request head or the ClientHello breaks its
	// own syntax: bad lengths, bad header lines, stray bytes.
	ErrMalformed = errors.New("malformed")
	// ErrTooLarge means the name was not found within max bytes.
	ErrTooLarge = errors.New("too large")
)

// readError describes a failed Read after n bytes of what. io.EOF stays
// io.EOF only if nothing at all was read; after some bytes it is
// io.ErrUnexpectedEOF, as the message was cut short.
func readError(err error, n int, what string) error {
	if err != io.EOF && err != io.ErrUnexpectedEOF { // the latter from io.ReadFull
		return fmt.Errorf("reading %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("connection closed before the %s: %w", what, io.EOF)
	}
	return fmt.Errorf("%s cut off after %d bytes: %w", what, n, io.ErrUnexpectedEOF)
}

// clamp makes a negative max 0.
func clamp(max int) int {
	if max < 0 {
		return 0
	}
	return max
}
