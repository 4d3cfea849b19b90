package transport

import (
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// newBatchConn returns pc's sendmmsg/recvmmsg, as kcp-go v5.6.72 picks
// them (its newBatchConn): x/net's ipv4 or ipv6 PacketConn by the
// family of the local address. Only a bare *net.UDPConn is batched (a
// test's wrapper is read and written as it is).
func newBatchConn(pc net.PacketConn) batchConn {
	u, ok := pc.(*net.UDPConn)
	if !ok {
		return nil
	}
	if a, ok := u.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		return ipv4.NewPacketConn(u)
	}
	return ipv6.NewPacketConn(u)
}
