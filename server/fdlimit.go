package server

import (
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/warren-tunnel/warren/clock"
)

// outOfFDs reports whether err is the process (EMFILE) or the system
// (ENFILE) running out of file descriptors: temporary, unlike a port
// another process holds, since descriptors come back as connections close.
func outOfFDs(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// fdWarnEvery: while descriptors stay short, the warning is repeated at
// most this often, however many binds and accepts fail meanwhile.
const fdWarnEvery = time.Minute

// fdWarner logs running out of file descriptors once, with the limit and
// how many binds and accepts failed since the last warning, rather than
// once per failure (a reconnect storm fails thousands).
type fdWarner struct {
	clock clock.Clock
	log   *slog.Logger

	mu     sync.Mutex
	last   time.Time // the last warning, zero before the first
	failed int       // failures since then
}

// fail counts one failure for want of descriptors in what ("bind",
// "accept") and logs it if it is the first for fdWarnEvery.
func (w *fdWarner) fail(what string, err error) {
	w.mu.Lock()
	w.failed++
	now := w.clock.Now()
	if !w.last.IsZero() && now.Sub(w.last) < fdWarnEvery {
		w.mu.Unlock()
		return
	}
	n := w.failed
	w.last, w.failed = now, 0
	w.mu.Unlock()
	soft, hard := fdLimit()
	w.log.Warn("out of file descriptors: public ports and connections are refused until some close; raise the open files limit (ulimit -n, LimitNOFILE=)",
		"op", what, "err", err, "failed", n, "open_files_soft", soft, "open_files_hard", hard)
}
