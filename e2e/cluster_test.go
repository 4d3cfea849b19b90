package e2e

// A cluster of real "warren server" processes over a real etcd (Debian's
// etcd-server as a child process, internal/etcdtest): server i at
// harness.ServerIP(i) (127.0.0.1, .2, ...), the same tunnel, peer and
// public ports at each address, peers verified by a cluster CA and the
// peer token. Clients hold one server each (max_servers = 1), so a public
// connection at any other server is forwarded one hop over a peer link.
// Every wait is on a typed signal: a status of the admin API, or etcd's
// keys; never on log text.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/etcdtest"
	"github.com/warren-tunnel/warren/internal/testutil/harness"
)

const (
	clusterPrefix    = "/e2e/"
	clusterPeerToken = "peer-token-0123456789abcdef"
)

// clusterGroup is n "warren server" processes of one cluster and its etcd.
type clusterGroup struct {
	t      *testing.T
	dir    string
	kind   string
	etcd   *etcdtest.Etcd
	ca     *etcdtest.CA
	caFile string
	port   int // the tunnel port, the same at every address
	peer   int // the peer port, the same at every address
	cfgs   []string
	admins []string
	procs  []*proc
	fps    []string
}

func startClusterGroup(t *testing.T, kind string, n int) *clusterGroup {
	t.Helper()
	network := "tcp"
	if kind == "kcp" {
		network = "udp"
	}
	_, files, ca := etcdtest.NewTLS(t)
	g := &clusterGroup{
		t: t, dir: t.TempDir(), kind: kind, etcd: etcdtest.Start(t, nil), ca: ca, caFile: files.CA,
		port: harness.FreePort(t, n+1, network), peer: harness.FreePort(t, n+1, "tcp"), // n+1: room for one more (add)
	}
	for i := range n {
		g.add(i, clusterPeerToken)
	}
	for i := range n {
		g.waitMembers(i, n)
	}
	return g
}

// add writes server i's config (peer token token) and starts it.
func (g *clusterGroup) add(i int, token string) {
	g.t.Helper()
	ip := harness.ServerIP(i).String()
	tokenFile := writeFile(g.t, g.dir, fmt.Sprintf("token%d", i), tokenOffice+"\n")
	otherFile := writeFile(g.t, g.dir, fmt.Sprintf("other%d", i), tokenOther+"\n")
	leaf := g.ca.Client(fmt.Sprintf("s%d", i))
	adminAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(g.t)))
	cfg := writeFile(g.t, g.dir, fmt.Sprintf("server%d.toml", i), fmt.Sprintf(`
[server]
public_address = %q
state_dir = %q
heartbeat_interval = "500ms"
heartbeat_misses = 6
shutdown_timeout = "5s"
[[server.listen]]
transport = %q
address = %q
[[server.clients]]
name = "office"
token_file = %q
ports = ["1024-65535"]
[[server.clients]]
name = "other"
token_file = %q
ports = ["1024-65535"]
[server.log]
level = "debug"
format = "json"
[server.admin]
address = %q
[server.cluster]
id = "s%d"
etcd = [%q]
prefix = %q
peer_address = %q
peer_token = %q
ca = %q
cert = %q
key = %q
lease_ttl = "3s"
`, ip, filepath.Join(g.dir, fmt.Sprintf("state%d", i)), g.kind, net.JoinHostPort(ip, strconv.Itoa(g.port)),
		tokenFile, otherFile, adminAddr, i, g.etcd.Endpoints()[0], clusterPrefix,
		net.JoinHostPort(ip, strconv.Itoa(g.peer)), token, g.caFile, leaf.Cert, leaf.Key))
	p, st := startReadyServer(g.t, cfg, adminAddr)
	for len(g.procs) <= i {
		g.procs, g.cfgs, g.admins, g.fps = append(g.procs, nil), append(g.cfgs, ""), append(g.admins, ""), append(g.fps, "")
	}
	g.procs[i], g.cfgs[i], g.admins[i], g.fps[i] = p, cfg, adminAddr, st.Fingerprint
}

