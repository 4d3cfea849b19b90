package client

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// minDialShare is the least time one address of a name gets when the
// dial timeout is shared among its addresses (net.Dialer's rule too).
const minDialShare = 2 * time.Second

// dialTarget dials target ("host:port") within timeout, or until ctx ends.
// A host name is resolved with the client's resolver and its addresses
// are tried in order, each with an equal share of the time left (at least
// minDialShare), the first to connect winning.
//
// It dials in the caller's goroutine: the stream handler, which returns
// once the relay has started (relay.Start), so the depth the dial reached
// is not kept for the connection's life.
func (c *Client) dialTarget(ctx context.Context, target string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.dialAddrs(ctx, target)
}

func (c *Client) dialAddrs(ctx context.Context, target string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("bad port %q", port)}
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else if addrs, err = c.edges.resolver.LookupNetIP(ctx, "ip", host); err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	} else if len(addrs) == 0 {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}}
	}
	aps := make([]netip.AddrPort, len(addrs))
	for i, ip := range addrs {
		aps[i] = netip.AddrPortFrom(ip.Unmap(), uint16(p))
	}
	return c.dialEach(ctx, aps)
}

// dialEach dials the addresses in order, each with an equal share of the
// time ctx leaves (at least minDialShare), the first to connect winning.
func (c *Client) dialEach(ctx context.Context, addrs []netip.AddrPort) (net.Conn, error) {
	var first error // as net.Dialer, report the first address's error
	for i, ap := range addrs {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && i < len(addrs)-1 {
			share := time.Until(dl) / time.Duration(len(addrs)-i)
			actx, cancel = context.WithTimeout(ctx, max(share, minDialShare))
		}
		conn, err := c.edges.dial(actx, "tcp", ap.String())
		cancel()
		if err == nil {
			return conn, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}
