package main

// The sessions scenario (issue 21): one warren server holding N idle client
// sessions, one service (a public port) each, opened by "warren swarm"
// (N clients in one process, each its own session, token and port). For
// each N it records the server's threads, RSS, open files and idle CPU,
// the connect times, then restarts the server (SIGTERM, then a fresh
// process) and times the reconnect storm, while an ordinary client that
// came back first carries echoes through its own port.

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// SessionUse is what the sessions scenario measured at one count.
type SessionUse struct {
	Sessions   int     `json:"sessions"`    // asked for
	Up         int     `json:"up"`          // up before the storm
	AllUpSec   float64 `json:"all_up_s"`    // from the swarm's start to all up
	ConnectMs  Summary `json:"connect_ms"`  // per session, first connect (values in ms)
	Threads    int     `json:"threads"`     // server, idle, all up
	RSS        int64   `json:"rss"`         // server
	BaseRSS    int64   `json:"base_rss"`    // server before the swarm
	PerSession float64 `json:"per_session"` // (RSS - base) / up, bytes
	FDs        int     `json:"fds"`         // server
	IdleCPUPct float64 `json:"idle_cpu_pct"`
	IdleSec    float64 `json:"idle_s"`
	SwarmRSS   int64   `json:"swarm_rss"` // the load processes together, for scale
	SwarmThr   int     `json:"swarm_threads"`
	SwarmProcs int     `json:"swarm_procs,omitempty"` // swarm processes sharing the N clients
	SwarmNice  int     `json:"swarm_nice,omitempty"`  // their niceness, the server's being 0

	StormSec     float64 `json:"storm_s"`       // from the new server's start to all up again (0: not all)
	StormUp      int     `json:"storm_up"`      // up at the storm's end or timeout
	StormMs      Summary `json:"storm_ms"`      // per session, from its loss to up again (ms)
	StormThreads int     `json:"storm_threads"` // the new server's, at the storm's end
	// CPU during the storm, % of one core averaged over it (or over the
	// timeout): the server's and the swarm processes' together; and the
	// sessions back per second of it (a TLS handshake and a claim each).
	StormServerCPU float64 `json:"storm_server_cpu_pct,omitempty"`
	StormSwarmCPU  float64 `json:"storm_swarm_cpu_pct,omitempty"`
	StormRate      float64 `json:"storm_per_s,omitempty"`
	// The machine during the storm (it is shared): how busy its CPUs
	// were, % of all of them, and its 1-minute load average at the end.
	StormBusyPct float64  `json:"storm_busy_pct,omitempty"`
	StormLoad    float64  `json:"storm_load,omitempty"`
	StormProfile string   `json:"storm_profile,omitempty"` // perf record of the whole machine, when asked
	Echo         *Summary `json:"echo_us,omitempty"`
	EchoErrors   int      `json:"echo_errors,omitempty"`
	EchoNote     string   `json:"echo_note,omitempty"`
}

type sessionsOpts struct {
	counts []int
	paths  []string
	idle   time.Duration // idle CPU window
	settle time.Duration // wait between all up and the idle window
	storm  time.Duration // storm timeout
	echo   time.Duration // echo window during the storm
	base   int           // first public port of the swarm (below the ephemeral range)
	perIP  int           // the server's max_handshakes_per_ip
	procs  int           // swarm processes; 0: one per swarmPerProc clients
	nice   int           // the swarm processes' niceness
	perf   string        // directory for a perf record of the storm; "" for none
	perfD  time.Duration // how long that record lasts
}

// swarmPerProc is how many clients one swarm process runs by default
// (-swarm-procs 0). One process of 10 000 TLS clients could not keep its
// handshakes within the server's 3 s patience on the two shared cores
// (4 722 of 10 000 up in 180 s, 2026-12-05); in processes of 2 500, each
// with its own descriptors and scheduler, the server (niced above them)
// gets the CPU it needs first.
const swarmPerProc = 2500

// swarmProcs is how many swarm processes share n clients.
func (o sessionsOpts) swarmProcs(n int) int {
	k := o.procs
	if k <= 0 {
		k = (n + swarmPerProc - 1) / swarmPerProc
	}
	return max(1, min(k, n))
}

