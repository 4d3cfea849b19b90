//go:build linux

package transport

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// heldBatch holds a batchConn's first WriteBatch until release is closed
// and records the size of every batch handed to it; done is closed once
// want datagrams have gone through.
type heldBatch struct {
	batchConn
	release chan struct{}
	want    int
	done    chan struct{}

	mu      sync.Mutex
	batches []int
	sent    int
}

func (h *heldBatch) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	h.mu.Lock()
	first := len(h.batches) == 0
	h.batches = append(h.batches, len(ms))
	h.mu.Unlock()
	if first {
		<-h.release
	}
	n, err := h.batchConn.WriteBatch(ms, flags)
	h.mu.Lock()
	h.sent += n
	if h.sent == h.want {
		close(h.done)
	}
	h.mu.Unlock()
	return n, err
}

// TestWatchBatched: with rate_mbit = "auto", the watched sockets read and
// write in batches (one recvmmsg for a burst, one sendmmsg for what
// behind a send), every datagram arrives whole and in order, and
// the controller sees each: the data's segments in flight as they are
// sent, and all delivered by the ACKs read back, of which each went out
// twice.
func TestWatchBatched(t *testing.T) {
	v4 := net.IPv4(127, 0, 0, 1)
	for _, tc := range []struct {
		name     string
		network  string // the listener's
		ip, dial net.IP
		dialNet  string
	}{
		{"udp4", "udp4", v4, v4, "udp4"},
		{"udp6", "udp6", net.IPv6loopback, net.IPv6loopback, "udp6"},
		// The daemon's listen = ":port": one dual-stack socket, here
		// with an IPv4 peer (addresses v4-mapped).
		{"dual-stack", "udp", net.IPv6unspecified, v4, "udp4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := net.ListenUDP(tc.network, &net.UDPAddr{IP: tc.ip})
			if err != nil {
				t.Skipf("no %s socket on %v: %v", tc.network, tc.ip, err)
			}
			defer srv.Close()
			cli, err := net.DialUDP(tc.dialNet, nil, &net.UDPAddr{IP: tc.dial, Port: srv.LocalAddr().(*net.UDPAddr).Port})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			// Every read below has an owner: a failed test ends, never hangs.
			deadline := time.Now().Add(20 * time.Second)
			srv.SetReadDeadline(deadline)
			cli.SetReadDeadline(deadline)

			lw, dw := newListenWatch(srv), newDialWatch(cli)
			if lw.rd == nil || lw.wr == nil || dw.rd == nil || dw.wr == nil {
				t.Fatal("a bare *net.UDPConn is not batched")
			}
			const conv, n, ln = 7, 40, 1000
			cctl := newRateCtl(conv, ln, 1024, 20*time.Millisecond, nil, nil)
			sctl := newRateCtl(conv, ln, 1024, 20*time.Millisecond, nil, nil)
			dw.ctl.Store(cctl)
			lw.add(cli.LocalAddr(), sctl)

			held := &heldBatch{batchConn: dw.wr.bc, release: make(chan struct{}), want: n, done: make(chan struct{})}
			dw.wr.bc = held

			// The data: n datagrams of one segment each. The first is
			// held in its sendmmsg; the others queue behind it.
			data := make([][]byte, n)
			for i := range data {
				data[i] = make([]byte, kcpHeaderLen+ln)
				putSeg(data[i], conv, kcpCmdPush, uint32(1000+i), uint32(i), 0, ln)
				for j := kcpHeaderLen; j < len(data[i]); j++ {
					data[i][j] = byte(i + j)
				}
				if m, err := dw.WriteTo(data[i], srv.LocalAddr()); m != len(data[i]) || err != nil {
					t.Fatalf("WriteTo %d: %d, %v", i, m, err)
				}
			}
			if st := cctl.state(); st.InFlight != n*ln {
				t.Fatalf("in flight after sending: %d bytes, want %d", st.InFlight, n*ln)
			}
			close(held.release)
			<-held.done
			// The flusher took what had queued when it started (at
			// least the first) and, while held, the rest queued.
			if sum := sumInts(held.batches); len(held.batches) > 2 || sum != n {
				t.Fatalf("sendmmsg batches %v, want at most 2 of %d in all", held.batches, n)
			}

			// All n wait in the socket: recvmmsg reads them in batches that grow
			// while full (4, 8, 16, 12 for 40).
			buf := make([]byte, datagramMax)
			for i := range n {
				m, from, err := lw.ReadFrom(buf)
				if err != nil {
					t.Fatalf("ReadFrom %d: %v", i, err)
				}
				if !bytes.Equal(buf[:m], data[i]) {
					t.Fatalf("datagram %d: %d bytes, not the %d sent", i, m, len(data[i]))
				}
				if k, _ := addrKey(from); k != mustKey(t, cli.LocalAddr()) {
					t.Fatalf("datagram %d from %v, want %v", i, from, cli.LocalAddr())
				}
			}
			if r, rm := lw.stats.reads.Load(), lw.stats.readMsgs.Load(); r != fullReads(n) || rm != n {
				t.Fatalf("listener: %d recvmmsg for %d datagrams, want %d for %d", r, rm, fullReads(n), n)
			}

			// The ACKs, one datagram each: the listener's controller
			// has each go out twice.
			for i := range n {
				ack := make([]byte, kcpHeaderLen)
				putSeg(ack, conv, kcpCmdAck, uint32(1000+i), uint32(i), uint32(i+1), 0)
				if _, err := lw.WriteTo(ack, cli.LocalAddr()); err != nil {
					t.Fatalf("ACK %d: %v", i, err)
				}
			}
			for i := range 2 * n {
				m, _, err := dw.ReadFrom(buf)
				if err != nil {
					t.Fatalf("ReadFrom ACK %d: %v", i, err)
				}
				if m != kcpHeaderLen || buf[4] != kcpCmdAck {
					t.Fatalf("datagram %d back: %d bytes, cmd %d, not an ACK", i, m, buf[4])
				}
			}
			if st := cctl.state(); st.Delivered != n*ln || st.InFlight != 0 {
				t.Fatalf("after the ACKs: delivered %d, in flight %d; want %d, 0", st.Delivered, st.InFlight, n*ln)
			}
			if r, rm := dw.stats.reads.Load(), dw.stats.readMsgs.Load(); rm != 2*n || r > rm {
				t.Fatalf("dialer: %d recvmmsg for %d datagrams, want %d datagrams", r, rm, 2*n)
			}
			t.Logf("listener: %d sendmmsg for %d datagrams; dialer: %d recvmmsg for %d",
				lw.stats.writes.Load(), lw.stats.writeMsgs.Load(), dw.stats.reads.Load(), dw.stats.readMsgs.Load())
		})
	}
}

