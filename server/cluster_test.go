package server_test

// Servers of a cluster over the registry's twin (clustertest), on real
// sockets: each server at its own loopback address (the harness's
// groups), peer links over real TCP and TLS with a cluster CA.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/cluster/clustertest"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/session"
)

const peerToken = "cluster-peer-token-for-tests-0123456789"

// testCluster is n servers sharing one registry store.
type testCluster struct {
	t        *testing.T
	w        *harness.World
	st       *clustertest.Store
	cfgs     []server.Config
	srvs     []*harness.Server
	regs     []cluster.Registry
	httpPort int
	certs    string // the CA and certificates: ca.pem, <id>.pem, <id>.key; "tester" for a test's own peer
}

// writeCA writes a cluster CA and a certificate for each of ids into dir;
// it returns the CA's path.
func writeCA(t *testing.T, dir string, ids ...string) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test cluster CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", "CERTIFICATE", der)
	for i, id := range ids {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leaf := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: id},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		d, err := x509.CreateCertificate(rand.Reader, leaf, ca, &k.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		write(id+".pem", "CERTIFICATE", d)
		write(id+".key", "EC PRIVATE KEY", kb)
	}
	return filepath.Join(dir, "ca.pem")
}

// newCluster prepares n servers of kind (not started), with a
// reconnect grace of grace.
func newCluster(t *testing.T, kind string, n int, grace time.Duration) *testCluster {
	w := harness.NewWorldOf(t, kind)
	c := &testCluster{t: t, w: w, st: clustertest.New(nil), cfgs: w.GroupConfigs(n), srvs: make([]*harness.Server, n), regs: make([]cluster.Registry, n)}
	peerPort := w.PublicPort(n)
	c.httpPort = w.PublicPort(n)
	dir := t.TempDir()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "s" + strconv.Itoa(i)
	}
	ca := writeCA(t, dir, append(ids, "tester")...)
	c.certs = dir
	for i := range c.cfgs {
		cfg := &c.cfgs[i]
		cfg.ReconnectGrace = grace
		cfg.ShutdownTimeout = 200 * time.Millisecond
		cfg.HTTP.Address = harness.PublicAddrAt(i, c.httpPort)
		cc := cluster.DefaultConfig()
		cc.ID = ids[i]
		cc.Etcd = []string{"http://127.0.0.1:2379"} // not dialed: the registry is the twin's
		cc.PeerAddress = harness.PublicAddrAt(i, peerPort)
		cc.PeerToken = peerToken
		cc.CA, cc.Cert, cc.Key = ca, filepath.Join(dir, ids[i]+".pem"), filepath.Join(dir, ids[i]+".key")
		cfg.Cluster = cc
	}
	return c
}

// start runs server i and its registry, and waits until it is a member.
func (c *testCluster) start(i int) *harness.Server {
	c.t.Helper()
	cfg := c.cfgs[i]
	reg := c.st.Registry(cluster.Member{ID: cfg.Cluster.ID, PeerAddress: cfg.Cluster.PeerAddress}, cfg.ReconnectGrace)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx) }()
	// Registered before the server's: runs after it stopped.
	c.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			c.t.Errorf("registry %s: %v", cfg.Cluster.ID, err)
		}
	})
	for !slices.ContainsFunc(reg.Members(), func(m cluster.Member) bool { return m.ID == cfg.Cluster.ID }) {
		ch := reg.Changed()
		if slices.ContainsFunc(reg.Members(), func(m cluster.Member) bool { return m.ID == cfg.Cluster.ID }) {
			break
		}
		<-ch
	}
	c.regs[i] = reg
	c.srvs[i] = c.w.StartServer(cfg, server.WithRegistry(reg))
	return c.srvs[i]
}

func (c *testCluster) startAll() {
	for i := range c.cfgs {
		c.start(i)
	}
}

// waitRoutes waits until every running server has a route for each key.
func (c *testCluster) waitRoutes(keys ...string) {
	c.t.Helper()
	for i, s := range c.srvs {
		if s == nil {
			continue
		}
		s.WaitFor(fmt.Sprintf("routes %v on s%d", keys, i), func() (bool, string) {
			var have []string
			for _, r := range s.Routes() {
				have = append(have, r.Key)
			}
			for _, k := range keys {
				if !slices.Contains(have, k) {
					return false, fmt.Sprint(have)
				}
			}
			return true, ""
		})
	}
}