var sessionsServerTmpl = template.Must(template.New("server").Parse(`# written by warren's bench tool (sessions)
[server]
public_address = "127.0.0.1"
state_dir = "{{.Dir}}/state"
shutdown_timeout = "2s"
reconnect_grace = "0s"
{{.Extra}}
[server.limits]
# Every swarm client comes from 127.0.0.1, so the per-IP cap (32 by
# default) stands for the global one (1024 by default): {{.PerIP}} in their
# handshake at once, the others refused and back with their backoff's
# jitter. (Before issue 21's admission, at 1024 the handshakes of a storm
# starved each other past the 3 s after which the oldest was dropped, and
# few completed: 1438 of 5000 in 3 minutes; runs before it used 64.)
max_handshakes_per_ip = {{.PerIP}}

[[server.listen]]
transport = "{{.Transport}}"
address = "{{.TunnelAddr}}"

[server.tls]
cert = "{{.Cert}}"
key = "{{.Key}}"

[server.log]
level = "warn" # the admission and the descriptor warnings, each at most once a while

{{if .Domains}}
[server.http]
address = "{{.HTTPAddr}}"
{{end}}
[[server.clients]]
name = "echo"
token = "{{.Token}}-echo"
ports = [{{.EchoPort}}]
{{range .Clients}}
[[server.clients]]
name = "s{{.}}"
token = "{{$.Token}}-{{.}}"
{{if $.Domains}}domains = ["*.swarm.test"]{{else}}ports = [{{$.Port .}}]{{end}}
{{end}}`))

var sessionsClientTmpl = template.Must(template.New("client").Parse(`# written by warren's bench tool (sessions)
[client]
server = "{{.TunnelAddr}}"
transport = "{{.Transport}}"
token = "{{.Token}}"
shutdown_timeout = "1s"
{{.Extra}}
[client.tls]
fingerprint = "{{.Fingerprint}}"
server_name = "warren-bench"

[client.log]
level = "error"

[[client.services]]
name = "echo"
target = "{{.Target}}"
{{if .Domains}}domains = ["swarm.test"]
entry = "http"{{else}}remote_port = {{.RemotePort}}{{end}}
`))

type sessionsSpec struct {
	Dir, Transport, TunnelAddr, Cert, Key, Fingerprint, Token, Target, Extra string
	EchoPort, RemotePort, base, PerIP                                        int
	Clients                                                                  []int
	// Domains: the swarm's clients claim a domain each (ci.swarm.test) on
	// an HTTP entry point at HTTPAddr instead of a port: one descriptor a
	// session on the server, not two (a path "tcp-domains").
	Domains  bool
	HTTPAddr string
}

func (s *sessionsSpec) Port(i int) int { return s.base + i }

func writeTmpl(path string, tm *template.Template, data any) error {
	var b strings.Builder
	if err := tm.Execute(&b, data); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// threadsOf is the Threads: line of /proc/PID/status.
func threadsOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

func fdsOf(pid int) int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(es)
}

// swarmWatch reads the JSON lines of the swarm processes: the up count of
// each (the total is their sum), and the connect times since the last
// drain.
type swarmWatch struct {
	lines chan swarmLine
	ups   []int // by process, as of its last line; read by until only
	done  chan struct{}
}

type swarmLine struct {
	proc    int     // which swarm process (set here, not read)
	MS      int64   `json:"ms"`
	Up      int     `json:"up"`
	Connect []int64 `json:"connect"`
}

// watchSwarm reads the outputs of the swarm processes; done is closed
// when any of them ends.
func watchSwarm(outs []*bufio.Scanner) *swarmWatch {
	w := &swarmWatch{lines: make(chan swarmLine, 1024), ups: make([]int, len(outs)), done: make(chan struct{})}
	var once sync.Once
	for k, out := range outs {
		go func() {
			defer once.Do(func() { close(w.done) })
			for out.Scan() {
				var l swarmLine
				if json.Unmarshal(out.Bytes(), &l) == nil {
					l.proc = k
					w.lines <- l
				}
			}
		}()
	}
	return w
}

// until reads lines until the total up count reaches want or timeout
// passes, and returns the last total and the connect times seen.
func (w *swarmWatch) until(want int, timeout time.Duration) (int, []time.Duration, bool) {
	var ms []time.Duration
	t := time.After(timeout)
	for {
		select {
		case l := <-w.lines:
			w.ups[l.proc] = l.Up
			for _, c := range l.Connect {
				ms = append(ms, time.Duration(c)*time.Millisecond)
			}
			if up := w.total(); up >= want {
				return up, ms, true
			}
		case <-w.done:
			return w.total(), ms, false
		case <-t:
			return w.total(), ms, false
		}
	}
}

