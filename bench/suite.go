package main

// The measurements, for one path (direct or through a tunnel), and the
// loopback suite.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// durations bound the run time of one suite.
type durations struct {
	Warmup   time.Duration // throughput: before the window
	Dur      time.Duration // throughput window
	Drain    time.Duration // throughput up: wait for the backend's final count
	Inflight int64         // throughput up: unacknowledged bytes per connection
	Lat1     time.Duration // latency window, 1 connection
	LatN     time.Duration // latency window, 64 connections
	Connect  time.Duration // new-connection window, 32 dialers
	Connect1 time.Duration // new-connection window, 1 dialer (0: not run)
	Settle   time.Duration // memory: wait before reading RSS
	Attack   time.Duration // isolation: echo window while stuck connections press on
}

func (d durations) String() string {
	return fmt.Sprintf("throughput %v (+%v warm-up), latency %v / %v, connect %v, memory settle %v",
		d.Dur, d.Warmup, d.Lat1, d.LatN, d.Connect, d.Settle)
}

// window samples the warren processes' CPU time and the machine's load at
// the load generator's window_start and window_end events. bg are our other
// processes (load generator, backend): what none of ours used is the other
// load on this shared machine.
type window struct {
	pids, bg   []int
	cpu0, cpu1 []float64
	m0, m1     cpuTimes
	link       func() []linkDir
	l0, l1     []linkDir
}

func (rn *runner) newWindow(pids []int) *window {
	n := len(pids) + len(rn.bg)
	return &window{pids: pids, bg: rn.bg, cpu0: make([]float64, n), cpu1: make([]float64, n), link: rn.linkStats}
}

func (w *window) sample(cpu []float64) {
	for i, p := range append(append([]int(nil), w.pids...), w.bg...) {
		cpu[i], _ = cpuOf(p)
	}
}

func (w *window) event(e string) {
	switch e {
	case "window_start":
		w.sample(w.cpu0)
		w.m0 = machineTimes()
		if w.link != nil {
			w.l0 = w.link()
		}
	case "window_end":
		w.sample(w.cpu1)
		w.m1 = machineTimes()
		if w.link != nil {
			w.l1 = w.link()
		}
	}
}

// fill sets the record's machine load and (for a tunnel) CPU use.
func (w *window) fill(r *Record, bytes int64) {
	if tot := w.m1.total - w.m0.total; tot > 0 {
		busy := tot - (w.m1.idle - w.m0.idle)
		r.BusyPct = 100 * float64(busy) / float64(tot)
		r.StealPct = 100 * float64(w.m1.steal-w.m0.steal) / float64(tot)
		if len(w.cpu0) > 0 {
			ours := 0.0
			for i := range w.cpu0 {
				ours += w.cpu1[i] - w.cpu0[i]
			}
			// Interrupt time is charged to no process; on loopback most
			// of it is our own packets', so it is left out here.
			irq := w.m1.irq - w.m0.irq
			r.IRQPct = 100 * float64(irq) / float64(tot)
			r.OthersPct = max(0, 100*(float64(busy-irq)-ours*clockTicks)/float64(tot))
		}
	}
	if len(w.l0) == len(w.l1) {
		for i := range w.l0 { // what the link did during the window
			a, z := w.l0[i], w.l1[i]
			r.LinkDir = append(r.LinkDir, linkDir{Name: z.Name, Read: z.Read - a.Read, Fwd: z.Fwd - a.Fwd,
				Lost: z.Lost - a.Lost, QueueDrop: z.QueueDrop - a.QueueDrop, Overflow: z.Overflow - a.Overflow})
		}
	}
	if len(w.pids) == 2 {
		s, c := w.cpu1[0]-w.cpu0[0], w.cpu1[1]-w.cpu0[1]
		r.CPU = &CPUUse{Server: s, Client: c, PerGB: CPUPerGB(s+c, bytes)}
	}
}

// target is what the load generator dials, and the warren processes to
// watch (none for direct).
type target struct {
	addr string
	pids []int // server, client
}