// stopAll stops every server still running with SIGTERM: each exits 0,
// and leaves the cluster (no member key is left in etcd).
func (g *clusterGroup) stopAll() {
	g.t.Helper()
	for i, p := range g.procs {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
			continue // killed by the test
		default:
		}
		if code := p.stop(syscall.SIGTERM); code != exitOK {
			g.t.Errorf("s%d exited %d on SIGTERM", i, code)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := g.etcd.Client(g.t).Get(ctx, clusterPrefix+"members/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		g.t.Fatal(err)
	}
	if resp.Count != 0 {
		g.t.Errorf("%d member keys left in etcd after every server stopped", resp.Count)
	}
}

// waitMembers waits until server i sees n members.
func (g *clusterGroup) waitMembers(i, n int) {
	g.t.Helper()
	g.procs[i].waitStatus(fmt.Sprintf("%d cluster members", n), func(st admin.Status) bool {
		return st.Cluster != nil && len(st.Cluster.Members) == n
	})
}

func (g *clusterGroup) serverURL(i int) string {
	return strconv.Quote(g.kind + "://" + net.JoinHostPort(harness.ServerIP(i).String(), strconv.Itoa(g.port)))
}

// client starts "warren client" named name (token) for an echo service on
// the public port, holding one of the servers idx (max_servers = 1), and
// waits until one of them has its session; it returns the process and
// that server's index.
func (g *clusterGroup) client(name, token string, idx []int, port int) (*proc, int) {
	g.t.Helper()
	p := g.startClient(name, token, idx, port)
	st := waitServersUp(p, 1)
	return p, g.held(st)
}

// startClient starts the client and does not wait.
func (g *clusterGroup) startClient(name, token string, idx []int, port int) *proc {
	g.t.Helper()
	var servers, fps []string
	for _, i := range idx {
		servers = append(servers, g.serverURL(i))
		fps = append(fps, strconv.Quote(g.fps[i]))
	}
	adminAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPPort(g.t)))
	cfg := writeFile(g.t, g.dir, name+strconv.Itoa(port)+".toml", fmt.Sprintf(`
[client]
servers = [%s]
max_servers = 1
token_env = "WARREN_TEST_TOKEN"
heartbeat_interval = "500ms"
heartbeat_misses = 6
shutdown_timeout = "5s"
[client.tls]
fingerprint = [%s]
[[client.services]]
name = "echo"
target = %q
remote_port = %d
[client.log]
level = "debug"
format = "json"
[client.admin]
address = %q
`, strings.Join(servers, ", "), strings.Join(fps, ", "), backend(g.t, echo), port, adminAddr))
	p := startProc(g.t, []string{"WARREN_TEST_TOKEN=" + token}, "client", "-c", cfg)
	p.admin = admin.Client{Addr: adminAddr}
	return p
}

// held is the index of the server a client's status shows up.
func (g *clusterGroup) held(st admin.Status) int {
	g.t.Helper()
	i := g.heldIndex(st)
	if i < 0 {
		g.t.Fatalf("no server up in the client's status: %+v", st.Servers)
	}
	return i
}

// heldIndex is the index of the first server a client's status shows up,
// -1 when none is.
func (g *clusterGroup) heldIndex(st admin.Status) int {
	for _, s := range st.Servers {
		if s.State != admin.ServerUp {
			continue
		}
		for i := range g.procs {
			if strings.Contains(s.Server, harness.ServerIP(i).String()+":") {
				return i
			}
		}
	}
	return -1
}

// waitRoute waits until every live server in live sees port held by client
// on server holder only (-1: on any server, as long as it is live), and
// listens on it.
func (g *clusterGroup) waitRoute(live []int, client string, port, holder int) {
	g.t.Helper()
	key := "port:" + strconv.Itoa(port)
	for _, i := range live {
		g.procs[i].waitStatus(fmt.Sprintf("%s held by %s on s%d", key, client, holder), func(st admin.Status) bool {
			if st.Cluster == nil {
				return false
			}
			n := 0
			for _, r := range st.Cluster.Routes {
				if r.Key != key {
					continue
				}
				srv, _ := strconv.Atoi(strings.TrimPrefix(r.Server, "s"))
				if r.Client != client || !slices.Contains(live, srv) || (holder >= 0 && srv != holder) {
					return false
				}
				n++
			}
			// and it listens on the port (its own routes).
			return n > 0 && slices.ContainsFunc(st.Routes, func(r admin.RouteStatus) bool { return r.Port == port })
		})
	}
}

