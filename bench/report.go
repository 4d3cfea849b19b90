package main

// The markdown report: tables of every figure, each performance target with
// what was measured and whether it is met, from the JSON lines alone.

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

type results struct {
	recs []Record // the warren under test (and the machine and link lines)
	base []Record // the -baseline warren's results, when it ran
	ha   []Record // the HA scenario's records, every round (not merged)
}

// find returns the result matching the key; link nil means loopback.
func (rs *results) find(link *LinkSpec, path, cc, test, dir string, conns int) *Record {
	for i := range rs.recs {
		r := &rs.recs[i]
		if r.Kind != "result" || r.Path != path || r.CC != cc || r.Test != test || r.Dir != dir || r.Conns != conns {
			continue
		}
		if (link == nil) != (r.Link == nil) || (link != nil && *link != *r.Link) {
			continue
		}
		return r
	}
	return nil
}

func (rs *results) machine(suite string) *Machine {
	for _, r := range rs.recs {
		if r.Kind == "machine" && r.Suite == suite {
			return r.Machine
		}
	}
	return nil
}

// links returns the link settings of suite ("lossy", "pacing") in the
// order measured.
func (rs *results) links(suite string) []LinkSpec {
	var out []LinkSpec
	for _, r := range rs.recs {
		if r.Link != nil && r.Suite == suite && !slices.Contains(out, *r.Link) {
			out = append(out, *r.Link)
		}
	}
	return out
}

