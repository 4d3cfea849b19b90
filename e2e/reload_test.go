package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/leaktest"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/session"
)

// TestServerReload: a reload removes one client (its session is closed
// and it is refused from then on) and adds another (which may connect),
// while a transfer through a client the reload leaves alone carries on
// intact in the same session. A reload that changes a restart-only key is
// refused and changes nothing.
func TestServerReload(t *testing.T) {
	leaktest.Check(t)
	const seed, size = 21, 2 << 20
	started := make(chan struct{})
	dl := backend(t, slowDownload(seed, size, 30*time.Millisecond, started))
	target := backend(t, echo)
	cfg := serverConfig(t, "tcp")
	srv := startServer(t, cfg)
	office := startClient(t, clientConfig(srv, tokenOffice, client.Service{Name: "dl", Target: dl}))
	other := startClient(t, clientConfig(srv, tokenOther, client.Service{Name: "echo", Target: target}))
	office.waitSession(t, 1)
	other.waitSession(t, 1)
	c := dialPublic(t, office.publicAddr(t, "dl"))
	<-started

	bad := cfg
	bad.PublicAddress = "0.0.0.0"
	if err := srv.Reload(bad); err == nil || !strings.Contains(err.Error(), "server.public_address changed") {
		t.Fatalf("reload changing public_address: %v, want it refused naming the key", err)
	}

	const tokenThird = "third-token-0123456789abcdef"
	next := cfg
	next.Clients = []server.Client{cfg.Clients[0], {Name: "third", Token: tokenThird, Ports: cfg.Clients[0].Ports}}
	if err := srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	srv.logs.waitFor(t, "configuration reloaded", "added=[third]", "removed_or_rotated=[other]")
	err := other.waitExit(t)
	var rej *session.RejectError
	if !errors.As(err, &rej) || rej.Code != session.CodeUnknownToken {
		t.Fatalf("removed client ended with %v, want its token refused", err)
	}
	third := startClient(t, clientConfig(srv, tokenThird, client.Service{Name: "echo", Target: target}))
	third.waitSession(t, 1)
	roundTrip(t, third.publicAddr(t, "echo"))

	checkDownload(t, c, seed, size)
	c.Close()
	if st := office.Status(); st.Sessions != 1 || !st.Connected {
		t.Errorf("the untouched client: %d sessions, connected %v; want its first session still up", st.Sessions, st.Connected)
	}
}

// TestClientReload: services added to and removed from a running client
// are claimed on its live session, while a transfer through a service the
// reload keeps carries on intact; a reload the server refuses leaves the
// old services in place.
func TestClientReload(t *testing.T) {
	leaktest.Check(t)
	forEachTransport(t, func(t *testing.T, kind string) {
		const seed, size = 22, 2 << 20
		started := make(chan struct{})
		dl := backend(t, slowDownload(seed, size, 30*time.Millisecond, started))
		target := backend(t, echo)
		srv := startServer(t, serverConfig(t, kind))
		ccfg := clientConfig(srv, tokenOffice, client.Service{Name: "dl", Target: dl})
		cli := startClient(t, ccfg)
		cli.waitSession(t, 1)
		c := dialPublic(t, cli.publicAddr(t, "dl"))
		<-started

		added := ccfg
		added.Services = append([]client.Service{}, ccfg.Services...)
		added.Services = append(added.Services, client.Service{Name: "echo", Target: target})
		if err := cli.Reload(added); err != nil {
			t.Fatal(err)
		}
		echoAddr := cli.publicAddr(t, "echo")
		roundTrip(t, echoAddr)

		refused := added
		refused.Services = append([]client.Service{}, added.Services...)
		refused.Services = append(refused.Services, client.Service{Name: "low", Target: target, RemotePort: 80})
		err := cli.Reload(refused)
		var rej *session.RejectError
		if !errors.As(err, &rej) || rej.Code != session.CodePortNotAllowed {
			t.Fatalf("reload claiming port 80: %v, want port_not_allowed", err)
		}
		roundTrip(t, echoAddr) // the old claims stay

		if err := cli.Reload(ccfg); err != nil { // echo removed again
			t.Fatal(err)
		}
		if c2, err := net.Dial("tcp", echoAddr); err == nil {
			c2.Close()
			t.Error("a removed service's port still accepts connections")
		}

		checkDownload(t, c, seed, size)
		c.Close()
		if st := cli.Status(); st.Sessions != 1 || !st.Connected {
			t.Errorf("%d sessions, connected %v; want the first session still up", st.Sessions, st.Connected)
		}
	})
}

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
	p.waitLog("configuration reloaded", "clients", "2")

	target := backend(t, echo)
	_, port := binClient(t, dir, "tcp", addrs["tcp"], fp, tokenOffice, target, 0)
	roundTrip(t, net.JoinHostPort("127.0.0.1", fmt.Sprint(port)))
	nc := startProc(t, []string{"WARREN_TEST_TOKEN=" + tokenNew}, "client", "-c", writeFile(t, dir, "new.toml", fmt.Sprintf(`
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
	nc.waitLog("session up")
}

// TestClientReloadKeepsAnyPortFree: after a reload, a service that asked
// for any port still does: when its old port is taken while the server
// restarts, the client takes another instead of giving up, and a service
// a reload gives a fixed port asks for that one.
func TestClientReloadKeepsAnyPortFree(t *testing.T) {
	leaktest.Check(t)
	target := backend(t, echo)
	cfg := serverConfig(t, "tcp")
	srv := startServer(t, cfg)
	ccfg := clientConfig(srv, tokenOffice, client.Service{Name: "any", Target: target}, client.Service{Name: "fixed", Target: target})
	cli := startClient(t, ccfg)
	cli.waitSession(t, 1)
	anyPort := cli.port(t, "any")
	fixed := deadAddr(t)
	_, fixedPort, _ := net.SplitHostPort(fixed)

	next := ccfg
	next.Services = []client.Service{{Name: "any", Target: target}, {Name: "fixed", Target: target, RemotePort: atoi(t, fixedPort)}}
	if err := cli.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := cli.port(t, "fixed"); got != atoi(t, fixedPort) {
		t.Fatalf("fixed: port %d after the reload, want %s", got, fixedPort)
	}

	srv.stop()
	squat, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(anyPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer squat.Close()
	cfg.Listen[0].Address = srv.addr()
	startServer(t, cfg)
	cli.waitSession(t, 2)
	if got := cli.port(t, "any"); got == anyPort {
		t.Fatalf("any: port %d, which is taken", got)
	}
	if got := cli.port(t, "fixed"); got != atoi(t, fixedPort) {
		t.Fatalf("fixed: port %d after reconnecting, want %s", got, fixedPort)
	}
	roundTrip(t, cli.publicAddr(t, "any"))
}

// TestServerReloadConcurrent: reloads from SIGHUP and the admin API may
// run at once; they are applied one after the other.
func TestServerReloadConcurrent(t *testing.T) {
	leaktest.Check(t)
	cfg := serverConfig(t, "tcp")
	srv := startServer(t, cfg)
	done := make(chan error, 2)
	for i := range 2 {
		go func() {
			next := cfg
			next.Clients = append([]server.Client{}, cfg.Clients...)
			next.Clients = append(next.Clients, server.Client{Name: fmt.Sprintf("extra%d", i), Token: fmt.Sprintf("extra-token-%d-0123456789", i), Ports: cfg.Clients[0].Ports})
			done <- srv.Reload(next)
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
