package server

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/session"
)

// A bind failing for want of file descriptors is a temporary refusal
// (limit) naming the limit, which the client retries; any other bind
// failure is the port being unavailable (port_in_use), which stops it.
func TestBindRefusal(t *testing.T) {
	bindErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", errno)}
	}
	for _, tc := range []struct {
		name   string
		err    error
		port   int // 0: any free port of the client's ranges
		code   string
		reason string
	}{
		{"in use", bindErr(syscall.EADDRINUSE), 20001, session.CodePortInUse, "port in use"},
		{"denied", bindErr(syscall.EACCES), 20001, session.CodePortInUse, "port in use"},
		{"process out of fds", bindErr(syscall.EMFILE), 20001, session.CodeLimit, "out of file descriptors (open files limit"},
		{"system out of fds", bindErr(syscall.ENFILE), 20001, session.CodeLimit, "out of file descriptors"},
		{"any port, in use", bindErr(syscall.EADDRINUSE), 0, session.CodePortInUse, "none of client \"office\"'s ports"},
		{"any port, out of fds", bindErr(syscall.EMFILE), 0, session.CodeLimit, "any free port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			var logged bytes.Buffer
			f.tb.fds = &fdWarner{clock: f.clock, log: slog.New(slog.NewTextHandler(&logged, nil))}
			binds := 0
			f.tb.bind = func(bool, int) (socket, error) { binds++; return socket{}, tc.err }
			_, _, rej := f.tb.claim(f.session(f.office, "a", ""), []session.Service{svc("web", tc.port)})
			if rej == nil || rej.Code != tc.code || !strings.Contains(rej.Reason, tc.reason) {
				t.Fatalf("refusal %v, want %s saying %q", rej, tc.code, tc.reason)
			}
			if rej.Temporary() != (tc.code == session.CodeLimit) {
				t.Errorf("Temporary() = %v", rej.Temporary())
			}
			if tc.code == session.CodeLimit && binds != 1 {
				t.Errorf("%d binds out of descriptors, want 1: the search stops at the first", binds)
			}
			// Logged once, with the limit, however many claims fail.
			f.tb.claim(f.session(f.office, "b", ""), []session.Service{svc("web", tc.port)})
			warns := strings.Count(logged.String(), "out of file descriptors")
			if want := map[bool]int{true: 1, false: 0}[tc.code == session.CodeLimit]; warns != want {
				t.Errorf("%d warnings, want %d:\n%s", warns, want, logged.String())
			}
			if tc.code == session.CodeLimit && !strings.Contains(logged.String(), "open_files_soft=") {
				t.Errorf("warning without the limit: %s", logged.String())
			}
		})
	}
}

// The accept loop's wait doubles while descriptors stay short, capped.
func TestAcceptWait(t *testing.T) {
	for fails, want := range []time.Duration{acceptBackoff, acceptBackoff, 2 * acceptBackoff, 4 * acceptBackoff, 8 * acceptBackoff, 16 * acceptBackoff, acceptBackoffMax, acceptBackoffMax} {
		if got := acceptWait(fails); got != want {
			t.Errorf("acceptWait(%d) = %v, want %v", fails, got, want)
		}
	}
}
