package server

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/warren-tunnel/warren/internal/quote"
)

// PortRange is a span of TCP ports a client may claim; a single port has
// Lo == Hi. In a config file it is a number (8080) or a string ("8080",
// "2200-2299").
type PortRange struct {
	Lo, Hi int
}

// ParsePortRange parses "8080" or "2200-2299".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if !isRange {
		hi = lo
	}
	l, err1 := parsePort(lo)
	h, err2 := parsePort(hi)
	if err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("%s: want a port (1-65535) or a range such as \"2200-2299\"", quote.Short(s))
	}
	if l > h {
		return PortRange{}, fmt.Errorf("%s: range runs backwards", quote.Short(s))
	}
	return PortRange{l, h}, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("not a port: %s", quote.Short(s))
	}
	return p, nil
}

// Contains reports whether p is in the range.
func (r PortRange) Contains(p int) bool { return p >= r.Lo && p <= r.Hi }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// UnmarshalTOML accepts a number or a string.
func (r *PortRange) UnmarshalTOML(v any) error {
	var err error
	switch v := v.(type) {
	case int64:
		*r, err = ParsePortRange(strconv.FormatInt(v, 10))
	case string:
		*r, err = ParsePortRange(v)
	default:
		err = fmt.Errorf("want a port number or a string such as \"2200-2299\", got %T", v)
	}
	return err
}

// MarshalText writes the range as the config file does.
func (r PortRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// portList formats ranges for messages: "2200-2299, 8080".
func portList(rs []PortRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ", ")
}
