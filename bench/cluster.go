package main

// The cluster scenario (issue 15): five warren servers of one cluster on
// loopback (127.0.0.1 to .5) over one etcd (Debian's etcd-server, a child
// process), and 500 clients, each with one service on a port of its own,
// opened by one "warren swarm" process; each client holds one server
// (max_servers = 1, chosen at random), so a public connection at any other
// server is forwarded one hop. It records: the time from the swarm's start
// until every server's view holds all 500 routes; latency and throughput
// through the route's own server, through another (forwarded) and to the
// backend directly; RSS per server; etcd's keys and its write rate; and,
// with a load of requests through a round-robin front over the five
// servers, the time after one server is killed (SIGKILL) until every route
// it held is served again at every live server.

import (
	"bufio"
	"context"
	"encoding/json"
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
	"sync/atomic"
	"text/template"
	"time"
)

// ClusterUse is what the cluster scenario measured.
type ClusterUse struct {
	Servers, Clients int
	LeaseTTL         string
	ConvergedSec     float64 // swarm start to every server's view holding every route
	UpSec            float64 // swarm start to every client up
	RSS              []int64 // per server, converged and idle
	EtcdKeys         int64
	EtcdWritesConv   float64 // writes (put, txn, delete) per second while converging
	EtcdWritesIdle   float64 // per second, idle
	EtcdRSS          int64
	LatDirect        *Summary // µs, 64-byte echo
	LatLocal         *Summary
	LatForward       *Summary
	MbitDirect       float64 // download, 4 connections
	MbitLocal        float64
	MbitForward      float64
	Killed           string
	Moved            int     // routes the killed server held
	FailoverSec      float64 // kill to every moved route served at every live server (0: not within the timeout)
	FrontOK          int     // requests through the front, from the kill to the end of the failover
	FrontFailed      int
	Note             string
}

type clusterOpts struct {
	clients int
	base    int
	timeout time.Duration
	out     string // directory of cluster.jsonl
}

const clusterServers = 5

var clusterServerTmpl = template.Must(template.New("server").Parse(`# written by warren's bench tool (cluster)
[server]
public_address = "{{.IP}}"
state_dir = "{{.Dir}}/state{{.I}}"
shutdown_timeout = "2s"
[server.limits]
max_handshakes_per_ip = 64

[[server.listen]]
transport = "tcp"
address = "{{.IP}}:{{.Tunnel}}"

[server.tls]
cert = "{{.Cert}}"
key = "{{.Key}}"

[server.log]
level = "error"

[server.admin]
address = "{{.Admin}}"

[server.cluster]
id = "s{{.I}}"
etcd = ["{{.Etcd}}"]
peer_address = "{{.IP}}:{{.Peer}}"
peer_token = "{{.Token}}-peer"
peer_fingerprints = ["{{.Fingerprint}}"]
{{range .Clients}}
[[server.clients]]
name = "c{{.}}"
token = "{{$.Token}}-{{.}}"
ports = [{{$.Port .}}]
{{end}}`))

var clusterClientTmpl = template.Must(template.New("client").Parse(`# written by warren's bench tool (cluster)
[client]
servers = [{{.Servers}}]
max_servers = 1
transport = "tcp"
token = "{{.Token}}"
shutdown_timeout = "1s"

[client.tls]
fingerprint = "{{.Fingerprint}}"
server_name = "warren-bench"

[client.log]
level = "error"

[[client.services]]
name = "echo"
target = "{{.Target}}"
remote_port = {{.Base}}
`))

type clusterSpec struct {
	I                                                   int
	IP, Dir, Cert, Key, Fingerprint, Token, Etcd, Admin string
	Tunnel, Peer, Base                                  int
	Clients                                             []int
	Servers, Target                                     string
}

func (s *clusterSpec) Port(i int) int { return s.Base + i }

// clusterStatus is the part of a server's admin status read here.
type clusterStatus struct {
	Cluster *struct {
		Members []struct {
			ID string `json:"id"`
		} `json:"members"`
		Routes []struct {
			Key    string `json:"key"`
			Server string `json:"server"`
		} `json:"routes"`
	} `json:"cluster"`
}