// tester is a peer of the cluster's servers for a test's own forwarded
// streams (it refuses those sent to it), closed when the test ends.
func (c *testCluster) tester() *cluster.Peers {
	c.t.Helper()
	cc := cluster.Config{CA: filepath.Join(c.certs, "ca.pem"), Cert: filepath.Join(c.certs, "tester.pem"), Key: filepath.Join(c.certs, "tester.key")}
	tc, err := cc.PeerTLS(nil)
	if err != nil {
		c.t.Fatal(err)
	}
	p := cluster.NewPeers(cluster.PeerConfig{ID: "tester", Token: []byte(peerToken), TLS: tc}, func(c *cluster.Conn) { c.Refuse("not here") })
	c.t.Cleanup(func() { p.Close() })
	return p
}

// member is the status of member id as server s sees it.
func member(s *harness.Server, id string) admin.MemberStatus {
	st := s.AdminSource().Status()
	if st.Cluster == nil {
		return admin.MemberStatus{}
	}
	for _, m := range st.Cluster.Members {
		if m.ID == id {
			return m
		}
	}
	return admin.MemberStatus{}
}

// TestClusterForwarding: 3 servers, 2 clients on different servers;
// public connections to every server reach every route, byte-exact, over
// both transports.
func TestClusterForwarding(t *testing.T) {
	leaktest.Check(t)
	for _, kind := range []string{harness.TCP, harness.KCP} {
		t.Run(kind, func(t *testing.T) {
			c := newCluster(t, kind, 3, time.Minute)
			c.startAll()
			w := c.w
			echo := w.Backend(harness.Echo)
			web := w.HTTPBackend(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				io.WriteString(rw, "web of office")
			}))
			pa, pb := w.PublicPort(3), w.PublicPort(3)
			a := w.StartClient(w.ClientConfig(c.srvs[0], harness.TokenOffice,
				client.Service{Name: "a", Target: echo, RemotePort: pa},
				client.Service{Name: "web", Target: web, Domains: []string{"www.office.example.com"}}))
			b := w.StartClient(w.ClientConfig(c.srvs[1], harness.TokenOther, client.Service{Name: "b", Target: echo, RemotePort: pb}))
			a.WaitSession(1)
			b.WaitSession(1)
			c.waitRoutes("port:"+strconv.Itoa(pa), "port:"+strconv.Itoa(pb), "http:www.office.example.com")
			for i := range c.srvs {
				for j, port := range []int{pa, pb} {
					w.Transfer(harness.PublicAddrAt(i, port), uint64(10*i+j), 300<<10)
				}
				hc := w.HTTPClient(harness.PublicAddrAt(i, c.httpPort))
				resp, err := hc.Get("http://www.office.example.com/")
				if err != nil {
					t.Fatalf("s%d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "web of office") {
					t.Fatalf("s%d: %d %q", i, resp.StatusCode, body)
				}
			}
			// s2 holds nothing: it forwarded to both others.
			for _, id := range []string{"s0", "s1"} {
				if m := member(c.srvs[2], id); m.ForwardedOut == 0 || m.BytesSent == 0 {
					t.Errorf("s2's view of %s: %+v", id, m)
				}
			}
			st := c.srvs[2].AdminSource().Status()
			if st.Cluster == nil || len(st.Cluster.Members) != 3 || len(st.Cluster.Routes) != 3 {
				t.Fatalf("s2 cluster status: %+v", st.Cluster)
			}
			harness.WaitMetric(t, c.srvs[2].Metrics, 2, "warren_cluster_forwarded_connections_total", "peer", "s0", "direction", "out")
		})
	}
}

