//go:build !linux

package relay

import (
	"errors"
	"syscall"
)

// Poller is Linux-only (epoll); elsewhere relays keep one goroutine per
// direction, and Acquire returns nil.
type Poller struct{}

var errPollerClosed = errors.New("no poller on this platform")

func newPoller() (*Poller, error) { return nil, errPollerClosed }

// Acquire returns nil: there is no poller here.
func Acquire() (*Poller, func()) { return nil, func() {} }

func (p *Poller) arm(syscall.RawConn, bool, func()) (uint64, error) { return 0, errPollerClosed }
func (p *Poller) disarm(syscall.RawConn, uint64) bool               { return false }
func (p *Poller) close()                                            {}