func (w *swarmWatch) total() int {
	n := 0
	for _, u := range w.ups {
		n += u
	}
	return n
}

// msSummary is Summarize in milliseconds.
func msSummary(ds []time.Duration) Summary {
	s := Summarize(ds)
	for _, f := range []*float64{&s.Min, &s.Mean, &s.P50, &s.P90, &s.P99, &s.P999, &s.Max} {
		*f /= 1e3
	}
	return s
}

func (rn *runner) sessions(o sessionsOpts) error {
	dir := filepath.Join(rn.tmp, "sessions")
	os.MkdirAll(dir, 0o755)
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
	var errs firstError
	for _, n := range o.counts {
		for _, path := range o.paths {
			for _, b := range rn.builds {
				fmt.Fprintf(os.Stderr, "== sessions: %d, %s\n", n, buildLabel(path, b))
				u, err := rn.sessionsOne(lg, b, path, n, backAddr, dir, o)
				r := Record{Kind: "result", Suite: "sessions", Path: path, Build: b.name, Test: "sessions", Conns: n, Sess: u}
				if err != nil {
					r.Note = "failed: " + err.Error()
					errs.add(fmt.Errorf("sessions %d %s: %w", n, buildLabel(path, b), err))
				}
				rn.rec.emit(r)
			}
		}
	}
	return errs.err
}