// TestClusterConflict: a port held by a client on one server is refused
// to another client on another, naming the holder; of two claims at
// once, exactly one wins.
func TestClusterConflict(t *testing.T) {
	leaktest.Check(t)
	c := newCluster(t, harness.TCP, 2, time.Minute)
	c.startAll()
	w := c.w
	echo := w.Backend(harness.Echo)
	port := w.PublicPort(2)
	a := w.StartClient(w.ClientConfig(c.srvs[0], harness.TokenOffice, client.Service{Name: "a", Target: echo, RemotePort: port}))
	a.WaitSession(1)
	b := w.StartClient(w.ClientConfig(c.srvs[1], harness.TokenOther, client.Service{Name: "b", Target: echo, RemotePort: port}))
	wantRejected(t, b.WaitExit(), session.CodePortInUse, `held by client "office" on server s0`)
	a.Stop()

	// At once: both clients, each on its server, for a new port.
	port = w.PublicPort(2)
	c1 := w.StartClient(w.ClientConfig(c.srvs[0], harness.TokenOffice, client.Service{Name: "a", Target: echo, RemotePort: port}))
	c2 := w.StartClient(w.ClientConfig(c.srvs[1], harness.TokenOther, client.Service{Name: "b", Target: echo, RemotePort: port}))
	var won, lost int
	for _, cl := range []*harness.Client{c1, c2} {
		st := cl.WaitStatus("up or refused", func(st client.Status) bool { return st.Connected || st.LastError != nil })
		if st.Connected {
			won++
		} else {
			lost++
		}
	}
	if won != 1 || lost != 1 {
		t.Fatalf("won %d, lost %d", won, lost)
	}
}

