package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/transport"
)

// The server list: Config.Server, or Config.Servers, as endpoints. An
// endpoint is one entry; what it resolves to is one server (resolve =
// "first") or a server per address (resolve = "all").

// Values of Config.Resolve.
const (
	ResolveFirst = "first"
	ResolveAll   = "all"
)

// endpoint is one entry of the server list.
type endpoint struct {
	// key names the entry in errors: "client.server" or
	// "client.servers[i]".
	key string
	// entry is the entry as configured, scheme included.
	entry string
	// kind is the transport: the entry's scheme, or Config.Transport.
	kind string
	// host and port split the entry's address; ip is host when it is an
	// address literal (no name to resolve, none to verify).
	host, port string
	ip         netip.Addr
	// all: every address of host is a server of its own.
	all bool
	// t is the transport to it (New sets it).
	t transport.Transport
	// again asks the client's watcher of an entry whose every address is
	// a server (Client.watch) to resolve its name again.
	again chan struct{}
}

// resolveAgain asks for the entry's name to be resolved again, when its
// servers come from a watcher: a server of it reconnects.
func (e *endpoint) resolveAgain() {
	select {
	case e.again <- struct{}{}:
	default: // asked already
	}
}

// addr is the entry's host:port.
func (e *endpoint) addr() string { return net.JoinHostPort(e.host, e.port) }

// name is the host name its certificate is verified against when the
// client dials one of its addresses: the host, unless that is an
// address itself.
func (e *endpoint) name() string {
	if e.ip.IsValid() {
		return ""
	}
	return e.host
}

// resolve returns the addresses ("ip:port") the entry's name resolves to
// now through r, in order, without repeats.
func (e *endpoint) resolve(ctx context.Context, r Resolver) ([]string, error) {
	if e.ip.IsValid() {
		return []string{e.addr()}, nil
	}
	ips, err := r.LookupNetIP(ctx, "ip", e.host)
	if err == nil && len(ips) == 0 {
		err = &net.DNSError{Err: "no addresses", Name: e.host, IsNotFound: true}
	}
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", e.host, err)
	}
	var addrs []string
	for _, ip := range ips {
		a := net.JoinHostPort(ip.Unmap().String(), e.port)
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

// resolve is Config.Resolve with its default filled in.
func (c Config) resolve() string {
	switch {
	case c.Resolve != "":
		return c.Resolve
	case len(c.Servers) > 0:
		return ResolveAll
	}
	return ResolveFirst
}

// errServerKeys: server and servers are alternatives.
var errServerKeys = errors.New("client.server and client.servers: set one of the two, not both (servers = [...] lists several servers, server names one)")

// endpoints checks the server keys and returns the server list.
func (c Config) endpoints() ([]*endpoint, error) {
	switch {
	case c.Server != "" && c.Servers != nil:
		return nil, errServerKeys
	case c.Servers != nil && len(c.Servers) == 0:
		return nil, errors.New("client.servers: the list is empty; name at least one server, host:port")
	case c.Server == "" && c.Servers == nil:
		return nil, errors.New("client.server: missing; set server = \"host:port\" (or servers = [...] for several)")
	}
	if c.Resolve != "" && c.Resolve != ResolveFirst && c.Resolve != ResolveAll {
		return nil, fmt.Errorf("client.resolve: %s: want %q or %q", quote.Short(c.Resolve), ResolveFirst, ResolveAll)
	}
	all := c.resolve() == ResolveAll
	var eps []*endpoint
	if c.Server != "" {
		if kind, addr, ok := strings.Cut(c.Server, "://"); ok { // as --server takes it
			return nil, fmt.Errorf("client.server: %s: the config file takes host:port here and the transport apart: server = %s and transport = %s",
				quote.Short(c.Server), quote.Short(addr), quote.Short(kind))
		}
		ep, err := parseEndpoint("client.server", c.Server, c.Transport, all)
		if err != nil {
			return nil, err
		}
		eps = append(eps, ep)
	}
	seen := make(map[string]int)
	for i, s := range c.Servers {
		ep, err := parseEndpoint(fmt.Sprintf("client.servers[%d]", i), s, c.Transport, all)
		if err != nil {
			return nil, err
		}
		id := ep.kind + "://" + strings.ToLower(ep.addr())
		if j, dup := seen[id]; dup {
			return nil, fmt.Errorf("%s: %s is the same server as client.servers[%d]", ep.key, quote.Short(s), j)
		}
		seen[id] = i
		eps = append(eps, ep)
	}
	if c.MaxServers < 0 {
		return nil, fmt.Errorf("client.max_servers: %d is negative; 0 holds every server", c.MaxServers)
	}
	if c.MinServers < 1 {
		return nil, fmt.Errorf("client.min_servers: %d: want at least 1", c.MinServers)
	}
	if c.MaxServers > 0 && c.MinServers > c.MaxServers {
		return nil, fmt.Errorf("client.min_servers: %d is more than max_servers = %d: the client would never be ready", c.MinServers, c.MaxServers)
	}
	if n, fixed := countServers(eps); fixed && c.MinServers > n {
		return nil, fmt.Errorf("client.min_servers: %d is more than the %d server(s) listed: the client would never be ready", c.MinServers, n)
	}
	return eps, nil
}

// parseEndpoint parses one entry of the server list, key naming it.
func parseEndpoint(key, s, transportKind string, all bool) (*endpoint, error) {
	ep := &endpoint{key: key, entry: s, kind: transportKind, all: all, again: make(chan struct{}, 1)}
	addr := s
	if kind, rest, ok := strings.Cut(s, "://"); ok {
		if kind != transport.KindKCP && kind != transport.KindTCP {
			return nil, fmt.Errorf("%s: %s: the scheme is kcp:// or tcp:// (or none, for transport = %s)", key, quote.Short(s), quote.Short(transportKind))
		}
		ep.kind, addr = kind, rest
	}
	if err := checkHostPort(addr); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	ep.host, ep.port, _ = net.SplitHostPort(addr)
	if ip, err := netip.ParseAddr(ep.host); err == nil {
		ep.ip = ip
	}
	return ep, nil
}

// countServers is how many servers eps stand for, and whether that is
// known before resolving: it is not when an entry with a host name
// resolves to all its addresses.
func countServers(eps []*endpoint) (n int, fixed bool) {
	for _, ep := range eps {
		if ep.all && !ep.ip.IsValid() {
			return len(eps), false
		}
	}
	return len(eps), true
}

// severalServers reports whether eps may stand for more than one server.
func severalServers(eps []*endpoint) bool {
	n, fixed := countServers(eps)
	return n > 1 || !fixed
}
