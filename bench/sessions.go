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
	SwarmRSS   int64   `json:"swarm_rss"` // the load process, for scale
	SwarmThr   int     `json:"swarm_threads"`

	StormSec     float64  `json:"storm_s"`       // from the new server's start to all up again (0: not all)
	StormUp      int      `json:"storm_up"`      // up at the storm's end or timeout
	StormMs      Summary  `json:"storm_ms"`      // per session, from its loss to up again (ms)
	StormThreads int      `json:"storm_threads"` // the new server's, at the storm's end
	Echo         *Summary `json:"echo_us,omitempty"`
	EchoErrors   int      `json:"echo_errors,omitempty"`
	EchoNote     string   `json:"echo_note,omitempty"`
}

type sessionsOpts struct {
	counts []int
	paths  []string
	idle   time.Duration // idle CPU window
	storm  time.Duration // storm timeout
	echo   time.Duration // echo window during the storm
	base   int           // first public port of the swarm (below the ephemeral range)
	perIP  int           // the server's max_handshakes_per_ip
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

// swarmWatch reads a swarm's JSON lines: the up count, and the connect
// times since the last reset.
type swarmWatch struct {
	lines chan swarmLine
	done  chan struct{}
}

type swarmLine struct {
	MS      int64   `json:"ms"`
	Up      int     `json:"up"`
	Connect []int64 `json:"connect"`
}

func watchSwarm(p *proc, out *bufio.Scanner) *swarmWatch {
	w := &swarmWatch{lines: make(chan swarmLine, 1024), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for out.Scan() {
			var l swarmLine
			if json.Unmarshal(out.Bytes(), &l) == nil {
				w.lines <- l
			}
		}
	}()
	return w
}

// until reads lines until up reaches want or timeout passes, and returns
// the last up count and the connect times seen.
func (w *swarmWatch) until(want int, timeout time.Duration) (int, []time.Duration, bool) {
	var ms []time.Duration
	up := 0
	t := time.After(timeout)
	for {
		select {
		case l := <-w.lines:
			up = l.Up
			for _, c := range l.Connect {
				ms = append(ms, time.Duration(c)*time.Millisecond)
			}
			if up >= want {
				return up, ms, true
			}
		case <-w.done:
			return up, ms, false
		case <-t:
			return up, ms, false
		}
	}
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
	if _, err := lg.do(lgRequest{Op: "probe", Addr: echoAddr, Duration: 20 * time.Second}, nil); err != nil {
		return u, fmt.Errorf("echo client: %w", err)
	}
	sw, out, err := startProc("swarm", "", d, true, rn.env, rn.warren, "swarm", "-c", swarmF, "-n", strconv.Itoa(n), "--every", "100ms")
	if err != nil {
		return u, err
	}
	defer sw.stop(20 * time.Second)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	w := watchSwarm(sw, sc)
	start := time.Now()
	up, connects, ok := w.until(n, o.storm)
	u.Up, u.ConnectMs = up, msSummary(connects)
	var short error // not all up: measured all the same, and reported
	if !ok {
		if up < n*9/10 {
			return u, fmt.Errorf("%d of %d sessions up after %v (swarm log %s)", up, n, o.storm, sw.log)
		}
		short = fmt.Errorf("%d of %d sessions up after %v (swarm log %s)", up, n, o.storm, sw.log)
	} else {
		u.AllUpSec = time.Since(start).Seconds()
	}

	time.Sleep(3 * time.Second) // settle: the handshakes' garbage
	c0, _ := cpuOf(srv.pid())
	t0 := time.Now()
	time.Sleep(o.idle)
	c1, _ := cpuOf(srv.pid())
	u.IdleSec = time.Since(t0).Seconds()
	u.IdleCPUPct = 100 * (c1 - c0) / u.IdleSec
	u.Threads, u.FDs = threadsOf(srv.pid()), fdsOf(srv.pid())
	u.RSS, _ = rssOf(srv.pid())
	u.PerSession = float64(u.RSS-u.BaseRSS) / float64(max(up, 1))
	u.SwarmRSS, _ = rssOf(sw.pid())
	u.SwarmThr = threadsOf(sw.pid())
	fmt.Fprintf(os.Stderr, "   %d up in %.1fs; server %d threads, %.0f MiB RSS (%.1f KiB/session), %d fds, idle CPU %.1f%%\n",
		up, u.AllUpSec, u.Threads, float64(u.RSS)/(1<<20), u.PerSession/1024, u.FDs, u.IdleCPUPct)

	// The storm: the server restarts; the echo client's public port
	// carries echoes (from the moment it is back) while the others
	// reconnect.
	srv.stop(20 * time.Second)
	w.drain()
	srv, err = startServer()
	if err != nil {
		return u, err
	}
	stormStart := time.Now()
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
	if ok {
		u.StormSec = time.Since(stormStart).Seconds()
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
	fmt.Fprintf(os.Stderr, "   storm: %d of %d up in %.1fs; echo p99 %s\n", up, n, u.StormSec, stormEchoP99(u.Echo))
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
func (w *swarmWatch) drain() {
	for {
		select {
		case <-w.lines:
		default:
			return
		}
	}
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
	t := table{head: []string{"path", "build", "sessions", "up", "all up (s)", "connect p50/p99 (ms)", "threads", "RSS (MiB)", "per session (KiB)", "fds", "idle CPU (% of a core)", "storm (s)", "storm back", "reconnect p50/p99 (ms)", "echo p99 in storm (ms)", "note"}}
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
		t.add(r.Path, build, fmt.Sprint(u.Sessions), fmt.Sprint(u.Up), f1(u.AllUpSec),
			f0(u.ConnectMs.P50)+" / "+f0(u.ConnectMs.P99), fmt.Sprint(u.Threads), f1(float64(u.RSS)/(1<<20)),
			f1(u.PerSession/1024), fmt.Sprint(u.FDs), f1(u.IdleCPUPct), storm, fmt.Sprint(u.StormUp),
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
		if r.Kind != "result" || r.Test != "sessions" || r.Sess == nil || r.Sess.Up == 0 {
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