// TestClusterServerStops: a server stops; the connections forwarded
// through it reset, its client moves to another server and its routes
// follow.
func TestClusterServerStops(t *testing.T) {
	leaktest.Check(t)
	c := newCluster(t, harness.TCP, 3, time.Minute)
	c.startAll()
	w := c.w
	slow := w.Backend(harness.SlowDownload(7, 4<<20, 20*time.Millisecond, make(chan struct{})))
	echo := w.Backend(harness.Echo)
	pd, pe := w.PublicPort(3), w.PublicPort(3)
	cfg := w.GroupClientConfig(c.srvs[:2], harness.TokenOffice,
		client.Service{Name: "dl", Target: slow, RemotePort: pd},
		client.Service{Name: "e", Target: echo, RemotePort: pe})
	cfg.MaxServers = 1
	cl := w.StartClient(cfg)
	cl.WaitSession(1)
	c.waitRoutes("port:"+strconv.Itoa(pd), "port:"+strconv.Itoa(pe))
	// The holder, as the registry says (its claim precedes the Welcome).
	hs := c.regs[2].Holders("port:" + strconv.Itoa(pd))
	if len(hs) != 1 {
		t.Fatalf("holders: %v", hs)
	}
	holder, _ := strconv.Atoi(strings.TrimPrefix(hs[0].Server, "s"))
	// A download through s2, forwarded to the holder.
	conn := w.Dial(harness.PublicAddrAt(2, pd))
	conn.SetDeadline(time.Now().Add(harness.WaitTimeout))
	if _, err := io.ReadFull(conn, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	c.srvs[holder].Stop()
	c.srvs[holder] = nil
	if _, err := io.ReadAll(conn); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("forwarded download after its server stopped: %v, want a reset", err)
	}
	conn.Close()
	// The client moves to the other server, and s2 forwards there.
	other := c.srvs[1-holder]
	other.WaitSessions(1)
	c.waitRoutes("port:" + strconv.Itoa(pe))
	harness.Poll(t, "echo through s2 after the move", func() (bool, string) {
		if err := w.EchoOnce(harness.PublicAddrAt(2, pe)); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	w.Transfer(harness.PublicAddrAt(2, pe), 3, 200<<10)
	w.Transfer(harness.PublicAddrAt(1-holder, pe), 4, 200<<10)
}

// TestClusterRegistryDown: with the registry unreachable, established
// connections go on and claims are refused as temporary, then accepted
// once it is back.
func TestClusterRegistryDown(t *testing.T) {
	leaktest.Check(t)
	c := newCluster(t, harness.TCP, 2, time.Minute)
	c.startAll()
	w := c.w
	echo := w.Backend(harness.Echo)
	pa, pb := w.PublicPort(2), w.PublicPort(2)
	a := w.StartClient(w.ClientConfig(c.srvs[0], harness.TokenOffice, client.Service{Name: "a", Target: echo, RemotePort: pa}))
	a.WaitSession(1)
	c.waitRoutes("port:" + strconv.Itoa(pa))
	// An established forwarded connection, through s1.
	conn := w.Dial(harness.PublicAddrAt(1, pa))
	conn.SetDeadline(time.Now().Add(harness.WaitTimeout))
	c.st.SetDown(true)
	c.srvs[1].WaitFor("readyz saying why", func() (bool, string) {
		ok, why := c.srvs[1].AdminSource().Ready()
		return ok && strings.Contains(why, "registry unavailable"), why
	})
	b := w.StartClient(w.ClientConfig(c.srvs[1], harness.TokenOther, client.Service{Name: "b", Target: echo, RemotePort: pb}))
	harness.WaitMetric(t, c.srvs[1].Metrics, 1, "warren_handshake_failures_total", "reason", session.CodeUnavailable)
	for i := range 3 { // still byte-exact, both ways
		msg := []byte("still here " + strconv.Itoa(i))
		conn.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != string(msg) {
			t.Fatalf("established connection: %q %v", got, err)
		}
	}
	w.RoundTrip(harness.PublicAddrAt(1, pa)) // a new one on a known route too
	c.st.SetDown(false)
	b.WaitSession(1)
	c.waitRoutes("port:" + strconv.Itoa(pb))
	w.RoundTrip(harness.PublicAddrAt(0, pb))
	harness.CloseWrite(conn)
	if rest, err := io.ReadAll(conn); err != nil || len(rest) != 0 {
		t.Fatalf("end of the established connection: %q %v", rest, err)
	}
	conn.Close()
}

// TestClusterWrongPeerToken: a server with another peer token is a
// member of the registry, but the others refuse its links: it cannot
// forward, and its public connections are closed, not served.
func TestClusterWrongPeerToken(t *testing.T) {
	leaktest.Check(t)
	c := newCluster(t, harness.TCP, 2, time.Minute)
	c.cfgs[1].Cluster.PeerToken = "a-different-peer-token-0123456789"
	c.startAll()
	w := c.w
	echo := w.Backend(harness.Echo)
	pa := w.PublicPort(2)
	a := w.StartClient(w.ClientConfig(c.srvs[0], harness.TokenOffice, client.Service{Name: "a", Target: echo, RemotePort: pa}))
	a.WaitSession(1)
	c.waitRoutes("port:" + strconv.Itoa(pa))
	if err := w.EchoOnce(harness.PublicAddrAt(1, pa)); err == nil {
		t.Fatal("a connection went through a peer with the wrong token")
	}
	c.srvs[1].Logs.WaitLine(t, "peer link failed", "wrong peer token")
	if m := member(c.srvs[1], "s0"); m.Link || m.ForwardedOut != 0 {
		t.Fatalf("s1's link to s0: %+v", m)
	}
	w.RoundTrip(harness.PublicAddrAt(0, pa))
}

// TestClusterShared: a shared port served by two clients on two servers:
// a server with a session of its own serves it locally; one without
// balances over both, round robin.
func TestClusterShared(t *testing.T) {
	leaktest.Check(t)
	c := newCluster(t, harness.TCP, 3, time.Minute)
	c.startAll()
	w := c.w
	say := func(who string) string {
		return w.Backend(func(conn net.Conn) {
			io.WriteString(conn, who)
			conn.Close()
		})
	}
	port := w.PublicPort(3)
	a := w.StartClient(w.ClientConfig(c.srvs[0], harness.TokenOffice, client.Service{Name: "s", Target: say("office"), RemotePort: port, Shared: true}))
	b := w.StartClient(w.ClientConfig(c.srvs[1], harness.TokenOther, client.Service{Name: "s", Target: say("other"), RemotePort: port, Shared: true}))
	a.WaitSession(1)
	b.WaitSession(1)
	key := "port:" + strconv.Itoa(port)
	c.waitRoutes(key)
	// Round robin runs over s2's table, which follows the registry's view
	// a moment later: wait for both holders there, not in the registry.
	c.srvs[2].WaitFor("both holders in s2's table", func() (bool, string) {
		for _, r := range c.srvs[2].Routes() {
			if r.Key == key {
				return r.Elsewhere == 2, strconv.Itoa(r.Elsewhere)
			}
		}
		return false, "no route"
	})
	read := func(i int) string {
		conn := w.Dial(harness.PublicAddrAt(i, port))
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(harness.WaitTimeout))
		b, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("s%d: %v", i, err)
		}
		return string(b)
	}
	seen := map[string]int{}
	for range 6 {
		seen[read(2)]++
	}
	if seen["office"] != 3 || seen["other"] != 3 {
		t.Fatalf("through s2: %v, want 3 each (round robin)", seen)
	}
	for range 3 {
		if got := read(0); got != "office" {
			t.Fatalf("through s0: %q, want its own session's", got)
		}
	}
}

