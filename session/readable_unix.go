//go:build unix

package session

import (
	"io"
	"syscall"
)

// readWaiter returns a function that blocks until the socket behind r has
// data, EOF or an error pending, without reading it, so the caller need not
// hold a buffer while a connection idles. It returns nil when r is not a
// socket.
func readWaiter(r io.Reader) func() error {
	sc, ok := r.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var b [1]byte
	ready := func(fd uintptr) bool {
		// Only "would block" means wait; data, EOF and errors are for Read.
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK
	}
	return func() error { return rc.Read(ready) }
}
