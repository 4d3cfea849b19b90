//go:build !unix

package client

import "net"

// pollRead is not available here: each datagram is a write of its own.
func pollRead(net.Conn) func(p []byte) (int, error) { return nil }

var errNoDatagram error
