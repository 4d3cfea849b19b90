package main

// Records: one JSON line per figure measured, the machine's description,
// and the emulated link's counters. The markdown report and the plots are
// made from these lines alone, so "-report" can redo them from files.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// Record is one JSON line.
type Record struct {
	Kind  string `json:"kind"`            // machine, result, link, trace (pacing: a controller's state beside a result)
	Suite string `json:"suite,omitempty"` // loopback, lossy or ha
	Time  string `json:"time,omitempty"`

	// Lossy suite: the emulated link.
	Link *LinkSpec `json:"link,omitempty"`

	Path string `json:"path,omitempty"` // direct, tcp, tcp-x4, kcp, kcp-fec, tcp-plain, kcp-plain, tcpbench
	// Build is "baseline" for a figure of the -baseline binary, "" for the
	// one under test.
	Build string `json:"build,omitempty"`
	CC    string `json:"cc,omitempty"`    // lossy: congestion control of the TCP carrying the data
	Test  string `json:"test,omitempty"`  // throughput, latency, connect, memory, udp, udp-lat, udp-stream, iperf3-udp, ha-failover, ha-rolling
	Dir   string `json:"dir,omitempty"`   // throughput: up (public side to backend) or down; udp: the datagram size ("64B")
	Conns int    `json:"conns,omitempty"` // parallel connections, dialers, or idle connections held

	Seconds float64 `json:"seconds,omitempty"`
	Bytes   int64   `json:"bytes,omitempty"`
	// Throughput up: the backend's acknowledgements that arrived in the
	// window, as "up" was counted until 2026-12-06 (loadgen.go,
	// throughputUp); Window is the window, Unix seconds.
	AckBytes  int64     `json:"ack_bytes,omitempty"`
	Window    []float64 `json:"window_unix,omitempty"`
	MBps      float64   `json:"mb_s,omitempty"`   // 1e6 bytes per second
	Mbitps    float64   `json:"mbit_s,omitempty"` // 1e6 bits per second
	Integrity string    `json:"integrity,omitempty"`

	CPU *CPUUse `json:"cpu,omitempty"`

	Lat        *Summary `json:"lat_us,omitempty"`
	Count      int      `json:"count,omitempty"`
	PerSecond  float64  `json:"per_s,omitempty"` // requests or connections per second
	Errors     int      `json:"errors,omitempty"`
	Sent       int64    `json:"sent,omitempty"`     // udp: datagrams sent in the window
	LossPct    float64  `json:"loss_pct,omitempty"` // udp: of those, not answered
	FirstError string   `json:"first_error,omitempty"`

	Mem *MemUse `json:"mem,omitempty"`

	// HA scenario: how long after its start each restarted server was
	// served again (s), and what the front did: refused connects it
	// skipped, requests it sent again after an empty response.
	ServedAgain []float64 `json:"served_again_s,omitempty"`
	Skipped     int       `json:"front_skipped,omitempty"`
	Retried     int       `json:"front_retried,omitempty"`

	// Sessions scenario: one server, Conns idle client sessions.
	Sess *SessionUse `json:"sessions,omitempty"`

	// Machine load during the measurement window, % of all CPUs.
	BusyPct   float64 `json:"machine_busy_pct,omitempty"`
	StealPct  float64 `json:"machine_steal_pct,omitempty"`
	OthersPct float64 `json:"others_pct,omitempty"` // busy, less interrupts and what this suite's processes used
	IRQPct    float64 `json:"irq_pct,omitempty"`    // hard and soft interrupts (network processing)

	// Loopback: tests repeat in rounds, the paths interleaved; the report
	// shows the median of the rounds, and Range the lowest and highest.
	Round  int       `json:"round,omitempty"`
	Rounds int       `json:"rounds,omitempty"`
	Range  []float64 `json:"range,omitempty"`

	Pacing *PacingRun `json:"pacing,omitempty"` // pacing suite: time series

	Machine *Machine  `json:"machine,omitempty"`
	LinkDir []linkDir `json:"link_counters,omitempty"`
	Note    string    `json:"note,omitempty"`
}

// LinkSpec is one emulated link setting.
type LinkSpec struct {
	RTTms    float64 `json:"rtt_ms"`
	RateMbit float64 `json:"rate_mbit"`
	LossPct  float64 `json:"loss_pct"`
	Burst    float64 `json:"burst,omitempty"` // mean burst length in packets (Gilbert); 0 = random loss
}

