// Package leaktest fails a test that leaves goroutines behind.
//
// Use it in tests that do not call t.Parallel: goroutines of tests running
// alongside would count as leaks.
package leaktest

import (
	"bytes"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// Timeout is how long Check waits for goroutines to exit before failing.
var Timeout = 10 * time.Second

// ignored are stacks of goroutines that outlive any one test by design.
var ignored = []string{
	"testing.(*T).Run",
	"testing.(*M).",
	"testing.tRunner",
	"runtime.goexit0",
	"os/signal.signal_recv",
	"os/signal.loop",
	// kcp-go's timed scheduler, shared by all sessions of the process.
	"kcp-go/v5.(*TimedSched)",
}

// Check records the goroutines running now and registers a cleanup that
// waits until every goroutine started since has exited, failing t with the
// stacks of those still running after Timeout.
func Check(t testing.TB) {
	t.Helper()
	before := goroutines()
	t.Cleanup(func() {
		deadline := time.Now().Add(Timeout)
		var leaked []string
		for {
			leaked = leaked[:0]
			for id, stack := range goroutines() {
				if _, ok := before[id]; !ok && !isIgnored(stack) {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		slices.Sort(leaked)
		t.Errorf("%d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	})
}

// Count returns how many goroutines are running that are not ignored.
func Count() int {
	n := 0
	for _, stack := range goroutines() {
		if !isIgnored(stack) {
			n++
		}
	}
	return n
}

func isIgnored(stack string) bool {
	for _, s := range ignored {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}

// goroutines returns the stacks of all goroutines but the caller's, by
// goroutine header ("goroutine 7 [chan receive]:" -> "7").
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for i, g := range bytes.Split(buf, []byte("\n\n")) {
		if i == 0 { // the calling goroutine
			continue
		}
		header, _, _ := strings.Cut(string(g), "\n")
		id, _, _ := strings.Cut(strings.TrimPrefix(header, "goroutine "), " ")
		out[id] = string(g)
	}
	return out
}
