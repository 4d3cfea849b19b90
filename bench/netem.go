package main

// netem, the kernel's link emulator (emulator.go): a veth pair NAME0
// between NAME-a and NAME-b, and on each end's egress a netem qdisc with
// the one-way delay, the rate, a queue of one BDP and the loss. It runs in
// the kernel: no process of its own, no userspace hop per packet.
//
// Differences from linkem that matter for reading the figures: netem
// decides a loss when the packet arrives, so a lost packet uses no link
// time (linkem applies loss after the queue); and its counters cannot tell
// queue drops from losses (both are "dropped": reported as lost).

import (
	"errors"
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"strconv"
)

type netem struct {
	netnsPair
	spec LinkSpec // of the running link, for setRate
}

func (n *netem) kind() string { return "netem" }

// netemAvailable reports why netem cannot be used here, or nil: it adds
// a netem qdisc in a namespace of its own (tc loads the module if needed).
func netemAvailable(name string) error {
	if _, err := exec.LookPath("tc"); err != nil {
		return errors.New("netem: no tc command (iproute2)")
	}
	ns := name + "-probe"
	exec.Command("ip", "netns", "del", ns).Run()
	if _, err := run("ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("netem: %w", err)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	if _, err := run("tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"); err != nil {
		return fmt.Errorf("the kernel has no netem qdisc (%w)", err)
	}
	return nil
}

// mtu is the veth's MTU, as linkem's TUN devices have.
const mtu = 1500

// netemArgs are the qdisc's parameters for one direction of spec: the
// one-way delay, the rate, a limit of the packets the delay line holds at
// the rate plus a one-BDP queue (at least 32 packets, as linkem's), and
// the loss: random, or Gilbert's model with mean loss LossPct and mean
// burst Burst packets (p = loss·r/(1−loss), r = 1/Burst).
func netemArgs(spec LinkSpec) []string {
	delayMs := spec.RTTms / 2
	pktsPerMs := spec.RateMbit * 1e3 / (8 * mtu)
	queue := max(32, math.Ceil(pktsPerMs*spec.RTTms))
	limit := int(math.Ceil(pktsPerMs*delayMs) + queue)
	args := []string{"netem", "delay", fmtFloat(delayMs) + "ms", "rate", fmtFloat(spec.RateMbit) + "mbit", "limit", strconv.Itoa(limit)}
	loss := spec.LossPct / 100
	switch {
	case loss <= 0:
	case spec.Burst > 0:
		r := 1 / spec.Burst
		p := loss * r / (1 - loss)
		args = append(args, "loss", "gemodel", fmtFloat(100*p)+"%", fmtFloat(100*r)+"%")
	default:
		args = append(args, "loss", "random", fmtFloat(spec.LossPct)+"%")
	}
	return args
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func (n *netem) start(spec LinkSpec) error {
	procsMu.Lock() // as linkem's: a shutdown cannot interleave
	defer procsMu.Unlock()
	if stopping {
		return fmt.Errorf("stopping")
	}
	n.down() // a previous run killed hard may have left it
	a, b, dev := n.nsA(), n.nsB(), n.dev()
	cmds := [][]string{
		{"ip", "netns", "add", a},
		{"ip", "netns", "add", b},
		{"ip", "link", "add", dev, "netns", a, "type", "veth", "peer", "name", dev, "netns", b},
	}
	for _, s := range []struct{ ns, addr string }{{a, addrA}, {b, addrB}} {
		cmds = append(cmds,
			[]string{"ip", "-n", s.ns, "link", "set", "lo", "up"},
			// One packet per skb: netem drops and delays what it gets,
			// and a 64 KB segmentation-offload packet would be 40 at once.
			[]string{"ip", "-n", s.ns, "link", "set", dev, "mtu", strconv.Itoa(mtu), "gso_max_segs", "1", "gso_max_size", strconv.Itoa(mtu)},
			[]string{"ip", "-n", s.ns, "addr", "add", s.addr + "/24", "dev", dev},
			[]string{"ip", "-n", s.ns, "link", "set", dev, "up"},
			append([]string{"tc", "-n", s.ns, "qdisc", "replace", "dev", dev, "root"}, netemArgs(spec)...),
		)
	}
	for _, c := range cmds {
		if _, err := run(c...); err != nil {
			n.down()
			return err
		}
	}
	n.spec = spec
	return nil
}

func (n *netem) setRate(mbit float64) error {
	spec := n.spec
	spec.RateMbit = mbit
	for _, ns := range []string{n.nsA(), n.nsB()} {
		if _, err := run(append([]string{"tc", "-n", ns, "qdisc", "change", "dev", n.dev(), "root"}, netemArgs(spec)...)...); err != nil {
			return err
		}
	}
	n.spec = spec
	return nil
}

func (n *netem) stats() []linkDir {
	var dirs []linkDir
	for _, d := range []struct{ name, ns string }{{"a->b", n.nsA()}, {"b->a", n.nsB()}} {
		out, err := exec.Command("tc", "-s", "-n", d.ns, "qdisc", "show", "dev", n.dev()).CombinedOutput()
		if err != nil {
			return nil
		}
		dirs = append(dirs, parseNetemStats(d.name, string(out)))
	}
	return dirs
}

func (n *netem) down() []linkDir {
	counters := n.stats()
	exec.Command("ip", "netns", "del", n.nsA()).Run()
	exec.Command("ip", "netns", "del", n.nsB()).Run()
	return counters
}

func (n *netem) pid() int { return 0 }

// netemSent matches the counters line of "tc -s qdisc show":
//
//	Sent 61893418 bytes 41009 pkt (dropped 431, overlimits 0 requeues 0)
var netemSent = regexp.MustCompile(`Sent (\d+) bytes (\d+) pkt \(dropped (\d+)`)

// parseNetemStats reads one direction's counters from "tc -s qdisc show"
// output: forwarded, and dropped (loss and queue drops alike) as lost.
func parseNetemStats(name, out string) linkDir {
	d := linkDir{Name: name}
	if m := netemSent.FindStringSubmatch(out); m != nil {
		d.Fwd, _ = strconv.ParseInt(m[2], 10, 64)
		d.Lost, _ = strconv.ParseInt(m[3], 10, 64)
		d.Read = d.Fwd + d.Lost
	}
	return d
}
