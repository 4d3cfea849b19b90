package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/warren-tunnel/warren/admin"
)

// TestBinaryReloadOnSIGHUP: the real binary reloads its config file on
// SIGHUP; a broken file is refused with its reason and the server keeps
// running on the old one.
func TestBinaryReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	p, addrs, fp := binServer(t, dir, "127.0.0.1:0", "127.0.0.1:0")
	path := filepath.Join(dir, "server.toml")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// A refused SIGHUP is told only in the log: these two wait on it.
	os.WriteFile(path, []byte(string(orig)+"\n[[server.clients\n"), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog("reload rejected; the running configuration stays")

	os.WriteFile(path, []byte(strings.Replace(string(orig), `level = "debug"`, `level = "info"`, 1)), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitRecord("a log level change refused", func(r map[string]any) bool {
		err, _ := r["err"].(string)
		return r["msg"] == "reload rejected; the running configuration stays" && strings.Contains(err, "server.log changed")
	})

	const tokenNew = "new-client-token-0123456789"
	os.WriteFile(path, []byte(string(orig)+fmt.Sprintf("\n[[server.clients]]\nname = \"new\"\ntoken = %q\nports = [\"1024-65535\"]\n", tokenNew)), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitStatus("client new configured", func(st admin.Status) bool {
		return len(st.Clients) == 2 && slices.ContainsFunc(st.Clients, func(c admin.ClientStatus) bool { return c.Name == "new" })
	})

	target := backend(t, echo)
	_, port := binClient(t, dir, "tcp", addrs["tcp"], fp, tokenOffice, target, 0)
	roundTrip(t, net.JoinHostPort("127.0.0.1", fmt.Sprint(port)))
	startProc(t, []string{"WARREN_TEST_TOKEN=" + tokenNew}, "client", "-c", writeFile(t, dir, "new.toml", fmt.Sprintf(`
[client]
server = %q
transport = "tcp"
token_env = "WARREN_TEST_TOKEN"
[client.tls]
fingerprint = %q
[[client.services]]
name = "echo"
target = %q
[client.log]
format = "json"
`, addrs["tcp"], fp, target)))
	p.waitStatus("client new's session", func(st admin.Status) bool { return sessionOn(st, "new", "tcp+tls") })
}
