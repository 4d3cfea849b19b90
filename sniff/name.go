package sniff

import (
	"fmt"
	"net/netip"
	"strings"
)

// maxNameLen is the longest DNS name in text form, without the trailing
// dot (RFC 1035 section 2.3.4, less the length octets).
const maxNameLen = 253

// normalize returns a host name found on the wire in the form warren
// routes by: ASCII lower case, without one trailing dot. It accepts only
// DNS host names in their ASCII form (letters, digits and hyphens in dot
// separated labels of 1 to 63 bytes, RFC 1123), which covers IPv4
// addresses too. Anything else, a wildcard or raw UTF-8 say, is
// ErrBadName: clients send internationalized names as A-labels
// ("xn--..."), and a strict form keeps what reaches logs and route
// lookups plain. what says where name came from, for the error.
func normalize(name, what string) (string, error) {
	n := strings.TrimSuffix(name, ".")
	bad := func(why string) error {
		return fmt.Errorf("%w: %s %.80q %s", ErrBadName, what, name, why)
	}
	if n == "" {
		return "", bad("is empty")
	}
	if len(n) > maxNameLen {
		return "", bad(fmt.Sprintf("is longer than %d bytes", maxNameLen))
	}
	label := 0 // length of the current label so far
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c == '.':
			if label == 0 {
				return "", bad("has an empty label")
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-':
		case 'A' <= c && c <= 'Z':
		default:
			return "", bad(fmt.Sprintf("has byte %q, not a letter, digit, hyphen or dot", c))
		}
		if label++; label > 63 {
			return "", bad("has a label longer than 63 bytes")
		}
	}
	if label == 0 {
		return "", bad("has an empty label")
	}
	return strings.ToLower(n), nil
}

// normalizeIPv6 returns the IPv6 address between the brackets of an
// IP-literal ("[::1]") in canonical text form, which is lower case.
// Zones are refused: a URI would write one as "%25", and it means
// nothing to a route.
func normalizeIPv6(s, what string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Zone() != "" {
		return "", fmt.Errorf("%w: %s [%.80s] is not an IPv6 address", ErrBadName, what, s)
	}
	return a.String(), nil
}