func (rn *runner) sessionsOne(lg *lgClient, b build, path string, n int, backAddr, dir string, o sessionsOpts) (*SessionUse, error) {
	tag := fmt.Sprintf("%s-%d", path, n)
	if b.name != "" {
		tag += "-" + b.name
	}
	d := filepath.Join(dir, tag)
	if err := os.MkdirAll(filepath.Join(d, "state"), 0o700); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	base, domains := strings.CutSuffix(path, "-domains")
	spec := &sessionsSpec{Dir: d, Transport: allPaths[base].Transport, TunnelAddr: fmt.Sprintf("127.0.0.1:%d", port),
		Cert: rn.cert, Key: rn.key, Fingerprint: rn.fp, Token: rn.token, Target: backAddr,
		EchoPort: o.base - 1, base: o.base, PerIP: o.perIP, Extra: rn.extraServer, Domains: domains}
	if domains {
		hp, err := freePort()
		if err != nil {
			return nil, err
		}
		spec.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", hp)
	}
	for i := range n {
		spec.Clients = append(spec.Clients, i)
	}
	sf, swarmF, echoF := filepath.Join(d, "server.toml"), filepath.Join(d, "swarm.toml"), filepath.Join(d, "echo.toml")
	if err := writeTmpl(sf, sessionsServerTmpl, spec); err != nil {
		return nil, err
	}
	spec.Extra = rn.extraClient
	spec.RemotePort = o.base
	if err := writeTmpl(swarmF, sessionsClientTmpl, spec); err != nil {
		return nil, err
	}
	echo := *spec
	echo.Token += "-echo"
	echo.Domains = false
	echo.RemotePort = o.base - 1
	if err := writeTmpl(echoF, sessionsClientTmpl, &echo); err != nil {
		return nil, err
	}

	startServer := func() (*proc, error) {
		srv, _, err := startProc("server", "", d, false, rn.env, b.bin, "server", "-c", sf)
		if err != nil {
			return nil, err
		}
		time.Sleep(300 * time.Millisecond) // bound, before the clients dial
		return srv, nil
	}
	srv, err := startServer()
	if err != nil {
		return nil, err
	}
	defer func() { srv.stop(10 * time.Second) }()
	u := &SessionUse{Sessions: n}
	u.BaseRSS, _ = rssOf(srv.pid())

	// The swarm and the echo client run from the build under test: what
	// is measured is the server.
	echoCli, _, err := startProc("echo-client", "", d, false, rn.env, rn.warren, "client", "-c", echoF)
	if err != nil {
		return u, err
	}
	defer echoCli.stop(5 * time.Second)
	echoAddr := fmt.Sprintf("127.0.0.1:%d", o.base-1)
	// (60 s: after a 10 000 run the machine is still busy with its
	// swarm's end for a while, and 20 s was once too short.)
	if _, err := lg.do(lgRequest{Op: "probe", Addr: echoAddr, Duration: 60 * time.Second}, nil); err != nil {
		return u, fmt.Errorf("echo client: %w", err)
	}
	// The swarm: K processes of about N/K clients each, niced below the
	// server (whose CPU is what is measured; "nice" execs in place, so the
	// PID is the swarm's).
	k := o.swarmProcs(n)
	u.SwarmProcs, u.SwarmNice = k, o.nice
	var (
		swarms []*proc
		outs   []*bufio.Scanner
	)
	defer func() {
		for _, sw := range swarms {
			go sw.stop(20 * time.Second)
		}
		for _, sw := range swarms {
			<-sw.done
		}
	}()
	for j := range k {
		first, cnt := j*n/k, (j+1)*n/k-j*n/k
		argv := []string{rn.warren, "swarm", "-c", swarmF, "-n", strconv.Itoa(cnt), "--first", strconv.Itoa(first), "--every", "100ms"}
		if o.nice != 0 {
			argv = append([]string{"nice", "-n", strconv.Itoa(o.nice)}, argv...)
		}
		sw, out, err := startProc(fmt.Sprintf("swarm-%d", j), "", d, true, rn.env, argv...)
		if err != nil {
			return u, err
		}
		swarms = append(swarms, sw)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		outs = append(outs, sc)
	}
	swarmLogs := filepath.Join(d, "swarm-*.log")
	swarmCPU := func() float64 {
		var c float64
		for _, sw := range swarms {
			v, _ := cpuOf(sw.pid())
			c += v
		}
		return c
	}
	w := watchSwarm(outs)
	start := time.Now()
	up, connects, ok := w.until(n, o.storm)
	u.Up, u.ConnectMs = up, msSummary(connects)
	var short error // not all up: measured all the same, and reported
	if !ok {
		if up < n/2 { // else the storm is measured for those up, and the shortfall reported
			return u, fmt.Errorf("%d of %d sessions up after %v (swarm logs %s)", up, n, o.storm, swarmLogs)
		}
		short = fmt.Errorf("%d of %d sessions up after %v (swarm logs %s)", up, n, o.storm, swarmLogs)
	} else {
		u.AllUpSec = time.Since(start).Seconds()
	}

	time.Sleep(o.settle) // the handshakes' garbage, and the new sessions' first pings
	c0, _ := cpuOf(srv.pid())
	t0 := time.Now()
	time.Sleep(o.idle)
	c1, _ := cpuOf(srv.pid())
	u.IdleSec = time.Since(t0).Seconds()
	u.IdleCPUPct = 100 * (c1 - c0) / u.IdleSec
	u.Threads, u.FDs = threadsOf(srv.pid()), fdsOf(srv.pid())
	u.RSS, _ = rssOf(srv.pid())
	u.PerSession = float64(u.RSS-u.BaseRSS) / float64(max(up, 1))
	for _, sw := range swarms {
		r, _ := rssOf(sw.pid())
		u.SwarmRSS += r
		u.SwarmThr += threadsOf(sw.pid())
	}
	fmt.Fprintf(os.Stderr, "   %d up in %.1fs (%d swarm processes at nice %d); server %d threads, %.0f MiB RSS (%.1f KiB/session), %d fds, idle CPU %.1f%%\n",
		up, u.AllUpSec, k, o.nice, u.Threads, float64(u.RSS)/(1<<20), u.PerSession/1024, u.FDs, u.IdleCPUPct)

	// The storm: the server restarts; the echo client's public port
	// carries echoes (from the moment it is back) while the others
	// reconnect.
	srv.stop(20 * time.Second)
	if !w.down(20 * time.Second) {
		fmt.Fprintf(os.Stderr, "   the swarm did not report its sessions down within 20 s of the server's stop\n")
	}
	srv, err = startServer()
	if err != nil {
		return u, err
	}
	stormStart := time.Now()
	sc0, m0 := swarmCPU(), machineTimes()
	wc0, _ := cpuOf(srv.pid())
	var perfDone chan struct{}
	if o.perf != "" {
		// The whole machine (server, swarm, and whatever else runs), so
		// that the storm's CPU can be told apart by process.
		u.StormProfile = filepath.Join(o.perf, fmt.Sprintf("storm-%s.perf.data", tag))
		pp, _, err := startProc("perf", "", d, false, nil, "perf", "record", "-a", "-g", "-F", "199", "-o", u.StormProfile, "--", "sleep", strconv.Itoa(int(o.perfD.Seconds())))
		if err != nil {
			fmt.Fprintf(os.Stderr, "   perf: %v\n", err)
			u.StormProfile = ""
		} else {
			perfDone = pp.done
		}
	}
	type echoRes struct {
		r   *lgResult
		err error
	}
	echoDone := make(chan echoRes, 1)
	go func() {
		if _, err := lg.do(lgRequest{Op: "probe", Addr: echoAddr, Duration: o.storm}, nil); err != nil {
			echoDone <- echoRes{nil, err}
			return
		}
		r, err := lg.do(lgRequest{Op: "latency", Addr: echoAddr, Conns: 1, Size: 64, Duration: o.echo}, nil)
		echoDone <- echoRes{r, err}
	}()
	up, connects, ok = w.until(u.Up, o.storm) // as many as were up
	u.StormUp, u.StormMs = up, msSummary(connects)
	u.StormThreads = threadsOf(srv.pid())
	stormDur := time.Since(stormStart).Seconds()
	if ok {
		u.StormSec = stormDur
	}
	if wc1, err := cpuOf(srv.pid()); err == nil {
		u.StormServerCPU = 100 * (wc1 - wc0) / stormDur
	}
	u.StormSwarmCPU = 100 * (swarmCPU() - sc0) / stormDur
	u.StormRate = float64(up) / stormDur
	if m1 := machineTimes(); m1.total > m0.total {
		u.StormBusyPct = 100 * float64((m1.total-m0.total)-(m1.idle-m0.idle)) / float64(m1.total-m0.total)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		u.StormLoad, _ = strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	}
	if perfDone != nil {
		<-perfDone // bounded by its sleep
	}
	er := <-echoDone
	switch {
	case er.err != nil:
		u.EchoNote = er.err.Error()
	case er.r != nil && er.r.Lat != nil:
		u.Echo, u.EchoErrors = er.r.Lat, er.r.Errors
		if !ok || u.StormSec < o.echo.Seconds() {
			u.EchoNote = fmt.Sprintf("the echo window (%v) outlasted the storm", o.echo)
		}
	}
	fmt.Fprintf(os.Stderr, "   storm: %d of %d up in %.1fs (%.0f/s); echo p99 %s; CPU server %.0f%%, swarm %.0f%% of a core; machine %.0f%% busy, load %.1f\n",
		up, n, u.StormSec, u.StormRate, stormEchoP99(u.Echo), u.StormServerCPU, u.StormSwarmCPU, u.StormBusyPct, u.StormLoad)
	if !ok {
		return u, fmt.Errorf("storm: %d of %d sessions back after %v", up, n, o.storm)
	}
	return u, short
}

