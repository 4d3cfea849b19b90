package harness

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
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
// ServerIP(n-1), for network "tcp" or "udp", outside the kernel's
// ephemeral range (StaticPorts): a port the kernel picked would be free
// now, but it may hand it out again as the source port of an outgoing
// connection (a client reconnecting) by the time a server binds it again,
// and then that bind fails. Another process may take it before the caller
// binds it, as with any free port.
func FreePort(t testing.TB, n int, network string) int {
	t.Helper()
	lo, hi := StaticPorts()
	for range 200 {
		if port := lo + rand.N(hi-lo+1); portFree(network, port, n) {
			return port
		}
	}
	t.Fatalf("harness: no %s port in %d-%d free at %d loopback addresses", network, lo, hi, n)
	return 0
}

// portFree reports whether port is free for network at ServerIP(0..n-1).
func portFree(network string, port, n int) bool {
	for i := range n {
		addr := net.JoinHostPort(ServerIP(i).String(), strconv.Itoa(port))
		if network == "udp" {
			c, err := net.ListenPacket(network, addr)
			if err != nil {
				return false
			}
			defer c.Close()
			continue
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			return false
		}
		defer l.Close()
	}
	return true
}

// StaticPorts is a range of ports outside the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), for tests that bind a port again after
// connections came and went: for a fixed remote_port, or as a client's
// allowed ports (server.Client.Ports), from which a server's any-port
// search takes the first free one. The kernel never gives out these as
// source ports, so a test's own outgoing connections cannot take them.
func StaticPorts() (lo, hi int) {
	eLo, eHi := ephemeralRange()
	// The larger of the gaps below and above the ephemeral range, staying
	// clear of the well-known ports and the examples' 8000s.
	below, above := [2]int{10000, eLo - 1}, [2]int{eHi + 1, 65535}
	gap := below
	if above[1]-above[0] > below[1]-below[0] {
		gap = above
	}
	if gap[1]-gap[0] < 1000 { // the kernel gives out nearly every port: take any
		return 10000, 65535
	}
	return gap[0], gap[1]
}

// ephemeralRange reads the kernel's ephemeral port range; Linux's default
// when it cannot.
func ephemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || l < 1024 || h < l || h > 65535 {
		return lo, hi
	}
	return l, h
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