func (rn *runner) throughput(lg *lgClient, t target, base Record, d durations, dir string, conns int) error {
	w := rn.newWindow(t.pids)
	res, err := lg.do(lgRequest{Op: "throughput", Addr: t.addr, Dir: dir, Conns: conns,
		Warmup: d.Warmup, Duration: d.Dur, Inflight: d.Inflight, Drain: d.Drain}, w.event)
	if err != nil {
		return fmt.Errorf("throughput %s x%d via %s: %w", dir, conns, base.Path, err)
	}
	r := base
	r.Kind, r.Test, r.Dir, r.Conns = "result", "throughput", dir, conns
	r.Seconds, r.Bytes, r.Integrity = res.Seconds, res.Bytes, res.Integrity
	r.AckBytes, r.Window = res.AckBytes, res.Window
	if res.Seconds > 0 {
		r.MBps = float64(res.Bytes) / res.Seconds / 1e6
		r.Mbitps = r.MBps * 8
	}
	w.fill(&r, res.Bytes)
	rn.rec.emit(r)
	return nil
}

func (rn *runner) latency(lg *lgClient, t target, base Record, dur time.Duration, conns int) error {
	return rn.timed(lg, t, base, dur, lgRequest{Op: "latency", Conns: conns, Size: 64})
}

// isolation measures echo latency on one connection while 64 downloads
// nobody reads and 64 uploads into a backend that never reads press on the
// same tunnel (issue 11), from the window's start: a session that stalls,
// or dies, shows as slow echoes or errors.
func (rn *runner) isolation(lg *lgClient, t target, base Record, dur time.Duration) error {
	return rn.timed(lg, t, base, dur, lgRequest{Op: "attack", Conns: 1, Size: 64, Stuck: 64})
}

func (rn *runner) connect(lg *lgClient, t target, base Record, dur time.Duration, workers int) error {
	return rn.timed(lg, t, base, dur, lgRequest{Op: "connect", Conns: workers})
}

// timed runs a latency-style load (req.Op over req.Conns connections or
// workers) for dur and records its percentiles and rate.
func (rn *runner) timed(lg *lgClient, t target, base Record, dur time.Duration, req lgRequest) error {
	w := rn.newWindow(t.pids)
	req.Addr, req.Duration, req.MaxCount = t.addr, dur, 2_000_000
	test, conns := req.Op, req.Conns
	if req.Op == "attack" { // recorded as isolation x stuck; its start is what it measures
		test, conns = "isolation", req.Stuck
	} else {
		req.Warmup = min(dur/5, time.Second)
	}
	res, err := lg.do(req, w.event)
	if err != nil {
		return fmt.Errorf("%s x%d via %s: %w", test, conns, base.Path, err)
	}
	r := base
	r.Kind, r.Test, r.Conns = "result", test, conns
	r.Lat, r.Count, r.Seconds, r.Errors, r.FirstError = res.Lat, res.Count, res.Seconds, res.Errors, res.FirstError
	if res.Seconds > 0 {
		r.PerSecond = float64(res.Count) / res.Seconds
	}
	w.fill(&r, 0)
	r.CPU = nil
	rn.rec.emit(r)
	return nil
}

// memory reads the server's and client's RSS idle, then with n idle public
// connections open for each n in counts (cumulative), then closes them.
func (rn *runner) memory(lg *lgClient, t target, base Record, settle time.Duration, counts []int) error {
	rss := func() (int64, int64, error) {
		time.Sleep(settle)
		s, err1 := rssOf(t.pids[0])
		c, err2 := rssOf(t.pids[1])
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("reading RSS: %v %v", err1, err2)
		}
		return s, c, nil
	}
	s0, c0, err := rss()
	if err != nil {
		return err
	}
	r := base
	r.Kind, r.Test = "result", "memory"
	r.Mem = &MemUse{ServerRSS: s0, ClientRSS: c0}
	rn.rec.emit(r)
	defer lg.do(lgRequest{Op: "close"}, nil)
	held := 0
	for _, n := range counts {
		if n <= held {
			continue
		}
		res, err := lg.do(lgRequest{Op: "open", Addr: t.addr, Conns: n - held}, nil)
		if err != nil {
			r := base
			r.Kind, r.Test, r.Conns, r.Note = "result", "memory", n, "failed: "+err.Error()
			if res != nil {
				r.Errors, r.FirstError = res.Errors, res.FirstError
			}
			rn.rec.emit(r)
			return fmt.Errorf("opening %d connections via %s: %w", n, base.Path, err)
		}
		held = n
		s, c, err := rss()
		if err != nil {
			return err
		}
		r := base
		r.Kind, r.Test, r.Conns = "result", "memory", n
		r.Mem = &MemUse{ServerRSS: s, ClientRSS: c, BaseRSS: s0 + c0, PerConn: float64(s+c-s0-c0) / float64(n)}
		rn.rec.emit(r)
	}
	return nil
}

