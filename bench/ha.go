package main

// The high-availability scenario: three "warren server" processes side by
// side on loopback (127.0.0.1, .2 and .3, one tunnel port, one public
// port), one "warren client" with servers = [...] serving the backend's
// echo through all three, and a round-robin front (front.go) before the
// public ports, under a steady load of short requests (50 a second), each
// a new connection, every byte checked. Per transport:
//
//   - failover: one server killed (SIGKILL); the failover time is from the
//     kill until the end of the last request that failed (0 when none
//     did), the lost requests those that failed;
//   - rolling restart: each server in turn stopped with SIGTERM, started
//     again and waited for until the client serves through it; the
//     requests lost and corrupt meanwhile, and how long after its start
//     each server was served again.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// haIP is the loopback address of server i.
func haIP(i int) string { return fmt.Sprintf("127.0.0.%d", i+1) }

// haPort returns a port free at the three servers' addresses for each of
// networks.
func haPort(networks ...string) (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", haIP(0)+":0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		free := true
		for i := range 3 {
			for _, nw := range networks {
				addr := net.JoinHostPort(haIP(i), strconv.Itoa(port))
				if nw == "udp" {
					c, err := net.ListenPacket(nw, addr)
					if err != nil {
						free = false
						continue
					}
					c.Close()
				} else {
					l, err := net.Listen(nw, addr)
					if err != nil {
						free = false
						continue
					}
					l.Close()
				}
			}
		}
		if free {
			return port, nil
		}
	}
	return 0, errors.New("no port free at 127.0.0.1-3")
}

// haGroup is the scenario's processes.
type haGroup struct {
	warren  string
	dir     string
	cfgs    [3]string
	admins  [3]string
	servers [3]*proc
	client  *proc
	cliAdm  string
}

// haServerTmpl is a server's config: %s public address, state directory,
// transport, tunnel address, cert, key, token, public port, admin address.
const haServerTmpl = `# written by warren's bench tool (HA scenario)
[server]
public_address = %q
state_dir = %q
shutdown_timeout = "10s"
[[server.listen]]
transport = %q
address = %q
[server.tls]
cert = %q
key = %q
[server.log]
level = "info"
[server.admin]
address = %q
[[server.clients]]
name = "bench"
token = %q
ports = [%d]
`

