package proxyproto

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
)

// Append appends the header h describes to b, in h.Version's form.
//
// IPv4-mapped IPv6 addresses are unmapped first, so two IPv4 peers are
// written as TCP4 (version 1) or AF_INET (version 2) however they were
// given. If one address is then IPv4 and the other IPv6, the IPv4 one is
// mapped (::ffff:a.b.c.d) so that both are IPv6: the header has one
// family. Zones are dropped; they mean nothing to the receiver. The Local
// command is written with family UNSPEC and no addresses.
//
// The error wraps ErrVersion or ErrCommand; b is then returned unchanged.
func (h Header) Append(b []byte) ([]byte, error) {
	src, dst, known := sameFamily(h.Src, h.Dst)
	switch {
	case h.Command != Proxy && h.Command != Local:
		return b, fmt.Errorf("proxyproto: %w %v", ErrCommand, h.Command)
	case h.Version == V1 && h.Command == Local:
		// "PROXY UNKNOWN" would come closest, but the specification
		// advises against sending it where the connection is to be
		// accepted.
		return b, fmt.Errorf("proxyproto: %w: version 1 has no LOCAL", ErrCommand)
	case h.Version == V1:
		return appendV1(b, src, dst, known), nil
	case h.Version == V2:
		return appendV2(b, h.Command, src, dst, known), nil
	}
	return b, fmt.Errorf("proxyproto: %w %d", ErrVersion, int(h.Version))
}

// appendV1 appends a version 1 line: "PROXY UNKNOWN" unless known.
func appendV1(b []byte, src, dst netip.AddrPort, known bool) []byte {
	b = append(b, sigV1...)
	switch {
	case !known:
		return append(b, " UNKNOWN\r\n"...)
	case src.Addr().Is4():
		b = append(b, " TCP4 "...)
	default:
		b = append(b, " TCP6 "...)
	}
	b = appendV1Addr(b, src.Addr())
	b = append(b, ' ')
	b = appendV1Addr(b, dst.Addr())
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, "\r\n"...)
}

// appendV1Addr appends a in the text form of version 1. An IPv4-mapped
// address is written in hex (::ffff:c000:201), not with the dotted tail
// netip would give it (::ffff:192.0.2.1): the specification's grammar for
// IPv6 has only hex groups.
func appendV1Addr(b []byte, a netip.Addr) []byte {
	if !a.Is4In6() {
		return a.AppendTo(b)
	}
	x := a.As16()
	b = append(b, "::ffff:"...)
	b = strconv.AppendUint(b, uint64(x[12])<<8|uint64(x[13]), 16)
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(x[14])<<8|uint64(x[15]), 16)
}

// appendV2 appends a version 2 header without TLVs: family UNSPEC and no
// address block for Local or unless known.
func appendV2(b []byte, cmd Command, src, dst netip.AddrPort, known bool) []byte {
	b = append(b, sigV2...)
	switch {
	case cmd == Local:
		return append(b, v2Local, famUnspec, 0, 0)
	case !known:
		return append(b, v2Proxy, famUnspec, 0, 0)
	case src.Addr().Is4():
		b = append(b, v2Proxy, famTCP4)
		b = binary.BigEndian.AppendUint16(b, lenInet)
		b = append(b, src.Addr().AsSlice()...)
		b = append(b, dst.Addr().AsSlice()...)
	default:
		b = append(b, v2Proxy, famTCP6)
		b = binary.BigEndian.AppendUint16(b, lenInet6)
		b = append(b, src.Addr().AsSlice()...)
		b = append(b, dst.Addr().AsSlice()...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// sameFamily returns src and dst unmapped, without zones, and of one
// family, mapping an IPv4 address to IPv6 if the other is IPv6. known is
// false if either is invalid.
func sameFamily(src, dst netip.AddrPort) (_, _ netip.AddrPort, known bool) {
	if !src.IsValid() || !dst.IsValid() {
		return src, dst, false
	}
	s := src.Addr().Unmap().WithZone("")
	d := dst.Addr().Unmap().WithZone("")
	if s.Is4() != d.Is4() {
		s = netip.AddrFrom16(s.As16())
		d = netip.AddrFrom16(d.As16())
	}
	return netip.AddrPortFrom(s, src.Port()), netip.AddrPortFrom(d, dst.Port()), true
}
