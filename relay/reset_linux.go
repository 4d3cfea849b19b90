package relay

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// connReset reports whether c is a TCP connection that its peer reset, or
// that died otherwise (retransmissions or keepalives timed out). It reads
// nothing and consumes no error, so a relay can ask without disturbing its
// reader, which still sees the reset.
//
// The TCP state alone does not tell: a clean close ends in CLOSE too (once
// both FINs are through, the kernel moves the connection to a TIME_WAIT
// socket of its own and leaves this one CLOSE), with the peer's last bytes
// still unread in the receive queue. So it takes CLOSE together with a
// pending socket error (ECONNRESET, EPIPE, ETIMEDOUT), which poll reports
// as POLLERR without clearing it. A connection already closed on this side
// is not reset: the relay closed it itself, and is ending.
func connReset(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	reset := false
	rc.Control(func(fd uintptr) { // fails only when c is closed: not reset
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil || info.State != unix.BPF_TCP_CLOSE {
			return
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		reset = err == nil && n > 0 && fds[0].Revents&unix.POLLERR != 0
	})
	return reset
}