func stormEchoP99(s *Summary) string {
	if s == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f ms", s.P99/1e3)
}

// drain forgets the lines read so far.
// down reads lines until every swarm process has reported fewer sessions
// up than before (it saw the server go), or timeout passes, and reports
// whether they all did. Without it a line written before the swarm
// noticed the restart would count as the storm's end: on a loaded machine
// a storm of 10 000 was once "over" in 0.0 s.
func (w *swarmWatch) down(timeout time.Duration) bool {
	before := slices.Clone(w.ups)
	fell := make([]bool, len(w.ups))
	n := 0
	for k, b := range before {
		if b == 0 { // nothing to fall
			fell[k] = true
			n++
		}
	}
	t := time.After(timeout)
	for n < len(fell) {
		select {
		case l := <-w.lines:
			w.ups[l.proc] = l.Up
			if !fell[l.proc] && l.Up < before[l.proc] {
				fell[l.proc] = true
				n++
			}
		case <-w.done:
			return false
		case <-t:
			return false
		}
	}
	return true
}

// sessionsMarkdown is the report's section for the sessions scenario.
func sessionsMarkdown(recs []Record) string {
	var rs []Record
	for _, r := range recs {
		if r.Kind == "result" && r.Test == "sessions" && r.Sess != nil {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return ""
	}
	slices.SortStableFunc(rs, func(a, b Record) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		if a.Conns != b.Conns {
			return a.Conns - b.Conns
		}
		return strings.Compare(a.Build, b.Build)
	})
	var b strings.Builder
	b.WriteString("## Sessions: one server, N idle client sessions (one service each)\n\n")
	t := table{head: []string{"path", "build", "sessions", "swarm procs (nice)", "up", "all up (s)", "connect p50/p99 (ms)", "threads", "RSS (MiB)", "per session (KiB)", "fds", "idle CPU (% of a core)", "storm (s)", "storm back", "back per s", "storm CPU server / swarm (% of a core)", "machine busy / load in storm", "reconnect p50/p99 (ms)", "echo p99 in storm (ms)", "note"}}
	for _, r := range rs {
		u := r.Sess
		build := r.Build
		if build == "" {
			build = "HEAD"
		}
		storm := "-"
		if u.StormSec > 0 {
			storm = f1(u.StormSec)
		}
		echo := "-"
		if u.Echo != nil {
			echo = f1(u.Echo.P99 / 1e3)
		}
		note := r.Note
		if u.EchoNote != "" {
			note = strings.TrimSpace(note + " " + u.EchoNote)
		}
		procs := fmt.Sprintf("%d (%d)", max(u.SwarmProcs, 1), u.SwarmNice)
		t.add(r.Path, build, fmt.Sprint(u.Sessions), procs, fmt.Sprint(u.Up), f1(u.AllUpSec),
			f0(u.ConnectMs.P50)+" / "+f0(u.ConnectMs.P99), fmt.Sprint(u.Threads), f1(float64(u.RSS)/(1<<20)),
			f1(u.PerSession/1024), fmt.Sprint(u.FDs), f1(u.IdleCPUPct), storm, fmt.Sprint(u.StormUp),
			f0(u.StormRate), f0(u.StormServerCPU)+" / "+f0(u.StormSwarmCPU), f0(u.StormBusyPct)+"% / "+f1(u.StormLoad),
			f0(u.StormMs.P50)+" / "+f0(u.StormMs.P99), echo, note)
	}
	b.WriteString(t.String())
	b.WriteString("\n")
	return b.String()
}

