package main

// The pacing suite (issue 18): how the KCP rate controller of
// rate_mbit = "auto" behaves on the emulated link, as time series.
//
//   - loaded: one download at full speed and, beside it, 64-byte echoes on
//     a second connection of the same session (0% loss): the queue the
//     controller keeps shows in the echo's RTT.
//   - step: the same while the emulator changes the link's rate 100 → 20 → 100
//     Mbit/s (linkem set --rate, tc qdisc change): the controller's estimate and pacing
//     rate, read from the client's admin API every 100 ms, follow it.
//   - share: two warren sessions (two tunnels) downloading at once; and
//     one warren session beside one plain TCP BBR connection.
//   - links: one stream each way over other links at 1% loss, beside
//     plain TCP BBR on the same link, the sender's controller traced
//     (the server's accepted session in an upload).
//
// Downloads go from the backend (the client's side) to the public side,
// so the client's KCP session is the sender whose controller is traced.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// PacingRun is the time series of one pacing-suite test. Times are
// seconds since the test's start.
type PacingRun struct {
	// Interval is the series' sampling interval in seconds; Series has one
	// row per download (Labels), Mbit/s per interval.
	Interval float64     `json:"interval_s"`
	Labels   []string    `json:"labels,omitempty"`
	Series   [][]float64 `json:"series,omitempty"`
	// Echo holds (time, RTT in ms) of each echo on the second connection.
	Echo [][2]float64 `json:"echo,omitempty"`
	// Trace is the traced sender's controller state, every 100 ms;
	// Start is when the test began (Unix seconds), where T counts from.
	Trace []PacePoint `json:"trace,omitempty"`
	Start float64     `json:"start_unix,omitempty"`
	// Traces are, in the share tests, each warren session's controller
	// state every 100 ms (by Labels; none for a plain TCP flow).
	Traces [][]PacePoint `json:"traces,omitempty"`
	// Steps are the link rate's changes: (time, Mbit/s), the first the
	// rate at the start.
	Steps [][2]float64 `json:"steps,omitempty"`
}

// PacePoint is one reading of a KCP session's pacing state (admin API,
// session.pacing), rates in Mbit/s and times in ms.
type PacePoint struct {
	T        float64 `json:"t"`
	Mode     string  `json:"mode"`
	BW       float64 `json:"bw"`
	Pace     float64 `json:"pace"`
	RTT      float64 `json:"rtt"`
	MinRTT   float64 `json:"min_rtt"`
	Inflight int64   `json:"inflight"`
	Cap      int64   `json:"cap"`
	// Resent, Delivered and Cuts are the session's counters (segments
	// sent again, data bytes acknowledged, queue cuts) since it began.
	Resent    int64 `json:"resent,omitempty"`
	Delivered int64 `json:"delivered,omitempty"`
	Cuts      int64 `json:"cuts,omitempty"`
}

// series is what the load generator's "series" op measured. Start is the
// Unix time of its start in seconds; echo times are relative to it.
type series struct {
	Start    float64      `json:"start"`
	Interval float64      `json:"interval"`
	Mbit     [][]float64  `json:"mbit"`
	Echo     [][2]float64 `json:"echo,omitempty"`
}

// series downloads from each of req.Addrs (one connection each, every
// byte checked) and, with req.EchoAddr, echoes 64-byte messages one at a
// time on another connection, for req.Duration, and reports the
// downloads' rates every req.Interval and every echo's RTT.
func (lg *loadgen) series(req lgRequest) (*lgResult, error) {
	var cs []*net.TCPConn
	for _, a := range req.Addrs {
		c, err := dialMode(a, modeSource)
		if err != nil {
			closeAll(cs)
			return nil, err
		}
		cs = append(cs, c)
	}
	defer closeAll(cs)
	var echo *net.TCPConn
	if req.EchoAddr != "" {
		c, err := dialMode(req.EchoAddr, modeEcho)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		echo = c
	}
	start := time.Now()
	end := start.Add(req.Duration)
	recv := make([]atomic.Int64, len(cs))
	errs := make([]error, len(cs)+1)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() { errs[i] = readChecked(c, end, &recv[i]) })
	}
	var echoes [][2]float64
	if echo != nil {
		wg.Go(func() {
			msg, got := make([]byte, 64), make([]byte, 64)
			for seq := uint64(0); time.Now().Before(end); seq++ {
				strconv.AppendUint(msg[:0], seq, 10)
				echo.SetDeadline(end.Add(30 * time.Second))
				t := time.Now()
				if _, err := echo.Write(msg); err != nil {
					errs[len(cs)] = err
					return
				}
				if _, err := io.ReadFull(echo, got); err != nil {
					errs[len(cs)] = err
					return
				}
				if string(got) != string(msg) {
					errs[len(cs)] = fmt.Errorf("echo mismatch")
					return
				}
				echoes = append(echoes, [2]float64{t.Sub(start).Seconds(), float64(time.Since(t)) / 1e6})
			}
		})
	}
	s := &series{Start: float64(start.UnixNano()) / 1e9, Interval: req.Interval.Seconds(), Mbit: make([][]float64, len(cs))}
	last := make([]int64, len(cs))
	tick := time.NewTicker(req.Interval)
	for now := range tick.C {
		for i := range cs {
			n := recv[i].Load()
			s.Mbit[i] = append(s.Mbit[i], float64(n-last[i])*8/req.Interval.Seconds()/1e6)
			last[i] = n
		}
		if !now.Before(end) {
			break
		}
	}
	tick.Stop()
	wg.Wait()
	s.Echo = echoes
	res := &lgResult{Series: s, Integrity: "ok", Seconds: req.Duration.Seconds()}
	for i, err := range errs {
		if err != nil {
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = fmt.Sprintf("connection %d: %v", i, err)
			}
			if i < len(cs) {
				res.Integrity = "ERROR (" + res.FirstError + ")"
			}
		}
	}
	return res, nil
}

