package harness

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/server"
)

// Several servers side by side, as behind DNS or a TCP balancer: server i
// of a group listens at 127.0.0.(i+1), its tunnel listener and its
// public ports, every one on the same tunnel port (Linux routes all of
// 127.0.0.0/8 to loopback), so that one name can resolve to all of them.

// ServerIP is the address of server i of a group.
func ServerIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)}) }

// GroupConfigs returns the configs of n servers of a group: each as
// ServerConfig, at ServerIP(i), on one tunnel port free at all of them.
func (w *World) GroupConfigs(n int) []server.Config {
	w.t.Helper()
	kind := w.Kind
	if w.InMemory() {
		kind = TCP
	}
	port := w.freePort(n, kind)
	cfgs := make([]server.Config, n)
	for i := range cfgs {
		cfg := w.ServerConfig()
		cfg.PublicAddress = ServerIP(i).String()
		cfg.Listen = []server.Listen{{Transport: kind, Address: net.JoinHostPort(ServerIP(i).String(), strconv.Itoa(port))}}
		cfgs[i] = cfg
	}
	return cfgs
}

// StartGroup starts the servers of cfgs (GroupConfigs).
func (w *World) StartGroup(cfgs []server.Config, opts ...server.Option) []*Server {
	w.t.Helper()
	srvs := make([]*Server, len(cfgs))
	for i, cfg := range cfgs {
		srvs[i] = w.StartServer(cfg, opts...)
	}
	return srvs
}

// PublicPort returns a port free at the first n addresses of a group, on
// the public network: a remote_port every server of the group can bind.
func (w *World) PublicPort(n int) int {
	w.t.Helper()
	return w.freePort(n, TCP)
}

// freePort returns a port free at ServerIP(0..n-1) for kind (TCP: a TCP
// port; KCP: a UDP port), or in memory one this world has not given out
// (its public and tunnel networks are apart, so one count serves both).
func (w *World) freePort(n int, kind string) int {
	w.t.Helper()
	if w.InMemory() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.servers++
		return 7000 + w.servers
	}
	network := "tcp"
	if kind == KCP {
		network = "udp"
	}
	return FreePort(w.t, n, network)
}

// FreePort returns a port free on the host's loopback at ServerIP(0) to
// ServerIP(n-1), for network "tcp" or "udp". Another process may take it
// before the caller binds it, as with any free port.
func FreePort(t testing.TB, n int, network string) int {
	t.Helper()
	for range 100 {
		if port, ok := tryPort(network, n); ok {
			return port
		}
	}
	t.Fatalf("harness: no %s port free at %d loopback addresses", network, n)
	return 0
}

// tryPort takes a free port at ServerIP(0) and checks that it is free at
// the others too.
func tryPort(network string, n int) (int, bool) {
	// bind binds ip:port, and returns the port bound and how to free it.
	bind := func(ip netip.Addr, port int) (int, func(), bool) {
		addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
		if network == "udp" {
			c, err := net.ListenPacket(network, addr)
			if err != nil {
				return 0, nil, false
			}
			return c.LocalAddr().(*net.UDPAddr).Port, func() { c.Close() }, true
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			return 0, nil, false
		}
		return l.Addr().(*net.TCPAddr).Port, func() { l.Close() }, true
	}
	port, free, ok := bind(ServerIP(0), 0)
	if !ok {
		return 0, false
	}
	defer free()
	for i := 1; i < n; i++ {
		_, free, ok := bind(ServerIP(i), port)
		if !ok {
			return 0, false
		}
		defer free()
	}
	return port, true
}

// GroupClientConfig is the config of a client of every server of srvs,
// listed by address in servers, with token serving svcs, pinning each
// server's certificate.
func (w *World) GroupClientConfig(srvs []*Server, token string, svcs ...client.Service) client.Config {
	cfg := w.ClientConfig(srvs[0], token, svcs...)
	cfg.Server, cfg.TLS.Fingerprint = "", ""
	for _, s := range srvs {
		cfg.Servers = append(cfg.Servers, s.TunnelAddr())
		cfg.TLS.Fingerprints = append(cfg.TLS.Fingerprints, s.Fingerprint())
	}
	return cfg
}

// Hosts is a resolver for a client (client.WithResolver) with names a
// test sets, for server names; other names resolve as on the world's
// private network.
type Hosts struct {
	w     *World
	mu    sync.Mutex
	names map[string][]netip.Addr
}

// Hosts returns a resolver with no names of its own yet.
func (w *World) Hosts() *Hosts { return &Hosts{w: w, names: make(map[string][]netip.Addr)} }

// Set makes name resolve to addrs; none makes it fail to resolve.
func (h *Hosts) Set(name string, addrs ...netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.names[name] = addrs
}

// LookupNetIP resolves host.
func (h *Hosts) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	h.mu.Lock()
	addrs, ok := h.names[host]
	h.mu.Unlock()
	if !ok {
		return h.w.Private.LookupNetIP(ctx, network, host)
	}
	if len(addrs) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return addrs, nil
}

// PublicAddrAt is where a public port of server i of a group is reached.
func PublicAddrAt(i, port int) string {
	return net.JoinHostPort(ServerIP(i).String(), strconv.Itoa(port))
}
