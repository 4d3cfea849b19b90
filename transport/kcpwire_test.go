package transport

import (
	"encoding/binary"
	"testing"
	"time"
)

// FuzzRateCtl: whatever a peer sends (and whatever KCP hands the socket),
// the controller reads it without panicking, and its state stays sane.
func FuzzRateCtl(f *testing.F) {
	seg := func(cmd byte, ts, sn, una, ln uint32, data int) []byte {
		b := make([]byte, kcpHeaderLen+data)
		putSeg(b, 7, cmd, ts, sn, una, ln)
		return b
	}
	f.Add(seg(kcpCmdPush, 1, 0, 0, 100, 100), seg(kcpCmdAck, 1, 0, 1, 0, 0))
	f.Add(seg(kcpCmdPush, 1, 5, 0, 10, 10), seg(kcpCmdAck, 1, 5, 0, 0, 0))
	fec := make([]byte, fecHeaderLen)
	binary.LittleEndian.PutUint16(fec[4:], fecTypeData)
	f.Add(append(fec, seg(kcpCmdPush, 2, 0, 0, 5, 5)...), append(fec, seg(kcpCmdAck, 2, 0, 1, 0, 0)...))
	f.Add([]byte{}, []byte{0xf2, 0, 0, 0, 0xf2, 0})
	f.Fuzz(func(t *testing.T, out, in []byte) {
		now := time.Duration(0)
		c := newRateCtl(7, 1326, 128, 20*time.Millisecond, func() time.Duration { now += time.Millisecond; return now }, nil)
		for range 3 {
			c.sent(out)
			c.received(in)
		}
		st := c.state()
		if st.InFlight < 0 || st.Delivered < 0 || st.PacingRate <= 0 || st.InFlightCap <= 0 {
			t.Fatalf("state after %x / %x: %+v", out, in, st)
		}
		if c.quantum() <= 0 {
			t.Fatal("quantum <= 0")
		}
		if wait, ackWait := c.admit(c.quantum(), true); wait < 0 || wait > time.Minute && !ackWait {
			t.Fatalf("admit: wait %v", wait)
		}
	})
}

// TestKCPSegments reads the segments of a datagram, with and without an
// FEC header, and stops at one that does not fit.
func TestKCPSegments(t *testing.T) {
	b := make([]byte, 2*kcpHeaderLen+3)
	putSeg(b, 9, kcpCmdPush, 100, 5, 4, 3)
	putSeg(b[kcpHeaderLen+3:], 9, kcpCmdAck, 101, 6, 4, 0)
	var got []kcpSeg
	for s := range kcpSegments(b) {
		got = append(got, s)
	}
	if len(got) != 2 || got[0] != (kcpSeg{conv: 9, cmd: kcpCmdPush, ts: 100, sn: 5, una: 4, ln: 3}) ||
		got[1] != (kcpSeg{conv: 9, cmd: kcpCmdAck, ts: 101, sn: 6, una: 4}) {
		t.Fatalf("segments: %+v", got)
	}
	fec := make([]byte, fecHeaderLen, fecHeaderLen+len(b))
	binary.LittleEndian.PutUint16(fec[4:], fecTypeData)
	n := 0
	for range kcpSegments(append(fec, b...)) {
		n++
	}
	if n != 2 {
		t.Fatalf("%d segments behind an FEC data header, want 2", n)
	}
	binary.LittleEndian.PutUint16(fec[4:], fecTypeParity)
	for range kcpSegments(append(fec, b...)) {
		t.Fatal("a segment in a parity shard")
	}
	for range kcpSegments(b[:kcpHeaderLen+2]) { // the data is cut short
		t.Fatal("a segment that does not fit")
	}
}