// pollMain is "bench _poll URL INTERVAL": it reads a warren admin API's
// status every INTERVAL and prints the pacing state of the (first)
// session it shows as a JSON PacePoint with T in Unix seconds, until its
// stdin closes.
func pollMain(args []string) {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: _poll URL INTERVAL")
		os.Exit(2)
	}
	every, err := time.ParseDuration(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	client := &http.Client{Timeout: time.Second}
	out := json.NewEncoder(os.Stdout)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if p, ok := pollOnce(client, args[0]); ok {
			out.Encode(p)
		}
	}
}

type pacingJSON struct {
	Mode        string  `json:"mode"`
	Bandwidth   float64 `json:"bandwidth_bps"`
	PacingRate  float64 `json:"pacing_rate_bps"`
	RTT         float64 `json:"rtt_seconds"`
	MinRTT      float64 `json:"min_rtt_seconds"`
	InFlight    int64   `json:"inflight_bytes"`
	InFlightCap int64   `json:"inflight_cap_bytes"`
	Delivered   int64   `json:"delivered_bytes"`
	Resent      int64   `json:"resent_segments"`
	QueueCuts   int64   `json:"queue_cuts"`
}

func pollOnce(client *http.Client, url string) (PacePoint, bool) {
	resp, err := client.Get(url)
	if err != nil {
		return PacePoint{}, false
	}
	defer resp.Body.Close()
	var st struct {
		Session *struct {
			Pacing *pacingJSON `json:"pacing"`
		} `json:"session"`
		Clients []struct {
			Sessions []struct {
				Pacing *pacingJSON `json:"pacing"`
			} `json:"sessions"`
		} `json:"clients"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return PacePoint{}, false
	}
	var p *pacingJSON
	if st.Session != nil {
		p = st.Session.Pacing
	}
	for _, c := range st.Clients {
		if p == nil && len(c.Sessions) > 0 {
			p = c.Sessions[0].Pacing
		}
	}
	if p == nil {
		return PacePoint{}, false
	}
	return PacePoint{T: float64(time.Now().UnixNano()) / 1e9, Mode: p.Mode, BW: p.Bandwidth / 1e6, Pace: p.PacingRate / 1e6,
		RTT: p.RTT * 1e3, MinRTT: p.MinRTT * 1e3, Inflight: p.InFlight, Cap: p.InFlightCap,
		Resent: p.Resent, Delivered: p.Delivered, Cuts: p.QueueCuts}, true
}

// poller runs "bench _poll" in a namespace and collects what it prints.
type poller struct {
	p    *proc
	mu   sync.Mutex
	pts  []PacePoint
	done chan struct{}
}

func startPoller(self, ns, dir, url string) (*poller, error) {
	p, out, err := startProc("poll", ns, dir, true, nil, self, "_poll", url, "100ms")
	if err != nil {
		return nil, err
	}
	pl := &poller{p: p, done: make(chan struct{})}
	go func() {
		defer close(pl.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var pt PacePoint
			if json.Unmarshal(sc.Bytes(), &pt) == nil {
				pl.mu.Lock()
				pl.pts = append(pl.pts, pt)
				pl.mu.Unlock()
			}
		}
	}()
	return pl, nil
}

// stop ends the poller and returns its points with T relative to t0 (Unix
// seconds), those in [0, end] only.
func (pl *poller) stop(t0, end float64) []PacePoint {
	pl.p.stop(2 * time.Second)
	<-pl.done
	var out []PacePoint
	for _, pt := range pl.pts {
		pt.T -= t0
		if pt.T >= 0 && pt.T <= end {
			out = append(out, pt)
		}
	}
	return out
}

type pacingOpts struct {
	base         LinkSpec   // loaded, step and share run here
	stepTo       float64    // the step's low rate, Mbit/s
	links        []LinkSpec // one stream each way, beside TCP BBR
	d            durations
	loaded, step time.Duration // lengths of the loaded and step tests
	share        time.Duration
	// tests are the tests to run (loaded, step, share, share-tcp,
	// share-bbr, links);
	// nil: all.
	tests map[string]bool
}

func (o *pacingOpts) runs(test string) bool { return o.tests == nil || o.tests[test] }

// pacing runs the pacing suite.
func (rn *runner) pacing(o pacingOpts, lk emulator) error {
	rn.cleanups = append(rn.cleanups, func() {
		procsMu.Lock()
		defer procsMu.Unlock()
		lk.down()
	})
	var errs firstError
	port := 7000
	if o.runs("loaded") || o.runs("step") || o.runs("share") || o.runs("share-tcp") || o.runs("share-bbr") {
		errs.add(rn.pacingBase(lk, o, &port))
		counters := lk.down()
		base := o.base
		rn.rec.emit(Record{Kind: "link", Suite: "pacing", Link: &base, LinkDir: counters})
		killAll()
	}
	for _, l := range o.links {
		if !o.runs("links") {
			break
		}
		if isStopping() {
			break
		}
		errs.add(rn.pacingLink(lk, o, l, &port))
		counters := lk.down()
		rn.rec.emit(Record{Kind: "link", Suite: "pacing", Link: &l, LinkDir: counters})
		killAll()
	}
	return errs.err
}

// pacingEnv is a link with its backend and load generator.
type pacingEnv struct {
	lk       emulator
	dir      string
	back     *proc
	backAddr string
	lg       *lgClient
}

func (rn *runner) pacingEnvUp(lk emulator, spec LinkSpec, tag string) (*pacingEnv, error) {
	fmt.Fprintf(os.Stderr, "== pacing: RTT %gms, %g Mbit/s, %s\n", spec.RTTms, spec.RateMbit, spec)
	if err := lk.start(spec); err != nil {
		return nil, err
	}
	e := &pacingEnv{lk: lk, dir: filepath.Join(rn.tmp, "pacing-"+tag)}
	os.MkdirAll(e.dir, 0o755)
	var err error
	if e.back, e.backAddr, err = startBackend(rn.self, lk.nsA(), e.dir, addrA+":9000"); err != nil {
		return nil, err
	}
	if e.lg, err = startLoadgen(rn.self, lk.nsB(), e.dir); err != nil {
		return nil, err
	}
	rn.bg = []int{e.back.pid(), e.lg.p.pid()}
	if pid := lk.pid(); pid != 0 {
		rn.bg = append(rn.bg, pid) // the emulator's CPU is the link's
	}
	return e, nil
}

func (e *pacingEnv) down() {
	e.lg.p.stop(5 * time.Second)
	e.back.stop(5 * time.Second)
}

// pacingTunnel starts a kcp tunnel of warren bin with rate_mbit = "auto"
// (the default), with the admin API of both sides on loopback in their
// namespaces. It returns the status URL of the client (nsA) and of the
// server (nsB).
func (rn *runner) pacingTunnel(e *pacingEnv, port *int, tag, bin string) (tn *tunnel, client, server string, err error) {
	*port++
	p := *port
	cAdmin := fmt.Sprintf("127.0.0.1:%d", p+2000)
	sAdmin := fmt.Sprintf("127.0.0.1:%d", p+3000)
	ts := &tunnelSpec{Path: allPaths["kcp"], Dir: filepath.Join(e.dir, fmt.Sprintf("%s-%d", tag, p)),
		TunnelAddr: fmt.Sprintf("%s:%d", addrB, p), PublicAddr: addrB, PublicPort: p + 1000,
		Target: e.backAddr, Cert: rn.cert, Key: rn.key, Fingerprint: rn.fp, Token: rn.token,
		ExtraServer: rn.extraServer, ExtraClient: rn.extraClient, Env: rn.env,
		ClientAdmin: cAdmin, ServerAdmin: sAdmin, KCPRate: `"auto"`}
	if tn, err = startTunnel(bin, ts, e.lk.nsB(), e.lk.nsA(), e.lg); err != nil {
		return nil, "", "", err
	}
	return tn, "http://" + cAdmin + "/api/v1/status", "http://" + sAdmin + "/api/v1/status", nil
}

// pacingBase runs the loaded, step and share tests on the base link.
func (rn *runner) pacingBase(lk emulator, o pacingOpts, port *int) error {
	e, err := rn.pacingEnvUp(lk, o.base, "base")
	if err != nil {
		return err
	}
	defer e.down()
	var errs firstError
	link := o.base
	base := Record{Kind: "result", Suite: "pacing", Link: &link, Path: "kcp", Dir: "down", Conns: 1}

	// loaded and step: one tunnel each, traced; of each build (a
	// -baseline one after HEAD's).
	for _, test := range []string{"loaded", "step"} {
		if !o.runs(test) {
			continue
		}
		for _, bd := range rn.builds {
			errs.add(func() error {
				tn, status, _, err := rn.pacingTunnel(e, port, test, bd.bin)
				if err != nil {
					return err
				}
				defer tn.stop()
				pl, err := startPoller(rn.self, lk.nsA(), e.dir, status)
				if err != nil {
					return err
				}
				dur := o.loaded
				steps := [][2]float64{{0, o.base.RateMbit}}
				if test == "step" {
					dur = o.step
					steps = append(steps, [2]float64{dur.Seconds() / 3, o.stepTo}, [2]float64{2 * dur.Seconds() / 3, o.base.RateMbit})
				}
				fmt.Fprintf(os.Stderr, "== pacing %s: %v\n", test, dur)
				var setErr error
				var t0 time.Time
				started := make(chan struct{})
				var wg sync.WaitGroup
				if len(steps) > 1 {
					wg.Go(func() {
						<-started
						for _, s := range steps[1:] {
							time.Sleep(time.Until(t0.Add(time.Duration(s[0] * float64(time.Second)))))
							if err := lk.setRate(s[1]); err != nil && setErr == nil {
								setErr = err
							}
						}
					})
				}
				t0 = time.Now()
				close(started)
				res, err := e.lg.do(lgRequest{Op: "series", Addrs: []string{tn.public}, EchoAddr: tn.public, Duration: dur, Interval: 100 * time.Millisecond}, nil)
				wg.Wait()
				if err != nil {
					pl.p.stop(time.Second)
					return fmt.Errorf("pacing %s: %w", test, err)
				}
				if setErr != nil {
					return setErr
				}
				s := res.Series
				// The load generator started a little after t0: steps are
				// relative to its start.
				shift := s.Start - float64(t0.UnixNano())/1e9
				for i := range steps[1:] {
					steps[i+1][0] -= shift
				}
				r := base
				r.Build = bd.name
				r.Test, r.Integrity, r.Errors, r.FirstError = test, res.Integrity, res.Errors, res.FirstError
				r.Pacing = &PacingRun{Interval: s.Interval, Labels: []string{"kcp"}, Series: s.Mbit, Echo: s.Echo,
					Trace: pl.stop(s.Start, dur.Seconds()), Steps: steps}
				r.Seconds = dur.Seconds()
				rn.rec.emit(r)
				return nil
			}())
		}
	}

	// share: two warren sessions, of each build (a -baseline one
	// beside); then warren beside TCP BBR.
	for _, bd := range rn.builds {
		if !o.runs("share") {
			break
		}
		errs.add(func() error {
			a, sa, _, err := rn.pacingTunnel(e, port, "share-a", bd.bin)
			if err != nil {
				return err
			}
			defer a.stop()
			b, sb, _, err := rn.pacingTunnel(e, port, "share-b", bd.bin)
			if err != nil {
				return err
			}
			defer b.stop()
			fmt.Fprintf(os.Stderr, "== pacing share: two warren sessions %s, %v\n", bd.name, o.share)
			r := base
			r.Build = bd.name
			return rn.pacingShare(e, r, "share", []string{"warren A", "warren B"}, []string{a.public, b.public}, []string{sa, sb}, o.share)
		}())
	}
	// share-tcp: two plain TCP BBR downloads at once, the kernel's BBR
	// sharing the same link in the same window: what "within 20%" asks
	// of a BBR-like controller, measured.
	if o.runs("share-tcp") {
		errs.add(func() error {
			if err := lk.setCC("bbr"); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "== pacing share: two TCP BBR flows, %v\n", o.share)
			r := base
			r.Path = "direct"
			return rn.pacingShare(e, r, "share-tcp", []string{"TCP BBR A", "TCP BBR B"}, []string{e.backAddr, e.backAddr}, nil, o.share)
		}())
	}
	if !o.runs("share-bbr") {
		return errs.err
	}
	errs.add(func() error {
		if err := lk.setCC("bbr"); err != nil {
			return err
		}
		tn, st, _, err := rn.pacingTunnel(e, port, "share-bbr", rn.warren)
		if err != nil {
			return err
		}
		defer tn.stop()
		fmt.Fprintf(os.Stderr, "== pacing share: warren beside TCP BBR, %v\n", o.share)
		return rn.pacingShare(e, base, "share-bbr", []string{"warren", "TCP BBR"}, []string{tn.public, e.backAddr}, []string{st}, o.share)
	}())
	return errs.err
}

// pacingShare downloads from each of addrs at once, one connection each,
// and records their rates over time and, from the admin status URLs
// statuses (the first downloads' clients, one each), their controllers'
// state.
func (rn *runner) pacingShare(e *pacingEnv, base Record, test string, labels, addrs, statuses []string, dur time.Duration) error {
	var pls []*poller
	for _, st := range statuses {
		pl, err := startPoller(rn.self, e.lk.nsA(), e.dir, st)
		if err != nil {
			for _, pl := range pls {
				pl.p.stop(time.Second)
			}
			return err
		}
		pls = append(pls, pl)
	}
	res, err := e.lg.do(lgRequest{Op: "series", Addrs: addrs, Duration: dur, Interval: 500 * time.Millisecond}, nil)
	if err != nil {
		for _, pl := range pls {
			pl.p.stop(time.Second)
		}
		return fmt.Errorf("pacing %s: %w", test, err)
	}
	r := base
	r.Test, r.Integrity, r.Errors, r.FirstError, r.Seconds = test, res.Integrity, res.Errors, res.FirstError, dur.Seconds()
	r.Pacing = &PacingRun{Interval: res.Series.Interval, Labels: labels, Series: res.Series.Mbit}
	for _, pl := range pls {
		r.Pacing.Traces = append(r.Pacing.Traces, pl.stop(res.Series.Start, dur.Seconds()))
	}
	rn.rec.emit(r)
	return nil
}

// pacingLink measures one stream each way over link l: kcp (auto), and
// plain TCP BBR as the reference.
func (rn *runner) pacingLink(lk emulator, o pacingOpts, l LinkSpec, port *int) error {
	e, err := rn.pacingEnvUp(lk, l, fmt.Sprintf("%g-%g", l.RateMbit, l.RTTms))
	if err != nil {
		return err
	}
	defer e.down()
	if err := lk.setCC("bbr"); err != nil {
		return err
	}
	link := l
	var errs firstError
	// Startup on a long path takes a few round trips: the warm-up is at
	// least 20 of them. The window is at least 40: at 1% loss a lost
	// segment holds in-order delivery for a round trip or a retransmission
	// timeout, and a window that begins or ends in such a hold counts up
	// to that much data too few or too many (on the 10 Mbit/s / 200 ms
	// link, 0.3-0.5 MB: TCP BBR read 10.1-10.9 Mbit/s on a 4 s window
	// there, above the link's 9.65 of TCP payload).
	d := o.d
	d.Warmup = max(d.Warmup, time.Duration(20*l.RTTms)*time.Millisecond)
	d.Dur = max(d.Dur, time.Duration(40*l.RTTms)*time.Millisecond)
	for _, dir := range []string{"down", "up"} {
		for _, bd := range rn.builds { // a -baseline build beside, at its own default
			errs.add(func() error {
				tn, cStatus, sStatus, err := rn.pacingTunnel(e, port, "link-"+dir, bd.bin)
				if err != nil {
					return err
				}
				defer tn.stop()
				// The sender's controller state is kept beside the
				// result: the client's in a download, the server's
				// (its accepted session) in an upload.
				ns, status := lk.nsA(), cStatus
				if dir == "up" {
					ns, status = lk.nsB(), sStatus
				}
				pl, err := startPoller(rn.self, ns, e.dir, status)
				if err != nil {
					return err
				}
				t0 := float64(time.Now().UnixNano()) / 1e9
				err = rn.throughput(e.lg, target{addr: tn.public, pids: []int{tn.server.pid(), tn.client.pid()}},
					Record{Suite: "pacing", Link: &link, Path: "kcp", Build: bd.name}, d, dir, 1)
				end := float64(time.Now().UnixNano())/1e9 - t0
				rn.rec.emit(Record{Kind: "trace", Suite: "pacing", Test: "link-" + dir, Link: &link, Path: "kcp", Build: bd.name,
					Pacing: &PacingRun{Trace: pl.stop(t0, end), Start: t0}})
				return err
			}())
		}
		errs.add(rn.throughput(e.lg, target{addr: e.backAddr}, Record{Suite: "pacing", Link: &link, Path: "direct", CC: "bbr"}, d, dir, 1))
	}
	return errs.err
}

// stepAnalysis is what the step test shows.
type stepAnalysis struct {
	follow [2]float64 // s after each step until the estimate is within 20% of the new rate, NaN if never
	p99Low float64    // echo p99 during the low phase, ms, from 2 s after the step
	p99All float64    // and over the whole low phase
	rtt    float64    // the link's RTT, ms
}

// payloadShare is KCP's data share of the link's bytes: 1326 of every
// 1378 (1350-byte datagrams, 24 bytes of KCP header, 28 of UDP and IP).
const payloadShare = 1326.0 / 1378

func analyseStep(r *Record) (a stepAnalysis, ok bool) {
	p := r.Pacing
	if p == nil || len(p.Steps) < 3 || len(p.Trace) == 0 {
		return a, false
	}
	a.rtt = r.Link.RTTms
	for i, s := range p.Steps[1:3] {
		want := s[1] * payloadShare
		a.follow[i] = -1
		for _, pt := range p.Trace {
			if pt.T >= s[0] && pt.BW >= 0.8*want && pt.BW <= 1.2*want {
				a.follow[i] = pt.T - s[0]
				break
			}
		}
	}
	var low, all []float64
	for _, e := range p.Echo {
		if e[0] >= p.Steps[1][0] && e[0] < p.Steps[2][0] {
			all = append(all, e[1])
			if e[0] >= p.Steps[1][0]+2 {
				low = append(low, e[1])
			}
		}
	}
	slices.Sort(low)
	slices.Sort(all)
	a.p99Low, a.p99All = Percentile(low, 0.99), Percentile(all, 0.99)
	return a, true
}

// echoP99 is the p99 of the echoes after skip seconds, in ms.
func echoP99(r *Record, skip float64) (float64, int) {
	var v []float64
	for _, e := range r.Pacing.Echo {
		if e[0] >= skip {
			v = append(v, e[1])
		}
	}
	slices.Sort(v)
	return Percentile(v, 0.99), len(v)
}

// meanAfter is the mean of row from skip seconds on.
func meanAfter(row []float64, interval, skip float64) float64 {
	sum, n := 0.0, 0
	for i, v := range row {
		if float64(i+1)*interval > skip {
			sum += v
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

func (rs *results) pacingRecord(test string) *Record {
	for i := range rs.recs {
		r := &rs.recs[i]
		if r.Kind == "result" && r.Suite == "pacing" && r.Test == test && r.Pacing != nil {
			return r
		}
	}
	return nil
}

// pacingMarkdown is the report's section on the pacing suite.
func (rs *results) pacingMarkdown(m *Machine) string {
	var b strings.Builder
	b.WriteString("## Pacing (rate_mbit = \"auto\")\n\n")
	b.WriteString(machineLine(m))
	b.WriteString("Downloads from the backend (the client's side) to the public side: the client's KCP session is the sender, and its controller's state is read from the client's admin API every 100 ms. Shares are the mean rate from 5 s on.\n\n")
	if r := rs.pacingRecord("loaded"); r != nil {
		p99, n := echoP99(r, 3)
		fmt.Fprintf(&b, "**Loaded echo** (%s, %g ms RTT, %g Mbit/s): a download at %s Mbit/s (from 3 s on) and, on a second connection of the same session, %d echoes from 3 s on: p99 %s ms (%.1f × RTT).%s\n\n",
			r.Link, r.Link.RTTms, r.Link.RateMbit, f1(meanAfter(r.Pacing.Series[0], r.Pacing.Interval, 3)), n, f1(p99), p99/r.Link.RTTms, errMark(r))
	}
	if r := rs.pacingRecord("step"); r != nil {
		if a, ok := analyseStep(r); ok {
			fmt.Fprintf(&b, "**Rate step** (%g → %g → %g Mbit/s at %.0f s and %.0f s, 0%% loss): the estimate came within 20%% of the new rate %s after the step down and %s after the step up; echo p99 in the low phase %s ms (%.1f × RTT) from 2 s after the step, %s ms over the whole phase. Plot: `docs/bench/pacing-step.png`.%s\n\n",
				r.Pacing.Steps[0][1], r.Pacing.Steps[1][1], r.Pacing.Steps[2][1], r.Pacing.Steps[1][0], r.Pacing.Steps[2][0],
				followed(a.follow[0]), followed(a.follow[1]), f1(a.p99Low), a.p99Low/a.rtt, f1(a.p99All), errMark(r))
		}
	}
	for i := range rs.base {
		r := &rs.base[i]
		if r.Kind != "result" || r.Suite != "pacing" || r.Pacing == nil {
			continue
		}
		switch r.Test {
		case "loaded":
			p99, _ := echoP99(r, 3)
			fmt.Fprintf(&b, "Baseline, loaded echo, same run: download %s Mbit/s, echo p99 %s ms (%.1f × RTT).%s\n\n",
				f1(meanAfter(r.Pacing.Series[0], r.Pacing.Interval, 3)), f1(p99), p99/r.Link.RTTms, errMark(r))
		case "step":
			if a, ok := analyseStep(r); ok {
				fmt.Fprintf(&b, "Baseline, rate step, same run: followed %s down, %s up; echo p99 in the low phase %s ms (%.1f × RTT) from 2 s after the step, %s ms over the whole phase.%s\n\n",
					followed(a.follow[0]), followed(a.follow[1]), f1(a.p99Low), a.p99Low/a.rtt, f1(a.p99All), errMark(r))
			}
		}
	}
	for _, test := range []string{"share", "share-tcp", "share-bbr"} {
		r := rs.pacingRecord(test)
		if r == nil || len(r.Pacing.Series) < 2 {
			continue
		}
		x, y := meanAfter(r.Pacing.Series[0], r.Pacing.Interval, 5), meanAfter(r.Pacing.Series[1], r.Pacing.Interval, 5)
		fmt.Fprintf(&b, "**Sharing** (%s): %s %s Mbit/s, %s %s Mbit/s: %.0f%% / %.0f%% of what they carried together, the smaller %.0f%% of the larger.%s\n\n",
			r.Link, r.Pacing.Labels[0], f1(x), r.Pacing.Labels[1], f1(y), 100*x/(x+y), 100*y/(x+y), 100*min(x, y)/max(x, y), errMark(r))
		baseline := "baseline"
		if m != nil && m.Baseline != "" {
			baseline = m.Baseline
		}
		for i := range rs.base {
			r := &rs.base[i]
			if r.Kind != "result" || r.Suite != "pacing" || r.Test != test || r.Pacing == nil || len(r.Pacing.Series) < 2 {
				continue
			}
			x, y := meanAfter(r.Pacing.Series[0], r.Pacing.Interval, 5), meanAfter(r.Pacing.Series[1], r.Pacing.Interval, 5)
			fmt.Fprintf(&b, "Baseline (%s), same link, same run: %s Mbit/s and %s Mbit/s, the smaller %.0f%% of the larger.%s\n\n",
				baseline, f1(x), f1(y), 100*min(x, y)/max(x, y), errMark(r))
		}
	}
	t := &table{head: []string{"link (1% loss)", "kcp up", "kcp down", "TCP BBR up", "TCP BBR down", "kcp / BBR"}}
	for _, l := range rs.links("pacing") {
		ku, kd := rs.find(&l, "kcp", "", "throughput", "up", 1), rs.find(&l, "kcp", "", "throughput", "down", 1)
		bu, bd := rs.find(&l, "direct", "bbr", "throughput", "up", 1), rs.find(&l, "direct", "bbr", "throughput", "down", 1)
		if ku == nil && kd == nil || ku != nil && ku.Suite != "pacing" {
			continue
		}
		ratio := "–"
		if bu != nil && bd != nil && mbit(bu)+mbit(bd) > 0 {
			ratio = fmt.Sprintf("%.2f", (mbit(ku)+mbit(kd))/(mbit(bu)+mbit(bd)))
		}
		t.add(fmt.Sprintf("%g Mbit/s, %g ms", l.RateMbit, l.RTTms), fs(mbit(ku))+integrityMark(ku), fs(mbit(kd))+integrityMark(kd), fs(mbit(bu)), fs(mbit(bd)), ratio)
	}
	if len(t.rows) > 0 {
		b.WriteString("**Other links**, one stream (Mbit/s), plain TCP BBR measured on the same link:\n\n" + t.String() + "\n")
	}
	b.WriteString(rs.loadRange("pacing"))
	return b.String()
}

// plotPacingStep draws the step test: the link's rate, the controller's
// estimate and pacing rate, and what the download got, above the echo's
// RTT.
func plotPacingStep(file string, r *Record) error {
	pr := r.Pacing
	end := r.Seconds
	top := newPlot(fmt.Sprintf("rate step, RTT %g ms, 0%% loss: the sender's KCP rate controller", r.Link.RTTms), "s", "Mbit/s")
	top.X.Min, top.X.Max = 0, end
	top.Y.Min, top.Y.Max = 0, r.Link.RateMbit*1.7
	var link plotter.XYs
	for i, s := range pr.Steps {
		if i > 0 {
			link = append(link, plotter.XY{X: s[0], Y: pr.Steps[i-1][1]})
		}
		link = append(link, plotter.XY{X: s[0], Y: s[1]})
	}
	link = append(link, plotter.XY{X: end, Y: pr.Steps[len(pr.Steps)-1][1]})
	var bw, pace plotter.XYs
	for _, pt := range pr.Trace {
		bw = append(bw, plotter.XY{X: pt.T, Y: pt.BW})
		pace = append(pace, plotter.XY{X: pt.T, Y: pt.Pace})
	}
	// What arrived, over 500 ms.
	var got plotter.XYs
	if len(pr.Series) > 0 {
		k := max(int(0.5/pr.Interval), 1)
		row := pr.Series[0]
		for i := 0; i+k <= len(row); i += k {
			sum := 0.0
			for _, v := range row[i : i+k] {
				sum += v
			}
			got = append(got, plotter.XY{X: float64(i+k) * pr.Interval, Y: sum / float64(k)})
		}
	}
	for _, l := range []struct {
		label string
		xys   plotter.XYs
		c     color.Color
		dash  []vg.Length
	}{
		{"link rate", link, color.Gray{Y: 60}, []vg.Length{vg.Points(4), vg.Points(2)}},
		{"pacing rate", pace, plotutil.Color(2), nil},
		{"bandwidth estimate", bw, plotutil.Color(0), nil},
		{"delivered (500 ms)", got, plotutil.Color(1), nil},
	} {
		if len(l.xys) == 0 {
			continue
		}
		line, err := plotter.NewLine(l.xys)
		if err != nil {
			return err
		}
		line.Color, line.Dashes, line.Width = l.c, l.dash, vg.Points(1.2)
		top.Add(line)
		top.Legend.Add(l.label, line)
	}
	bottom := newPlot("echo RTT on a second connection of the same session", "s", "ms")
	bottom.X.Min, bottom.X.Max = 0, end
	var echo plotter.XYs
	for _, e := range pr.Echo {
		echo = append(echo, plotter.XY{X: e[0], Y: e[1]})
	}
	if len(echo) > 0 {
		sc, err := plotter.NewScatter(echo)
		if err != nil {
			return err
		}
		sc.GlyphStyle.Radius = vg.Points(1)
		sc.GlyphStyle.Color = plotutil.Color(0)
		bottom.Add(sc)
		for _, k := range []float64{1, 3} {
			l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: k * r.Link.RTTms}, {X: end, Y: k * r.Link.RTTms}})
			if err != nil {
				return err
			}
			l.Color, l.Dashes = color.Gray{Y: 100}, []vg.Length{vg.Points(2), vg.Points(2)}
			bottom.Add(l)
			bottom.Legend.Add(fmt.Sprintf("%g × RTT", k), l)
		}
	}
	return saveTiles(file, [][]*plot.Plot{{top}, {bottom}}, 28*vg.Centimeter, 24*vg.Centimeter)
}

// pacingTargetsMarkdown lists issue 18's targets with what was measured.
func (rs *results) pacingTargetsMarkdown() string {
	var vs []verdict
	status := func(met, known bool) string {
		switch {
		case !known:
			return "not measured"
		case met:
			return "met"
		}
		return "missed"
	}
	// The loss sweep: kcp (auto) each way, against plain TCP BBR.
	for _, l := range rs.links("lossy") {
		if l.RTTms != 50 || l.RateMbit != 100 {
			continue
		}
		want := 85.0
		if l.LossPct >= 5 || l.Burst > 0 {
			want = 80
		}
		ku, kd := rs.find(&l, "kcp", "", "throughput", "up", 1), rs.find(&l, "kcp", "", "throughput", "down", 1)
		if ku == nil || kd == nil || ku.Suite != "lossy" {
			continue
		}
		bu, bd := rs.find(&l, "direct", "bbr", "throughput", "up", 1), rs.find(&l, "direct", "bbr", "throughput", "down", 1)
		low := min(mbit(ku), mbit(kd))
		vs = append(vs, verdict{fmt.Sprintf("kcp (auto), %s, 1 stream: ≥ %g Mbit/s each way", l, want),
			fmt.Sprintf("%s up, %s down", fs(mbit(ku)), fs(mbit(kd))), status(low >= want, true)})
		if bu != nil && bd != nil {
			ru, rd := mbit(ku)/mbit(bu), mbit(kd)/mbit(bd)
			vs = append(vs, verdict{fmt.Sprintf("kcp (auto), %s: ≥ 0.9 × TCP BBR in the same run", l),
				fmt.Sprintf("%.2f up (%s), %.2f down (%s)", ru, fs(mbit(bu)), rd, fs(mbit(bd))), status(min(ru, rd) >= 0.9, true)})
		}
	}
	// Other links.
	for _, c := range []struct{ rate, rtt, want float64 }{{10, 200, 8.5}, {20, 20, 17}, {300, 10, 200}} {
		l := LinkSpec{RTTms: c.rtt, RateMbit: c.rate, LossPct: 1}
		ku, kd := rs.find(&l, "kcp", "", "throughput", "up", 1), rs.find(&l, "kcp", "", "throughput", "down", 1)
		bu, bd := rs.find(&l, "direct", "bbr", "throughput", "up", 1), rs.find(&l, "direct", "bbr", "throughput", "down", 1)
		if ku == nil || kd == nil {
			continue
		}
		m := fmt.Sprintf("%s up, %s down", fs(mbit(ku)), fs(mbit(kd)))
		if bu != nil && bd != nil {
			m += fmt.Sprintf(" (TCP BBR %s / %s)", fs(mbit(bu)), fs(mbit(bd)))
		}
		vs = append(vs, verdict{fmt.Sprintf("kcp (auto), %g Mbit/s, %g ms, 1%% loss, 1 stream: ≥ %g Mbit/s", c.rate, c.rtt, c.want), m,
			status(min(mbit(ku), mbit(kd)) >= c.want, true)})
	}
	if r := rs.pacingRecord("step"); r != nil {
		if a, ok := analyseStep(r); ok {
			vs = append(vs, verdict{"rate step 100 → 20 → 100: the estimate follows within 2 s each way",
				fmt.Sprintf("%s down, %s up", followed(a.follow[0]), followed(a.follow[1])), status(a.follow[0] >= 0 && a.follow[0] <= 2 && a.follow[1] >= 0 && a.follow[1] <= 2, true)})
			vs = append(vs, verdict{"rate step: echo p99 in the 20 Mbit/s phase < 3 × RTT",
				fmt.Sprintf("%s ms from 2 s after the step (%s ms over the whole phase)", f1(a.p99Low), f1(a.p99All)), status(a.p99Low < 3*a.rtt, true)})
		}
	}
	if r := rs.pacingRecord("loaded"); r != nil {
		p99, _ := echoP99(r, 3)
		vs = append(vs, verdict{"0% loss, full load: echo on a second connection p99 ≤ 2 × RTT", fmt.Sprintf("%s ms", f1(p99)), status(p99 <= 2*r.Link.RTTms, true)})
	}
	if r := rs.pacingRecord("share"); r != nil && len(r.Pacing.Series) == 2 {
		x, y := meanAfter(r.Pacing.Series[0], r.Pacing.Interval, 5), meanAfter(r.Pacing.Series[1], r.Pacing.Interval, 5)
		vs = append(vs, verdict{"two warren sessions on one link within 20% of each other", fmt.Sprintf("%s and %s Mbit/s", f1(x), f1(y)), status(min(x, y) >= 0.8*max(x, y), true)})
	}
	if r := rs.pacingRecord("share-bbr"); r != nil && len(r.Pacing.Series) == 2 {
		x, y := meanAfter(r.Pacing.Series[0], r.Pacing.Interval, 5), meanAfter(r.Pacing.Series[1], r.Pacing.Interval, 5)
		vs = append(vs, verdict{"warren beside one TCP BBR flow: ≤ 70% of the link", fmt.Sprintf("warren %s, BBR %s Mbit/s: %.0f%%", f1(x), f1(y), 100*x/(x+y)), status(x <= 0.7*(x+y), true)})
	}
	return verdictTable("## Targets of issue 18 (rate_mbit = \"auto\")", "target (issue 18)", vs)
}

// followed is how long the estimate took to follow a step; "never" for a
// negative time (it did not).
func followed(v float64) string {
	if v < 0 {
		return "never"
	}
	return fmt.Sprintf("%.1f s", v)
}
