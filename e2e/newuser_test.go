package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/transport"
)

// repoRoot is the repository's top directory (tests run in e2e/).
const repoRoot = ".."

// TestStaticBuildVersion: the README's static build gives a statically
// linked binary whose "warren version" names the commit it was built from
// (when the build can see the commit: a clone with a .git directory).
func TestStaticBuildVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary again")
	}
	bin := filepath.Join(t.TempDir(), "warren")
	// As the README says, plus -buildvcs=true: GOFLAGS may turn stamping
	// off, and it must not silently fail here.
	build := exec.Command("go", "build", "-buildvcs=true", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/warren")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	elf, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(elf), "ld-linux") {
		t.Errorf("the static build names a dynamic loader")
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(bin, args...).Output()
		if err != nil {
			t.Fatalf("warren %s: %v", args[0], err)
		}
		line := string(out)
		if !strings.HasPrefix(line, "warren ") || strings.Count(line, "\n") != 1 {
			t.Fatalf("warren %s printed %q, want one line", args[0], line)
		}
		// Go stamps the commit only from a .git directory, not from a
		// worktree's .git file.
		if fi, err := os.Stat(filepath.Join(repoRoot, ".git")); err != nil || !fi.IsDir() {
			t.Logf("no .git directory: not checking the commit in %q", line)
			continue
		}
		head, err := exec.Command("git", "-C", repoRoot, "rev-parse", "HEAD").Output()
		if err != nil {
			t.Logf("git rev-parse: %v: not checking the commit in %q", err, line)
			continue
		}
		if want := "commit " + strings.TrimSpace(string(head))[:12]; !strings.Contains(line, want) {
			t.Errorf("warren %s printed %q, want it to name %q", args[0], line, want)
		}
	}
}

// TestSelfSignedWithoutPinHints: a client that does not pin the server's
// self-signed certificate gives up with the verification error and says
// how to pin it.
func TestSelfSignedWithoutPinHints(t *testing.T) {
	forEachTransport(t, func(t *testing.T, kind string) {
		srv := startServer(t, serverConfig(t, kind))
		cfg := clientConfig(srv, tokenOffice, client.Service{Name: "a", Target: "127.0.0.1:1", RemotePort: 0})
		cfg.TLS.Fingerprint = ""
		c := startClient(t, cfg)
		err := c.waitExit(t)
		if err == nil {
			t.Fatal("client without a pin connected to a self-signed server")
		}
		for _, want := range []string{"certificate", "--fingerprint sha256:", "warren fingerprint"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})
}

// TestQuickStart follows the README's quick start with the real binary:
// the token in $WARREN_TOKEN; the server prints a client command that
// connects as it stands; --admin on both sides serves status and health,
// and health says when the client is not ready; warren fingerprint prints
// what the server logged. The server's state directory follows the one
// rule, and a certificate left where quick mode used to keep it is a
// warning naming both.
func TestQuickStart(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	oldState := filepath.Join(home, ".local", "state", "warren")
	_, oldFP, _, err := transport.ServerTLS{}.Config(oldState)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	env := []string{"WARREN_TOKEN=" + tokenOffice, "STATE_DIRECTORY=" + state, "HOME=" + home, "XDG_STATE_HOME=", "WARREN_ADMIN_TOKEN="}
	port := strconv.Itoa(freeTCPPort(t))

	srvAdmin := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(t)))
	srv := startProc(t, env, "server", "--listen", "tcp://127.0.0.1:0", "--ports", port,
		"--public-address", "127.0.0.1", "--admin", srvAdmin, "--log-format", "json")
	fp := srv.waitLog("created self-signed certificate; clients pin it with [client.tls] fingerprint", "state_dir", state)["fingerprint"].(string)
	warn := srv.waitRecord("a warning about the other certificate", func(r map[string]any) bool {
		return r["level"] == "WARN" && r["other_state_dir"] == oldState
	})
	if warn["state_dir"] != state || warn["other_fingerprint"] != oldFP || warn["fingerprint"] != fp {
		t.Errorf("warning %v: want state_dir %s, other_fingerprint %s, fingerprint %s", warn, state, oldFP, fp)
	}

	line := srv.stdout.waitLine("warren client --server", srv.done)
	if line == "" {
		t.Fatalf("the server printed no client command; stdout:\n%s", srv.stdout.String())
	}
	args := strings.Fields(line)
	if strings.Contains(line, tokenOffice) || strings.Contains(line, "--token") {
		t.Fatalf("the client command %q carries the token", line)
	}
	if !strings.Contains(line, "--fingerprint "+fp) || !strings.Contains(line, "--service app="+port+":") {
		t.Errorf("client command %q: want the fingerprint and the port", line)
	}
	cliAdmin := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(t)))
	cli := startProc(t, env, append(args[1:], "--admin", cliAdmin, "--log-format", "json")...)
	cli.admin = admin.Client{Addr: cliAdmin}
	cli.waitStatus("a session", func(st admin.Status) bool { return st.Ready && st.Session != nil })

	warren := func(env []string, args ...string) (int, string) {
		cmd := exec.Command(warrenBin, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"health", "--admin", srvAdmin}, "ready"},
		{[]string{"health", "--admin", cliAdmin}, "ready"},
		{[]string{"status", "--admin", cliAdmin}, "warren client"},
		{[]string{"status", "--admin", srvAdmin}, "connected"},
	} {
		if code, out := warren(nil, c.args...); code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("warren %q: exit %d, %q; want 0 and %q", c.args, code, out, c.want)
		}
	}
	if code, out := warren([]string{"STATE_DIRECTORY=" + state}, "fingerprint"); code != 0 || strings.TrimSpace(out) != fp {
		t.Errorf("warren fingerprint: exit %d, %q; want %s", code, out, fp)
	}

	// The server goes; the client is alive but not ready.
	if code := srv.stop(syscall.SIGTERM); code != exitOK {
		t.Fatalf("server exited %d", code)
	}
	cli.waitStatus("no session", func(st admin.Status) bool { return !st.Ready })
	if code, out := warren(nil, "health", "--admin", cliAdmin); code != exitRuntime || !strings.Contains(out, "not ready") {
		t.Errorf("warren health of a client without a session: exit %d, %q; want 1, not ready", code, out)
	}
	if code, out := warren(nil, "health", "--live", "--admin", cliAdmin); code != 0 {
		t.Errorf("warren health --live of a running client: exit %d, %q", code, out)
	}
}

