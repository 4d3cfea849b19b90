package server_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
)

// TestVisitorReload: a client reload starts new visitors, stops removed
// ones (a connection open through one carries on), moves a changed one to
// its new address, and leaves every visitor as it was when one cannot
// bind, naming it; the session is never cut.
func TestVisitorReload(t *testing.T) {
	leaktest.Check(t)
	w := harness.NewWorldOf(t, harness.TCP)
	cfg := w.ServerConfig()
	cfg.Clients[1].Visit = []string{"office/*"}
	srv := w.StartServer(cfg)
	startPrivateOffice(w, srv, nil)
	vcfg := w.ClientConfig(srv, harness.TokenOther)
	dbVisitor := client.Visitor{Name: "db", Service: "office/db", Bind: "127.0.0.1:0"}
	dnsVisitor := udpVisitor
	vcfg.Visitors = []client.Visitor{dbVisitor}
	laptop := w.StartClient(vcfg)
	laptop.WaitSession(1)
	dbAddr := laptop.VisitorAddr("db").String()
	open := w.Dial(dbAddr)
	harness.EchoOn(t, open)

	reload := func(vs ...client.Visitor) error {
		t.Helper()
		next := vcfg
		next.Visitors = vs
		return laptop.Reload(next)
	}
	// Added: the UDP visitor listens and reaches office's dns.
	if err := reload(dbVisitor, dnsVisitor); err != nil {
		t.Fatal(err)
	}
	dnsAddr := laptop.VisitorAddr("dns").String()
	exchange(t, w.DialUDP(dnsAddr), []byte("added"))

	// Removed: db's listener is closed; the connection open through it
	// goes on.
	if err := reload(dnsVisitor); err != nil {
		t.Fatal(err)
	}
	if a := laptop.VisitorAddr("db"); a != nil {
		t.Fatalf("a removed visitor still listens on %v", a)
	}
	if c, err := net.Dial("tcp", dbAddr); err == nil {
		c.Close()
		t.Fatal("a removed visitor's address still accepts connections")
	}
	harness.EchoOn(t, open)

	// Changed: dns moves to another address; the old one is closed.
	free, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	newAddr := free.LocalAddr().String()
	free.Close()
	moved := dnsVisitor
	moved.Bind = newAddr
	if err := reload(moved); err != nil {
		t.Fatal(err)
	}
	if got := laptop.VisitorAddr("dns").String(); got != newAddr {
		t.Fatalf("changed visitor listens on %s, want %s", got, newAddr)
	}
	exchange(t, w.DialUDP(newAddr), []byte("moved"))
	if _, _, err := harness.Exchange(w.DialUDP(dnsAddr), []byte("old address"), 200*time.Millisecond, 2); err == nil {
		t.Fatal("the changed visitor's old address still answers")
	}

	// A bind that fails: nothing changes, the error names the visitor.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = reload(moved, client.Visitor{Name: "db", Service: "office/db", Bind: busy.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "client.visitors[1] (db).bind") {
		t.Fatalf("reload onto a busy address: %v", err)
	}
	if a := laptop.VisitorAddr("db"); a != nil {
		t.Fatalf("a visitor that could not bind is listed on %v", a)
	}
	exchange(t, w.DialUDP(newAddr), []byte("still moved"))
	if st := laptop.Status(); st.Sessions != 1 {
		t.Fatalf("%d sessions: a visitor reload cut the session", st.Sessions)
	}
}

// TestDialReload: a reloaded [client.dial] allow list applies to the next
// dial: a target it adds is dialed, one it drops is refused on the client.
func TestDialReload(t *testing.T) {
	leaktest.Check(t)
	w, srv, cli := dialWorld(t, harness.TCP, "127.0.0.1:1")
	target := w.Backend(harness.Echo)
	if _, err := dial(t, srv, "office", target); !errors.Is(err, server.ErrDialRefused) {
		t.Fatalf("dial outside allow: %v, want ErrDialRefused", err)
	}
	next := cli.Config
	next.Dial.Allow = []string{"127.0.0.1:1", target}
	if err := cli.Reload(next); err != nil {
		t.Fatal(err)
	}
	c, err := dial(t, srv, "office", target)
	if err != nil {
		t.Fatalf("dial of a target the reload allowed: %v", err)
	}
	harness.EchoOn(t, c)
	c.Close()
	next.Dial.Allow = []string{"127.0.0.1:1"}
	if err := cli.Reload(next); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, srv, "office", target); !errors.Is(err, server.ErrDialRefused) {
		t.Fatalf("dial of a target the reload dropped: %v, want ErrDialRefused", err)
	}
}
