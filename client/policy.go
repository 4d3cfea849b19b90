package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/warren-tunnel/warren/internal/domain"
)

// DialConfig is the [client.dial] table: what the server may have this
// client dial (Server.Dial on the server side).
type DialConfig struct {
	// Allow lists what may be dialed, each "address:port" where address
	// is a CIDR ("10.0.0.0/8", "[fd00::/8]"), an IP, a host name or a
	// "*.suffix" wildcard, and port a number or "*". Empty (the default)
	// allows nothing: the client refuses every dial.
	Allow []string `toml:"allow"`
}

// dialRule is one parsed allow entry.
type dialRule struct {
	prefix netip.Prefix // a CIDR or IP rule; invalid for a name rule
	name   string       // a name rule: "db.internal" or "*.svc.cluster.local"
	port   int          // 0: any port
}

// dialPolicy decides what the client dials for the server. The rules:
//
//  1. Nothing is allowed unless an allow entry says so.
//  2. An IP address is allowed when an IP or CIDR rule contains it, with
//     its port.
//  3. A host name is allowed when a name rule matches it ("*.suffix"
//     matches names below suffix, not suffix itself), with its port; the
//     client resolves it and dials the addresses it gets.
//  4. Otherwise a host name is resolved once, and allowed when every
//     address it resolves to is allowed by rule 2; the client then dials
//     exactly those addresses: no second lookup can swap them.
type dialPolicy struct {
	rules []dialRule
}

func parseDialPolicy(allow []string) (dialPolicy, error) {
	var p dialPolicy
	for i, a := range allow {
		r, err := parseDialRule(a)
		if err != nil {
			return dialPolicy{}, fmt.Errorf("client.dial.allow[%d]: %q: %w", i, a, err)
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func parseDialRule(s string) (dialRule, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return dialRule{}, errors.New(`want "address:port", with a CIDR, IP, host name or *.suffix and a port or *`)
	}
	var r dialRule
	if port != "*" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return dialRule{}, fmt.Errorf("port %q: want 1-65535 or *", port)
		}
		r.port = p
	}
	if pf, err := netip.ParsePrefix(host); err == nil {
		r.prefix = pf.Masked()
		return r, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		r.prefix = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
		return r, nil
	}
	if strings.Contains(host, "/") {
		return dialRule{}, fmt.Errorf("%q is not a CIDR", host)
	}
	n, err := domain.Normalize(host)
	if err != nil {
		return dialRule{}, err
	}
	r.name = n
	return r, nil
}

func (r dialRule) portOK(p int) bool { return r.port == 0 || r.port == p }

// allowsIP applies rule 2.
func (p dialPolicy) allowsIP(ip netip.Addr, port int) bool {
	ip = ip.Unmap()
	for _, r := range p.rules {
		if r.prefix.IsValid() && r.portOK(port) && r.prefix.Contains(ip) {
			return true
		}
	}
	return false
}

// allowsName applies rule 3 to a normalized name.
func (p dialPolicy) allowsName(name string, port int) bool {
	for _, r := range p.rules {
		if r.name != "" && r.portOK(port) && (r.name == name || domain.IsWildcard(r.name) && domain.Match(r.name, name)) {
			return true
		}
	}
	return false
}

// errPolicy marks a refusal by the policy, as against a failed lookup.
var errPolicy = errors.New("not allowed by client.dial.allow")

// resolve checks address against the policy and returns the addresses to
// dial (with the port), resolving a host name at most once. An error
// wrapping errPolicy is a refusal; any other, a failed lookup.
func (p dialPolicy) resolve(ctx context.Context, lookup func(context.Context, string, string) ([]netip.Addr, error), address string) ([]netip.AddrPort, error) {
	host, ps, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not host:port", errPolicy, address)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("%w: port %q is not 1-65535", errPolicy, ps)
	}
	if len(p.rules) == 0 {
		return nil, fmt.Errorf("%w: this client allows no dials (client.dial.allow is empty)", errPolicy)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !p.allowsIP(ip, port) {
			return nil, fmt.Errorf("%w: %s is in no allowed CIDR for port %d", errPolicy, ip, port)
		}
		return []netip.AddrPort{netip.AddrPortFrom(ip.Unmap(), uint16(port))}, nil
	}
	name, err := domain.Normalize(host)
	if err != nil || domain.IsWildcard(name) {
		return nil, fmt.Errorf("%w: %q is not a host name", errPolicy, host)
	}
	byName := p.allowsName(name, port)
	ips, err := lookup(ctx, "ip", name)
	if err != nil {
		if !byName {
			return nil, fmt.Errorf("%w: %s matches no allowed name, and its addresses cannot be checked: %v", errPolicy, name, err)
		}
		return nil, err
	}
	if len(ips) == 0 {
		return nil, &net.DNSError{Err: "no addresses", Name: name, IsNotFound: true}
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		if !byName && !p.allowsIP(ip, port) {
			return nil, fmt.Errorf("%w: %s matches no allowed name, and resolves to %s, which is in no allowed CIDR for port %d", errPolicy, name, ip.Unmap(), port)
		}
		out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(port)))
	}
	return out, nil
}