// freeTCPPort returns a loopback TCP port that was free a moment ago,
// and that no other call in this test binary returned: the kernel can
// hand the same port to two listeners opened and closed in turn, and
// TestDashboard's server then found its tunnel port given to a service
// too.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, dup := givenPorts.LoadOrStore(port, true); !dup {
			return port
		}
	}
	t.Fatal("no loopback TCP port not handed out before")
	return 0
}

// givenPorts are the ports freeTCPPort returned.
var givenPorts sync.Map

// TestMinimalExamples: examples/minimal-server.toml and
// examples/minimal-client.toml, as shipped, run from the repository root
// and carry an HTTP request on loopback: 127.0.0.1:8880 on the server to
// 127.0.0.1:8000 behind the client. Their ports are fixed, so they must be
// free.
func TestMinimalExamples(t *testing.T) {
	backendL, err := net.Listen("tcp", "127.0.0.1:8000")
	if err != nil {
		t.Fatalf("the examples publish 127.0.0.1:8000, which must be free for this test: %v", err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend=minimal path=%s", r.URL.Path)
	}), ReadHeaderTimeout: waitTimeout}
	go hs.Serve(backendL)
	t.Cleanup(func() { hs.Close() })

	json := []string{"--log-format", "json"}
	srv := startProcIn(t, repoRoot, nil, append([]string{"server", "-c", "examples/minimal-server.toml"}, json...)...)
	cli := startProcIn(t, repoRoot, nil, append([]string{"client", "-c", "examples/minimal-client.toml"}, json...)...)

	// The examples have no admin API: the service itself says when the
	// tunnel is up (the client retries until the server listens).
	hc := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	var resp *http.Response
	deadline := time.Now().Add(waitTimeout)
	for {
		if resp, err = hc.Get("http://127.0.0.1:8880/through"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET through the examples' tunnel: %v\nserver:\n%s\nclient:\n%s", err, srv.stderr(), cli.stderr())
		}
		time.Sleep(50 * time.Millisecond) // nothing to wait on but the port
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "backend=minimal") || !strings.Contains(string(body), "path=/through") {
		t.Fatalf("GET through the examples' tunnel: %s %q", resp.Status, body)
	}
	if code := cli.stop(syscall.SIGTERM); code != exitOK {
		t.Errorf("client exited %d", code)
	}
	if code := srv.stop(syscall.SIGTERM); code != exitOK {
		t.Errorf("server exited %d", code)
	}
}
