// Package proxyproto writes and reads PROXY protocol headers, as specified
// by HAProxy in its proxy-protocol.txt (as of HAProxy 2.9):
// version 1, a line of text, and version 2, a binary block.
//
// The warren client relays each public connection to a local backend over
// a new TCP connection, so the backend sees the client's own address as
// the peer. When configured to, the client first writes a Header carrying
// the public peer's address and the address it connected to, so a backend
// that speaks the protocol (nginx, HAProxy, ...) logs and filters by who
// really connected.
//
// Read reads a header of either version back. It is for tests and tools
// standing in for such a backend; it is strict, and consumes exactly the
// header.
//
// Only TCP over IPv4 and IPv6 is written, and only it is decoded; other
// address families read back as unknown addresses, as the specification
// allows.
package proxyproto

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/warren-tunnel/warren/internal/quote"
)

// Sentinel errors; match them with errors.Is. Each is wrapped with detail.
var (
	// ErrNoHeader means the input starts with neither the version 1 nor
	// the version 2 signature. Read consumed nothing.
	ErrNoHeader = errors.New("no PROXY protocol header")
	// ErrMalformed means the input starts with a signature but the header
	// breaks the specification: bad syntax, a bad address or port, an
	// unknown version, command or family, a bad length.
	ErrMalformed = errors.New("malformed")
	// ErrVersion means a Header of a Version other than V1 and V2 was to
	// be written, or ParseVersion did not know the name.
	ErrVersion = errors.New("unknown PROXY protocol version")
	// ErrCommand means a Header's Command is unknown, or has no form in
	// its version (LOCAL in version 1).
	ErrCommand = errors.New("unsupported PROXY protocol command")
)

// Header is what a PROXY protocol header says of the connection it
// precedes. The zero Header is invalid: it has no Version.
type Header struct {
	Version Version
	Command Command
	// Src is the peer the connection was relayed for, Dst the address it
	// connected to. If either is invalid (the zero AddrPort), the
	// addresses are unknown and the receiver uses the connection's own:
	// "PROXY UNKNOWN" in version 1, family UNSPEC in version 2. The Local
	// command carries no addresses: Append ignores them, Read leaves them
	// zero.
	Src, Dst netip.AddrPort
}

// Version is a PROXY protocol version. The zero Version means none, as
// in a configuration that asks for no header.
type Version int

// The protocol versions.
const (
	V1 Version = 1 // a line of text: "PROXY TCP4 ...\r\n"
	V2 Version = 2 // a binary block
)

// ParseVersion returns the Version named "v1" or "v2", or 0 (none) for "".
func ParseVersion(s string) (Version, error) {
	switch s {
	case "":
		return 0, nil
	case "v1":
		return V1, nil
	case "v2":
		return V2, nil
	}
	return 0, fmt.Errorf(`proxyproto: %w %s (want "v1", "v2", or "" for none)`, ErrVersion, quote.Short(s))
}

// String returns "v1", "v2", or "" for none: the names ParseVersion takes.
func (v Version) String() string {
	switch v {
	case 0:
		return ""
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return "Version(" + strconv.Itoa(int(v)) + ")"
}

// Command is what a header says of its connection. The zero Command is
// Proxy, the one version 1 has and the one warren sends.
type Command int

// The commands.
const (
	// Proxy: the connection was relayed on behalf of the peer the header
	// names.
	Proxy Command = iota
	// Local (version 2 only): the sender made the connection for itself,
	// a health check say; the receiver uses the connection's own
	// addresses.
	Local
)

// String returns "PROXY" or "LOCAL", as the specification names them.
func (c Command) String() string {
	switch c {
	case Proxy:
		return "PROXY"
	case Local:
		return "LOCAL"
	}
	return "Command(" + strconv.Itoa(int(c)) + ")"
}

// Wire constants.
const (
	sigV1 = "PROXY"
	sigV2 = "\r\n\r\n\x00\r\nQUIT\n"

	// maxV1 is the longest version 1 header, CRLF included.
	maxV1 = 107

	// Version and command byte of version 2.
	v2Local = 0x20
	v2Proxy = 0x21

	// Address family and transport protocol byte of version 2.
	famUnspec     = 0x00
	famTCP4       = 0x11
	famUDP4       = 0x12
	famTCP6       = 0x21
	famUDP6       = 0x22
	famUnixStream = 0x31
	famUnixDgram  = 0x32

	// Sizes of the version 2 address blocks.
	lenInet  = 4 + 4 + 2 + 2
	lenInet6 = 16 + 16 + 2 + 2
	lenUnix  = 108 + 108
)
