package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The test binary doubles as helper processes, so that a test needing more
// sockets than one process may open spreads them over several. TestMain
// runs the helper named by $WARREN_E2E_HELPER instead of the tests.

// runHelper runs a helper until its stdin closes and returns the exit code.
func runHelper(mode string) int {
	switch mode {
	case "echo":
		return helperEcho()
	case "dial":
		return helperDial()
	}
	fmt.Fprintln(os.Stderr, "unknown helper", mode)
	return 2
}

// helperEcho serves echo on a loopback port it prints.
func helperEcho() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println(l.Addr())
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Not io.Copy: TCP to TCP it splices through a pipe, two
				// more descriptors per connection.
				buf := make([]byte, 512)
				io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// helperDial opens $WARREN_E2E_N connections to $WARREN_E2E_ADDR, each
// proven by an echoed byte, prints "ok", holds them until stdin closes,
// then closes them all.
func helperDial() int {
	addr := os.Getenv("WARREN_E2E_ADDR")
	n, _ := strconv.Atoi(os.Getenv("WARREN_E2E_N"))
	conns := make([]net.Conn, n)
	var (
		mu     sync.Mutex
		next   int
		failed error
		wg     sync.WaitGroup
	)
	for range 32 {
		wg.Go(func() {
			b := make([]byte, 1)
			for {
				mu.Lock()
				k := next
				next++
				stop := failed != nil
				mu.Unlock()
				if k >= n || stop {
					return
				}
				c, err := net.DialTimeout("tcp", addr, waitTimeout)
				if err == nil {
					conns[k] = c
					c.SetDeadline(time.Now().Add(waitTimeout))
					if _, err = c.Write([]byte{byte(k)}); err == nil {
						_, err = io.ReadFull(c, b)
					}
					if err == nil && b[0] != byte(k) {
						err = fmt.Errorf("echoed %d, sent %d", b[0], byte(k))
					}
					c.SetDeadline(time.Time{})
				}
				if err != nil {
					mu.Lock()
					failed = fmt.Errorf("connection %d: %w", k, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if failed != nil {
		fmt.Println("error", failed)
	} else {
		fmt.Println("ok")
	}
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	return 0
}

// helperProc is a running helper.
type helperProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	done  chan struct{}
}

func startHelper(t *testing.T, mode string, env ...string) *helperProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), "WARREN_E2E_HELPER="+mode), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helperProc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		h.stop()
		select {
		case <-h.done:
		case <-time.After(waitTimeout):
			cmd.Process.Kill()
			<-h.done
		}
	})
	return h
}

// line reads the helper's next line of output.
func (h *helperProc) line(t *testing.T) string {
	t.Helper()
	s, err := h.out.ReadString('\n')
	if err != nil {
		t.Fatalf("helper %s: %v", h.cmd.Env[len(h.cmd.Env)-1], err)
	}
	return s[:len(s)-1]
}

// stop closes the helper's stdin: it cleans up and exits.
func (h *helperProc) stop() { h.stdin.Close() }

// filesOf counts a process's open file descriptors.
func filesOf(t *testing.T, pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}