// paths returns the path/cc pairs present in a suite, in order measured.
func (rs *results) paths(suite string) [][2]string {
	var out [][2]string
	for _, r := range rs.recs {
		if r.Kind == "result" && r.Suite == suite {
			k := [2]string{r.Path, r.CC}
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	return out
}

func loadResults(dir string) (*results, error) {
	rs := &results{}
	for _, f := range []string{"loopback.jsonl", "lossy.jsonl", "pacing.jsonl"} {
		recs, err := readRecords(filepath.Join(dir, f))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		rs.recs = append(rs.recs, recs...)
	}
	ha, err := readRecords(filepath.Join(dir, "ha.jsonl"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	rs.ha = ha
	if len(rs.recs) == 0 && len(rs.ha) == 0 {
		return nil, fmt.Errorf("no results in %s", dir)
	}
	all := aggregate(rs.recs)
	rs.recs = nil
	for _, r := range all {
		if r.Build == "" {
			rs.recs = append(rs.recs, r)
		} else {
			rs.base = append(rs.base, r)
		}
	}
	return rs, nil
}

// aggregate merges the rounds of each test into one record holding the
// medians, the number of rounds, and the range of the headline figure.
func aggregate(recs []Record) []Record {
	type key struct {
		suite, path, cc, test, dir, build string
		conns                             int
		link                              LinkSpec
	}
	keyOf := func(r *Record) key {
		k := key{r.Suite, r.Path, r.CC, r.Test, r.Dir, r.Build, r.Conns, LinkSpec{}}
		if r.Link != nil {
			k.link = *r.Link
		}
		return k
	}
	groups := map[key][]Record{}
	var out []Record
	for _, r := range recs {
		if r.Kind != "result" || r.Round == 0 {
			out = append(out, r)
			continue
		}
		k := keyOf(&r)
		if groups[k] == nil {
			out = append(out, Record{Kind: "pending", Suite: r.Suite, Path: r.Path, Build: r.Build, CC: r.CC, Test: r.Test, Dir: r.Dir, Conns: r.Conns, Link: r.Link})
		}
		groups[k] = append(groups[k], r)
	}
	med := func(g []Record, f func(*Record) float64) float64 {
		var xs []float64
		for i := range g {
			if v := f(&g[i]); !math.IsNaN(v) {
				xs = append(xs, v)
			}
		}
		return Median(xs)
	}
	for i := range out {
		if out[i].Kind != "pending" {
			continue
		}
		g := groups[keyOf(&out[i])]
		m := g[0]
		m.Round, m.Rounds = 0, len(g)
		m.MBps = med(g, func(r *Record) float64 { return r.MBps })
		m.Mbitps = med(g, func(r *Record) float64 { return r.Mbitps })
		m.PerSecond = med(g, func(r *Record) float64 { return r.PerSecond })
		m.LossPct = med(g, func(r *Record) float64 { return r.LossPct })
		m.BusyPct = med(g, func(r *Record) float64 { return r.BusyPct })
		m.OthersPct = med(g, func(r *Record) float64 { return r.OthersPct })
		m.StealPct = med(g, func(r *Record) float64 { return r.StealPct })
		m.Count, m.Errors, m.Sent = 0, 0, 0
		for _, r := range g {
			m.Count += r.Count
			m.Sent += r.Sent
			m.Errors += r.Errors
			if m.FirstError == "" {
				m.FirstError = r.FirstError
			}
			if !ok(&r) {
				m.Integrity = r.Integrity
			} else if strings.HasPrefix(r.Integrity, "ok so far") && m.Integrity == "ok" {
				m.Integrity = r.Integrity
			}
		}
		if m.CPU != nil {
			m.CPU = &CPUUse{
				Server: med(g, func(r *Record) float64 { return cpuField(r, 0) }),
				Client: med(g, func(r *Record) float64 { return cpuField(r, 1) }),
				PerGB:  med(g, func(r *Record) float64 { return cpuField(r, 2) }),
			}
		}
		if m.Lat != nil {
			q := func(f func(*Summary) float64) float64 {
				return med(g, func(r *Record) float64 { return latField(r, f, 1) })
			}
			m.Lat = &Summary{N: m.Count, P50: q(p50), P90: q(p90), P99: q(p99), P999: q(p999),
				Min: q(func(s *Summary) float64 { return s.Min }), Mean: q(func(s *Summary) float64 { return s.Mean }),
				Max: q(func(s *Summary) float64 { return s.Max })}
		}
		head := func(r *Record) float64 {
			if r.Test == "throughput" {
				return r.MBps
			}
			return latField(r, p50, 1)
		}
		lo, hi := math.Inf(1), math.Inf(-1)
		for j := range g {
			if v := head(&g[j]); !math.IsNaN(v) {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
		if !math.IsInf(lo, 1) {
			m.Range = []float64{lo, hi}
		}
		out[i] = m
	}
	return out
}

func cpuField(r *Record, i int) float64 {
	if r.CPU == nil {
		return math.NaN()
	}
	return [3]float64{r.CPU.Server, r.CPU.Client, r.CPU.PerGB}[i]
}

func writeReport(outDir, plotDir string) error {
	sess, err := readRecords(filepath.Join(outDir, "sessions.jsonl"))
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	rs, err := loadResults(outDir)
	if err != nil && len(sess) == 0 {
		return err
	}
	md := sessionsMarkdown(sess)
	if plotDir != "" && len(sess) > 0 {
		if err := os.MkdirAll(plotDir, 0o755); err != nil {
			return err
		}
		if err := plotSessions(filepath.Join(plotDir, "sessions.png"), sess); err != nil {
			return fmt.Errorf("plots: %w", err)
		}
	}
	if rs == nil {
		return os.WriteFile(filepath.Join(outDir, "report.md"), []byte(md), 0o644)
	}
	md = rs.markdown() + md
	if err := os.WriteFile(filepath.Join(outDir, "report.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Println(md)
	if plotDir != "" {
		if err := os.MkdirAll(plotDir, 0o755); err != nil {
			return err
		}
		if err := rs.plots(plotDir); err != nil {
			return fmt.Errorf("plots: %w", err)
		}
	}
	return nil
}

type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) String() string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(t.head, " | ") + " |\n|")
	for i := range t.head {
		if i == 0 {
			b.WriteString("---|")
		} else {
			b.WriteString("---:|")
		}
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	return b.String()
}

func f0(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

func f1(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.1f", v)
}

func f2(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

// fs prints with 3 significant figures or so.
func fs(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.Abs(v) >= 100:
		return f0(v)
	case math.Abs(v) >= 10:
		return f1(v)
	default:
		return f2(v)
	}
}

func ok(r *Record) bool {
	return r != nil && (r.Integrity == "" || r.Integrity == "ok" || r.Integrity == "n/a" || strings.HasPrefix(r.Integrity, "ok so far"))
}

func integrityMark(r *Record) string {
	switch {
	case r == nil:
		return ""
	case r.Integrity == "ok" || r.Integrity == "n/a" || r.Integrity == "":
		return ""
	case strings.HasPrefix(r.Integrity, "ok so far"):
		return "†"
	}
	return " **" + r.Integrity + "**"
}

func lat(r *Record) *Summary {
	if r == nil || r.Lat == nil || r.Lat.N == 0 {
		return nil
	}
	return r.Lat
}

func latField(r *Record, f func(*Summary) float64, scale float64) float64 {
	if s := lat(r); s != nil {
		return f(s) * scale
	}
	return math.NaN()
}

func p50(s *Summary) float64   { return s.P50 }
func p90(s *Summary) float64   { return s.P90 }
func p99(s *Summary) float64   { return s.P99 }
func p999(s *Summary) float64  { return s.P999 }
func maxOf(s *Summary) float64 { return s.Max }

// has reports whether suite has results of test.
func (rs *results) has(suite, test string) bool {
	for _, r := range rs.recs {
		if r.Kind == "result" && r.Suite == suite && r.Test == test {
			return true
		}
	}
	return false
}

func mbps(r *Record) float64 {
	if r == nil {
		return math.NaN()
	}
	return r.MBps
}

func mbit(r *Record) float64 {
	if r == nil {
		return math.NaN()
	}
	return r.Mbitps
}

func (rs *results) markdown() string {
	var b strings.Builder
	if m := rs.machine("loopback"); m != nil {
		b.WriteString(rs.loopbackMarkdown(m))
	}
	if m := rs.machine("lossy"); m != nil {
		b.WriteString(rs.lossyMarkdown(m))
	}
	b.WriteString(rs.udpMarkdown())
	b.WriteString(rs.haMarkdown())
	if m := rs.machine("pacing"); m != nil {
		b.WriteString(rs.pacingMarkdown(m))
	}
	b.WriteString(rs.baselineMarkdown())
	b.WriteString(rs.pacingTargetsMarkdown())
	b.WriteString(rs.targetsMarkdown())
	return b.String()
}

// baselineMarkdown compares every figure of the warren under test with the
// same figure of the -baseline warren, measured in the same run: the two
// values and their ratio (under test / baseline). Empty without a
// baseline.
func (rs *results) baselineMarkdown() string {
	if len(rs.base) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("## Against the baseline\n\n")
	for _, suite := range []string{"loopback", "lossy"} {
		if m := rs.machine(suite); m != nil && m.Baseline != "" {
			fmt.Fprintf(&b, "The %s suite measured warren %s and, interleaved with it in every round, the baseline warren %s. Ratio: this build's figure over the baseline's (throughput: above 1 is faster; latency, CPU and memory: below 1 is better).\n\n", suite, m.Commit, m.Baseline)
		}
	}
	base := &results{recs: rs.base}
	t := &table{head: []string{"suite", "path", "test", "figure", "this build", "baseline", "ratio"}}
	for i := range rs.recs {
		r := &rs.recs[i]
		if r.Kind != "result" {
			continue
		}
		o := base.find(r.Link, r.Path, r.CC, r.Test, r.Dir, r.Conns)
		if o == nil {
			continue
		}
		suite := r.Suite
		if r.Link != nil {
			suite += ", " + r.Link.String()
		}
		test := r.Test
		if r.Dir != "" {
			test += " " + r.Dir
		}
		test += fmt.Sprintf(" x%d", r.Conns)
		row := func(figure string, f func(*Record) float64) {
			a, c := f(r), f(o)
			if math.IsNaN(a) || math.IsNaN(c) {
				return
			}
			ratio := "-"
			if c != 0 {
				ratio = f2(a / c)
			}
			t.add(suite, pathLabel(r.Path, r.CC), test, figure, fs(a), fs(c), ratio)
		}
		switch r.Test {
		case "throughput":
			row("MB/s", mbps)
			row("CPU s/GB", func(r *Record) float64 { return cpuField(r, 2) })
			// Issue 19's reference: two bare TLS relays, same run.
			if ch := rs.find(r.Link, "tls-chain", r.CC, r.Test, r.Dir, r.Conns); ch != nil && r.Suite == "loopback" {
				row("CPU s/GB over tls-chain's", func(r *Record) float64 { return cpuField(r, 2) / cpuField(ch, 2) })
			}
			// And the floor of smux over TLS, same run.
			if ch := rs.find(r.Link, "smux-chain", r.CC, r.Test, r.Dir, r.Conns); ch != nil && r.Suite == "loopback" {
				row("CPU s/GB over smux-chain's", func(r *Record) float64 { return cpuField(r, 2) / cpuField(ch, 2) })
			}
		case "latency":
			row("p50 µs", func(r *Record) float64 { return latField(r, p50, 1) })
			row("p99 µs", func(r *Record) float64 { return latField(r, p99, 1) })
			// What the tunnel adds: the figure issue 19 halves.
			if d := rs.find(r.Link, "direct", r.CC, r.Test, r.Dir, r.Conns); d != nil {
				row("p50 µs added over direct", func(r *Record) float64 { return latField(r, p50, 1) - latField(d, p50, 1) })
				row("p99 µs added over direct", func(r *Record) float64 { return latField(r, p99, 1) - latField(d, p99, 1) })
			}
		case "connect":
			row("p50 µs", func(r *Record) float64 { return latField(r, p50, 1) })
			row("connections/s", func(r *Record) float64 { return r.PerSecond })
		case "memory":
			row("KiB per connection", func(r *Record) float64 {
				if r.Mem == nil {
					return math.NaN()
				}
				return r.Mem.PerConn / 1024
			})
			row("idle RSS MiB", func(r *Record) float64 {
				if r.Mem == nil || r.Mem.BaseRSS == 0 {
					return math.NaN()
				}
				return mib(r.Mem.BaseRSS)
			})
		}
	}
	b.WriteString(t.String())
	b.WriteString("\n")
	return b.String()
}

func machineLine(m *Machine) string {
	return fmt.Sprintf("Run %s (`%s`): %d × %s, %.0f GiB, Linux %s, %s, warren %s; load average at start %s. Windows: %s.\n\n",
		m.Started, m.Command, m.CPUs, m.CPU, float64(m.MemBytes)/(1<<30), m.Kernel, m.Go, m.Commit, m.LoadAvg, m.Durations)
}

func (rs *results) loadRange(suite string) string {
	lo, hi, olo, ohi, shi, irq := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1), 0.0, 0.0
	for _, r := range rs.recs {
		if r.Kind == "result" && r.Suite == suite && r.BusyPct > 0 {
			irq = max(irq, r.IRQPct)
			lo, hi = min(lo, r.BusyPct), max(hi, r.BusyPct)
			olo, ohi = min(olo, r.OthersPct), max(ohi, r.OthersPct)
			shi = max(shi, r.StealPct)
		}
	}
	if math.IsInf(lo, 1) {
		return ""
	}
	if irq == 0 { // results of an older version, which counted interrupts as others'
		return fmt.Sprintf("Machine load during the measurement windows (medians per test): busy %.0f-%.0f%% of both cores, of which %.0f-%.0f%% was not this suite's processes (other users of this shared machine, and interrupt handling, some of it for this suite's packets); steal up to %.1f%%.\n\n", lo, hi, olo, ohi, shi)
	}
	return fmt.Sprintf("Machine load during the measurement windows (medians per test): busy %.0f-%.0f%% of both cores, of which %.0f-%.0f%% was neither this suite's processes nor interrupt handling (that is, other users of this shared machine); steal up to %.1f%%.\n\n", lo, hi, olo, ohi, shi)
}

func (rs *results) loopbackMarkdown(m *Machine) string {
	var b strings.Builder
	b.WriteString("## Loopback\n\n")
	b.WriteString(machineLine(m))
	paths := []string{"direct"} // the reference first
	for _, p := range rs.paths("loopback") {
		if p[0] != "direct" {
			paths = append(paths, p[0])
		}
	}
	head := append([]string{""}, paths...)

	// Throughput.
	t := &table{head: head}
	for _, c := range []struct {
		dir   string
		conns int
	}{{"up", 1}, {"down", 1}, {"up", 8}, {"down", 8}} {
		row := []string{fmt.Sprintf("%s, %d connection%s (MB/s)", c.dir, c.conns, plural(c.conns))}
		direct := rs.find(nil, "direct", "", "throughput", c.dir, c.conns)
		for _, p := range paths {
			r := rs.find(nil, p, "", "throughput", c.dir, c.conns)
			cell := fs(mbps(r))
			if p != "direct" && r != nil && direct != nil && direct.MBps > 0 {
				cell += fmt.Sprintf(" (%.0f%%)", 100*r.MBps/direct.MBps)
			}
			row = append(row, cell+integrityMark(r))
		}
		t.add(row...)
	}
	for _, c := range []struct {
		dir   string
		conns int
	}{{"up", 1}, {"down", 1}, {"up", 8}, {"down", 8}} {
		row := []string{fmt.Sprintf("CPU s per GB, %s, %d conn. (server+client)", c.dir, c.conns)}
		for _, p := range paths {
			r := rs.find(nil, p, "", "throughput", c.dir, c.conns)
			if r == nil || r.CPU == nil {
				row = append(row, "–")
				continue
			}
			row = append(row, f2(r.CPU.PerGB))
		}
		t.add(row...)
	}
	b.WriteString("### Bulk throughput\n\n\"Up\" is the public side sending to the backend, \"down\" the reverse; every byte is checked against the sender's pattern (up: the backend acknowledges what it verified, with the time it had, and the window counts by that time; after the window the sender waits for the final count). Percentages are of direct in the same run. CPU is the warren server's and client's user+system time (/proc/PID/stat) during the window, per 10⁹ bytes delivered.\n\n")
	b.WriteString(t.String() + "\n")

	// Latency.
	t = &table{head: head}
	for _, conns := range []int{1, 64} {
		for _, q := range []struct {
			name string
			f    func(*Summary) float64
		}{{"p50", p50}, {"p90", p90}, {"p99", p99}, {"p99.9", p999}} {
			row := []string{fmt.Sprintf("%d conn., %s (µs)", conns, q.name)}
			for _, p := range paths {
				row = append(row, fs(latField(rs.find(nil, p, "", "latency", "", conns), q.f, 1)))
			}
			t.add(row...)
		}
		row := []string{fmt.Sprintf("%d conn., requests/s", conns)}
		for _, p := range paths {
			r := rs.find(nil, p, "", "latency", "", conns)
			if r == nil {
				row = append(row, "–")
			} else {
				row = append(row, f0(r.PerSecond)+errMark(r))
			}
		}
		t.add(row...)
	}
	b.WriteString("### Request/response latency\n\nOne 64-byte message echoed by the backend, one at a time on each connection, all connections at once.\n\n")
	b.WriteString(t.String() + "\n")

	// Connect.
	t = &table{head: head}
	for _, q := range []struct {
		name string
		f    func(*Summary) float64
	}{{"p50", p50}, {"p90", p90}, {"p99", p99}} {
		row := []string{q.name + " (µs)"}
		for _, p := range paths {
			row = append(row, fs(latField(rs.find(nil, p, "", "connect", "", 32), q.f, 1)))
		}
		t.add(row...)
	}
	row := []string{"connections/s"}
	for _, p := range paths {
		r := rs.find(nil, p, "", "connect", "", 32)
		if r == nil {
			row = append(row, "–")
		} else {
			row = append(row, f0(r.PerSecond)+errMark(r))
		}
	}
	t.add(row...)
	if rs.has("loopback", "connect") {
		row = []string{"1 dialer: p50 (µs)"}
		for _, p := range paths {
			row = append(row, fs(latField(rs.find(nil, p, "", "connect", "", 1), p50, 1)))
		}
		t.add(row...)
	}
	b.WriteString("### New connections\n\n32 dialers at once, each in a loop: dial the public port, send one byte, wait for its echo from the backend, close (connections/s: of all 32); and the same with one dialer alone (the setup time of one connection on an otherwise idle tunnel).\n\n")
	b.WriteString(t.String() + "\n")

	// Isolation.
	if rs.has("loopback", "isolation") {
		t = &table{head: head}
		for _, q := range []struct {
			name string
			f    func(*Summary) float64
		}{{"p50", p50}, {"p99", p99}, {"max", maxOf}} {
			row := []string{q.name + " (ms)"}
			for _, p := range paths {
				row = append(row, fs(latField(rs.find(nil, p, "", "isolation", "", 64), q.f, 1e-3)))
			}
			t.add(row...)
		}
		row := []string{"echoes (errors)"}
		for _, p := range paths {
			r := rs.find(nil, p, "", "isolation", "", 64)
			if r == nil {
				row = append(row, "–")
			} else {
				row = append(row, fmt.Sprintf("%d (%d)", r.Count, r.Errors))
			}
		}
		t.add(row...)
		b.WriteString("### Isolation\n\nEcho latency on one connection (64-byte messages, one at a time) while 64 downloads that are never read and 64 uploads into a backend that never reads press on the same tunnel, all opened as the window starts. A session that stalls shows as slow echoes, one that dies as errors. Direct: the same connections made straight to the backend.\n\n")
		b.WriteString(t.String() + "\n")
	}

	// Memory.
	var tpaths []string
	for _, p := range paths {
		if p != "direct" {
			tpaths = append(tpaths, p)
		}
	}
	t = &table{head: append([]string{""}, tpaths...)}
	row = []string{"server RSS idle (MiB)"}
	row2 := []string{"client RSS idle (MiB)"}
	for _, p := range tpaths {
		r := rs.find(nil, p, "", "memory", "", 0)
		if r == nil || r.Mem == nil {
			row, row2 = append(row, "–"), append(row2, "–")
			continue
		}
		row, row2 = append(row, f1(mib(r.Mem.ServerRSS))), append(row2, f1(mib(r.Mem.ClientRSS)))
	}
	t.add(row...)
	t.add(row2...)
	for _, n := range rs.memCounts() {
		row := []string{fmt.Sprintf("server + client RSS, %d idle conn. (MiB)", n)}
		row2 := []string{fmt.Sprintf("per idle connection, %d (KiB)", n)}
		for _, p := range tpaths {
			r := rs.find(nil, p, "", "memory", "", n)
			if r == nil || r.Mem == nil {
				row, row2 = append(row, "–"), append(row2, "–")
				continue
			}
			row = append(row, f1(mib(r.Mem.ServerRSS+r.Mem.ClientRSS)))
			row2 = append(row2, f1(r.Mem.PerConn/1024))
		}
		t.add(row...)
		t.add(row2...)
	}
	b.WriteString("### Memory\n\nResident set (VmRSS) of the warren server and client processes: idle (session up, one probe connection done, after settling), then holding idle public connections, each having carried one byte each way. Per connection: (RSS with them − RSS idle) / connections, server and client together.\n\n")
	b.WriteString(t.String() + "\n")
	b.WriteString(rs.loadRange("loopback"))
	if rs.anyPartial("loopback") {
		b.WriteString("† integrity: every byte that arrived was verified, but not all sent bytes had arrived within the drain wait.\n\n")
	}
	return b.String()
}

func (rs *results) anyPartial(suite string) bool {
	for _, r := range rs.recs {
		if r.Suite == suite && strings.HasPrefix(r.Integrity, "ok so far") {
			return true
		}
	}
	return false
}

func errMark(r *Record) string {
	if r != nil && r.Errors > 0 {
		return fmt.Sprintf(" (%d errors)", r.Errors)
	}
	return ""
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (rs *results) memCounts() []int {
	var out []int
	for _, r := range rs.recs {
		if r.Kind == "result" && r.Test == "memory" && r.Conns > 0 && !slices.Contains(out, r.Conns) {
			out = append(out, r.Conns)
		}
	}
	slices.Sort(out)
	return out
}

func (rs *results) lossyMarkdown(m *Machine) string {
	var b strings.Builder
	b.WriteString("## Lossy link\n\n")
	b.WriteString(machineLine(m))
	links := rs.links("lossy")
	emu := m.Emulator
	if emu == "" {
		emu = "linkem"
	}
	if len(links) > 0 {
		fmt.Fprintf(&b, "Emulated path ("+emu+"): RTT %g ms, %g Mbit/s each way, loss as listed (applied each way; bursts: Gilbert-Elliott with that mean loss and mean burst length). Server and load generator in one namespace, client and backend in the other.\n\n", links[0].RTTms, links[0].RateMbit)
	}
	if m.KCPRate > 0 {
		fmt.Fprintf(&b, "`kcp` runs `[kcp] rate_mbit = \"auto\"` (the rate controller, the default since issue 18); `kcp-fixed` with `rate_mbit = %d` in `[server.kcp]` and `[client.kcp]` (a little below the link's rate, for a link of known rate); `kcp-unpaced` with `rate_mbit = 0`, the default before it. `kcp-fec` and `kcp-plain` run `\"auto\"` too (with FEC; without TLS). A baseline build runs `kcp` and `kcp-fec` at its own default.\n\n", m.KCPRate)
	}
	var labels []string
	pcs := rs.paths("lossy")
	for _, p := range pcs {
		labels = append(labels, pathLabel(p[0], p[1]))
	}
	head := append([]string{"link"}, labels...)
	section := func(title, note string, cell func(l *LinkSpec, path, cc string) string) {
		// Only the columns with some figure.
		var cols []int
		for j, p := range pcs {
			for i := range links {
				if c := cell(&links[i], p[0], p[1]); c != "–" && c != "" {
					cols = append(cols, j)
					break
				}
			}
		}
		t := &table{head: []string{"link"}}
		for _, j := range cols {
			t.head = append(t.head, head[j+1])
		}
		for i := range links {
			l := &links[i]
			row := []string{l.String()}
			for _, j := range cols {
				row = append(row, cell(l, pcs[j][0], pcs[j][1]))
			}
			t.add(row...)
		}
		b.WriteString("### " + title + "\n\n")
		if note != "" {
			b.WriteString(note + "\n\n")
		}
		b.WriteString(t.String() + "\n")
	}
	for _, c := range []struct {
		dir   string
		conns int
	}{{"up", 1}, {"down", 1}, {"up", 8}, {"down", 8}} {
		note := ""
		if c.dir == "down" && c.conns == 1 {
			note = "tcpbench (plain TCP, linkem's tcpbench) sends from the client's namespace to the server's, the \"down\" direction."
		}
		section(fmt.Sprintf("Throughput %s, %d connection%s (Mbit/s)", c.dir, c.conns, plural(c.conns)), note, func(l *LinkSpec, path, cc string) string {
			r := rs.find(l, path, cc, "throughput", c.dir, c.conns)
			return fs(mbit(r)) + integrityMark(r)
		})
	}
	for _, conns := range []int{1, 64} {
		section(fmt.Sprintf("Echo latency, %d connection%s: p50 / p99 / p99.9 (ms)", conns, plural(conns)), "", func(l *LinkSpec, path, cc string) string {
			r := rs.find(l, path, cc, "latency", "", conns)
			if lat(r) == nil {
				return "–"
			}
			return fmt.Sprintf("%s / %s / %s%s", fs(r.Lat.P50/1e3), fs(r.Lat.P99/1e3), fs(r.Lat.P999/1e3), errMark(r))
		})
	}
	section("New connection, 32 dialers: p50 / p99 (ms), connections/s", "", func(l *LinkSpec, path, cc string) string {
		r := rs.find(l, path, cc, "connect", "", 32)
		if lat(r) == nil {
			return "–"
		}
		return fmt.Sprintf("%s / %s, %s%s", fs(r.Lat.P50/1e3), fs(r.Lat.P99/1e3), f0(r.PerSecond), errMark(r))
	})
	section("CPU s per GB, 1 connection up / down (server+client)", "", func(l *LinkSpec, path, cc string) string {
		u, d := rs.find(l, path, cc, "throughput", "up", 1), rs.find(l, path, cc, "throughput", "down", 1)
		if u == nil || u.CPU == nil || d == nil || d.CPU == nil {
			return "–"
		}
		g := func(c *CPUUse) string {
			if c.PerGB == 0 { // nothing delivered in the window
				return "–"
			}
			return f1(c.PerGB)
		}
		return g(u.CPU) + " / " + g(d.CPU)
	})
	// Link counters.
	t := &table{head: []string{"link", "a→b lost / forwarded", "b→a lost / forwarded", "queue drops", "max lag (ms)"}}
	for _, r := range rs.recs {
		if r.Kind != "link" || r.Link == nil || len(r.LinkDir) < 2 {
			continue
		}
		a, z := r.LinkDir[0], r.LinkDir[1]
		pct := func(d linkDir) string {
			if d.Read == 0 {
				return "–"
			}
			return fmt.Sprintf("%.2f%% of %d", 100*float64(d.Lost)/float64(d.Read), d.Read)
		}
		t.add(r.Link.String(), pct(a), pct(z), fmt.Sprint(a.QueueDrop+z.QueueDrop), f1(max(a.LagMaxMs, z.LagMaxMs)))
	}
	if len(t.rows) > 0 {
		what := emu + "'s counters over each link setting's whole run (all paths)."
		if emu == "netem" {
			what += " netem counts queue drops as losses (its \"dropped\"), so the lost column has both and queue drops show 0."
		}
		b.WriteString("### What the link did\n\n" + what + "\n\n" + t.String() + "\n")
	}
	b.WriteString(rs.loadRange("lossy"))
	if rs.anyPartial("lossy") {
		b.WriteString("† integrity: every byte that arrived was verified, but not all sent bytes had arrived within the drain wait (a slow path still held them).\n\n")
	}
	return b.String()
}

type verdict struct{ target, measured, status string }

func (rs *results) targets() []verdict {
	var out []verdict
	status := func(met, known bool) string {
		switch {
		case !known:
			return "not measured"
		case met:
			return "met"
		}
		return "**missed**"
	}
	if rs.machine("loopback") != nil {
		ratio := func(path, dir string, conns int) (float64, bool) {
			r, d := rs.find(nil, path, "", "throughput", dir, conns), rs.find(nil, "direct", "", "throughput", dir, conns)
			if r == nil || d == nil || d.MBps == 0 || !ok(r) {
				return math.NaN(), false
			}
			return r.MBps / d.MBps, true
		}
		for _, c := range []struct {
			conns int
			min   float64
		}{{1, 0.30}, {8, 0.40}} {
			for _, path := range []string{"tcp", "tcp-x4"} {
				u, ku := ratio(path, "up", c.conns)
				d, kd := ratio(path, "down", c.conns)
				if path != "tcp" && !ku && !kd {
					continue
				}
				what := "tcp+TLS"
				if path == "tcp-x4" {
					what = "tcp+TLS, connections = 4"
				}
				out = append(out, verdict{
					fmt.Sprintf("%s, %d stream%s: ≥ %.0f%% of direct loopback", what, c.conns, plural(c.conns), 100*c.min),
					fmt.Sprintf("%.0f%% up, %.0f%% down", 100*u, 100*d), status(u >= c.min && d >= c.min, ku && kd)})
			}
		}
		for _, conns := range []int{1, 8} {
			u, d := rs.find(nil, "kcp", "", "throughput", "up", conns), rs.find(nil, "kcp", "", "throughput", "down", conns)
			known := u != nil && d != nil && ok(u) && ok(d)
			out = append(out, verdict{fmt.Sprintf("kcp+TLS, %d stream%s: ≥ 150 MB/s each direction", conns, plural(conns)),
				fmt.Sprintf("%s MB/s up, %s MB/s down", f0(mbps(u)), f0(mbps(d))), status(known && u.MBps >= 150 && d.MBps >= 150, known)})
		}
		for _, c := range []struct {
			path  string
			limit float64
		}{{"tcp", 150}, {"kcp", 1000}} {
			r, d := lat(rs.find(nil, c.path, "", "latency", "", 1)), lat(rs.find(nil, "direct", "", "latency", "", 1))
			if r == nil || d == nil {
				out = append(out, verdict{fmt.Sprintf("latency, 1 connection, %s: p50 added ≤ %g µs", c.path, c.limit), "–", status(false, false)})
				continue
			}
			add := r.P50 - d.P50
			out = append(out, verdict{fmt.Sprintf("latency, 1 connection, %s: p50 added ≤ %g µs", c.path, c.limit),
				fmt.Sprintf("+%.0f µs (%.0f vs %.0f direct)", add, r.P50, d.P50), status(add <= c.limit, true)})
		}
		for _, path := range []string{"tcp", "kcp"} {
			r, d := lat(rs.find(nil, path, "", "latency", "", 64)), lat(rs.find(nil, "direct", "", "latency", "", 64))
			if r == nil || d == nil {
				out = append(out, verdict{"latency, 64 connections, " + path + ": p99 ≤ 2× direct", "–", status(false, false)})
				continue
			}
			out = append(out, verdict{"latency, 64 connections, " + path + ": p99 ≤ 2× direct",
				fmt.Sprintf("%.2f× (%.0f vs %.0f µs)", r.P99/d.P99, r.P99, d.P99), status(r.P99 <= 2*d.P99, true)})
		}
		for _, path := range []string{"tcp", "kcp"} {
			r, d := lat(rs.find(nil, path, "", "connect", "", 32)), lat(rs.find(nil, "direct", "", "connect", "", 32))
			if r == nil || d == nil {
				out = append(out, verdict{"new connection, 32 dialers, " + path + ": p50 ≤ 2× direct", "–", status(false, false)})
				continue
			}
			out = append(out, verdict{"new connection, 32 dialers, " + path + ": p50 ≤ 2× direct",
				fmt.Sprintf("%.2f× (%.0f vs %.0f µs)", r.P50/d.P50, r.P50, d.P50), status(r.P50 <= 2*d.P50, true)})
		}
		for _, path := range []string{"tcp", "kcp"} {
			for _, n := range rs.memCounts() {
				r := rs.find(nil, path, "", "memory", "", n)
				if r == nil || r.Mem == nil {
					continue
				}
				out = append(out, verdict{fmt.Sprintf("memory, %s, %d idle connections: ≤ 20 KiB each (server+client)", path, n),
					fmt.Sprintf("%.1f KiB", r.Mem.PerConn/1024), status(r.Mem.PerConn <= 20*1024, true)})
			}
			if r := rs.find(nil, path, "", "memory", "", 0); r != nil && r.Mem != nil {
				out = append(out, verdict{"idle server RSS, " + path + ": ≤ 15 MiB",
					fmt.Sprintf("%.1f MiB (client %.1f MiB)", mib(r.Mem.ServerRSS), mib(r.Mem.ClientRSS)), status(r.Mem.ServerRSS <= 15<<20, true)})
			}
		}
	}
	for _, kind := range []string{"tcp", "kcp"} {
		lost, requests, worst, rounds := 0, 0, 0.0, 0
		for _, r := range rs.ha {
			switch {
			case r.Kind != "result" || r.Path != kind || r.Build != "":
			case r.Test == "ha-rolling":
				lost += r.Errors
				requests += r.Count
				rounds++
				if !ok(&r) {
					lost += r.Count // corrupt: count it lost
				}
			case r.Test == "ha-failover":
				worst = max(worst, r.Seconds)
			}
		}
		if rounds == 0 {
			continue
		}
		out = append(out, verdict{fmt.Sprintf("HA, %s: no request lost in a rolling restart", kind),
			fmt.Sprintf("%d lost of %d (%d round%s)", lost, requests, rounds, plural(rounds)), status(lost == 0, true)})
		out = append(out, verdict{fmt.Sprintf("HA, %s: failover of new connections < 1 s (front retrying refused connects)", kind),
			fmt.Sprintf("%.3f s at worst", worst), status(worst < 1, true)})
	}
	if rs.machine("lossy") != nil {
		for _, c := range []struct{ loss, min float64 }{{1, 80}, {2, 75}, {5, 60}} {
			for _, path := range []string{"kcp", "kcp-fec"} {
				var l *LinkSpec
				for _, x := range rs.links("lossy") {
					if x.LossPct == c.loss && x.Burst == 0 {
						l = &x
					}
				}
				if l == nil {
					continue
				}
				u, d := rs.find(l, path, "", "throughput", "up", 1), rs.find(l, path, "", "throughput", "down", 1)
				known := u != nil && d != nil && ok(u) && ok(d)
				out = append(out, verdict{fmt.Sprintf("lossy, %g%% random loss, %s, 1 stream: ≥ %g Mbit/s", c.loss, path, c.min),
					fmt.Sprintf("%s up, %s down", f1(mbit(u)), f1(mbit(d))), status(known && u.Mbitps >= c.min && d.Mbitps >= c.min, known)})
			}
		}
		for _, l := range rs.links("lossy") {
			if l.LossPct != 2 {
				continue
			}
			for _, path := range []string{"kcp", "kcp-fec"} {
				for _, conns := range []int{1, 64} {
					r := lat(rs.find(&l, path, "", "latency", "", conns))
					if r == nil {
						continue
					}
					out = append(out, verdict{fmt.Sprintf("lossy, %s, %s, %d conn.: echo p99 ≤ 3× RTT (%g ms)", l, path, conns, 3*l.RTTms),
						fmt.Sprintf("%.0f ms", r.P99/1e3), status(r.P99/1e3 <= 3*l.RTTms, true)})
				}
			}
		}
	}
	return append(out, rs.udpTargets(status)...)
}

// haMarkdown is the HA scenario's section: each round's failover and
// rolling restart, per transport.
func (rs *results) haMarkdown() string {
	var m *Machine
	for _, r := range rs.ha {
		if r.Kind == "machine" {
			m = r.Machine
		}
	}
	if m == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("## High availability\n\n")
	b.WriteString(machineLine(m))
	b.WriteString("Three servers on loopback (127.0.0.1, .2, .3), one client serving an echo backend through all three, a round-robin front before their public ports that skips a server refusing connections and sends a request again when its connection ends before any response byte (HAProxy's `retry-on conn-failure empty-response`), and 50 requests a second through it, each a new connection with 64-4096 bytes echoed and checked. **Failover**: one server killed (SIGKILL); the time from the kill to the end of the last request that failed (0: none did), the requests that failed, and how long after its start the killed server, started again, was served again. **Rolling restart**: each server in turn stopped (SIGTERM), started again, and waited for until the client serves through it; the requests lost and corrupt from the first stop to a second after the last server was back, how long after its start each server was served again, and what the front did.\n\n")
	if slices.ContainsFunc(rs.ha, func(r Record) bool { return r.Build != "" }) {
		b.WriteString("With `-baseline`, each round runs once more with the baseline's servers (and the client under test), marked `(baseline servers)`: what the servers change.\n\n")
	}
	t := &table{head: []string{"transport", "round", "failover", "lost in failover", "served again", "rolling: requests", "lost", "bytes", "served again (each)", "front: refused skipped / sent again"}}
	for _, kind := range []string{"tcp", "kcp"} {
		var fo *Record
		for i := range rs.ha {
			r := &rs.ha[i]
			if r.Kind != "result" || r.Path != kind {
				continue
			}
			label := kind + "+TLS"
			if r.Build != "" {
				label += " (" + r.Build + " servers)"
			}
			switch r.Test {
			case "ha-failover":
				fo = r
			case "ha-rolling":
				if fo == nil || fo.Round != r.Round || fo.Build != r.Build {
					continue
				}
				each := make([]string, len(r.ServedAgain))
				for j, v := range r.ServedAgain {
					each[j] = fmt.Sprintf("%.2f s", v)
				}
				t.add(label, fmt.Sprintf("%d", r.Round), fmt.Sprintf("%.3f s", fo.Seconds), fmt.Sprintf("%d of %d", fo.Errors, fo.Count),
					fmt.Sprintf("%.2f s", first(fo.ServedAgain)), fmt.Sprintf("%d", r.Count), fmt.Sprintf("%d", r.Errors), r.Integrity,
					strings.Join(each, ", "), fmt.Sprintf("%d / %d", r.Skipped, r.Retried))
			}
		}
	}
	b.WriteString(t.String() + "\n")
	return b.String()
}

func first(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return xs[0]
}

func (rs *results) targetsMarkdown() string {
	return verdictTable("## Targets", "target", rs.targets())
}

// verdictTable is a section of the report with title, listing vs; "" for
// none.
func verdictTable(title, head string, vs []verdict) string {
	if len(vs) == 0 {
		return ""
	}
	t := &table{head: []string{head, "measured", ""}}
	for _, v := range vs {
		t.add(v.target, v.measured, v.status)
	}
	return title + "\n\n" + t.String() + "\n"
}
