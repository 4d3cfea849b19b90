package e2e

import (
	"bytes"
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
	"github.com/warren-tunnel/warren/internal/testutil/harness"
)

// TestBinaryVisitorServingClientKilled runs the real binary as a server and
// two clients: office serves a private TCP and a private UDP service,
// laptop visits both. Office is killed (SIGKILL): the visitor connection
// open through it ends (it does not hang), and a new one made while office
// is gone is refused cleanly, with no byte, while laptop's listener stays
// up; the UDP visitor's flow ends, and a datagram sent meanwhile is not
// answered, its socket staying up. Office started again: new visitor
// connections succeed, and the same UDP source is answered again.
func TestBinaryVisitorServingClientKilled(t *testing.T) {
	dir := t.TempDir()
	target := backend(t, echo)
	udpTarget := udpEcho(t)
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
[[client.services]]
name = "dns"
target = %q
protocol = "udp"
private = true
[client.admin]
address = %q
`, target, udpTarget, officeAdmin))
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
[[client.visitors]]
name = "dns"
service = "office/dns"
bind = "127.0.0.1:0"
protocol = "udp"
[client.admin]
address = %q
`, bind, laptopAdmin)))
			laptop.admin = admin.Client{Addr: laptopAdmin}
			lst := laptop.waitStatus("laptop's session", func(st admin.Status) bool { return st.Ready && st.Session != nil })
			roundTrip(t, bind)
			udpFlows := func(what string, n int) {
				t.Helper()
				laptop.waitStatus(what, func(st admin.Status) bool {
					return len(st.Visitors) == 2 && st.Visitors[1].Name == "dns" && st.Visitors[1].Connections == n
				})
			}
			u := dialUDP(t, lst.Visitors[1].Bind)
			udpEchoOn(t, u, "before the kill")
			udpFlows("the UDP visitor's flow", 1)

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
			udpFlows("the UDP visitor's flow ended", 0)
			if _, _, err := harness.Exchange(u, []byte("while office is gone"), 200*time.Millisecond, 2); err == nil {
				t.Fatal("a datagram was answered while office was gone")
			}

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
			udpEchoOn(t, u, "after the restart")
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

// dialUDP opens a UDP socket connected to addr, closed when the test ends.
func dialUDP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpEchoOn checks that 20 datagrams labelled label, of 1 to 8 KiB, come
// back byte-exact on c, in lockstep (resent after a quiet 500 ms).
func udpEchoOn(t *testing.T, c net.Conn, label string) {
	t.Helper()
	for i := range 20 {
		msg := append([]byte(fmt.Sprintf("%s %d|", label, i)), bytes.Repeat([]byte{byte(i)}, i*409)...)
		if _, err := harness.ExchangeEcho(c, msg, 500*time.Millisecond, 20); err != nil {
			t.Fatalf("%s: datagram %d (%d bytes) not echoed: %v", label, i, len(msg), err)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
