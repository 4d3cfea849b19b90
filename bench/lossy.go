package main

// The lossy suite: the same measurements across an emulated link (linkem,
// from ../shared/tools/linkem; root only). linkem makes two network
// namespaces NAME-a (10.77.0.1) and NAME-b (10.77.0.2) joined by a
// userspace link with delay, rate limit and loss. The warren client and
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
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	addrA = "10.77.0.1" // client side
	addrB = "10.77.0.2" // server side
)

type lossyOpts struct {
	linkemDir string  // source of linkem (built here)
	name      string  // linkem --name
	rttMs     float64 // round trip, split evenly between the directions
	rateMbit  float64 // each direction
	links     []LinkSpec
	paths     []string // kcp, kcp-fec, tcp, direct, tcpbench
	ccs       []string // for tcp, direct and tcpbench
	kcpRate   int      // [kcp] rate_mbit of the warren kcp paths; 0 unpaced
	d         durations
}

type linkem struct {
	bin, tcpbench, name string
	up                  bool
}

func buildLinkem(srcDir, outDir string) (*linkem, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command("go", "build", "-o", outDir+"/", ".", "./cmd/tcpbench")
	cmd.Dir = srcDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building linkem in %s: %v\n%s", srcDir, err, out)
	}
	return &linkem{bin: filepath.Join(outDir, "linkem"), tcpbench: filepath.Join(outDir, "tcpbench")}, nil
}

func (l *linkem) nsA() string { return l.name + "-a" }
func (l *linkem) nsB() string { return l.name + "-b" }
func (l *linkem) dev() string { return l.name + "0" }
func run(argv ...string) (string, error) {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (l *linkem) start(spec LinkSpec) error {
	// Under the process lock, so that a shutdown (which takes the link
	// down after stopping the processes) cannot interleave with it.
	procsMu.Lock()
	defer procsMu.Unlock()
	if stopping {
		return fmt.Errorf("stopping")
	}
	l.down() // a previous run killed hard may have left it
	args := []string{l.bin, "up", "--name", l.name, "--seed", "1",
		"--delay", fmt.Sprintf("%gms", spec.RTTms/2), "--rate", fmt.Sprintf("%gmbit", spec.RateMbit)}
	if spec.LossPct > 0 {
		args = append(args, "--loss", fmt.Sprintf("%g%%", spec.LossPct))
		if spec.Burst > 0 {
			args = append(args, "--loss-burst", fmt.Sprintf("%g", spec.Burst))
		}
	}
	out, err := run(args...)
	if err != nil {
		return err
	}
	l.up = true
	fmt.Fprint(os.Stderr, out)
	return nil
}

// down stops the link and returns its final counters.
func (l *linkem) down() []linkDir {
	out, _ := exec.Command(l.bin, "down", "--name", l.name).CombinedOutput()
	l.up = false
	return parseLinkemStats(string(out))
}

// stats returns the link's counters so far.
func (l *linkem) stats() []linkDir {
	out, _ := exec.Command(l.bin, "stats", "--name", l.name).CombinedOutput()
	return parseLinkemStats(string(out))
}

// setCC sets the congestion control of every TCP connection over the link,
// in both namespaces, from the next connection on.
func (l *linkem) setCC(cc string) error {
	for _, ns := range []struct{ ns, src string }{{l.nsA(), addrA}, {l.nsB(), addrB}} {
		if _, err := run("ip", "netns", "exec", ns.ns, "ip", "route", "replace", "10.77.0.0/24", "dev", l.dev(),
			"proto", "kernel", "scope", "link", "src", ns.src, "congctl", cc); err != nil {
			return err
		}
	}
	return nil
}

// tunnelCC returns the congestion control of the client's TCP connections
// to port (from ss in the client's namespace).
func (l *linkem) tunnelCC(port int) []string {
	out, _ := exec.Command("ip", "netns", "exec", l.nsA(), "ss", "-tin", "dst", fmt.Sprintf("%s:%d", addrB, port)).CombinedOutput()
	return parseSSCongestion(string(out))
}

// tcpbenchRun measures plain TCP goodput from NAME-a to NAME-b (the "down"
// direction) with the given congestion control, for dur.
func (l *linkem) tcpbenchRun(dur time.Duration, cc string) (float64, string, error) {
	out, err := run("ip", "netns", "exec", l.nsA(), l.tcpbench, "-c", addrB+":5201", "-t", dur.String(), "-cc", cc)
	if err != nil {
		return 0, out, err
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "goodput" {
			v, err := strconv.ParseFloat(f[i+1], 64)
			return v, strings.TrimSpace(out), err
		}
	}
	return 0, out, fmt.Errorf("tcpbench said %q", out)
}

func (rn *runner) lossy(o lossyOpts) error {
	lk, err := buildLinkem(o.linkemDir, filepath.Join(rn.tmp, "linkem"))
	if err != nil {
		return err
	}
	lk.name = o.name
	rn.cleanups = append(rn.cleanups, func() {
		procsMu.Lock() // after start's linkem up, if one is running
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

func (rn *runner) lossyLink(lk *linkem, o lossyOpts, spec LinkSpec, li int, port *int) error {
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
	if b, err := os.ReadFile("/run/linkem/" + lk.name + ".pid"); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			rn.bg = append(rn.bg, pid) // linkem's CPU is the link's, not other users'
		}
	}
	rn.linkStats = lk.stats
	defer func() { rn.linkStats = nil }()
	var errs firstError
	fail := errs.add
	link := spec
	for _, name := range o.paths {
		switch name {
		case "tcpbench":
			sink, _, err := startProc("tcpbench-sink", lk.nsB(), dir, false, nil, lk.tcpbench, "-s", "-l", addrB+":5201")
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
				v, out, err := lk.tcpbenchRun(o.d.Dur+o.d.Warmup, cc)
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
				fmt.Fprintf(os.Stderr, "== %s: %s\n", spec, pathLabel(name, cc))
				// A fresh tunnel for each test: a slow tunnel may still
				// hold megabytes a previous test queued.
				fresh := func() (target, func(), error) {
					*port++
					if *port > 7900 {
						*port = 7001
					}
					p := *port
					ts := &tunnelSpec{Path: ps, Dir: filepath.Join(dir, fmt.Sprintf("%s-%s-%d", name, cc, p)),
						TunnelAddr: fmt.Sprintf("%s:%d", addrB, p), PublicAddr: addrB, PublicPort: p + 1000,
						Target: backAddr, Cert: rn.cert, Key: rn.key, Fingerprint: rn.fp, Token: rn.token,
						ExtraServer: rn.extraServer, ExtraClient: rn.extraClient, Env: rn.env, KCPRate: o.kcpRate}
					tn, err := startTunnel(rn.warren, ts, lk.nsB(), lk.nsA(), lg)
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
				fail(rn.perfTests(lg, Record{Suite: "lossy", Link: &link, Path: name, CC: cc}, o.d, fresh))
			}
		}
	}
	return errs.err
}