// TestRateCtlGateUnsticks: when the gate's counts drift from KCP's (a
// record counted queued that KCP sent, or in flight that was delivered)
// and the cap is below one write (ProbeRTT on a short path), the gate
// holds writers back only until nothing has been sent or delivered for
// stuckAfter; then it lets one write in and counts it. While data leaves
// or is delivered, it keeps the cap.
func TestRateCtlGateUnsticks(t *testing.T) {
	for _, tc := range []struct {
		name     string
		progress bool // a segment leaves each poll
		want     bool // let in past the cap by stuckAfter + a poll
	}{
		{"nothing moves", false, true},
		{"data leaves", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Duration(0)
			c := newRateCtl(7, 1326, 128, 20*time.Millisecond, func() time.Duration { return now }, nil)
			c.m.cap = 11459
			c.admitted = 16406 // one TLS record KCP never reported sent
			seg := make([]byte, kcpHeaderLen+100)
			var sn uint32
			let := false
			for now = 0; now <= stuckAfter+ackPoll; now += ackPoll {
				if tc.progress {
					putSeg(seg, 7, kcpCmdPush, uint32(now/time.Millisecond), sn, 0, 100)
					c.sent(seg)
					sn++
				}
				if _, ackWait := c.admit(16406, true); !ackWait {
					let = true
					break
				}
			}
			if let != tc.want {
				t.Fatalf("let in past the cap: %v, want %v (at %v; state %+v)", let, tc.want, now, c.state())
			}
			if tc.want && (now < stuckAfter || c.state().Stuck != 1) {
				t.Fatalf("let in at %v (stuckAfter %v), stuck %d", now, stuckAfter, c.state().Stuck)
			}
		})
	}
}

// TestRateCtlUnseenFirstSend: kcp-go drops a datagram when its queue to
// the socket is full and takes it for sent, so the first transmission of
// its segments that the controller sees is a resend, after later
// segments. Those are counted sent then: once everything is delivered,
// nothing is counted queued or in flight, and with a cap below one write
// the gate lets the next write in at once. Until 2026-12-06 they were
// taken for resends of segments never sent and ignored, their bytes
// stayed counted queued in KCP for good, and the gate held every write
// (docs/benchmarks.md, "A session that waited for good").
func TestRateCtlUnseenFirstSend(t *testing.T) {
	const mss = 1326
	now := time.Duration(0)
	c := newRateCtl(7, mss, 128, 20*time.Millisecond, func() time.Duration { return now }, nil)
	if wait, ackWait := c.admit(4*mss, true); wait != 0 || ackWait {
		t.Fatalf("first write: wait %v, ackWait %v", wait, ackWait)
	}
	dgram := func(cmd byte, una uint32, sns ...uint32) []byte {
		b := make([]byte, 0, len(sns)*(kcpHeaderLen+mss))
		for _, sn := range sns {
			seg := make([]byte, kcpHeaderLen)
			ln := uint32(0)
			if cmd == kcpCmdPush {
				ln = mss
			}
			putSeg(seg, 7, cmd, uint32(now/time.Millisecond), sn, una, ln)
			b = append(append(b, seg...), make([]byte, ln)...)
		}
		return b
	}
	// KCP sends segment 0, 1-2 and 3; kcp-go drops the second datagram.
	c.sent(dgram(kcpCmdPush, 0, 0))
	c.sent(dgram(kcpCmdPush, 0, 3))
	now += 30 * time.Millisecond // KCP's timeout: 1 and 2 go again
	c.sent(dgram(kcpCmdPush, 0, 1, 2))
	now += time.Millisecond
	c.received(dgram(kcpCmdAck, 4, 0, 3, 1, 2))

	st := c.state()
	if queued := c.admitted - c.s.sentBytes; queued != 0 || st.InFlight != 0 || st.Delivered != 4*mss {
		t.Fatalf("all delivered: %d counted queued, %d in flight, %d delivered; want 0, 0, %d", queued, st.InFlight, st.Delivered, 4*mss)
	}
	if st.Resent != 0 || st.LocalDrops != 2 {
		t.Fatalf("%d resends and %d first transmissions dropped before the socket counted; want 0 and 2", st.Resent, st.LocalDrops)
	}
	c.m.cap = 3 * mss // ProbeRTT on a short path: below one TLS record
	if _, ackWait := c.admit(16406, true); ackWait || c.state().Stuck != 0 {
		t.Fatalf("nothing busy: the gate waits for ACKs (%v), stuck %d", ackWait, c.state().Stuck)
	}
}
