package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNetemArgs(t *testing.T) {
	tests := []struct {
		spec LinkSpec
		want string
	}{
		// 100 Mbit/s is 8.33 packets of 1500 B per ms: 209 in the 25 ms
		// delay line, and a one-BDP queue of 417 (50 ms).
		{LinkSpec{RTTms: 50, RateMbit: 100}, "netem delay 25ms rate 100mbit limit 626"},
		{LinkSpec{RTTms: 50, RateMbit: 100, LossPct: 1}, "netem delay 25ms rate 100mbit limit 626 loss random 1%"},
		// Gilbert: r = 1/burst = 25%, p = loss*r/(1-loss) = 0.02*0.25/0.98.
		{LinkSpec{RTTms: 50, RateMbit: 100, LossPct: 2, Burst: 4}, "netem delay 25ms rate 100mbit limit 626 loss gemodel 0.5102040816326531% 25%"},
		// A slow short link keeps a queue of at least 32 packets.
		{LinkSpec{RTTms: 2, RateMbit: 1}, "netem delay 1ms rate 1mbit limit 33"},
	}
	for _, tt := range tests {
		if got := strings.Join(netemArgs(tt.spec), " "); got != tt.want {
			t.Errorf("netemArgs(%+v) = %q, want %q", tt.spec, got, tt.want)
		}
	}
}

func TestParseNetemStats(t *testing.T) {
	out := `qdisc netem 8001: root refcnt 2 limit 626 delay 25ms rate 100Mbit loss 1%
 Sent 61893418 bytes 41009 pkt (dropped 431, overlimits 0 requeues 0)
 backlog 0b 0p requeues 0
`
	got := parseNetemStats("a->b", out)
	want := linkDir{Name: "a->b", Read: 41440, Fwd: 41009, Lost: 431}
	if got != want {
		t.Errorf("parseNetemStats = %+v, want %+v", got, want)
	}
}

// TestEmulatorChoice: auto takes netem where the kernel has it, else the
// linkem binary given, else says why there is none; linkem needs its
// binary and finds tcpbench beside it.
func TestEmulatorChoice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("probing netem needs root")
	}
	dir := t.TempDir()
	lk, tb := filepath.Join(dir, "linkem"), filepath.Join(dir, "tcpbench")
	for _, p := range []string{lk, tb} {
		os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	}
	hasNetem := netemAvailable("wbench-test") == nil
	e, err := newEmulator(emulatorOpts{kind: "auto", linkemBin: lk, name: "wbench-test"})
	switch {
	case err != nil:
		t.Fatalf("auto with -linkem: %v", err)
	case hasNetem && e.kind() != "netem", !hasNetem && e.kind() != "linkem":
		t.Errorf("auto chose %s; netem available: %v", e.kind(), hasNetem)
	}
	if e.tcpbench() != tb {
		t.Errorf("tcpbench %q, want the one beside linkem, %q", e.tcpbench(), tb)
	}
	if _, err := newEmulator(emulatorOpts{kind: "linkem", name: "wbench-test"}); err == nil {
		t.Error("linkem without a binary: no error")
	}
	_, err = newEmulator(emulatorOpts{kind: "auto", name: "wbench-test"})
	if hasNetem != (err == nil) {
		t.Errorf("auto without -linkem: %v; netem available: %v", err, hasNetem)
	}
}

// TestNetemLink: where the kernel has netem, the link it makes carries
// traffic between the namespaces with about the delay asked for, and its
// counters move.
func TestNetemLink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if err := netemAvailable("wbench-t"); err != nil {
		t.Skip(err)
	}
	n := &netem{netnsPair: netnsPair{name: "wbench-t"}}
	if err := n.start(LinkSpec{RTTms: 40, RateMbit: 100}); err != nil {
		t.Fatal(err)
	}
	defer n.down()
	start := time.Now()
	out, err := exec.Command("ip", "netns", "exec", n.nsA(), "ping", "-c", "3", "-i", "0.2", addrB).CombinedOutput()
	if err != nil {
		t.Fatalf("ping across the link: %v\n%s", err, out)
	}
	if d := time.Since(start); d < 3*40*time.Millisecond {
		t.Errorf("3 pings took %v, want at least 3 RTTs of 40 ms", d)
	}
	dirs := n.stats()
	if len(dirs) != 2 || slices.ContainsFunc(dirs, func(d linkDir) bool { return d.Fwd == 0 }) {
		t.Errorf("counters %+v: want both directions forwarding", dirs)
	}
}