// fullReads is how many recvmmsg read n datagrams that all wait: the
// batch starts at minReadBatch and doubles after each full read.
func fullReads(n int) uint64 {
	calls, size := uint64(0), minReadBatch
	for n > 0 {
		calls++
		if n < size {
			break
		}
		n -= size
		size = min(2*size, readBatch)
	}
	return calls
}

func sumInts(a []int) int {
	s := 0
	for _, v := range a {
		s += v
	}
	return s
}

func mustKey(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	k, ok := addrKey(a)
	if !ok {
		t.Fatalf("address %v", a)
	}
	return k
}

// TestWatchBatchedClosed: once the socket is closed, writes fail with
// net.ErrClosed (the first may still queue) and none waits for good, not
// even one that finds the queue full.
func TestWatchBatchedClosed(t *testing.T) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	lw := newListenWatch(srv)
	to := srv.LocalAddr()
	srv.Close()
	b := make([]byte, kcpHeaderLen)
	for i := 0; ; i++ {
		_, err := lw.WriteTo(b, to)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("write %d on a closed socket: %v, want net.ErrClosed", i, err)
			}
			break
		}
		// At most a full queue being sent and a full queue behind it.
		if i > 2*writeQueue {
			t.Fatalf("%d writes on a closed socket succeeded", i)
		}
	}
	if _, _, err := lw.ReadFrom(b); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed socket: %v, want net.ErrClosed", err)
	}
}

// TestWatchBatchedRefused: on a dialed socket whose peer's port is
// closed, the port-unreachable error a batched send takes is every later
// write's, and wakes the reader with it (no crash on sendmmsg's -1, no
// wait for a deadline).
func TestWatchBatchedRefused(t *testing.T) {
	dead, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	to := dead.LocalAddr().(*net.UDPAddr)
	dead.Close()
	cli, err := net.DialUDP("udp4", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	dw := newDialWatch(cli)
	if dw.wr == nil {
		t.Fatal("a bare *net.UDPConn is not batched")
	}
	b := make([]byte, kcpHeaderLen)
	// The error comes with the send after the peer's ICMP answer, a
	// batch or two after the first: writes succeed until then.
	start := time.Now()
	for i := 0; ; i++ {
		if _, err := dw.WriteTo(b, to); err != nil {
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("write %d: %v, want connection refused", i, err)
			}
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%d writes to a closed port in 10s, none refused", i)
		}
	}
	if _, _, err := dw.ReadFrom(b); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("read after a refused send: %v, want connection refused", err)
	}
}
