package transport

import (
	"fmt"
	"syscall"
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
