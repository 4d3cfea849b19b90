package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK)
// would need cgo).
const clockTicks = 100

// parseVmRSS returns VmRSS from the text of /proc/PID/status, in bytes.
func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS %q: %w", line, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmRSS line (process exited or a kernel thread?)")
}

// parseStatCPU returns utime+stime, in clock ticks, from the text of
// /proc/PID/stat. The command name (field 2) is in parentheses and may
// itself hold spaces and parentheses, so fields are counted from the last
// ')'.
func parseStatCPU(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no ')' in stat %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat has %d fields after the name, want >= 13", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad utime/stime %q %q", f[11], f[12])
	}
	return ut + st, nil
}

// rssOf returns the resident set of pid in bytes.
func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

// cpuOf returns the user+system CPU time of pid, in seconds.
func cpuOf(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	t, err := parseStatCPU(b)
	return float64(t) / clockTicks, err
}

// cpuTimes are the machine's CPU jiffies, all CPUs together.
type cpuTimes struct{ total, idle, irq, steal int64 }

// parseCPUTimes reads the "cpu" line of /proc/stat (user nice system idle
// iowait irq softirq steal ...); idle counts iowait too, irq softirq too.
func parseCPUTimes(stat []byte) (cpuTimes, error) {
	var t cpuTimes
	sc := bufio.NewScanner(bytes.NewReader(stat))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || f[0] != "cpu" {
			continue
		}
		for i, s := range f[1:] {
			if i >= 8 { // guest time is already counted in user
				break
			}
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return t, fmt.Errorf("/proc/stat cpu field %d: %w", i+1, err)
			}
			t.total += v
			switch i {
			case 3, 4:
				t.idle += v
			case 5, 6:
				t.irq += v
			case 7:
				t.steal = v
			}
		}
		return t, nil
	}
	return t, fmt.Errorf("no cpu line in /proc/stat")
}

func machineTimes() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	t, _ := parseCPUTimes(b)
	return t
}

// parseCPUModel returns the first "model name" of /proc/cpuinfo.
func parseCPUModel(cpuinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// parseMemTotal returns MemTotal from /proc/meminfo in bytes.
func parseMemTotal(meminfo []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// parseSSCongestion returns the congestion-control names found in the
// output of "ss -tin" (one per TCP socket listed, in order).
func parseSSCongestion(out string) []string {
	known := map[string]bool{"cubic": true, "bbr": true, "reno": true, "bic": true, "htcp": true, "vegas": true, "westwood": true, "dctcp": true}
	var ccs []string
	for _, line := range strings.Split(out, "\n") {
		// Info lines are indented and start with the algorithm, e.g.
		// "\t cubic wscale:7,7 rto:204 ...".
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, " ") {
			continue
		}
		for _, w := range f {
			if known[w] {
				ccs = append(ccs, w)
				break
			}
		}
	}
	return ccs
}

// linkDir holds one direction's counters from "linkem stats".
type linkDir struct {
	Name      string  `json:"dir"`
	Read      int64   `json:"read"`
	Fwd       int64   `json:"fwd"`
	Lost      int64   `json:"lost"`
	QueueDrop int64   `json:"queue_drop"`
	Overflow  int64   `json:"overflow"`
	LagMaxMs  float64 `json:"lag_max_ms"`
}

// parseLinkemStats reads the per-direction lines of "linkem stats" /
// "linkem down" output:
//
//	a->b  read 41966  fwd 40537 (60.8 MB)  lost 428  queue-drop 868  overflow 0  lag avg 0.039ms max 6.7ms >1ms 0.45%
func parseLinkemStats(out string) []linkDir {
	var dirs []linkDir
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "a->b" && f[0] != "b->a") {
			continue
		}
		d := linkDir{Name: f[0]}
		num := func(key string) int64 {
			for i := 1; i+1 < len(f); i++ {
				if f[i] == key {
					v, _ := strconv.ParseInt(f[i+1], 10, 64)
					return v
				}
			}
			return 0
		}
		d.Read, d.Fwd, d.Lost, d.QueueDrop, d.Overflow = num("read"), num("fwd"), num("lost"), num("queue-drop"), num("overflow")
		for i := 1; i+1 < len(f); i++ {
			if f[i] == "max" {
				d.LagMaxMs, _ = strconv.ParseFloat(strings.TrimSuffix(f[i+1], "ms"), 64)
			}
		}
		dirs = append(dirs, d)
	}
	return dirs
}