func adminStatus(addr string) (*clusterStatus, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/api/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st clusterStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, err
	}
	if st.Cluster == nil {
		return nil, fmt.Errorf("%s: no cluster in the status", addr)
	}
	return &st, nil
}

// holders maps each route key to the servers holding it, in st.
func holders(st *clusterStatus) map[string][]string {
	m := map[string][]string{}
	for _, r := range st.Cluster.Routes {
		m[r.Key] = append(m[r.Key], r.Server)
	}
	return m
}

// etcdMetrics reads counters and gauges from etcd's /metrics.
func etcdMetrics(base string) map[string]float64 {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] += f
		}
	}
	return out
}

// etcdWrites is etcd's count of writes: puts, transactions, deletes.
func etcdWrites(m map[string]float64) float64 {
	return m["etcd_mvcc_put_total"] + m["etcd_mvcc_txn_total"] + m["etcd_mvcc_delete_total"]
}

func (rn *runner) cluster(o clusterOpts) error {
	dir := filepath.Join(rn.tmp, "cluster")
	os.MkdirAll(dir, 0o755)
	u := &ClusterUse{Servers: clusterServers, Clients: o.clients, LeaseTTL: "10s (default)"}
	err := rn.clusterRun(dir, o, u)
	if err != nil {
		u.Note = "failed: " + err.Error()
	}
	r := Record{Kind: "result", Suite: "cluster", Path: "tcp", Test: "cluster", Conns: o.clients, Time: time.Now().UTC().Format(time.RFC3339)}
	b, _ := json.Marshal(struct {
		Record
		Cluster *ClusterUse `json:"cluster"`
	}{r, u})
	if f, err := os.OpenFile(filepath.Join(o.out, "cluster.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		f.Write(append(b, '\n'))
		f.Close()
	}
	fmt.Fprint(os.Stderr, clusterMarkdown(u))
	return err
}

func (rn *runner) clusterRun(dir string, o clusterOpts, u *ClusterUse) error {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return fmt.Errorf("no etcd (Debian's etcd-server): %w", err)
	}
	back, backAddr, err := startBackend(rn.self, "", dir, "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer back.stop(5 * time.Second)
	lg, err := startLoadgen(rn.self, "", dir)
	if err != nil {
		return err
	}
	defer lg.p.stop(5 * time.Second)

	cp, _ := freePort()
	pp, _ := freePort()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", cp)
	ep, _, err := startProc("etcd", "", dir, false, nil, etcdBin, "--name", "bench", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", pp), "--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", pp),
		"--initial-cluster", fmt.Sprintf("bench=http://127.0.0.1:%d", pp))
	if err != nil {
		return err
	}
	defer ep.stop(5 * time.Second)
	if err := waitHTTP(etcdURL+"/health", 30*time.Second); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}

	tunnel, _ := freePort()
	peer, _ := freePort()
	clients := make([]int, o.clients)
	for i := range clients {
		clients[i] = i
	}
	var urls []string
	for i := range clusterServers {
		urls = append(urls, strconv.Quote(fmt.Sprintf("tcp://%s:%d", haIP(i), tunnel)))
	}
	specs := make([]*clusterSpec, clusterServers)
	srvs := make([]*proc, clusterServers)
	for i := range clusterServers {
		adm, _ := freePort()
		specs[i] = &clusterSpec{I: i, IP: haIP(i), Dir: dir, Cert: rn.cert, Key: rn.key, Fingerprint: rn.fp, Token: rn.token,
			Etcd: etcdURL, Admin: fmt.Sprintf("127.0.0.1:%d", adm), Tunnel: tunnel, Peer: peer, Base: o.base, Clients: clients}
		f := filepath.Join(dir, fmt.Sprintf("server%d.toml", i))
		if err := writeTmpl(f, clusterServerTmpl, specs[i]); err != nil {
			return err
		}
		if srvs[i], _, err = startProc(fmt.Sprintf("server%d", i), "", dir, false, rn.env, rn.warren, "server", "-c", f); err != nil {
			return err
		}
		defer func() { srvs[i].stop(10 * time.Second) }()
	}
	for i := range clusterServers {
		if err := waitFor(30*time.Second, func() bool {
			st, err := adminStatus(specs[i].Admin)
			return err == nil && len(st.Cluster.Members) == clusterServers
		}); err != nil {
			return fmt.Errorf("server %d: not every member seen: %w", i, err)
		}
	}

	cf := filepath.Join(dir, "swarm.toml")
	cs := &clusterSpec{Servers: strings.Join(urls, ", "), Token: rn.token, Fingerprint: rn.fp, Target: backAddr, Base: o.base}
	if err := writeTmpl(cf, clusterClientTmpl, cs); err != nil {
		return err
	}
	m0 := etcdMetrics(etcdURL)
	sw, out, err := startProc("swarm", "", dir, true, rn.env, rn.warren, "swarm", "-c", cf, "-n", strconv.Itoa(o.clients), "--every", "100ms")
	if err != nil {
		return err
	}
	defer sw.stop(20 * time.Second)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	w := watchSwarm([]*bufio.Scanner{sc})
	start := time.Now()
	go func() {
		if _, _, ok := w.until(o.clients, o.timeout); ok {
			u.UpSec = time.Since(start).Seconds()
		}
		for range w.lines { // keep the swarm's stdout drained
		}
	}()
	converged := func() bool {
		for i := range clusterServers {
			if srvs[i].exited() {
				continue
			}
			st, err := adminStatus(specs[i].Admin)
			if err != nil || len(holders(st)) < o.clients {
				return false
			}
		}
		return true
	}
	if err := waitFor(o.timeout, converged); err != nil {
		return fmt.Errorf("routes not converged after %v", o.timeout)
	}
	u.ConvergedSec = time.Since(start).Seconds()
	m1 := etcdMetrics(etcdURL)
	u.EtcdWritesConv = (etcdWrites(m1) - etcdWrites(m0)) / u.ConvergedSec
	fmt.Fprintf(os.Stderr, "   %d routes converged at %d servers in %.1fs\n", o.clients, clusterServers, u.ConvergedSec)

	time.Sleep(5 * time.Second) // settle
	m2, t2 := etcdMetrics(etcdURL), time.Now()
	time.Sleep(10 * time.Second)
	m3 := etcdMetrics(etcdURL)
	u.EtcdWritesIdle = (etcdWrites(m3) - etcdWrites(m2)) / time.Since(t2).Seconds()
	u.EtcdKeys = int64(m3["etcd_debugging_mvcc_keys_total"])
	u.EtcdRSS, _ = rssOf(ep.pid())
	for i := range clusterServers {
		r, _ := rssOf(srvs[i].pid())
		u.RSS = append(u.RSS, r)
	}

	// Route 0: its holder, and another server.
	st, err := adminStatus(specs[0].Admin)
	if err != nil {
		return err
	}
	hs := holders(st)
	key0 := fmt.Sprintf("port:%d", o.base)
	if len(hs[key0]) == 0 {
		return fmt.Errorf("%s has no holder", key0)
	}
	h, _ := strconv.Atoi(strings.TrimPrefix(hs[key0][0], "s"))
	other := (h + 1) % clusterServers
	addrAt := func(i, port int) string { return net.JoinHostPort(haIP(i), strconv.Itoa(port)) }
	lat := func(addr string) *Summary {
		r, err := lg.do(lgRequest{Op: "latency", Addr: addr, Conns: 1, Size: 64, Duration: 5 * time.Second}, nil)
		if err != nil || r == nil {
			fmt.Fprintf(os.Stderr, "   latency through %s: %v\n", addr, err)
			return nil
		}
		return r.Lat
	}
	mbit := func(addr string) float64 {
		r, err := lg.do(lgRequest{Op: "throughput", Addr: addr, Dir: "down", Conns: 4, Warmup: time.Second, Duration: 5 * time.Second}, nil)
		if err != nil || r == nil || r.Seconds == 0 {
			fmt.Fprintf(os.Stderr, "   throughput through %s: %v\n", addr, err)
			return 0
		}
		return float64(r.Bytes) * 8 / r.Seconds / 1e6
	}
	u.LatDirect, u.LatLocal, u.LatForward = lat(backAddr), lat(addrAt(h, o.base)), lat(addrAt(other, o.base))
	u.MbitDirect, u.MbitLocal, u.MbitForward = mbit(backAddr), mbit(addrAt(h, o.base)), mbit(addrAt(other, o.base))

	// Failover: route 0's server killed under a load through a front
	// over the five servers' port of route 0.
	var moved []int
	for k, ss := range hs {
		if len(ss) == 1 && ss[0] == fmt.Sprintf("s%d", h) {
			p, _ := strconv.Atoi(strings.TrimPrefix(k, "port:"))
			moved = append(moved, p)
		}
	}
	u.Killed, u.Moved = fmt.Sprintf("s%d", h), len(moved)
	var publics []string
	for i := range clusterServers {
		publics = append(publics, addrAt(i, o.base))
	}
	f, err := startFront(publics)
	if err != nil {
		return err
	}
	defer f.close()
	ld := startHALoad(f.addr(), 50)
	defer ld.stop()
	time.Sleep(2 * time.Second)
	srvs[h].cmd.Process.Kill()
	killed := time.Now()
	var live []int
	for i := range clusterServers {
		if i != h {
			live = append(live, i)
		}
	}
	served := func() bool {
		var bad atomic.Int64
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for _, p := range moved {
			for _, i := range live {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					if haRequest(addrAt(i, p), uint64(p)) != nil {
						bad.Add(1)
					}
				})
			}
		}
		wg.Wait()
		return bad.Load() == 0
	}
	if waitFor(o.timeout, served) == nil {
		u.FailoverSec = time.Since(killed).Seconds()
	}
	for _, oc := range ld.since(killed) {
		if oc.err == nil {
			u.FrontOK++
		} else {
			u.FrontFailed++
		}
	}
	fmt.Fprintf(os.Stderr, "   failover: %d routes of %s served at every live server in %.1fs\n", len(moved), u.Killed, u.FailoverSec)
	return nil
}

