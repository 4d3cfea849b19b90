package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Read reads one header of either version from r. On success it has
// consumed exactly the header: what the sender wrote after it is still in
// r. It reads one byte at a time until it knows how long the header is, so
// it never waits for bytes beyond the header; bound the wait with a
// deadline on the connection under r.
//
// Addresses come back unmapped: an IPv4-mapped IPv6 address is returned
// as the IPv4 address, as Append writes it. Headers that carry no
// addresses the receiver can use come back with Src and Dst zero: version
// 1 "PROXY UNKNOWN", version 2 LOCAL, and version 2 PROXY with family
// UNSPEC or one this package does not decode (UDP, Unix sockets), which
// the specification says to treat alike. Version 2 TLVs after the address
// block are skipped unread.
//
// Errors wrap ErrNoHeader (nothing consumed) or ErrMalformed. If r fails
// before the header ends, Read returns the read error, wrapped: io.EOF if
// r had no bytes at all, io.ErrUnexpectedEOF if the header was cut short.
//
// The specification's grammar is enforced, with one leniency: a version 1
// TCP6 address may end in a dotted IPv4 part (::ffff:192.0.2.1), as some
// senders write mapped addresses.
func Read(r *bufio.Reader) (*Header, error) {
	b, err := r.Peek(1)
	if err != nil {
		return nil, fmt.Errorf("proxyproto: reading header: %w", err)
	}
	switch b[0] {
	case sigV1[0]:
		if err := readSignature(r, V1, sigV1); err != nil {
			return nil, err
		}
		return readV1(r)
	case sigV2[0]:
		if err := readSignature(r, V2, sigV2); err != nil {
			return nil, err
		}
		return readV2(r)
	}
	return nil, noHeader(b)
}

// readSignature consumes sig from r. It peeks one more byte at a time, so
// if r does not start with sig it has consumed nothing and waited for no
// byte past the first that differs.
func readSignature(r *bufio.Reader, v Version, sig string) error {
	for n := 1; n <= len(sig); n++ {
		b, err := r.Peek(n)
		if err != nil {
			// b is all there is, and matches sig so far.
			return readError(v, err)
		}
		if b[n-1] != sig[n-1] {
			return noHeader(b)
		}
	}
	_, err := r.Discard(len(sig))
	return err // nil: the bytes are buffered
}

func noHeader(start []byte) error {
	return fmt.Errorf("proxyproto: %w: input starts with %q", ErrNoHeader, start)
}

// readError wraps an error from r met inside a header.
func readError(v Version, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("proxyproto: %v header: %w", v, err)
}

// malformed returns an error wrapping ErrMalformed.
func malformed(v Version, format string, args ...any) error {
	return fmt.Errorf("proxyproto: %w %v header: %s", ErrMalformed, v, fmt.Sprintf(format, args...))
}

// readV1 reads the rest of a version 1 header, after "PROXY".
func readV1(r *bufio.Reader) (*Header, error) {
	var buf [maxV1]byte
	n := copy(buf[:], sigV1)
	for n == len(sigV1) || buf[n-1] != '\n' {
		if n == len(buf) {
			return nil, malformed(V1, "no LF within %d bytes", maxV1)
		}
		c, err := r.ReadByte()
		if err != nil {
			return nil, readError(V1, err)
		}
		buf[n] = c
		n++
	}
	line := buf[:n]
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		return nil, malformed(V1, "line %q does not end in CRLF", line)
	}
	return parseV1(string(line[len(sigV1) : n-2]))
}

