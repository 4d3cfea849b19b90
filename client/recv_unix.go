//go:build unix

package client

import (
	"net"
	"os"
	"syscall"
)

// errNoDatagram: a non-blocking read found nothing to read.
var errNoDatagram = os.NewSyscallError("read", syscall.EAGAIN)

// pollRead returns a function that reads one datagram from conn if one
// is there already, without waiting (errNoDatagram if none is), or nil
// when conn is not a socket. It lets a flow gather a burst of datagrams
// into one write to its stream.
func pollRead(conn net.Conn) func(p []byte) (int, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var (
		buf  []byte
		n    int
		rerr error
	)
	read := func(fd uintptr) bool {
		// The socket is non-blocking (Go's poller): read(2) returns
		// EAGAIN when nothing waits, and, unlike Recvfrom, allocates no
		// source address.
		n, rerr = syscall.Read(int(fd), buf)
		return true // never wait
	}
	return func(p []byte) (int, error) {
		buf = p
		if err := rc.Read(read); err != nil {
			return 0, err
		}
		switch {
		case rerr == syscall.EAGAIN:
			return 0, errNoDatagram
		case rerr != nil:
			return 0, os.NewSyscallError("read", rerr)
		}
		return n, nil
	}
}
