//go:build !linux

package session

import (
	"errors"
	"syscall"
)

// poller is Linux-only (epoll); elsewhere relays keep one goroutine per
// direction, and newPoller says so.
type poller struct{}

var errPollerClosed = errors.New("no poller on this platform")

func newPoller() (*poller, error) { return nil, errPollerClosed }

func (p *poller) arm(syscall.RawConn, bool, func()) (uint64, error) { return 0, errPollerClosed }
func (p *poller) disarm(syscall.RawConn, uint64) bool               { return false }
func (p *poller) close()                                            {}