// TestClusterProxyProtocol: a forwarded connection reaches the backend
// with the real public peer in its PROXY header, not the peer link's.
func TestClusterProxyProtocol(t *testing.T) {
	leaktest.Check(t)
	c := newCluster(t, harness.TCP, 2, time.Minute)
	c.startAll()
	w := c.w
	line := w.Backend(func(conn net.Conn) { // answers with the PROXY line it got
		conn.SetDeadline(time.Now().Add(harness.WaitTimeout))
		b := make([]byte, 0, 108)
		one := make([]byte, 1)
		for len(b) < 107 && !strings.HasSuffix(string(b), "\r\n") {
			if _, err := conn.Read(one); err != nil {
				break
			}
			b = append(b, one[0])
		}
		conn.Write(b)
		conn.Close()
	})
	port := w.PublicPort(2)
	a := w.StartClient(w.ClientConfig(c.srvs[0], harness.TokenOffice, client.Service{Name: "p", Target: line, RemotePort: port, ProxyProtocol: "v1"}))
	a.WaitSession(1)
	c.waitRoutes("port:" + strconv.Itoa(port))
	conn := w.Dial(harness.PublicAddrAt(1, port))
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(harness.WaitTimeout))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	src := conn.LocalAddr().(*net.TCPAddr)
	want := fmt.Sprintf("PROXY TCP4 %s %s %d %d\r\n", src.IP, harness.ServerIP(1), src.Port, port)
	if string(got) != want {
		t.Fatalf("PROXY header through s1: %q, want %q", got, want)
	}
}

// TestClusterForwardedRefused: a forwarded connection for a route with no
// session on the server it reaches is refused (no second hop), as is one
// for a route nobody holds; one for a local session is served.
func TestClusterForwardedRefused(t *testing.T) {
	leaktest.Check(t)
	c := newCluster(t, harness.TCP, 2, time.Minute)
	c.startAll()
	w := c.w
	port := w.PublicPort(2)
	a := w.StartClient(w.ClientConfig(c.srvs[0], harness.TokenOffice, client.Service{Name: "a", Target: w.Backend(harness.Echo), RemotePort: port}))
	a.WaitSession(1)
	key := "port:" + strconv.Itoa(port)
	c.waitRoutes(key)
	p := c.tester()
	at := func(i int) cluster.Member {
		return cluster.Member{ID: c.cfgs[i].Cluster.ID, PeerAddress: c.cfgs[i].Cluster.PeerAddress}
	}
	ctx := context.Background()
	hdr := cluster.Header{Key: key, Peer: "192.0.2.9:4000", Local: harness.PublicAddrAt(1, port)}
	if _, err := p.Open(ctx, at(1), hdr); !errors.Is(err, cluster.ErrRefused) || !strings.Contains(err.Error(), "no session serves "+key+" on server s1") {
		t.Fatalf("forwarded to a server without a session: %v", err)
	}
	if _, err := p.Open(ctx, at(0), cluster.Header{Key: "port:1"}); !errors.Is(err, cluster.ErrRefused) {
		t.Fatalf("forwarded for a route nobody holds: %v", err)
	}
	fc, err := p.Open(ctx, at(0), hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	fc.Write([]byte("hop"))
	fc.CloseWrite()
	fc.SetDeadline(time.Now().Add(harness.WaitTimeout))
	if got, err := io.ReadAll(fc); err != nil || string(got) != "hop" {
		t.Fatalf("forwarded to the holder: %q %v", got, err)
	}
}
