package e2e

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
)

// TestBinaryVisitorServingClientKilled runs the real binary as a server and
// two clients: office serves a private service, laptop visits it. Office is
// killed (SIGKILL): the visitor connection open through it ends (it does not
// hang), and a new one made while office is gone is refused cleanly, with
// no byte, while laptop's listener stays up. Office started again: new
// visitor connections succeed.
func TestBinaryVisitorServingClientKilled(t *testing.T) {
	dir := t.TempDir()
	target := backend(t, echo)
	srvAdmin := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(t)))
	// reconnect_grace 0: office's private route goes with its session, so
	// a visitor connection while it is away is refused, not held.
	cfg := writeFile(t, dir, "server.toml", fmt.Sprintf(`
[server]
public_address = "127.0.0.1"
state_dir = %q
heartbeat_interval = "200ms"
heartbeat_misses = 3
reconnect_grace = "0s"
shutdown_timeout = "5s"
[[server.listen]]
transport = "tcp"
address = "127.0.0.1:0"
[[server.listen]]
transport = "kcp"
address = "127.0.0.1:0"
[[server.clients]]
name = "office"
token = %q
[[server.clients]]
name = "laptop"
token = %q
visit = ["office/*"]
[server.log]
level = "debug"
format = "json"
[server.admin]
address = %q
`, filepath.Join(dir, "state"), tokenOffice, tokenOther, srvAdmin))
	srv, st := startReadyServer(t, cfg, srvAdmin)
	addrs := map[string]string{}
	for _, l := range st.Listeners {
		addrs[l.Transport] = l.Address
	}

	for _, kind := range transports {
		t.Run(kind, func(t *testing.T) {
			// common is a client's config but its token and tables.
			common := func(token string) string {
				return fmt.Sprintf(`
[client]
server = %q
transport = %q
token = %q
heartbeat_interval = "200ms"
heartbeat_misses = 3
shutdown_timeout = "5s"
[client.tls]
fingerprint = %q
[client.log]
level = "debug"
format = "json"
`, addrs[kind+"+tls"], kind, token, st.Fingerprint)
			}
			officeAdmin := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(t)))
			officeCfg := writeFile(t, dir, "office-"+kind+".toml", common(tokenOffice)+fmt.Sprintf(`
[[client.services]]
name = "db"
target = %q
private = true
[client.admin]
address = %q
`, target, officeAdmin))
			startOffice := func() *proc {
				p := startProc(t, nil, "client", "-c", officeCfg)
				p.admin = admin.Client{Addr: officeAdmin}
				p.waitStatus("office's session", func(st admin.Status) bool { return st.Ready && st.Session != nil })
				return p
			}
			office := startOffice()
			bind := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(t)))
			laptopAdmin := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(t)))
			laptop := startProc(t, nil, "client", "-c", writeFile(t, dir, "laptop-"+kind+".toml", common(tokenOther)+fmt.Sprintf(`
[[client.visitors]]
name = "db"
service = "office/db"
bind = %q
[client.admin]
address = %q
`, bind, laptopAdmin)))
			laptop.admin = admin.Client{Addr: laptopAdmin}
			laptop.waitStatus("laptop's session", func(st admin.Status) bool { return st.Ready && st.Session != nil })
			roundTrip(t, bind)

			// A visitor connection open while office is killed.
			c := dialPublic(t, bind)
			c.SetDeadline(time.Now().Add(waitTimeout))
			msg := []byte("before the kill")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			if got := make([]byte, len(msg)); func() error { _, err := io.ReadFull(c, got); return err }() != nil || string(got) != string(msg) {
				t.Fatalf("echo before the kill: %q", got)
			}
			office.cmd.Process.Kill()
			office.wait()
			start := time.Now()
			if err := isClosed(c, 5*time.Second); err != nil {
				t.Fatalf("visitor connection survived its serving client: %v", err)
			}
			t.Logf("visitor connection closed %v after the kill", time.Since(start).Round(time.Millisecond))
			srv.waitStatus("office's session gone", func(st admin.Status) bool { return !sessionOn(st, "office", kind+"+tls") })

			// A new one while office is gone: accepted by laptop's listener,
			// refused by the server, closed with no byte, never hung.
			c2 := dialPublic(t, bind)
			c2.SetDeadline(time.Now().Add(waitTimeout))
			c2.Write([]byte("x"))
			if n, err := c2.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
				t.Fatalf("a visitor connection while the service is gone: %d bytes, %v", n, err)
			}
			laptop.waitLog("visitor connection closed", "service", "office/db")
			if !sessionOn(srv.waitStatus("laptop still up", func(st admin.Status) bool { return sessionOn(st, "laptop", kind+"+tls") }), "laptop", kind+"+tls") {
				t.Fatal("laptop's session went with office's")
			}

			office = startOffice()
			roundTrip(t, bind)
			c3 := dialPublic(t, bind)
			c3.SetDeadline(time.Now().Add(waitTimeout))
			const size = 4 << 20
			sent := make(chan error, 1)
			go func() {
				_, err := randomStream(c3, 17, size)
				c3.CloseWrite()
				sent <- err
			}()
			got, n, err := sumAll(c3)
			if want := sha256.Sum256(streamBytes(17, size)); err != nil || n != size || got != want || <-sent != nil {
				t.Fatalf("4 MiB through the visitor after the restart: %d bytes, %v", n, err)
			}
			c3.Close()
			office.stop(syscall.SIGTERM)
			laptop.stop(syscall.SIGTERM)
		})
	}
	srv.stop(syscall.SIGTERM)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