// parseV1 parses a version 1 line between "PROXY" and CRLF.
func parseV1(s string) (*Header, error) {
	rest, ok := strings.CutPrefix(s, " ")
	if !ok {
		return nil, malformed(V1, "no space after PROXY")
	}
	proto, rest, _ := strings.Cut(rest, " ")
	switch proto {
	case "UNKNOWN":
		// The receiver must ignore whatever follows, up to CRLF.
		return &Header{Version: V1}, nil
	case "TCP4", "TCP6":
	default:
		return nil, malformed(V1, "unknown protocol %q", proto)
	}
	f := strings.Split(rest, " ")
	if len(f) != 4 {
		return nil, malformed(V1, "%s: want source and destination address and port, one space apart, got %q", proto, rest)
	}
	src, err := parseV1Addr(proto, "source", f[0])
	if err != nil {
		return nil, err
	}
	dst, err := parseV1Addr(proto, "destination", f[1])
	if err != nil {
		return nil, err
	}
	sport, err := parseV1Port("source", f[2])
	if err != nil {
		return nil, err
	}
	dport, err := parseV1Port("destination", f[3])
	if err != nil {
		return nil, err
	}
	return &Header{
		Version: V1,
		Src:     netip.AddrPortFrom(src, sport),
		Dst:     netip.AddrPortFrom(dst, dport),
	}, nil
}

// parseV1Addr parses an address of the family proto names: dotted
// decimal without leading zeros for TCP4, IPv6 without a zone for TCP6.
func parseV1Addr(proto, what, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4() != (proto == "TCP4") {
		return netip.Addr{}, malformed(V1, "bad %s address %q for %s", what, s, proto)
	}
	return a.Unmap(), nil
}

// parseV1Port parses a decimal port in [0, 65535] without leading zeros.
func parseV1Port(what, s string) (uint16, error) {
	bad := s == "" || len(s) > 5 || len(s) > 1 && s[0] == '0'
	for i := 0; i < len(s) && !bad; i++ {
		bad = s[i] < '0' || s[i] > '9'
	}
	if !bad {
		p, err := strconv.ParseUint(s, 10, 16)
		if err == nil {
			return uint16(p), nil
		}
	}
	return 0, malformed(V1, "bad %s port %q", what, s)
}

// readV2 reads the rest of a version 2 header, after the signature.
func readV2(r *bufio.Reader) (*Header, error) {
	var fixed [4]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return nil, readError(V2, err)
	}
	verCmd, fam := fixed[0], fixed[1]
	n := int(binary.BigEndian.Uint16(fixed[2:]))
	if verCmd>>4 != 2 {
		return nil, malformed(V2, "version %d in byte %#02x, want 2", verCmd>>4, verCmd)
	}
	switch verCmd {
	case v2Proxy:
	case v2Local:
		// The receiver must discard the address block, family included.
		if err := skip(r, n); err != nil {
			return nil, err
		}
		return &Header{Version: V2, Command: Local}, nil
	default:
		return nil, malformed(V2, "unknown command %d in byte %#02x", verCmd&0x0f, verCmd)
	}
	var need int
	switch fam {
	case famUnspec:
		need = 0
	case famTCP4, famUDP4:
		need = lenInet
	case famTCP6, famUDP6:
		need = lenInet6
	case famUnixStream, famUnixDgram:
		need = lenUnix
	default:
		return nil, malformed(V2, "unknown address family and protocol %#02x", fam)
	}
	if n < need {
		return nil, malformed(V2, "length %d is shorter than the %d-byte address block of family %#02x", n, need, fam)
	}
	h := &Header{Version: V2}
	if fam == famTCP4 || fam == famTCP6 {
		var a [lenInet6]byte
		if _, err := io.ReadFull(r, a[:need]); err != nil {
			return nil, readError(V2, err)
		}
		var src, dst netip.Addr
		if fam == famTCP4 {
			src = netip.AddrFrom4([4]byte(a[0:4]))
			dst = netip.AddrFrom4([4]byte(a[4:8]))
		} else {
			src = netip.AddrFrom16([16]byte(a[0:16])).Unmap()
			dst = netip.AddrFrom16([16]byte(a[16:32])).Unmap()
		}
		ports := a[need-4 : need]
		h.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(ports[0:]))
		h.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(ports[2:]))
		n -= need
	}
	// The rest of the address block, and TLVs.
	if err := skip(r, n); err != nil {
		return nil, err
	}
	return h, nil
}

// skip consumes n bytes of a version 2 header.
func skip(r *bufio.Reader, n int) error {
	if _, err := r.Discard(n); err != nil {
		return readError(V2, err)
	}
	return nil
}
