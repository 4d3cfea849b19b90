package transport

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTCPNotSentLowat: both ends of a tunnel connection, with or without a
// congestion control set, bound what their socket holds unsent, so a
// control frame waits behind little.
func TestTCPNotSentLowat(t *testing.T) {
	for _, tr := range []*TCP{{}, {Congestion: "reno"}} {
		c, s := tcpPair(t, tr)
		for name, conn := range map[string]net.Conn{"dialed": c, "accepted": s} {
			if got := lowatOf(t, conn); got != notSentLowat {
				t.Errorf("%s connection: TCP_NOTSENT_LOWAT %d, want %d", name, got, notSentLowat)
			}
		}
	}
}

func lowatOf(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := rawConn(c).(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT) })
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}
