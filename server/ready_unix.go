//go:build unix

package server

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// readyPool holds readReady's buffers. A few KiB take a request's first
// segment; what else the peer sent, the relay reads.
var readyPool = sync.Pool{New: func() any { return new([4 << 10]byte) }}

// readReady reads what c, a socket, holds already, without waiting: into
// a buffer of readyPool, returned with n > 0 (the caller puts it back).
// n is 0 when c holds nothing yet, ended, or is no socket: its relay sees
// to it. A socket error (a reset) is returned: the kernel reports it once,
// and the relay's read after this one would see a clean end.
func readReady(c net.Conn) (*[4 << 10]byte, int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, 0, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, 0, nil
	}
	bp := readyPool.Get().(*[4 << 10]byte)
	n := 0
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), bp[:])
		return true // never wait
	}); err != nil {
		rerr = err
	}
	if n <= 0 {
		readyPool.Put(bp)
		if rerr == nil || errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EINTR) {
			return nil, 0, nil
		}
		return nil, 0, rerr
	}
	return bp, n, nil
}

// putReady gives back a buffer of readReady's.
func putReady(bp *[4 << 10]byte) { readyPool.Put(bp) }
