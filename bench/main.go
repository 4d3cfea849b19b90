// Command bench is warren's benchmark suite. It builds the warren binary
// from the repository above, starts a backend, "warren server -c FILE" and
// "warren client -c FILE" as real processes with config files it writes,
// and measures through the tunnel and, as the reference in the same run,
// straight to the backend:
//
//   - bulk throughput, 1 and 8 connections, each way, every byte checked;
//   - request/response latency, 64-byte messages, 1 and 64 connections;
//   - new-connection setup (dial to first echoed byte), 32 dialers;
//   - resident memory of server and client, idle and per idle public
//     connection (2 000 and 10 000 connections);
//   - CPU seconds of server and client per GB moved.
//
// Transports: tcp (TCP+TLS), kcp (KCP+TLS), kcp-fec (FEC 10+3), and
// tcp-plain (tls = false) as a reference. The lossy suite (root, Linux)
// repeats the measurements across an emulated path of 50 ms RTT and
// 100 Mbit/s with 0-5% random or burst loss, comparing warren's kcp,
// warren's tcp under cubic and bbr, and plain TCP. The path is the
// kernel's netem where it has it, else the userspace linkem from the
// binary -linkem names (emulator.go). The high-availability scenario
// (ha.go) runs three servers and one client of them all behind a
// round-robin front, and measures a failover and a rolling restart under
// a steady load.
//
//	go run . -quick          # loopback, about 2 minutes
//	go run . -all            # loopback, then the lossy suite if root (and netem or -linkem)
//	go run . -lossy          # the lossy suite only
//	go run . -lossy -linkem /path/to/linkem   # on a kernel without netem
//	go run . -ha             # the high-availability scenario (three servers, a failover, a rolling restart)
//	go run . -report         # redo the markdown and plots from results/*.jsonl
//	go run . -baseline main  # also measure main's binary, interleaved, and compare
//
// With -baseline COMMIT a second binary, built from COMMIT, runs every
// warren path beside the one under test, the two interleaved in each round
// on the same machine at the same time, and the report gives the ratios:
// "within noise" and "half of before" are then figures of one run.
//
// Output: results/{loopback,lossy,ha}.jsonl (one JSON object per figure),
// results/report.md (markdown tables and targets) and plots in
// ../docs/bench/. Never run in CI: it takes minutes, needs quiet cores,
// and its lossy half needs root.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type runner struct {
	self, warren string
	builds       []build // warren under test, then the -baseline one if any
	tmp          string
	rec          *recorder
	cert, key    string
	fp, token    string
	extraServer  string
	extraClient  string
	env          []string
	cleanups     []func()
	bg           []int            // PIDs of the load generator and backend in use
	tests        map[string]bool  // nil: all
	linkStats    func() []linkDir // lossy: the emulated link's counters
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "_backend":
			backendMain(os.Args[2:])
			return
		case "_loadgen":
			loadgenMain()
			return
		case "_tlsrelay":
			tlsRelayMain(os.Args[2:])
			return
		case "_smuxrelay":
			smuxRelayMain(os.Args[2:])
			return
		case "_poll":
			pollMain(os.Args[2:])
			return
		}
	}
	os.Exit(orchestrate())
}