func waitHTTP(url string, timeout time.Duration) error {
	return waitFor(timeout, func() bool {
		c := http.Client{Timeout: time.Second}
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// waitFor polls ok every 100 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, ok func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !ok() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func clusterMarkdown(u *ClusterUse) string {
	var b strings.Builder
	us := func(s *Summary) string {
		if s == nil {
			return "-"
		}
		return fmt.Sprintf("%.0f / %.0f", s.P50, s.P99)
	}
	mib := func(v int64) string { return fmt.Sprintf("%.0f", float64(v)/(1<<20)) }
	var rss []string
	for _, r := range u.RSS {
		rss = append(rss, mib(r))
	}
	fmt.Fprintf(&b, "| Measure | Value |\n|---|---|\n")
	fmt.Fprintf(&b, "| servers, clients (one route each), lease_ttl | %d, %d, %s |\n", u.Servers, u.Clients, u.LeaseTTL)
	fmt.Fprintf(&b, "| every client up, from the swarm's start | %.1f s |\n", u.UpSec)
	fmt.Fprintf(&b, "| every route in every server's view, from the swarm's start | %.1f s |\n", u.ConvergedSec)
	fmt.Fprintf(&b, "| 64-byte echo p50 / p99, µs: direct, local, forwarded | %s, %s, %s |\n", us(u.LatDirect), us(u.LatLocal), us(u.LatForward))
	fmt.Fprintf(&b, "| download, 4 connections, Mbit/s: direct, local, forwarded | %.0f, %.0f, %.0f |\n", u.MbitDirect, u.MbitLocal, u.MbitForward)
	fmt.Fprintf(&b, "| RSS per server, MiB | %s |\n", strings.Join(rss, ", "))
	fmt.Fprintf(&b, "| etcd: keys, RSS MiB | %d, %s |\n", u.EtcdKeys, mib(u.EtcdRSS))
	fmt.Fprintf(&b, "| etcd writes/s: converging, idle | %.1f, %.1f |\n", u.EtcdWritesConv, u.EtcdWritesIdle)
	fmt.Fprintf(&b, "| failover: %s killed, its %d routes served at every live server after | %.1f s |\n", u.Killed, u.Moved, u.FailoverSec)
	fmt.Fprintf(&b, "| requests through the front (50/s, 5 servers) from the kill to then: ok, failed | %d, %d |\n", u.FrontOK, u.FrontFailed)
	if u.Note != "" {
		fmt.Fprintf(&b, "| note | %s |\n", u.Note)
	}
	return b.String()
}
