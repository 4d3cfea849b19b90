//go:build !linux

package relay

import "net"

// connReset is Linux's (TCP_INFO); elsewhere a relay stuck writing into a
// stream notices its connection reset only when the write ends.
func connReset(net.Conn) bool { return false }