// testCase is one measurement, run against a target.
type testCase struct {
	name string
	run  func(lg *lgClient, t target, base Record) error
}

// perfCases: throughput (1 and 8 connections, each way), latency (1 and 64
// connections) and new-connection setup (1 dialer: the setup time; 32
// dialers: connections per second).
func (rn *runner) perfCases(d durations) []testCase {
	var cs []testCase
	for _, conns := range []int{1, 8} {
		for _, dir := range []string{"up", "down"} {
			cs = append(cs, testCase{fmt.Sprintf("throughput %s x%d", dir, conns), func(lg *lgClient, t target, base Record) error {
				return rn.throughput(lg, t, base, d, dir, conns)
			}})
		}
	}
	cs = append(cs,
		testCase{"latency x1", func(lg *lgClient, t target, base Record) error { return rn.latency(lg, t, base, d.Lat1, 1) }},
		testCase{"latency x64", func(lg *lgClient, t target, base Record) error { return rn.latency(lg, t, base, d.LatN, 64) }},
		testCase{"connect x32", func(lg *lgClient, t target, base Record) error { return rn.connect(lg, t, base, d.Connect, 32) }},
	)
	if d.Connect1 > 0 {
		cs = append(cs, testCase{"connect x1", func(lg *lgClient, t target, base Record) error { return rn.connect(lg, t, base, d.Connect1, 1) }})
	}
	if rn.tests == nil || rn.tests["udp"] {
		cs = append(cs, rn.udpCases(d)...)
	}
	if d.Attack > 0 { // last: it leaves each tunnel having reset 128 connections
		cs = append(cs, testCase{"isolation x64+64", func(lg *lgClient, t target, base Record) error { return rn.isolation(lg, t, base, d.Attack) }})
	}
	var out []testCase
	for _, c := range cs {
		if t := strings.TrimSuffix(strings.Fields(c.name)[0], "-lat"); rn.tests == nil || rn.tests[t] {
			out = append(out, c)
		}
	}
	return out
}

// perfTests runs every perfCase once against one path. fresh is called
// before each to get a new target (lossy mode: a fresh tunnel, so that
// data a previous test left queued in a slow tunnel does not delay the
// next).
func (rn *runner) perfTests(lg *lgClient, base Record, d durations, fresh func() (target, func(), error)) error {
	var errs firstError
	cases := rn.perfCases(d)
	if rn.tests["udp"] {
		cases = append(cases, testCase{"udp-stream", func(lg *lgClient, t target, base Record) error {
			return rn.udpStream(lg, t, base, 2*d.Dur)
		}})
	}
	for _, tc := range cases {
		errs.add(func() error {
			t, stop, err := fresh()
			if err != nil {
				return err
			}
			defer stop()
			return tc.run(lg, t, base)
		}())
	}
	return errs.err
}

// firstError prints each error it is given and keeps the first: a suite
// goes on after a failed test and reports the failure at the end.
type firstError struct{ err error }

func (f *firstError) add(err error) {
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "  ERROR:", err)
	if f.err == nil {
		f.err = err
	}
}