// clusterEcho sends size bytes of seed's stream through addr and checks them.
func clusterEcho(addr string, seed uint64, size int) error {
	return pacedEcho(addr, seed, size, nil)
}

// TestClusterEveryServerServesEveryRoute: three servers, two clients each
// on a different server; a public connection at every server reaches
// every route, byte-exact, forwarded one hop where the route is remote;
// the servers' status counts the forwarded connections per peer.
func TestClusterEveryServerServesEveryRoute(t *testing.T) {
	forEachTransport(t, func(t *testing.T, kind string) {
		g := startClusterGroup(t, kind, 3)
		portA, portB := harness.FreePort(t, 3, "tcp"), harness.FreePort(t, 3, "tcp")
		a, ha := g.client("office", tokenOffice, []int{0, 1, 2}, portA)
		rest := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return i == ha })
		b, hb := g.client("other", tokenOther, rest, portB)
		all := []int{0, 1, 2}
		g.waitRoute(all, "office", portA, ha)
		g.waitRoute(all, "other", portB, hb)
		for i := range 3 {
			for j, port := range []int{portA, portB} {
				if err := clusterEcho(harness.PublicAddrAt(i, port), uint64(10*i+j), 256<<10); err != nil {
					t.Errorf("port %d through s%d: %v", port, i, err)
				}
			}
		}
		// s(ha) forwarded B's route to s(hb) once, and got A's forwarded
		// from the two others.
		st, _, err := g.procs[ha].admin.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var out, in int64
		for _, m := range st.Cluster.Members {
			out += m.ForwardedOut
			in += m.ForwardedIn
		}
		if out != 1 || in != 2 {
			t.Errorf("s%d forwarded %d out and %d in, want 1 and 2: %+v", ha, out, in, st.Cluster.Members)
		}
		a.stop(syscall.SIGTERM)
		b.stop(syscall.SIGTERM)
		g.stopAll()
	})
}

// holdEcho is an established connection that echoes 1 KiB every 50 ms
// until stopped; err is its first failure.
type holdEcho struct {
	c      net.Conn
	rounds atomic.Int64
	stopc  chan struct{}
	done   chan struct{}
	err    error
}

