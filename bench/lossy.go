package main

// The lossy suite: the same measurements across an emulated link (root
// only; emulator.go: the kernel's netem where it exists, else linkem). The
// emulator makes two network namespaces NAME-a (10.77.0.1) and NAME-b
// (10.77.0.2) joined by a link with delay, rate limit and loss. The warren client and
// the backend run in NAME-a (the private side), the warren server and the
// load generator in NAME-b (the public side), so every byte between the
// public side and the backend crosses the link once: through the tunnel,
// or, for the direct reference, over a plain TCP connection from NAME-b to
// the backend.
//
// TCP congestion control: a namespace's default can only be switched to
// one in the host-wide net.ipv4.tcp_allowed_congestion_control, which this
// tool leaves alone; instead it sets the link's route's "congctl" in both
// namespaces, which applies to every TCP connection over the link (the
// tunnel's, and the direct reference's), and checks the tunnel's socket
// with "ss -tin".

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

type lossyOpts struct {
	rttMs    float64 // round trip, split evenly between the directions
	rateMbit float64 // each direction
	links    []LinkSpec
	paths    []string // kcp, kcp-fec, tcp, direct, tcpbench
	ccs      []string // for tcp, direct and tcpbench
	kcpRate  int      // [kcp] rate_mbit of the kcp-fixed path
	d        durations
}

func (rn *runner) lossy(o lossyOpts, lk emulator) error {
	rn.cleanups = append(rn.cleanups, func() {
		procsMu.Lock() // after start's link up, if one is running
		defer procsMu.Unlock()
		lk.down()
	})
	var errs firstError
	fail := errs.add
	port := 7000
	for li, spec := range o.links {
		if isStopping() {
			break
		}
		if err := rn.lossyLink(lk, o, spec, li, &port); err != nil {
			fail(err)
		}
		counters := lk.down()
		l := spec
		rn.rec.emit(Record{Kind: "link", Suite: "lossy", Link: &l, LinkDir: counters})
		killAll() // anything of this link still running
	}
	return errs.err
}

func (rn *runner) lossyLink(lk emulator, o lossyOpts, spec LinkSpec, li int, port *int) error {
	fmt.Fprintf(os.Stderr, "== lossy link: RTT %gms, %g Mbit/s, %s\n", spec.RTTms, spec.RateMbit, spec)
	if err := lk.start(spec); err != nil {
		return err
	}
	dir := filepath.Join(rn.tmp, fmt.Sprintf("lossy-%d", li))
	os.MkdirAll(dir, 0o755)
	back, backAddr, err := startBackend(rn.self, lk.nsA(), dir, addrA+":9000")
	if err != nil {
		return err
	}
	defer back.stop(5 * time.Second)
	lg, err := startLoadgen(rn.self, lk.nsB(), dir)
	if err != nil {
		return err
	}
	defer lg.p.stop(5 * time.Second)
	rn.bg = []int{back.pid(), lg.p.pid()}
	if pid := lk.pid(); pid != 0 {
		rn.bg = append(rn.bg, pid) // the emulator's CPU is the link's, not other users'
	}
	rn.linkStats = lk.stats
	defer func() { rn.linkStats = nil }()
	var errs firstError
	fail := errs.add
	link := spec
	for _, name := range o.paths {
		switch name {
		case "tcpbench":
			if lk.tcpbench() == "" {
				fail(errNoTCPBench)
				continue
			}
			sink, _, err := startProc("tcpbench-sink", lk.nsB(), dir, false, nil, lk.tcpbench(), "-s", "-l", addrB+":5201")
			if err != nil {
				fail(err)
				continue
			}
			time.Sleep(300 * time.Millisecond)
			for _, cc := range o.ccs {
				// The route's congctl overrides the socket's (-cc).
				if err := lk.setCC(cc); err != nil {
					return err
				}
				m0 := machineTimes()
				v, out, err := tcpbenchRun(lk, o.d.Dur+o.d.Warmup, cc)
				if err != nil {
					fail(err)
					continue
				}
				r := Record{Kind: "result", Suite: "lossy", Link: &link, Path: "tcpbench", CC: cc, Test: "throughput",
					Dir: "down", Conns: 1, Mbitps: v, MBps: v / 8, Seconds: (o.d.Dur + o.d.Warmup).Seconds(), Note: out, Integrity: "n/a"}
				w := &window{m0: m0, m1: machineTimes()}
				w.fill(&r, 0)
				r.CPU = nil
				rn.rec.emit(r)
			}
			sink.stop(2 * time.Second)
		case "direct":
			for _, cc := range o.ccs {
				if err := lk.setCC(cc); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "== %s: direct/%s\n", spec, cc)
				direct := func() (target, func(), error) { return target{addr: backAddr}, func() {}, nil }
				fail(rn.perfTests(lg, Record{Suite: "lossy", Link: &link, Path: "direct", CC: cc}, o.d, direct))
			}
		default:
			ps, ok := allPaths[name]
			if !ok || ps.Transport == "" {
				return fmt.Errorf("unknown lossy path %q", name)
			}
			ccs := []string{""}
			if ps.Transport == "tcp" {
				ccs = o.ccs
			}
			for _, cc := range ccs {
				if cc != "" {
					if err := lk.setCC(cc); err != nil {
						return err
					}
				}
				for _, b := range rn.builds {
					fmt.Fprintf(os.Stderr, "== %s: %s\n", spec, buildLabel(pathLabel(name, cc), b))
					// A fresh tunnel for each test: a slow tunnel may still
					// hold megabytes a previous test queued.
					fresh := func() (target, func(), error) {
						*port++
						if *port > 7900 {
							*port = 7001
						}
						p := *port
						ts := &tunnelSpec{Path: ps, Dir: filepath.Join(dir, fmt.Sprintf("%s-%s-%d", name, cc, p)), UDP: b.name == "" && rn.tests["udp"],
							TunnelAddr: fmt.Sprintf("%s:%d", addrB, p), PublicAddr: addrB, PublicPort: p + 1000,
							Target: backAddr, Cert: rn.cert, Key: rn.key, Fingerprint: rn.fp, Token: rn.token,
							ExtraServer: rn.extraServer, ExtraClient: rn.extraClient, Env: rn.env, KCPRate: kcpRateOf(ps, o.kcpRate, b.name == ""), CC: cc}
						tn, err := startTunnel(b.bin, ts, lk.nsB(), lk.nsA(), lg)
						if err != nil {
							return target{}, nil, err
						}
						if cc != "" {
							got := lk.tunnelCC(p)
							if len(got) == 0 || got[0] != cc {
								tn.stop()
								return target{}, nil, fmt.Errorf("tunnel TCP runs %v, want %s", got, cc)
							}
						}
						return target{addr: tn.public, pids: []int{tn.server.pid(), tn.client.pid()}}, tn.stop, nil
					}
					fail(rn.perfTests(lg, Record{Suite: "lossy", Link: &link, Path: name, CC: cc, Build: b.name}, o.d, fresh))
				}
			}
		}
	}
	return errs.err
}

// kcpRateOf is [kcp] rate_mbit for path ps: fixed is the kcp-fixed path's
// rate. The build under test (head) runs kcp, kcp-fec and kcp-plain with
// the rate controller, "auto" (the default now; kcp-unpaced runs 0); a
// baseline build runs them at its own default, since a build older than
// "auto" would refuse it.
func kcpRateOf(ps pathSpec, fixed int, head bool) string {
	switch {
	case ps.KCPRate == "fixed":
		return fmt.Sprint(fixed)
	case ps.KCPRate == "" && head:
		return `"auto"`
	}
	return ps.KCPRate
}
