package main

// linkem, the userspace link emulator (emulator.go), from a binary the
// user built: it makes NAME-a and NAME-b with a TUN device NAME0 in each,
// and forwards between them with delay, a rate limit over a one-BDP queue
// and random or Gilbert-Elliott loss.

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

type linkem struct {
	netnsPair
	bin string
	up  bool
}

func newLinkem(ns netnsPair, bin string) (*linkem, error) {
	if bin == "" {
		return nil, fmt.Errorf("linkem: no binary: -linkem BIN")
	}
	if !isFile(bin) {
		return nil, fmt.Errorf("linkem: %s is not a file", bin)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, fmt.Errorf("linkem: needs /dev/net/tun")
	}
	return &linkem{netnsPair: ns, bin: bin}, nil
}

func (l *linkem) kind() string { return "linkem" }

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

func (l *linkem) setRate(mbit float64) error {
	_, err := run(l.bin, "set", "--name", l.name, "--rate", fmt.Sprintf("%gmbit", mbit))
	return err
}

func (l *linkem) down() []linkDir {
	out, _ := exec.Command(l.bin, "down", "--name", l.name).CombinedOutput()
	l.up = false
	return parseLinkemStats(string(out))
}

func (l *linkem) stats() []linkDir {
	out, _ := exec.Command(l.bin, "stats", "--name", l.name).CombinedOutput()
	return parseLinkemStats(string(out))
}

func (l *linkem) pid() int {
	b, err := os.ReadFile("/run/linkem/" + l.name + ".pid")
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