func startHoldEcho(t *testing.T, addr string, seed uint64) *holdEcho {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	h := &holdEcho{c: c, stopc: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { h.stop() })
	go func() {
		defer close(h.done)
		buf := make([]byte, 1024)
		for r := uint64(0); ; r++ {
			want := harness.StreamBytes(seed+r, 1024)
			c.SetDeadline(time.Now().Add(waitTimeout))
			if _, err := c.Write(want); err != nil {
				h.err = err
				return
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				h.err = err
				return
			}
			if string(buf) != string(want) {
				h.err = fmt.Errorf("%w: round %d", errCorrupt, r)
				return
			}
			h.rounds.Add(1)
			select {
			case <-h.stopc:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	// Established: one round back.
	deadline := time.Now().Add(waitTimeout)
	for h.rounds.Load() == 0 {
		select {
		case <-h.done:
			t.Fatalf("connection through %s: %v", addr, h.err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection through %s: no echo", addr)
		}
	}
	return h
}

// stop ends the loop and returns its error (nil: it never failed).
func (h *holdEcho) stop() error {
	select {
	case <-h.stopc:
	default:
		close(h.stopc)
	}
	<-h.done
	h.c.Close()
	return h.err
}

// ended waits until the loop ended by itself, and returns its error.
func (h *holdEcho) ended(t *testing.T) error {
	t.Helper()
	select {
	case <-h.done:
		return h.err
	case <-time.After(waitTimeout):
		t.Fatal("the connection was not cut")
		return nil
	}
}

// TestClusterServerKilled: the server holding A's client is killed
// (SIGKILL): A reconnects to another server and its route moves; a
// connection to A's route forwarded through the dead server is cut; a
// connection to B's route, local and forwarded through the live servers,
// keeps working; then A's route serves at both live servers again.
func TestClusterServerKilled(t *testing.T) {
	forEachTransport(t, func(t *testing.T, kind string) {
		g := startClusterGroup(t, kind, 3)
		portA, portB := harness.FreePort(t, 3, "tcp"), harness.FreePort(t, 3, "tcp")
		a, ha := g.client("office", tokenOffice, []int{0, 1, 2}, portA)
		rest := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return i == ha })
		b, hb := g.client("other", tokenOther, rest, portB)
		z := rest[0] // the third server, holding neither
		if z == hb {
			z = rest[1]
		}
		g.waitRoute([]int{0, 1, 2}, "office", portA, ha)
		g.waitRoute([]int{0, 1, 2}, "other", portB, hb)

		viaDead := startHoldEcho(t, harness.PublicAddrAt(z, portA), 1)  // z -> ha -> A
		bLocal := startHoldEcho(t, harness.PublicAddrAt(hb, portB), 2)  // hb -> B
		bForward := startHoldEcho(t, harness.PublicAddrAt(z, portB), 3) // z -> hb -> B

		g.procs[ha].cmd.Process.Kill()
		g.procs[ha].wait()
		killed := time.Now()
		if err := viaDead.ended(t); err == nil || errors.Is(err, errCorrupt) {
			t.Errorf("the connection forwarded through the killed server: %v, want it cut", err)
		}
		a.waitStatus("A up on another server", func(st admin.Status) bool {
			return serversUp(st) == 1 && g.heldIndex(st) != ha
		})
		live := rest
		g.waitRoute(live, "office", portA, -1)
		t.Logf("A's route served again %v after the kill", time.Since(killed).Round(time.Millisecond))
		for _, i := range live {
			if err := clusterEcho(harness.PublicAddrAt(i, portA), uint64(20+i), 128<<10); err != nil {
				t.Errorf("A's route through s%d after the kill: %v", i, err)
			}
		}
		r1, r2 := bLocal.rounds.Load(), bForward.rounds.Load()
		for _, h := range []*holdEcho{bLocal, bForward} {
			deadline := time.Now().Add(waitTimeout)
			for h.rounds.Load() < max(r1, r2)+5 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if err := bLocal.stop(); err != nil {
			t.Errorf("B's local connection: %v", err)
		}
		if err := bForward.stop(); err != nil {
			t.Errorf("B's connection forwarded by s%d: %v", z, err)
		}
		a.stop(syscall.SIGTERM)
		b.stop(syscall.SIGTERM)
		g.stopAll()
	})
}

// TestClusterConflictingClaims: two clients claim the same port at the
// same moment, each on its own server: exactly one holds it; the other is
// refused naming the holder and, refused by every server it knows, exits
// with that reason.
func TestClusterConflictingClaims(t *testing.T) {
	g := startClusterGroup(t, "tcp", 2)
	port := harness.FreePort(t, 2, "tcp")
	procs := []*proc{
		g.startClient("office", tokenOffice, []int{0}, port),
		g.startClient("other", tokenOther, []int{1}, port),
	}
	// Each ends up or exits (refused by its only server).
	up := make([]bool, 2)
	for i, p := range procs {
		deadline := time.Now().Add(waitTimeout)
		for !up[i] {
			select {
			case <-p.done:
			case <-time.After(20 * time.Millisecond):
				st, _, err := p.admin.Status(context.Background())
				up[i] = err == nil && serversUp(st) == 1
				if time.Now().After(deadline) {
					t.Fatalf("client %d neither up nor gone:\n%s", i, p.stderr())
				}
				continue
			}
			break
		}
	}
	if up[0] == up[1] {
		t.Fatalf("office up %v, other up %v: want exactly one", up[0], up[1])
	}
	win := 0
	if up[1] {
		win = 1
	}
	winner := []string{"office", "other"}[win]
	loser := procs[1-win]
	if code := loser.wait(); code == exitOK {
		t.Errorf("the refused client exited %d", code)
	}
	want := fmt.Sprintf("held by client %q on server s%d", winner, win)
	if !strings.Contains(loser.stderr(), want) {
		t.Errorf("the refused client said:\n%s\nwant %q", loser.stderr(), want)
	}
	g.waitRoute([]int{0, 1}, winner, port, win)
	for i := range 2 {
		if err := clusterEcho(harness.PublicAddrAt(i, port), uint64(i), 64<<10); err != nil {
			t.Errorf("the winner's route through s%d: %v", i, err)
		}
	}
	procs[win].stop(syscall.SIGTERM)
}

// TestClusterEtcdStopped: etcd stopped for 30 s under a bounded echo load
// through established connections (local and forwarded): none is lost; a
// new claim meanwhile is refused with the temporary reason, and is
// accepted once etcd is back (the client retries by itself).
func TestClusterEtcdStopped(t *testing.T) {
	if raceEnabled {
		t.Skip("30 s of etcd down: run without -race (.ci/run)")
	}
	g := startClusterGroup(t, "tcp", 2)
	portA, portB := harness.FreePort(t, 2, "tcp"), harness.FreePort(t, 2, "tcp")
	a, ha := g.client("office", tokenOffice, []int{0, 1}, portA)
	g.waitRoute([]int{0, 1}, "office", portA, ha)
	loads := []*holdEcho{
		startHoldEcho(t, harness.PublicAddrAt(ha, portA), 1),   // local
		startHoldEcho(t, harness.PublicAddrAt(1-ha, portA), 2), // forwarded
	}
	g.etcd.Stop()
	stopped := time.Now()
	for i := range 2 {
		g.procs[i].waitStatus("the registry's error", func(st admin.Status) bool { return st.Cluster != nil && st.Cluster.Error != "" })
	}
	b := g.startClient("other", tokenOther, []int{1 - ha}, portB)
	// Refused for now: the client retries (a permanent refusal would be
	// "refused", and with its only server refused it would exit).
	b.waitStatus("the claim refused for now", func(st admin.Status) bool {
		return len(st.Servers) == 1 && st.Servers[0].State == admin.ServerRetrying &&
			strings.Contains(st.Servers[0].LastError, "the cluster registry is unavailable; try again")
	})
	// New connections to the route known before keep being served.
	if err := clusterEcho(harness.PublicAddrAt(1-ha, portA), 3, 64<<10); err != nil {
		t.Errorf("a new connection to a known route with etcd down: %v", err)
	}
	time.Sleep(30*time.Second - time.Since(stopped)) // the outage the issue names, not a wait for a state
	g.etcd.Start()
	// The client retries by itself, after its backoff (up to 30 s).
	deadline := time.Now().Add(2 * waitTimeout)
	for {
		st, _, err := b.admin.Status(context.Background())
		if err == nil && serversUp(st) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the claim was not accepted %v after etcd came back: %+v %v", 2*waitTimeout, st.Servers, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the claim accepted %v after etcd came back", time.Since(stopped)-30*time.Second)
	g.waitRoute([]int{0, 1}, "other", portB, 1-ha)
	if err := clusterEcho(harness.PublicAddrAt(ha, portB), 4, 64<<10); err != nil {
		t.Errorf("B's route after etcd is back: %v", err)
	}
	for i, l := range loads {
		n := l.rounds.Load()
		if err := l.stop(); err != nil {
			t.Errorf("established connection %d: lost: %v", i, err)
		}
		t.Logf("established connection %d: %d echo rounds", i, n)
	}
	a.stop(syscall.SIGTERM)
	b.stop(syscall.SIGTERM)
}

// TestClusterWrongPeerToken: a fourth server with the wrong peer token is
// refused by the others: public connections it would forward fail, and
// none are forwarded to it (its own route is served only through itself);
// the others serve as before.
func TestClusterWrongPeerToken(t *testing.T) {
	g := startClusterGroup(t, "tcp", 3)
	port := harness.FreePort(t, 4, "tcp")
	a, ha := g.client("office", tokenOffice, []int{0, 1, 2}, port)
	g.add(3, "wrong-peer-token-0123456789")
	g.waitMembers(3, 4)
	g.waitRoute([]int{0, 1, 2, 3}, "office", port, ha)
	c, err := net.DialTimeout("tcp", harness.PublicAddrAt(3, port), 5*time.Second)
	if err == nil {
		c.SetDeadline(time.Now().Add(waitTimeout))
		c.Write([]byte("hello"))
		n, rerr := io.ReadFull(c, make([]byte, 5))
		c.Close()
		if rerr == nil {
			t.Errorf("the server with the wrong peer token forwarded a connection (%d bytes back)", n)
		}
	}
	// Nor does it receive: a route it holds is not served through the
	// others, and is served through itself.
	portB := harness.FreePort(t, 4, "tcp")
	b, _ := g.client("other", tokenOther, []int{3}, portB)
	g.waitRoute([]int{0, 1, 2, 3}, "other", portB, 3)
	if err := clusterEcho(harness.PublicAddrAt(3, portB), 5, 64<<10); err != nil {
		t.Errorf("the wrong token's server's own route through itself: %v", err)
	}
	for _, i := range []int{0, 1, 2} {
		if err := clusterEcho(harness.PublicAddrAt(i, portB), 6, 1024); err == nil {
			t.Errorf("s%d forwarded a connection to the server with the wrong peer token", i)
		}
	}
	for _, i := range []int{0, 1, 2} {
		if err := clusterEcho(harness.PublicAddrAt(i, port), uint64(i), 64<<10); err != nil {
			t.Errorf("through s%d: %v", i, err)
		}
		st, _, _ := g.procs[i].admin.Status(context.Background())
		for _, m := range st.Cluster.Members {
			if m.ID == "s3" && (m.Link || m.ForwardedIn > 0 || m.ForwardedOut > 0) {
				t.Errorf("s%d has a link with the wrong token's server: %+v", i, m)
			}
		}
	}
	a.stop(syscall.SIGTERM)
	b.stop(syscall.SIGTERM)
}

// TestClusterForgedRoute: a route entry written into etcd by hand for a
// server that does not exist (no member, no lease) is ignored: no server
// shows it or serves its port.
func TestClusterForgedRoute(t *testing.T) {
	g := startClusterGroup(t, "tcp", 2)
	port, real := harness.FreePort(t, 2, "tcp"), harness.FreePort(t, 2, "tcp")
	c := g.etcd.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := "port:" + strconv.Itoa(port)
	v, _ := json.Marshal(map[string]any{"key": key, "client": "office", "server": "ghost"})
	if _, err := c.Put(ctx, clusterPrefix+"routes/"+key+"/h/ghost/office", string(v)); err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(map[string]any{"id": "ghost", "peer_address": "127.0.0.1:1"})
	if _, err := c.Put(ctx, clusterPrefix+"members/ghost", string(m)); err != nil {
		t.Fatal(err)
	}
	// A real route written after it: once the servers show it, they have
	// read the forged one too.
	a, ha := g.client("office", tokenOffice, []int{0, 1}, real)
	g.waitRoute([]int{0, 1}, "office", real, ha)
	for i := range 2 {
		st, _, err := g.procs[i].admin.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range st.Cluster.Routes {
			if r.Server == "ghost" {
				t.Errorf("s%d shows the forged route %+v", i, r)
			}
		}
		conn, err := net.DialTimeout("tcp", harness.PublicAddrAt(i, port), 5*time.Second)
		if err == nil {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			conn.Write([]byte("x"))
			_, rerr := conn.Read(make([]byte, 1))
			conn.Close()
			if rerr == nil {
				t.Errorf("s%d served the forged route's port", i)
			}
		}
	}
	if resp, err := c.Get(ctx, clusterPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil {
		t.Logf("%d keys under %s", resp.Count, clusterPrefix)
	}
	a.stop(syscall.SIGTERM)
}