// plotSessions draws the server's RSS per session and its idle CPU
// against the session count, a line per path and build, with the
// targets (issue 21: 48 KiB a session, 10% of a core).
func plotSessions(file string, recs []Record) error {
	type key struct{ path, build string }
	series := map[key]plotter.XYs{}
	var keys []key
	var last float64
	for _, r := range recs {
		if r.Kind != "result" || r.Test != "sessions" || r.Sess == nil || r.Sess.Up == 0 || r.Sess.RSS == 0 { // (RSS 0: not measured, the run stopped before)
			continue
		}
		k := key{r.Path, r.Build}
		if _, ok := series[k]; !ok {
			keys = append(keys, k)
		}
		u := r.Sess
		series[k] = append(series[k], plotter.XY{X: float64(u.Up), Y: u.PerSession / 1024})
		series[key{k.path, k.build + "/cpu"}] = append(series[key{k.path, k.build + "/cpu"}], plotter.XY{X: float64(u.Up), Y: u.IdleCPUPct})
		last = max(last, float64(u.Up))
	}
	if len(keys) == 0 {
		return nil
	}
	mem := newPlot("warren server RSS per idle session", "sessions", "RSS per session (KiB)")
	cpu := newPlot("warren server CPU, all sessions idle", "sessions", "CPU (% of one core)")
	mem.Y.Min, cpu.Y.Min = 0, 0
	for _, k := range keys {
		label, b := k.path, k.build
		if b == "" {
			b = "HEAD"
		}
		label += " " + b
		c, d := style(k.path, "")
		if k.build != "" {
			d = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		m, cp := series[k], series[key{k.path, k.build + "/cpu"}]
		slices.SortFunc(m, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		slices.SortFunc(cp, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		if err := addLine(mem, label, m, c, d); err != nil {
			return err
		}
		if err := addLine(cpu, label, cp, c, d); err != nil {
			return err
		}
	}
	for _, t := range []struct {
		p     *plot.Plot
		y     float64
		label string
	}{{mem, 48, "target: 48 KiB"}, {cpu, 10, "target: 10% (tcp, 10 000)"}} {
		l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: t.y}, {X: last, Y: t.y}})
		if err != nil {
			return err
		}
		l.Color, l.Dashes = color.Gray{Y: 100}, []vg.Length{vg.Points(2), vg.Points(2)}
		t.p.Add(l)
		t.p.Legend.Add(t.label, l)
	}
	return saveTiles(file, [][]*plot.Plot{{mem, cpu}}, 32*vg.Centimeter, 12*vg.Centimeter)
}
