//go:build !linux

package transport

import "syscall"

// setNotSentLowat does nothing: TCP_NOTSENT_LOWAT is Linux's (others have
// it under other names and semantics; the control lane still goes first).
func setNotSentLowat(syscall.RawConn) error { return nil }
