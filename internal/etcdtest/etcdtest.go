// Package etcdtest runs a real etcd for tests: Debian's etcd-server (the
// `etcd` binary, or $WARREN_ETCD), as a child process on free loopback
// ports with its data in the test's temp dir. No mock of etcd's semantics:
// leases, transactions and watches are etcd's own.
//
// Without an etcd binary a test that asks for one is skipped, unless CI
// is set: there it fails (.ci/run installs the Debian package
// etcd-server).
package etcdtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// startTimeout bounds how long etcd may take to answer its health check
// after it was started; a cold start takes about 0.3 s here.
const startTimeout = 30 * time.Second

// Etcd is one single-member etcd cluster run by a test.
type Etcd struct {
	t      testing.TB
	bin    string
	dir    string
	client string // http://127.0.0.1:port
	peer   string
	tls    *TLS

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has exited
	log  *logBuffer
}

// TLS makes etcd serve its clients over TLS, with the server certificate
// CertFile/KeyFile; with ClientCA set it requires client certificates
// signed by it.
type TLS struct {
	CertFile, KeyFile, ClientCA string
	// client is the certificate the health check presents (NewTLS).
	client *Files
}

// Binary returns the path of the etcd binary, or "" when there is none.
func Binary() string {
	if p := os.Getenv("WARREN_ETCD"); p != "" {
		return p
	}
	p, _ := exec.LookPath("etcd")
	return p
}

// Start runs an etcd until the test ends (or Stop). serverTLS may be nil
// (plain HTTP).
func Start(t testing.TB, serverTLS *TLS) *Etcd {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but no etcd was found (PATH, $WARREN_ETCD): .ci/run installs the Debian package etcd-server")
		}
		t.Skip("no etcd binary (install Debian's etcd-server, or set $WARREN_ETCD)")
	}
	scheme := "http"
	if serverTLS != nil {
		scheme = "https"
	}
	e := &Etcd{t: t, bin: bin, dir: filepath.Join(t.TempDir(), "etcd"), tls: serverTLS}
	cp, pp := freePort(t), freePort(t)
	e.client = fmt.Sprintf("%s://127.0.0.1:%d", scheme, cp)
	e.peer = fmt.Sprintf("http://127.0.0.1:%d", pp)
	t.Cleanup(e.Stop)
	e.Start()
	return e
}

// Endpoints are the client URLs to give an etcd client.
func (e *Etcd) Endpoints() []string { return []string{e.client} }

// Start starts etcd again after Stop, on the same ports and data: what
// was written before Stop is still there, and leases live on (etcd
// renews them when it starts). It returns once etcd answers its health
// check.
func (e *Etcd) Start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		return
	}
	args := []string{
		"--name", "test",
		"--data-dir", e.dir,
		"--listen-client-urls", e.client,
		"--advertise-client-urls", e.client,
		"--listen-peer-urls", e.peer,
		"--initial-advertise-peer-urls", e.peer,
		"--initial-cluster", "test=" + e.peer,
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
	}
	if e.tls != nil {
		args = append(args, "--cert-file", e.tls.CertFile, "--key-file", e.tls.KeyFile)
		if e.tls.ClientCA != "" {
			args = append(args, "--trusted-ca-file", e.tls.ClientCA, "--client-cert-auth")
		}
	}
	cmd := exec.Command(e.bin, args...)
	if runtime.GOARCH != "amd64" {
		// etcd 3.4 refuses to start on arm64 without this.
		cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	}
	e.log = &logBuffer{}
	cmd.Stdout, cmd.Stderr = e.log, e.log
	// The child dies with the test binary, whatever kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("etcdtest: start %s: %v", e.bin, err)
	}
	exit := make(chan struct{})
	go func() { cmd.Wait(); close(exit) }()
	e.cmd, e.exit = cmd, exit
	if err := e.waitHealthy(exit); err != nil {
		e.stopLocked()
		e.t.Fatalf("etcdtest: %v\netcd's log:\n%s", err, e.log.String())
	}
}

// Stop stops etcd (SIGTERM, then SIGKILL after 10 s) and waits for it to
// exit. Clients see it unreachable until Start. Stop is idempotent.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopLocked()
}

func (e *Etcd) stopLocked() {
	if e.cmd == nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exit:
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-e.exit
	}
	e.cmd, e.exit = nil, nil
}

// waitHealthy polls etcd's /health endpoint until it says true, etcd
// exits, or startTimeout passes.
func (e *Etcd) waitHealthy(exit <-chan struct{}) error {
	hc := &http.Client{Timeout: time.Second}
	if e.tls != nil {
		// Only to see it up; the clients under test verify it.
		tc := &tls.Config{InsecureSkipVerify: true}
		if f := e.tls.client; f != nil {
			cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
			if err != nil {
				return err
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		hc.Transport = &http.Transport{TLSClientConfig: tc}
	}
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.client+"/health", nil)
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if strings.Contains(string(body), `"health":"true"`) {
				cancel()
				return nil
			}
			err = fmt.Errorf("health: %s", body)
		}
		cancel()
		last = err
		select {
		case <-exit:
			return errors.New("etcd exited at start")
		case <-tick.C:
		}
	}
	return fmt.Errorf("etcd not healthy after %v: %v", startTimeout, last)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// logBuffer keeps etcd's log for a failure message, capped at 64 KiB.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 64<<10 - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// Client returns a plain (no TLS) etcd client of e, closed when the test
// ends.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