// startHAGroup starts three servers of the binary serverBin and a client
// (of the warren under test) serving backAddr through them all.
func (rn *runner) startHAGroup(dir, kind, serverBin, backAddr string, tunnelPort, publicPort int) (*haGroup, error) {
	g := &haGroup{warren: serverBin, dir: dir}
	var servers []string
	for i := range 3 {
		adm, err := freePort()
		if err != nil {
			return nil, err
		}
		g.admins[i] = fmt.Sprintf("127.0.0.1:%d", adm)
		g.cfgs[i] = filepath.Join(dir, fmt.Sprintf("server%d.toml", i))
		tunnel := net.JoinHostPort(haIP(i), strconv.Itoa(tunnelPort))
		cfg := fmt.Sprintf(haServerTmpl, haIP(i), filepath.Join(dir, fmt.Sprintf("state%d", i)), kind, tunnel,
			rn.cert, rn.key, g.admins[i], rn.token, publicPort)
		if err := os.WriteFile(g.cfgs[i], []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		servers = append(servers, strconv.Quote(kind+"://"+tunnel))
		if err := g.start(i); err != nil {
			g.stop()
			return nil, err
		}
	}
	adm, err := freePort()
	if err != nil {
		g.stop()
		return nil, err
	}
	g.cliAdm = fmt.Sprintf("127.0.0.1:%d", adm)
	cf := filepath.Join(dir, "client.toml")
	cfg := fmt.Sprintf(`# written by warren's bench tool (HA scenario)
[client]
servers = [%s]
token = %q
shutdown_timeout = "10s"
[client.tls]
fingerprint = %q
server_name = "warren-bench"
[client.log]
level = "info"
[client.admin]
address = %q
[[client.services]]
name = "bench"
target = %q
remote_port = %d
`, strings.Join(servers, ", "), rn.token, rn.fp, g.cliAdm, backAddr, publicPort)
	if err := os.WriteFile(cf, []byte(cfg), 0o600); err != nil {
		g.stop()
		return nil, err
	}
	if g.client, _, err = startProc("client", "", dir, false, rn.env, rn.warren, "client", "-c", cf); err != nil { // the client under test
		g.stop()
		return nil, err
	}
	if _, err := g.waitServed(time.Time{}); err != nil {
		g.stop()
		return nil, err
	}
	return g, nil
}

// start runs server i and waits until its admin API says it is ready.
func (g *haGroup) start(i int) error {
	p, _, err := startProc(fmt.Sprintf("server%d", i), "", g.dir, false, nil, g.warren, "server", "-c", g.cfgs[i])
	if err != nil {
		return err
	}
	g.servers[i] = p
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + g.admins[i] + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("server %d exited: %s", i, p.tail())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("server %d not ready after 30s: %s", i, p.tail())
}

// waitServed waits until the client's status shows all three servers up,
// and returns how long after since that was (since zero: 0). It polls the
// client's admin API every 10 ms.
func (g *haGroup) waitServed(since time.Time) (time.Duration, error) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var st struct {
			Servers []struct {
				State string `json:"state"`
			} `json:"servers"`
		}
		if resp, err := http.Get("http://" + g.cliAdm + "/api/v1/status"); err == nil {
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		up := 0
		for _, s := range st.Servers {
			if s.State == "up" {
				up++
			}
		}
		if up == 3 {
			if since.IsZero() {
				return 0, nil
			}
			return time.Since(since), nil
		}
		if g.client.exited() {
			return 0, fmt.Errorf("client exited: %s", g.client.tail())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("the client does not serve through all three servers after 60s: %s", g.client.tail())
}

func (g *haGroup) stop() {
	if g.client != nil {
		g.client.stop(15 * time.Second)
	}
	for _, p := range g.servers {
		if p != nil {
			p.stop(15 * time.Second)
		}
	}
}

// haRate is the scenario's load: requests per second.
const haRate = 50

// ha runs the scenario over each transport, rounds times; with a
// -baseline build, each round once more with the baseline's servers
// (under the client under test), to compare what the servers do.
func (rn *runner) ha(rounds int) error {
	dir := filepath.Join(rn.tmp, "ha")
	os.MkdirAll(dir, 0o755)
	back, backAddr, err := startBackend(rn.self, "", dir, "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer back.stop(5 * time.Second)
	var errs firstError
	for round := 1; round <= rounds; round++ {
		for _, kind := range []string{"tcp", "kcp"} {
			for _, b := range rn.builds {
				fmt.Fprintf(os.Stderr, "== HA: %s, round %d of %d\n", buildLabel(kind, b), round, rounds)
				errs.add(rn.haRound(filepath.Join(dir, fmt.Sprintf("%s-%d%s", kind, round, b.name)), kind, b, backAddr, round, rounds))
			}
		}
	}
	return errs.err
}

// haRound measures a failover and a rolling restart over kind, with the
// servers of build b.
func (rn *runner) haRound(dir, kind string, b build, backAddr string, round, rounds int) error {
	os.MkdirAll(dir, 0o755)
	network := "tcp"
	if kind == "kcp" {
		network = "udp"
	}
	tunnelPort, err := haPort(network)
	if err != nil {
		return err
	}
	publicPort, err := haPort("tcp")
	if err != nil {
		return err
	}
	g, err := rn.startHAGroup(dir, kind, b.bin, backAddr, tunnelPort, publicPort)
	if err != nil {
		return err
	}
	defer g.stop()
	var publics []string
	for i := range 3 {
		publics = append(publics, net.JoinHostPort(haIP(i), strconv.Itoa(publicPort)))
	}
	f, err := startFront(publics)
	if err != nil {
		return err
	}
	defer f.close()
	ld := startHALoad(f.addr(), haRate)
	defer ld.stop()
	base := Record{Kind: "result", Suite: "ha", Path: kind, Build: b.name, Round: round, Rounds: rounds, Time: time.Now().UTC().Format(time.RFC3339)}
	time.Sleep(2 * time.Second) // steady load before the first fault

	// Failover: one server killed.
	killed := time.Now()
	g.servers[1].cmd.Process.Kill()
	<-g.servers[1].done
	time.Sleep(3 * time.Second)
	fo := ld.since(killed.Add(-time.Second))
	r := base
	r.Test, r.Count = "ha-failover", len(fo)
	for _, o := range fo {
		if o.err != nil {
			r.Errors++
			if r.FirstError == "" {
				r.FirstError = o.err.Error()
			}
			r.Seconds = max(r.Seconds, o.end.Sub(killed).Seconds())
		}
	}
	r.Integrity = "ok"
	fmt.Fprintf(os.Stderr, "   failover: %d requests around the kill, %d failed, the last %.3fs after it\n", r.Count, r.Errors, r.Seconds)
	started := time.Now()
	if err := g.start(1); err != nil {
		return err
	}
	back, err := g.waitServed(started)
	if err != nil {
		return err
	}
	r.ServedAgain = []float64{back.Seconds()}
	rn.rec.emit(r)

	// Rolling restart: each server in turn.
	time.Sleep(time.Second)
	skipped0, retried0 := f.skipped.Load(), f.retried.Load()
	rollStart := time.Now()
	r = base
	r.Test = "ha-rolling"
	for i := range 3 {
		p := g.servers[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("server %d did not stop on SIGTERM: %s", i, p.tail())
		}
		started := time.Now()
		if err := g.start(i); err != nil {
			return err
		}
		back, err := g.waitServed(started)
		if err != nil {
			return err
		}
		r.ServedAgain = append(r.ServedAgain, back.Seconds())
	}
	r.Seconds = time.Since(rollStart).Seconds()
	time.Sleep(time.Second)
	ld.stop()
	corrupt := 0
	for _, o := range ld.since(rollStart) {
		r.Count++
		switch {
		case errors.Is(o.err, errCorrupt):
			corrupt++
		case o.err != nil:
			r.Errors++
			if r.FirstError == "" {
				r.FirstError = o.err.Error()
			}
		}
	}
	r.Integrity = "ok"
	if corrupt > 0 {
		r.Integrity = fmt.Sprintf("%d corrupt", corrupt)
	}
	r.Skipped, r.Retried = int(f.skipped.Load()-skipped0), int(f.retried.Load()-retried0)
	fmt.Fprintf(os.Stderr, "   rolling restart: %d requests, %d lost, %s; served again %v s after start; front: %d refused connects skipped, %d requests sent again\n",
		r.Count, r.Errors, r.Integrity, r.ServedAgain, r.Skipped, r.Retried)
	rn.rec.emit(r)
	return nil
}
