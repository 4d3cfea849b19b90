package session

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// connReset reports whether c is a TCP connection that its peer reset (or
// that is closed): its state left established and the peer's FIN states.
// It reads nothing, so a relay can ask without disturbing its reader.
func connReset(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return true // closed
	}
	return ierr == nil && info.State == unix.BPF_TCP_CLOSE
}
