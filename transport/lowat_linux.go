package transport

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// notSentLowat caps the bytes a tunnel's TCP socket holds not yet sent
// (TCP_NOTSENT_LOWAT): a write waits while more are queued. Bytes in flight
// are not counted, so throughput is unchanged, but a control frame, which
// the session writes ahead of data (session/lane.go), waits behind at most
// this much plus one frame: at 10 Mbit/s, about 0.1 s.
const notSentLowat = 128 << 10

// setNotSentLowat applies notSentLowat to a TCP socket.
func setNotSentLowat(rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
	})
	if err == nil {
		err = serr
	}
	return err
}
