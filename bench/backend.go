package main

// The backend: the service behind the warren client (and the target of the
// direct reference connections), on TCP and, on the same port, UDP
// (udp.go). It runs as its own process
// ("bench _backend -listen ADDR"), in the client's network namespace in
// lossy mode, and exits when its stdin closes.
//
// Each connection starts with one mode byte:
//
//	'E' echo: the byte is echoed, then everything that follows.
//	'U' sink: reads the pattern stream, verifies it, and acknowledges what
//	    it has received (at least every ackEvery bytes) with 16 bytes: the
//	    cumulative count, big-endian, then the backend's clock when it had
//	    read that much (Unix nanoseconds, big-endian); ackBad set in the
//	    count means a mismatch (then it closes), ackFinal the count at end
//	    of stream. The load generator counts an upload's window by the
//	    backend's clock: the acknowledgements come back through the tunnel,
//	    late by a varying delay (on a lossy path a lost segment holds them
//	    for a retransmission timeout), which would move the window.
//	'D' source: writes the pattern stream until the connection breaks.
//	'Q' deaf: reads nothing, until the connection is closed or reset.

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

const (
	modeEcho   = 'E'
	modeSink   = 'U'
	modeSource = 'D'
	modeDeaf   = 'Q' // accepts and never reads: a backend that stopped reading

	ackEvery = 64 << 10
	ackLen   = 16 // count and time
	ackBad   = uint64(1) << 63
	ackFinal = uint64(1) << 62
	ackCount = ackFinal - 1
)

func backendMain(args []string) {
	fs := flag.NewFlagSet("_backend", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
	// UDP on the same port: serveUDPBackend (udp.go).
	if pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())); err != nil {
		fmt.Fprintln(os.Stderr, "backend: no UDP:", err)
	} else {
		go serveUDPBackend(pc)
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	go func() { // the orchestrator's end of stdin: exit with it
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "backend: accept:", err)
			continue // e.g. EMFILE: keep serving the others
		}
		go serveBackend(c)
	}
}

func serveBackend(c net.Conn) {
	defer c.Close()
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case modeEcho:
		if _, err := c.Write(mode[:]); err != nil {
			return
		}
		// Small buffer: the memory test holds 10 000 of these open.
		io.CopyBuffer(c, struct{ io.Reader }{c}, make([]byte, 4<<10))
	case modeSink:
		sinkVerify(c)
	case modeSource:
		var off int64
		for {
			n, err := c.Write(patternAt(off, 128<<10))
			off += int64(n)
			if err != nil {
				return
			}
		}
	case modeDeaf:
		waitGone(c)
	}
}

// waitGone returns when c's peer has closed or reset it, without reading
// c: the kernel's TCP state says so.
func waitGone(c net.Conn) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return
	}
	for {
		time.Sleep(100 * time.Millisecond)
		var info *unix.TCPInfo
		var ierr error
		if rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }) != nil ||
			ierr != nil || info.State != unix.BPF_TCP_ESTABLISHED {
			return
		}
	}
}

// sinkVerify reads and checks the pattern stream and acknowledges it.
func sinkVerify(c net.Conn) {
	buf := make([]byte, 256<<10)
	var chk checker
	var got, acked int64
	var at time.Time // when the last read returned
	ack := func(v uint64) error {
		var b [ackLen]byte
		binary.BigEndian.PutUint64(b[:], v)
		binary.BigEndian.PutUint64(b[8:], uint64(at.UnixNano()))
		_, err := c.Write(b[:])
		return err
	}
	for {
		n, err := c.Read(buf)
		at = time.Now()
		if n > 0 {
			if !chk.check(buf[:n]) {
				ack(uint64(chk.off) | ackBad)
				return
			}
			got += int64(n)
			if got-acked >= ackEvery {
				if ack(uint64(got)) != nil {
					return
				}
				acked = got
			}
		}
		if err == io.EOF {
			ack(uint64(got) | ackFinal)
			return
		}
		if err != nil {
			return
		}
	}
}
