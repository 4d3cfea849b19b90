package main

// The lossy suite's link. Two network namespaces, NAME-a (addrA, the
// private side: warren client and backend) and NAME-b (addrB, the public
// side: warren server and load generator), joined by a device NAME0 in
// each, with delay, rate limit and loss on the path between them. Two
// emulators make it:
//
//   - netem (netem.go): the kernel's netem qdisc on a veth pair. Normal
//     kernels have it, and it costs no userspace CPU; used when the kernel
//     has it.
//   - linkem (linkem.go): a userspace emulator over two TUN devices, for
//     kernels without netem, run from the binary -linkem names (the suite
//     builds nothing of it).
//
// Both give the same namespaces, addresses and device name, so what runs
// inside (routes, congestion control, ss) does not care which it is.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

const (
	addrA = "10.77.0.1" // client side
	addrB = "10.77.0.2" // server side
)

// emulator is one of the two, for the link of one LinkSpec at a time.
type emulator interface {
	// kind is "netem" or "linkem", for the report.
	kind() string
	nsA() string
	nsB() string
	// start makes the link for spec, replacing any link of this name
	// (also one left by a run killed hard).
	start(spec LinkSpec) error
	// setRate changes the running link's rate each way, keeping its
	// delay and loss; the queue stays one BDP at the new rate.
	setRate(mbit float64) error
	// stats returns the counters so far, per direction a->b, b->a.
	stats() []linkDir
	// down removes the link and returns its final counters.
	down() []linkDir
	// pid is the emulator's process (its CPU is the link's, not other
	// users'), or 0.
	pid() int
	// setCC sets the congestion control of every TCP connection over
	// the link, in both namespaces, from the next connection on.
	setCC(cc string) error
	// tunnelCC returns the congestion control of the client's TCP
	// connections to port (from ss in the client's namespace).
	tunnelCC(port int) []string
	// tcpbench is the tcpbench binary for the "tcpbench" path, or "".
	tcpbench() string
}

// emulatorOpts selects and locates the emulator.
type emulatorOpts struct {
	kind      string // "auto", "netem" or "linkem"
	linkemBin string // the linkem binary, for "linkem" (and "auto" without netem)
	tcpbench  string // the tcpbench binary; "" looks beside linkemBin
	name      string // NAME of the namespaces
}

// newEmulator returns the emulator o asks for; "auto" is netem when the
// kernel has it, else linkem when -linkem names a binary.
func newEmulator(o emulatorOpts) (emulator, error) {
	tb := o.tcpbench
	if tb == "" && o.linkemBin != "" {
		if p := strings.TrimSuffix(o.linkemBin, "linkem") + "tcpbench"; p != o.linkemBin && isFile(p) {
			tb = p
		}
	}
	ns := netnsPair{name: o.name, bench: tb}
	switch o.kind {
	case "netem":
		if err := netemAvailable(o.name); err != nil {
			return nil, err
		}
		return &netem{netnsPair: ns}, nil
	case "linkem":
		return newLinkem(ns, o.linkemBin)
	case "auto", "":
		nerr := netemAvailable(o.name)
		if nerr == nil {
			return &netem{netnsPair: ns}, nil
		}
		if o.linkemBin == "" {
			return nil, fmt.Errorf("%w; and no -linkem binary for the userspace emulator", nerr)
		}
		fmt.Fprintf(os.Stderr, "bench: %v: using linkem\n", nerr)
		return newLinkem(ns, o.linkemBin)
	}
	return nil, fmt.Errorf("-emulator %q: want auto, netem or linkem", o.kind)
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// netnsPair is what both emulators share: the namespaces' names and what
// runs in them.
type netnsPair struct {
	name  string
	bench string // tcpbench binary or ""
}

func (n netnsPair) nsA() string      { return n.name + "-a" }
func (n netnsPair) nsB() string      { return n.name + "-b" }
func (n netnsPair) dev() string      { return n.name + "0" }
func (n netnsPair) tcpbench() string { return n.bench }

func (n netnsPair) setCC(cc string) error {
	for _, ns := range []struct{ ns, src string }{{n.nsA(), addrA}, {n.nsB(), addrB}} {
		if _, err := run("ip", "netns", "exec", ns.ns, "ip", "route", "replace", "10.77.0.0/24", "dev", n.dev(),
			"proto", "kernel", "scope", "link", "src", ns.src, "congctl", cc); err != nil {
			return err
		}
	}
	return nil
}

func (n netnsPair) tunnelCC(port int) []string {
	out, _ := exec.Command("ip", "netns", "exec", n.nsA(), "ss", "-tin", "dst", fmt.Sprintf("%s:%d", addrB, port)).CombinedOutput()
	return parseSSCongestion(string(out))
}

// tcpbenchRun measures plain TCP goodput from NAME-a to NAME-b (the "down"
// direction) with the given congestion control, for dur.
func tcpbenchRun(e emulator, dur time.Duration, cc string) (float64, string, error) {
	if e.tcpbench() == "" {
		return 0, "", errNoTCPBench
	}
	out, err := run("ip", "netns", "exec", e.nsA(), e.tcpbench(), "-c", addrB+":5201", "-t", dur.String(), "-cc", cc)
	if err != nil {
		return 0, out, err
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "goodput" {
			var v float64
			_, err := fmt.Sscan(f[i+1], &v)
			return v, strings.TrimSpace(out), err
		}
	}
	return 0, out, fmt.Errorf("tcpbench said %q", out)
}

// errNoTCPBench: the tcpbench path needs a binary (-tcpbench).
var errNoTCPBench = errors.New("the tcpbench path needs a tcpbench binary: -tcpbench BIN (linkem's cmd/tcpbench)")

func run(argv ...string) (string, error) {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
