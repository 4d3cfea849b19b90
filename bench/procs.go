package main

// Child processes: the warren server and client, the backend, the load
// generator, and (lossy mode) tcpbench. Each may run in a network
// namespace ("ip netns exec NS CMD" execs CMD in place, so the PID we get is
// the measured process's). Every process started is tracked and killed by
// killAll, which main runs on every exit path.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
	err   error
	log   string
}

var (
	procsMu  sync.Mutex
	procs    []*proc
	stopping bool // set by shutdown: no new processes
)

// startProc starts argv (in netns ns unless empty) with its stderr (and,
// unless stdout is wanted, its stdout) in logDir/name.log.
func startProc(name, ns, logDir string, wantStdout bool, env []string, argv ...string) (*proc, io.Reader, error) {
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	logPath := filepath.Join(logDir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(lf, "=== %s %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd.Stderr = lf
	var out io.Reader
	if wantStdout {
		r, err := cmd.StdoutPipe()
		if err != nil {
			lf.Close()
			return nil, nil, err
		}
		out = r
	} else {
		cmd.Stdout = lf
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		lf.Close()
		return nil, nil, err
	}
	// Started and tracked under the lock, so that shutdown, once it has
	// the lock, misses no process and lets none start after it.
	procsMu.Lock()
	defer procsMu.Unlock()
	if stopping {
		lf.Close()
		return nil, nil, fmt.Errorf("start %s: stopping", name)
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, stdin: stdin, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	procs = append(procs, p)
	return p, out, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end (closes its stdin, sends SIGTERM), waits
// up to grace, then kills it.
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	p.stdin.Close()
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
	procsMu.Lock()
	for i, q := range procs {
		if q == p {
			procs = append(procs[:i], procs[i+1:]...)
			break
		}
	}
	procsMu.Unlock()
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// shutdown stops every process still tracked and lets no new one start.
func shutdown() {
	procsMu.Lock()
	stopping = true
	procsMu.Unlock()
	killAll()
}

func isStopping() bool {
	procsMu.Lock()
	defer procsMu.Unlock()
	return stopping
}

// killAll kills every process still tracked, by its PID.
func killAll() {
	procsMu.Lock()
	ps := append([]*proc(nil), procs...)
	procsMu.Unlock()
	for _, p := range ps {
		p.stop(2 * time.Second)
	}
}

// lgClient drives a load generator process over its stdin/stdout.
type lgClient struct {
	p   *proc
	enc *json.Encoder
	sc  *bufio.Scanner
}

func startLoadgen(self, ns, logDir string) (*lgClient, error) {
	p, out, err := startProc("loadgen", ns, logDir, true, nil, self, "_loadgen")
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	lg := &lgClient{p: p, enc: json.NewEncoder(p.stdin), sc: sc}
	if _, err := lg.do(lgRequest{Op: "ping"}, nil); err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	return lg, nil
}

// do sends one request and waits for its result, calling onEvent for each
// event on the way.
func (lg *lgClient) do(req lgRequest, onEvent func(string)) (*lgResult, error) {
	if err := lg.enc.Encode(req); err != nil {
		return nil, fmt.Errorf("load generator: %w (log: %s)", err, lg.p.tail())
	}
	for lg.sc.Scan() {
		var r lgResponse
		if err := json.Unmarshal(lg.sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("load generator said %q: %w", lg.sc.Text(), err)
		}
		if r.Event != "" {
			if onEvent != nil {
				onEvent(r.Event)
			}
			continue
		}
		if r.Error != "" {
			return r.Result, errors.New(r.Error)
		}
		return r.Result, nil
	}
	return nil, fmt.Errorf("load generator exited (log: %s)", lg.p.tail())
}

// startBackend starts a backend listening on addr and returns the address
// it listens on.
func startBackend(self, ns, logDir, addr string) (*proc, string, error) {
	return startListenerIn(ns, logDir, "backend", self, "_backend", "-listen", addr)
}

// startListener starts a process of this binary (argv after self) that
// prints "LISTEN addr" once it listens, and returns that address.
func startListener(self, logDir, name string, args ...string) (*proc, string, error) {
	return startListenerIn("", logDir, name, append([]string{self}, args...)...)
}

func startListenerIn(ns, logDir, name string, argv ...string) (*proc, string, error) {
	p, out, err := startProc(name, ns, logDir, true, nil, argv...)
	if err != nil {
		return nil, "", err
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "LISTEN "); ok {
				line <- a
			}
		}
	}()
	select {
	case a := <-line:
		return p, a, nil
	case <-p.done:
		return nil, "", fmt.Errorf("%s exited: %s", name, p.tail())
	case <-time.After(10 * time.Second):
		return nil, "", fmt.Errorf("%s did not start: %s", name, p.tail())
	}
}
