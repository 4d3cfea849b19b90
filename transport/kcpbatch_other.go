//go:build !linux

package transport

import "net"

// newBatchConn: batches are Linux's (sendmmsg/recvmmsg), as in kcp-go;
// elsewhere the watched sockets read and write one datagram at a time.
func newBatchConn(net.PacketConn) batchConn { return nil }
