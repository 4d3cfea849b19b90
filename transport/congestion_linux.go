package transport

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// setCongestion sets a TCP socket's congestion control algorithm.
func setCongestion(rc syscall.RawConn, algo string) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CONGESTION, algo)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("tcp.congestion %q: %w (is its module loaded, and is it in net.ipv4.tcp_allowed_congestion_control?)", algo, err)
	}
	return nil
}

// probeCongestion reports whether a new TCP socket accepts algo, and the
// system's default, which a new socket starts with.
func probeCongestion(algo string) (def string, err error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
	}
	defer unix.Close(fd)
	def, _ = unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, algo); err != nil {
		return def, err
	}
	return def, nil
}
