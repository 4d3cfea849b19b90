package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-tunnel/warren/client"
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
