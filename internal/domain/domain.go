// Package domain normalizes and matches the domain names that clients claim
// and that public connections ask for (HTTP Host, TLS SNI).
//
// Names compare in ASCII: lower case, without a trailing dot, with Unicode
// labels in their IDNA punycode form. A wildcard "*.example.com" matches
// every name below example.com, at any depth, but not example.com itself.
package domain

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/idna"

	"github.com/warren-tunnel/warren/internal/quote"
)

// ErrInvalid is wrapped by every error of Normalize.
var ErrInvalid = errors.New("invalid domain name")

const maxNameLen = 253

// profile maps names as lookups do (case folding, width) and checks DNS
// label rules and lengths, so empty labels and 64-byte labels fail too.
var profile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.VerifyDNSLength(true))

// Normalize returns name in the form warren compares, or an error saying
// what is wrong with it. A leading "*." is kept as the wildcard.
func Normalize(name string) (string, error) {
	orig := name
	name = strings.TrimSuffix(name, ".")
	wild := strings.HasPrefix(name, "*.")
	if wild {
		name = name[2:]
	}
	if name == "" {
		return "", fmt.Errorf("%w: %s is empty", ErrInvalid, quote.Short(orig))
	}
	if strings.Contains(name, "*") {
		return "", fmt.Errorf("%w: %s: a wildcard may only be the whole first label, as in *.example.com", ErrInvalid, quote.Short(orig))
	}
	// A character takes at most 4 bytes and at least one in punycode: a
	// longer name cannot fit, and the IDNA error would quote all of it.
	if len(name) > 4*maxNameLen {
		return "", fmt.Errorf("%w: %s is longer than %d characters", ErrInvalid, quote.Short(orig), maxNameLen)
	}
	ascii, err := profile.ToASCII(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrInvalid, quote.Short(orig), err)
	}
	if len(ascii) > maxNameLen {
		return "", fmt.Errorf("%w: %s is longer than %d characters", ErrInvalid, quote.Short(orig), maxNameLen)
	}
	if wild {
		return "*." + ascii, nil
	}
	return ascii, nil
}

// IsWildcard reports whether a normalized name is a wildcard.
func IsWildcard(name string) bool { return strings.HasPrefix(name, "*.") }

// Match reports whether the normalized pattern (a name or a wildcard)
// matches the normalized host.
func Match(pattern, host string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return pattern == host
}

// Covers reports whether a token allowed to claim allowed may claim claim;
// both are normalized names or wildcards. A wildcard covers the names it
// matches and the wildcards at or below it.
func Covers(allowed, claim string) bool {
	if IsWildcard(claim) {
		if !IsWildcard(allowed) {
			return false
		}
		return claim == allowed || Match(allowed, claim[2:])
	}
	return Match(allowed, claim)
}

// Specificity orders patterns for routing: an exact name beats any
// wildcard, and a longer wildcard beats a shorter one.
func Specificity(pattern string) int {
	if IsWildcard(pattern) {
		return len(pattern)
	}
	return maxNameLen + 1 + len(pattern)
}
