package transport

import (
	"testing"
	"time"
)

// TestSamplerAppLimited: data sent after the sender found nothing to
// send is app-limited until everything in flight at that moment is
// delivered, including when nothing was (an idle session's first write:
// until 2026-12-05 it went unmarked, and a tunnel's handshake ended
// Startup); data sent after that is not.
func TestSamplerAppLimited(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name     string
		inflight int // segments in flight when the sender goes idle
	}{
		{"nothing in flight", 0},
		{"two segments in flight", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSampler(64)
			now := time.Duration(0)
			sn := uint32(0)
			send := func() uint32 {
				s.onSend(now, sn, uint32(now/ms), 1000)
				sn++
				return sn - 1
			}
			ack := func(n uint32) rateSample {
				s.onAck(now, n, uint32(s.recs[n&s.mask].last.sent/ms))
				return s.endEvent(now)
			}
			// Something was delivered before (the handshake).
			ack(send())
			now += 50 * ms
			var early []uint32
			for range tc.inflight {
				early = append(early, send())
			}
			s.markAppLimited(0)
			idle := send() // the first write after the idle spell
			now += 50 * ms
			for _, n := range early {
				if rs := ack(n); rs.appLimited {
					t.Errorf("segment %d, sent before the sender went idle: app-limited", n)
				}
			}
			if rs := ack(idle); !rs.appLimited {
				t.Errorf("the first write after the idle spell: not app-limited: %+v", rs)
			}
			busy := send() // sent once everything from before is delivered
			now += 50 * ms
			if rs := ack(busy); rs.appLimited {
				t.Errorf("a write after the app-limited data was delivered: app-limited: %+v", rs)
			}
		})
	}
}

// TestSamplerResendsInFlight: a segment sent again counts in flight once
// more per copy (at most maxCopies), as TCP's pipe counts
// retransmissions, until it is delivered, by its ACK or by una.
func TestSamplerResendsInFlight(t *testing.T) {
	s := newSampler(64)
	for sn := range uint32(4) {
		s.onSend(0, sn, 0, 1000)
	}
	s.onSend(time.Millisecond, 1, 1, 1000) // resent once
	for range 5 {                          // and again, past maxCopies
		s.onSend(2*time.Millisecond, 2, 2, 1000)
	}
	if want := int64(4000 + 1000 + maxCopies*1000); s.inflight != want {
		t.Fatalf("in flight %d after resends, want %d", s.inflight, want)
	}
	s.onAck(3*time.Millisecond, 1, 1)
	s.endEvent(3 * time.Millisecond)
	if want := int64(3000 + maxCopies*1000); s.inflight != want {
		t.Fatalf("in flight %d after the resent segment's ACK, want %d", s.inflight, want)
	}
	s.onUna(4*time.Millisecond, 4)
	s.endEvent(4 * time.Millisecond)
	if s.inflight != 0 {
		t.Fatalf("in flight %d after una passed everything", s.inflight)
	}
	if s.resent != 6 {
		t.Fatalf("%d resends counted, want 6", s.resent)
	}
}

// TestSamplerGrows: the records start small and double as more segments
// are in flight at once, up to the window; what was in flight when they
// grew is delivered with its own send state (its RTT and bytes), and a
// segment beyond the window is counted sent, not in flight.
func TestSamplerGrows(t *testing.T) {
	const window = 1000 // rounded up: 1024 records at most
	s := newSampler(window)
	if len(s.recs) != minRecs {
		t.Fatalf("a new sampler holds %d records, want %d", len(s.recs), minRecs)
	}
	ms := time.Millisecond
	for sn := range uint32(1024) {
		s.onSend(time.Duration(sn)*ms, sn, sn, 1000)
	}
	if len(s.recs) != 1024 || s.inflight != 1024*1000 {
		t.Fatalf("1024 in flight: %d records, %d bytes in flight; want 1024 and %d", len(s.recs), s.inflight, 1024*1000)
	}
	s.onSend(2000*ms, 1024, 2000, 1000) // one past the window
	if len(s.recs) != 1024 || s.inflight != 1024*1000 || s.sentBytes != 1025*1000 {
		t.Fatalf("past the window: %d records, %d in flight, %d sent; want 1024, %d, %d", len(s.recs), s.inflight, s.sentBytes, 1024*1000, 1025*1000)
	}
	// The first segments, recorded before the records grew, keep their
	// send times: the ACK of segment 3 (sent at 3 ms) measures its RTT.
	now := 3000 * ms
	s.onAck(now, 3, 3)
	if rs := s.endEvent(now); rs.rtt != now-3*ms || rs.newly != 1000 {
		t.Fatalf("ACK of segment 3 after growing: rtt %v, newly %d; want %v, 1000", rs.rtt, rs.newly, now-3*ms)
	}
	s.onUna(now, 1024)
	if rs := s.endEvent(now); rs.newly != 1023*1000 || s.inflight != 0 {
		t.Fatalf("una 1024: newly %d, in flight %d; want %d and 0", rs.newly, s.inflight, 1023*1000)
	}
}