func orchestrate() int {
	var (
		quick      = flag.Bool("quick", false, "loopback only, short windows, 2 000 idle connections (about 2 minutes)")
		all        = flag.Bool("all", false, "loopback suite, then the lossy suite (skipped unless root, with netem or -linkem)")
		lossyOnly  = flag.Bool("lossy", false, "the lossy suite only (root; netem or -linkem)")
		haOnly     = flag.Bool("ha", false, "the high-availability scenario only: three servers, a failover and a rolling restart under load (about a minute a round)")
		pacingF    = flag.Bool("pacing", false, "the pacing suite (root; netem or -linkem): the KCP rate controller over time, a rate step, sharing, other links")
		pLinks     = flag.String("pacing-links", "10/200,20/20,300/10", "pacing: other links, RATE_MBIT/RTT_MS, one stream each way at 1% loss")
		pTests     = flag.String("pacing-tests", "", "pacing: the tests to run, of loaded,step,share,share-tcp (two plain TCP BBR flows: the reference for share),share-bbr,links (empty: all)")
		pShare     = flag.Duration("pacing-share", 20*time.Second, "pacing: how long each share test runs")
		report     = flag.Bool("report", false, "only redo the markdown report and plots from the JSON lines in -out")
		outDir     = flag.String("out", "results", "directory for the JSON lines and the markdown report")
		plotDir    = flag.String("plots", "../docs/bench", "directory for the plots (PNG); empty for none")
		repo       = flag.String("repo", "..", "the warren repository (its ./cmd/warren is built, from HEAD)")
		worktree   = flag.Bool("worktree", false, "build warren from the files as they are, not from HEAD")
		baseline   = flag.String("baseline", "", "also build warren from this commit and measure it beside, in the same run (the report compares them)")
		paths      = flag.String("paths", "direct,tls-chain,smux-chain,tcp,tcp-x4,kcp,kcp-fec,tcp-plain", "loopback paths: direct,tls-chain (two bare TLS relays back to back: the reference for tcp's CPU per byte),smux-chain (the same with one smux session between them: the floor of smux over TLS),tcp,tcp-x4 (connections = 4),kcp,kcp-fec,tcp-plain,kcp-plain")
		memFlag    = flag.String("mem", "2000,10000", "idle public connections for the memory figures (cumulative)")
		dur        = flag.Duration("dur", 3*time.Second, "loopback throughput window")
		warm       = flag.Duration("warmup", time.Second, "loopback throughput warm-up")
		lat        = flag.Duration("lat", 3*time.Second, "loopback latency and connect windows")
		settle     = flag.Duration("settle", 3*time.Second, "memory: wait this long before reading RSS")
		tests      = flag.String("tests", "throughput,latency,connect,memory,udp,isolation", "which tests to run (udp: UDP services, and iperf3 -u when installed; sessions, not run unless named: one server with many client sessions; cluster, likewise: five servers over etcd, 500 clients)")
		sessN      = flag.String("sessions", "1000,2000,5000,10000", "sessions: client session counts (-swarm-procs processes open them)")
		sessPaths  = flag.String("session-paths", "tcp,kcp", "sessions: transports (tcp, kcp: with TLS; tcp-domains, kcp-domains: a domain per client on an HTTP entry point instead of a port, one file descriptor a session on the server, not two)")
		sessIdle   = flag.Duration("session-idle", 10*time.Second, "sessions: the window over which the idle server's CPU is read")
		sessSettle = flag.Duration("session-settle", 20*time.Second, "sessions: how long after the last session is up before the idle CPU window (a new session pings at each heartbeat until it has measured its RTT three times: 15 s with the default 5 s interval)")
		sessStorm  = flag.Duration("storm-timeout", 120*time.Second, "sessions: how long all sessions may take to come up, and to come back after the restart")
		sessEcho   = flag.Duration("storm-echo", 10*time.Second, "sessions: the echo window during the reconnect storm")
		sessPerIP  = flag.Int("session-handshakes", 1024, "sessions: the server's max_handshakes_per_ip (every swarm client has the one source address)")
		clusterN   = flag.Int("cluster-clients", 500, "cluster: clients of the five servers, one route each (run with -tests cluster)")
		clusterP   = flag.Int("cluster-port", 24000, "cluster: the first public port of its clients (N ports from here, below the ephemeral range)")
		sessProcs  = flag.Int("swarm-procs", 0, "sessions: swarm processes sharing the N clients (0: one per 2 500 clients)")
		sessNice   = flag.Int("swarm-nice", 5, "sessions: the swarm processes' niceness (the server's is the bench's own), so that the server gets the CPU first")
		sessPerf   = flag.String("storm-perf", "", "sessions: directory for a system-wide perf record (perf record -a -g) of each storm's first -storm-perf-dur; empty for none")
		sessPerfD  = flag.Duration("storm-perf-dur", 30*time.Second, "sessions: how long -storm-perf records")
		sessPort   = flag.Int("session-port", 20000, "sessions: the first public port of the swarm's clients (N ports from here, below the ephemeral range; the echo client gets the one before)")
		attack     = flag.Duration("attack", 10*time.Second, "loopback isolation: echo window while stuck connections press on the tunnel")
		rounds     = flag.Int("rounds", 3, "loopback: rounds of every test (the report shows the median)")

		emuKind   = flag.String("emulator", "auto", "lossy: the link emulator: netem (the kernel's), linkem (userspace, -linkem), or auto: netem if the kernel has it, else linkem")
		linkemBin = flag.String("linkem", "", "lossy: the linkem binary, for kernels without netem (build it from its source: go build -o DIR/ . ./cmd/tcpbench)")
		tcpbench  = flag.String("tcpbench", "", "lossy: the tcpbench binary, for the tcpbench path (default: beside -linkem)")
		lkName    = flag.String("linkem-name", "wbench", "lossy: the link's name (namespaces NAME-a, NAME-b)")
		rtt       = flag.Float64("rtt", 50, "lossy: round-trip time, ms")
		rate      = flag.Float64("rate", 100, "lossy: link rate each way, Mbit/s")
		kcpRate   = flag.Int("kcp-rate", -1, "lossy: [kcp] rate_mbit of the kcp-fixed path; -1 is 90% of -rate (the kcp path runs \"auto\", the default, kcp-unpaced 0)")
		losses    = flag.String("loss", "0,1,2,5", "lossy: random loss rates, %")
		bursts    = flag.String("burst-loss", "1,2,5", "lossy: loss rates with burst loss, %")
		burstLen  = flag.Float64("burst-len", 4, "lossy: mean burst length, packets")
		lPaths    = flag.String("lossy-paths", "kcp,kcp-fixed,kcp-unpaced,kcp-fec,tcp,direct,tcpbench", "lossy paths: kcp,kcp-fixed,kcp-unpaced,kcp-fec,tcp,tcp-plain,kcp-plain,direct,tcpbench")
		ccs       = flag.String("cc", "cubic,bbr", "lossy: TCP congestion controls for tcp, direct and tcpbench")
		lDur      = flag.Duration("lossy-dur", 4*time.Second, "lossy: throughput window")
		lWarm     = flag.Duration("lossy-warmup", 2*time.Second, "lossy: throughput warm-up")
		lLat      = flag.Duration("lossy-lat", 8*time.Second, "lossy: latency window at 1 connection (64 connections and connect: 4s)")

		extraS = flag.String("server-toml", "", "extra TOML written in [server] of the server's config (e.g. for trying a setting)")
		extraC = flag.String("client-toml", "", "extra TOML written in [client] of the client's config")
		envF   = flag.String("warren-env", "", "extra environment of the warren processes, comma-separated (e.g. GOGC=50)")
		keep   = flag.Bool("keep", false, "keep the temporary directory (configs, logs)")
		force  = flag.Bool("force", false, "run even though $CI is set")
	)
	flag.Parse()
	if os.Getenv("CI") != "" && !*force && !*report {
		fmt.Fprintln(os.Stderr, "bench: $CI is set: this suite is not for CI (use -force to run anyway)")
		return 2
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if *report {
		if err := writeReport(*outDir, *plotDir); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		return 0
	}

	doLoopback := !*lossyOnly && !*haOnly && !*pacingF
	doLossy := *lossyOnly || *all
	doHA := *haOnly || *all
	doPacing := *pacingF
	if *quick {
		doLossy = *lossyOnly
		*dur, *warm, *lat, *settle = 2*time.Second, 500*time.Millisecond, 2*time.Second, 2*time.Second
		if !isSet("attack") {
			*attack = 5 * time.Second
		}
		if !isSet("rounds") {
			*rounds = 1
		}
		if !isSet("mem") {
			*memFlag = "2000"
		}
		if !isSet("lossy-dur") {
			*lDur, *lWarm, *lLat = 3*time.Second, time.Second, 5*time.Second
		}
	}
	var lk emulator // the lossy and pacing suites' link
	if doLossy || doPacing {
		why := lossyUnavailable()
		if why == "" {
			var err error
			if lk, err = newEmulator(emulatorOpts{kind: *emuKind, linkemBin: *linkemBin, tcpbench: *tcpbench, name: *lkName}); err != nil {
				why = err.Error()
			}
		}
		if why != "" {
			if *lossyOnly || doPacing {
				fmt.Fprintln(os.Stderr, "bench: lossy and pacing suites unavailable:", why)
				return 2
			}
			fmt.Fprintln(os.Stderr, "bench: skipping the lossy suite:", why)
			doLossy = false
		}
	}

	rn := &runner{extraServer: *extraS, extraClient: *extraC, token: randomToken(), tests: map[string]bool{}}
	for _, t := range strings.Split(*tests, ",") {
		rn.tests[strings.TrimSpace(t)] = true
	}
	if *envF != "" {
		rn.env = strings.Split(*envF, ",")
	}
	if !rn.tests["memory"] {
		*memFlag = ""
	}
	if !slices.ContainsFunc([]string{"throughput", "latency", "connect", "memory", "udp", "isolation"}, func(t string) bool { return rn.tests[t] }) {
		doLoopback = false // the sessions scenario alone
	}
	code := 0
	var cleanupOnce sync.Once
	cleanup := func() {
		cleanupOnce.Do(func() {
			shutdown()
			for _, f := range rn.cleanups {
				f()
			}
			if rn.tmp != "" && !*keep {
				os.RemoveAll(rn.tmp)
			} else if rn.tmp != "" {
				fmt.Fprintln(os.Stderr, "bench: kept", rn.tmp)
			}
		})
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nbench: %v: stopping everything\n", s)
		cleanup()
		os.Exit(130)
	}()
	defer func() {
		if p := recover(); p != nil {
			cleanup()
			panic(p)
		}
	}()

	err := func() error {
		raiseNoFile()
		var err error
		if rn.tmp, err = os.MkdirTemp("", "warren-bench-"); err != nil {
			return err
		}
		os.Chmod(rn.tmp, 0o755)
		if rn.self, err = os.Executable(); err != nil {
			return err
		}
		// A copy of ourselves in tmp: "go run" deletes its binary on exit,
		// and child processes in namespaces need a path they can reach.
		self := filepath.Join(rn.tmp, "bench")
		if err := copyFile(rn.self, self); err != nil {
			return err
		}
		rn.self = self
		fmt.Fprintln(os.Stderr, "bench: building warren from", *repo)
		if rn.warren, err = buildWarren(*repo, rn.tmp, *worktree); err != nil {
			return err
		}
		rn.builds = []build{{bin: rn.warren}}
		if *baseline != "" {
			fmt.Fprintln(os.Stderr, "bench: building the baseline warren from", *baseline)
			bin, err := buildCommit(*repo, rn.tmp, *baseline)
			if err != nil {
				return fmt.Errorf("-baseline: %w", err)
			}
			rn.builds = append(rn.builds, build{name: "baseline", bin: bin})
		}
		if rn.cert, rn.key, rn.fp, err = writeCert(rn.tmp); err != nil {
			return err
		}
		mach := machine(*repo, *worktree)
		if *baseline != "" {
			mach.Baseline = commitOf(*repo, *baseline)
		}
		var firstErr error
		if doLoopback {
			d := durations{Warmup: *warm, Dur: *dur, Drain: 10 * time.Second, Inflight: 8 << 20,
				Lat1: *lat, LatN: *lat, Connect: *lat, Connect1: *lat, Settle: *settle, Attack: *attack}
			m := mach
			m.Quick, m.Durations = *quick, d.String()
			if rn.rec, err = newRecorder(filepath.Join(*outDir, "loopback.jsonl")); err != nil {
				return err
			}
			rn.rec.emit(Record{Kind: "machine", Suite: "loopback", Machine: &m})
			counts, err := intList(*memFlag)
			if err != nil {
				return fmt.Errorf("-mem: %w", err)
			}
			ps := strings.Split(*paths, ",")
			for _, p := range ps {
				if _, ok := allPaths[p]; !ok {
					return fmt.Errorf("-paths: unknown path %q", p)
				}
			}
			if err := rn.loopback(ps, d, counts, *rounds); err != nil && firstErr == nil {
				firstErr = err
			}
			rn.rec.close()
		}
		if rn.tests["cluster"] {
			// cluster.go: one JSON line in cluster.jsonl, the table on stderr.
			if err := rn.cluster(clusterOpts{clients: *clusterN, base: *clusterP, timeout: 120 * time.Second, out: *outDir}); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if rn.tests["sessions"] {
			counts, err := intList(*sessN)
			if err != nil {
				return fmt.Errorf("-sessions: %w", err)
			}
			lo, hi := ephemeralRange()
			if *sessPort-1 <= hi && *sessPort+slices.Max(counts) > lo {
				return fmt.Errorf("-session-port: ports %d-%d overlap the ephemeral range %d-%d, where outbound connections take their local ports", *sessPort-1, *sessPort+slices.Max(counts)-1, lo, hi)
			}
			m := mach
			if rn.rec, err = newRecorder(filepath.Join(*outDir, "sessions.jsonl")); err != nil {
				return err
			}
			rn.rec.emit(Record{Kind: "machine", Suite: "sessions", Machine: &m})
			o := sessionsOpts{counts: counts, paths: strings.Split(*sessPaths, ","), idle: *sessIdle, settle: *sessSettle, storm: *sessStorm, echo: *sessEcho, base: *sessPort, perIP: *sessPerIP,
				procs: *sessProcs, nice: *sessNice, perfD: *sessPerfD}
			if *sessPerf != "" {
				if o.perf, err = filepath.Abs(*sessPerf); err != nil {
					return err
				}
				if err := os.MkdirAll(o.perf, 0o755); err != nil {
					return err
				}
			}
			if err := rn.sessions(o); err != nil && firstErr == nil {
				firstErr = err
			}
			rn.rec.close()
		}
		if doLossy {
			d := durations{Warmup: *lWarm, Dur: *lDur, Drain: 5 * time.Second, Inflight: 4 << 20,
				Lat1: *lLat, LatN: 4 * time.Second, Connect: 4 * time.Second}
			m := mach
			m.Quick, m.Durations = *quick, d.String()
			o := lossyOpts{rttMs: *rtt, rateMbit: *rate,
				paths: strings.Split(*lPaths, ","), ccs: strings.Split(*ccs, ","), d: d, kcpRate: *kcpRate}
			if o.kcpRate < 0 {
				o.kcpRate = int(*rate * 0.9)
			}
			m.KCPRate = o.kcpRate
			ls, err := floatList(*losses)
			if err != nil {
				return fmt.Errorf("-loss: %w", err)
			}
			for _, l := range ls {
				o.links = append(o.links, LinkSpec{RTTms: *rtt, RateMbit: *rate, LossPct: l})
			}
			bs, err := floatList(*bursts)
			if err != nil {
				return fmt.Errorf("-burst-loss: %w", err)
			}
			for _, l := range bs {
				o.links = append(o.links, LinkSpec{RTTms: *rtt, RateMbit: *rate, LossPct: l, Burst: *burstLen})
			}
			m.Emulator = lk.kind()
			fmt.Fprintf(os.Stderr, "bench: lossy link by %s\n", lk.kind())
			if rn.rec, err = newRecorder(filepath.Join(*outDir, "lossy.jsonl")); err != nil {
				return err
			}
			rn.rec.emit(Record{Kind: "machine", Suite: "lossy", Machine: &m})
			if err := rn.lossy(o, lk); err != nil && firstErr == nil {
				firstErr = err
			}
			rn.rec.close()
		}
		if doHA {
			m := mach
			m.Quick = *quick
			m.Durations = fmt.Sprintf("%d requests a second; failover: 3 s after the kill; rolling restart: each server in turn", haRate)
			if rn.rec, err = newRecorder(filepath.Join(*outDir, "ha.jsonl")); err != nil {
				return err
			}
			rn.rec.emit(Record{Kind: "machine", Suite: "ha", Machine: &m})
			if err := rn.ha(*rounds); err != nil && firstErr == nil {
				firstErr = err
			}
			rn.rec.close()
		}
		if doPacing {
			d := durations{Warmup: *lWarm, Dur: *lDur, Drain: 5 * time.Second, Inflight: 4 << 20}
			o := pacingOpts{base: LinkSpec{RTTms: *rtt, RateMbit: *rate},
				stepTo: *rate / 5, d: d, loaded: 12 * time.Second, step: 24 * time.Second, share: *pShare}
			if *pTests != "" {
				o.tests = map[string]bool{}
				for _, t := range strings.Split(*pTests, ",") {
					switch t = strings.TrimSpace(t); t {
					case "loaded", "step", "share", "share-tcp", "share-bbr", "links":
						o.tests[t] = true
					default:
						return fmt.Errorf("-pacing-tests: %q: want loaded, step, share, share-tcp, share-bbr or links", t)
					}
				}
			}
			for _, f := range strings.Split(*pLinks, ",") {
				var l LinkSpec
				if _, err := fmt.Sscanf(strings.TrimSpace(f), "%g/%g", &l.RateMbit, &l.RTTms); err != nil {
					return fmt.Errorf("-pacing-links: %q: want RATE_MBIT/RTT_MS", f)
				}
				l.LossPct = 1
				o.links = append(o.links, l)
			}
			m := mach
			m.Durations = fmt.Sprintf("loaded %v, step %v, share %v; other links: %s, at least 20 round trips of warm-up and 40 of window", o.loaded, o.step, o.share, d)
			m.Emulator = lk.kind()
			var err error
			if rn.rec, err = newRecorder(filepath.Join(*outDir, "pacing.jsonl")); err != nil {
				return err
			}
			rn.rec.emit(Record{Kind: "machine", Suite: "pacing", Machine: &m})
			if err := rn.pacing(o, lk); err != nil && firstErr == nil {
				firstErr = err
			}
			rn.rec.close()
		}
		if len(rn.tests) == 1 && rn.tests["cluster"] {
			return firstErr // its table is on stderr; no report of the other suites
		}
		if err := writeReport(*outDir, *plotDir); err != nil && firstErr == nil {
			firstErr = err
		}
		return firstErr
	}()
	cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		code = 1
	}
	return code
}

func isSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// lossyUnavailable says why the lossy suite cannot run here, or "". Which
// emulator, and whether it is there, newEmulator says.
func lossyUnavailable() string {
	if runtime.GOOS != "linux" {
		return "needs Linux"
	}
	if os.Geteuid() != 0 {
		return "needs root (network namespaces)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "no ip command (iproute2)"
	}
	return ""
}

// raiseNoFile raises RLIMIT_NOFILE (soft and hard, as far as the system
// allows) for us and the processes we start: 10 000 idle connections need
// that many descriptors in the server, the client, the backend and the
// load generator each.
// ephemeralRange is the kernel's range of local ports for outbound
// connections.
func ephemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, _ = strconv.Atoi(f[0])
			hi, _ = strconv.Atoi(f[1])
		}
	}
	return lo, hi
}

func raiseNoFile() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	want := uint64(1 << 20)
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			want = min(want, v)
		}
	}
	if lim.Max < want {
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}) == nil {
			return
		}
	}
	// Not privileged: the soft limit up to the hard one. Calling Setrlimit
	// also makes os/exec pass it on to children.
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim.Max, Max: lim.Max})
}

func machine(repo string, worktree bool) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Started: time.Now().UTC().Format(time.RFC3339),
		Command: strings.Join(append([]string{"bench"}, os.Args[1:]...), " ")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU = parseCPUModel(b)
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemBytes = parseMemTotal(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if worktree {
			m.Commit += " + work tree"
		}
	}
	return m
}

// build is a warren binary the suite measures: the one under test (name
// "") or the -baseline one ("baseline", the Build of its records).
type build struct {
	name, bin string
}

// commitOf is the short hash of commit in repo, or commit itself.
func commitOf(repo, commit string) string {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", commit).Output()
	if err != nil {
		return commit
	}
	return strings.TrimSpace(string(out))
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func floatList(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
