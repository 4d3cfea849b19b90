//go:build unix

package relay

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// ReadWaiter returns a function that blocks until the socket behind r has
// data, EOF or an error pending, without reading it, so the caller need not
// hold a buffer while a connection idles. It returns nil when r is not a
// socket. On a UDP socket "data" is a datagram, and an error is an ICMP
// error the kernel queued (ECONNREFUSED on a connected socket).
//
// An error the socket reports (a reset) is returned by the wait itself: the
// kernel reports it only once, so after the peek a Read would see a clean
// EOF and pass an aborted connection off as a finished one.
func ReadWaiter(r io.Reader) func() error {
	sc, ok := r.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var (
		b    [1]byte
		perr error
	)
	ready := func(fd uintptr) bool {
		// Only "would block" means wait; data and EOF are for Read. The
		// raw call, unlike syscall.Recvfrom, allocates no source address:
		// a UDP flow waits once per datagram.
		_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch errno {
		case syscall.EAGAIN: // = EWOULDBLOCK
			return false
		case 0, syscall.EINTR:
		default:
			perr = os.NewSyscallError("recvfrom", errno)
		}
		return true
	}
	return func() error {
		perr = nil
		if err := rc.Read(ready); err != nil {
			return err
		}
		return perr
	}
}