func (l LinkSpec) String() string {
	s := fmt.Sprintf("%g%% loss", l.LossPct)
	if l.Burst > 0 {
		s += fmt.Sprintf(" (bursts of %g)", l.Burst)
	}
	return s
}

// CPUUse is the warren server's and client's CPU time during the window.
type CPUUse struct {
	Server float64 `json:"server_s"`
	Client float64 `json:"client_s"`
	PerGB  float64 `json:"s_per_gb"` // (server+client) seconds per 1e9 bytes delivered
}

// MemUse is resident memory of the warren server and client.
type MemUse struct {
	ServerRSS int64   `json:"server_rss"`
	ClientRSS int64   `json:"client_rss"`
	BaseRSS   int64   `json:"base_rss,omitempty"`       // server+client idle, before the connections
	PerConn   float64 `json:"per_conn_bytes,omitempty"` // (RSS - base) / conns
}

// Machine describes where the run happened.
type Machine struct {
	CPU      string `json:"cpu"`
	CPUs     int    `json:"cpus"`
	MemBytes int64  `json:"mem_bytes"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	Commit   string `json:"warren_commit"`
	// Baseline is the commit of the -baseline binary measured beside
	// Commit in the same run, "" without one.
	Baseline  string `json:"baseline_commit,omitempty"`
	Command   string `json:"command"`
	Started   string `json:"started"`
	Quick     bool   `json:"quick,omitempty"`
	LoadAvg   string `json:"loadavg_at_start"`
	Durations string `json:"durations"`
	// KCPRate is the lossy suite's [kcp] rate_mbit on the kcp-fixed path
	// (before issue 18: on every kcp path; 0 unpaced).
	KCPRate int `json:"kcp_rate_mbit,omitempty"`
	// Emulator made the lossy suite's link: "netem" or "linkem" (the
	// only one before this field).
	Emulator string `json:"emulator,omitempty"`
}

// recorder writes records to a JSON lines file and keeps them.
type recorder struct {
	f    *os.File
	w    *bufio.Writer
	recs []Record
}

func newRecorder(path string) (*recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &recorder{f: f, w: bufio.NewWriter(f)}, nil
}

func (r *recorder) emit(rec Record) {
	if rec.Time == "" {
		rec.Time = time.Now().UTC().Format(time.RFC3339)
	}
	b, _ := json.Marshal(rec)
	r.w.Write(append(b, '\n'))
	r.w.Flush()
	r.recs = append(r.recs, rec)
	if rec.Kind == "result" {
		fmt.Fprintln(os.Stderr, "  "+describe(rec))
	}
}

func (r *recorder) close() error {
	r.w.Flush()
	return r.f.Close()
}

// describe is a one-line human summary of a result.
func describe(r Record) string {
	name := pathLabel(r.Path, r.CC)
	if r.Link != nil {
		name = r.Link.String() + " " + name
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-28s %-10s", name, r.Test)
	switch r.Test {
	case "throughput":
		fmt.Fprintf(&b, " %s x%d: %.1f MB/s (%.1f Mbit/s) integrity %s", r.Dir, r.Conns, r.MBps, r.Mbitps, r.Integrity)
		if r.CPU != nil {
			fmt.Fprintf(&b, ", %.2f CPU s/GB", r.CPU.PerGB)
		}
	case "latency", "connect":
		if r.Lat != nil {
			fmt.Fprintf(&b, " x%d: p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f µs, %.0f/s (n=%d)", r.Conns, r.Lat.P50, r.Lat.P90, r.Lat.P99, r.Lat.P999, r.PerSecond, r.Count)
		}
	case "memory":
		if r.Mem != nil {
			fmt.Fprintf(&b, " %d conns: server %.1f MiB client %.1f MiB", r.Conns, mib(r.Mem.ServerRSS), mib(r.Mem.ClientRSS))
			if r.Conns > 0 {
				fmt.Fprintf(&b, ", %.1f KiB per connection", r.Mem.PerConn/1024)
			}
		}
	}
	if r.Errors > 0 {
		fmt.Fprintf(&b, " [%d errors: %s]", r.Errors, r.FirstError)
	}
	fmt.Fprintf(&b, " (machine busy %.0f%%, others %.0f%%, steal %.1f%%)", r.BusyPct, r.OthersPct, r.StealPct)
	return b.String()
}

func pathLabel(path, cc string) string {
	if cc == "" {
		return path
	}
	return path + "/" + cc
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// readRecords reads a JSON lines file.
func readRecords(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var recs []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}