// loopback runs the loopback suite: everything on 127.0.0.1. Memory first,
// each transport in a server and client of its own, so that idle RSS is
// that of a fresh pair; then every path's server and client run at once,
// and each test runs on every path in turn (the order rotating), for
// rounds rounds: direct and tunnel figures are taken seconds apart, so the
// shared machine's load changes affect them alike.
func (rn *runner) loopback(paths []string, d durations, memCounts []int, rounds int) error {
	dir := filepath.Join(rn.tmp, "loopback")
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
	rn.bg = []int{back.pid(), lg.p.pid()}
	var errs firstError
	fail := errs.add
	start := func(name, tag string, b build) (*tunnel, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		pub, err := freePort()
		if err != nil {
			return nil, err
		}
		if b.name != "" {
			tag += "-" + b.name
		}
		ps := allPaths[name]
		if ps.KCPRate == "fixed" {
			return nil, fmt.Errorf("%s: a lossy-suite path (its rate is -kcp-rate, a share of the link's)", name)
		}
		// kcp-unpaced's rate_mbit = 0 (without it, it ran the default,
		// "auto", like kcp: until 2026-12-06 the loopback suite's
		// kcp-unpaced figures were auto's).
		spec := &tunnelSpec{Path: ps, Dir: filepath.Join(dir, name+"-"+tag), UDP: b.name == "" && rn.tests["udp"],
			TunnelAddr: fmt.Sprintf("127.0.0.1:%d", port), PublicAddr: "127.0.0.1", PublicPort: pub,
			Target: backAddr, Cert: rn.cert, Key: rn.key, Fingerprint: rn.fp, Token: rn.token,
			ExtraServer: rn.extraServer, ExtraClient: rn.extraClient, Env: rn.env, KCPRate: ps.KCPRate}
		return startTunnel(b.bin, spec, "", "", lg)
	}
	// Every path of every build; direct once.
	type run struct {
		path  string
		build build
	}
	var runs []run
	for _, name := range paths {
		for _, b := range rn.builds {
			if !refPath(name) || b.name == "" {
				runs = append(runs, run{name, b})
			}
		}
	}
	targets := map[run]target{{"direct", build{bin: rn.warren}}: {addr: backAddr}}
	for _, r := range runs {
		if refPath(r.path) || len(memCounts) == 0 {
			continue
		}
		fmt.Fprintf(os.Stderr, "== loopback memory: %s\n", buildLabel(r.path, r.build))
		tn, err := start(r.path, "mem", r.build)
		if err != nil {
			return err
		}
		fail(rn.memory(lg, target{addr: tn.public, pids: []int{tn.server.pid(), tn.client.pid()}}, Record{Suite: "loopback", Path: r.path, Build: r.build.name}, d.Settle, memCounts))
		tn.stop()
	}
	for _, r := range runs {
		if r.path == "direct" {
			continue
		}
		if r.path == "tls-chain" || r.path == "smux-chain" {
			startChain := startTLSChain
			if r.path == "smux-chain" {
				startChain = startSmuxChain
			}
			exit, entry, addr, err := startChain(rn.self, dir, backAddr, rn.cert, rn.key)
			if err != nil {
				return err
			}
			defer exit.stop(5 * time.Second)
			defer entry.stop(5 * time.Second)
			targets[r] = target{addr: addr, pids: []int{exit.pid(), entry.pid()}}
			continue
		}
		tn, err := start(r.path, "perf", r.build)
		if err != nil {
			return err
		}
		defer tn.stop()
		targets[r] = target{addr: tn.public, pids: []int{tn.server.pid(), tn.client.pid()}}
	}
	for round := 1; round <= rounds; round++ {
		for _, tc := range rn.perfCases(d) {
			fmt.Fprintf(os.Stderr, "== loopback round %d/%d: %s\n", round, rounds, tc.name)
			for i := range runs {
				r := runs[(i+round-1)%len(runs)]
				fail(tc.run(lg, targets[r], Record{Suite: "loopback", Path: r.path, Build: r.build.name, Round: round}))
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	if rn.tests["udp"] {
		fail(rn.iperfCrossCheck(dir, paths, lg))
	}
	return errs.err
}

// refPath reports a reference path, measured once per run, not per
// build: straight to the backend, or through one of the relay chains.
func refPath(path string) bool {
	return path == "direct" || path == "tls-chain" || path == "smux-chain"
}

// buildLabel names a path of a build in progress lines: "kcp",
// "kcp (baseline)".
func buildLabel(path string, b build) string {
	if b.name == "" {
		return path
	}
	return path + " (" + b.name + ")"
}
