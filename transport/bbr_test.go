package transport

import (
	"slices"
	"testing"
	"time"
)

// The rate controller on the simulated path of pathsim_test.go. Rates are
// of segment data, as the controller counts them: the bottleneck's rate
// less KCP's, UDP's and IP's headers (payloadRate).

// bwAt runs p to at and returns f's bandwidth estimate in bytes a second.
func bwAt(p *pathSim, f *simFlow, at time.Duration) float64 {
	p.run(at)
	return f.ctl.state().Bandwidth / 8
}

// within reports whether got is within frac of want.
func within(got, want, frac float64) bool { return got >= want*(1-frac) && got <= want*(1+frac) }

// TestRateCtlConverges: from a cold start the estimate is within 10% of the
// bottleneck in under 2 s (and stays there), and the path is kept busy afterwards, on
// short, long, slow and fast paths (1% random loss, a queue of one BDP).
func TestRateCtlConverges(t *testing.T) {
	for _, tc := range []struct {
		name string
		mbit float64
		rtt  time.Duration
		by   time.Duration
		// busy is the share of the bottleneck the session must deliver
		// in the 4 s after.
		busy float64
	}{
		{"100 Mbit/s 50 ms", 100, 50 * time.Millisecond, 2 * time.Second, 0.85},
		{"20 Mbit/s 20 ms", 20, 20 * time.Millisecond, 2 * time.Second, 0.85},
		{"300 Mbit/s 10 ms", 300, 10 * time.Millisecond, 2 * time.Second, 0.85},
		// Ten round trips in 2 s, most of them Startup's; its last
		// round fills the queue, and the resends of what that drops
		// hold a queue for a while, for which the estimate is cut: a
		// probe cycle is 1.6 s on this path.
		{"10 Mbit/s 200 ms", 10, 200 * time.Millisecond, 2 * time.Second, 0.7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPathSim(tc.mbit, tc.rtt, 1, 0.01)
			f := p.addFlow(-1)
			want := p.payloadRate()
			// The median over the second from tc.by: one reading may
			// fall just after a queue cut (0.85 of the estimate).
			p.run(tc.by)
			d0 := f.delivered
			var bws []float64
			for at := tc.by; at < tc.by+time.Second; at += 50 * time.Millisecond {
				bws = append(bws, bwAt(p, f, at))
			}
			slices.Sort(bws)
			if bw := bws[len(bws)/2]; !within(bw, want, 0.1) {
				t.Fatalf("estimate %.1f Mbit/s (median over the second from %v), bottleneck %.1f", bw*8/1e6, tc.by, want*8/1e6)
			}
			p.run(tc.by + 4*time.Second)
			if got := float64(f.delivered-d0) / 4; got < tc.busy*want {
				t.Fatalf("goodput %.1f Mbit/s after convergence, bottleneck %.1f", got*8/1e6, want*8/1e6)
			}
		})
	}
}

// TestRateCtlRandomLoss: 5% random loss after the queue does not cut the
// rate: the estimate stays near the bottleneck and the path stays busy.
func TestRateCtlRandomLoss(t *testing.T) {
	p := newPathSim(100, 50*time.Millisecond, 1, 0.05)
	f := p.addFlow(-1)
	want := p.payloadRate()
	for at := 2 * time.Second; at <= 8*time.Second; at += 100 * time.Millisecond {
		if bw := bwAt(p, f, at); bw < 0.85*want {
			t.Fatalf("estimate %.1f Mbit/s at %v with 5%% random loss, bottleneck %.1f", bw*8/1e6, at, want*8/1e6)
		}
	}
	// What is lost is resent on top, and takes the path's capacity.
	if got := p.goodput(f, 8*time.Second, 12*time.Second) / 8; got < 0.85*want {
		t.Fatalf("goodput %.1f Mbit/s with 5%% random loss, bottleneck %.1f", got*8/1e6, want*8/1e6)
	}
}

// TestRateCtlBurstLoss: 2% loss in bursts (Gilbert's model, mean burst 4
// datagrams, as the benchmark's linkem) does not cut the rate either: on
// the simulated path the estimate stays near the bottleneck, no standing
// queue is seen, and the path stays busy.
func TestRateCtlBurstLoss(t *testing.T) {
	p := newPathSim(100, 50*time.Millisecond, 1, 0.02)
	p.burst = 4
	f := p.addFlow(-1)
	want := p.payloadRate()
	for at := 2 * time.Second; at <= 8*time.Second; at += 100 * time.Millisecond {
		if bw := bwAt(p, f, at); bw < 0.85*want {
			t.Fatalf("estimate %.1f Mbit/s at %v with 2%% burst loss, bottleneck %.1f", bw*8/1e6, at, want*8/1e6)
		}
	}
	if got := p.goodput(f, 8*time.Second, 12*time.Second) / 8; got < 0.85*want {
		t.Fatalf("goodput %.1f Mbit/s with 2%% burst loss, bottleneck %.1f", got*8/1e6, want*8/1e6)
	}
	if st := f.ctl.state(); st.QueueCuts != 0 {
		t.Fatalf("%d queue cuts on a path with no queue: %+v", st.QueueCuts, st)
	}
}

// TestRateCtlQueueBackoff: when a queue builds up without loss (a buffer
// of 5 or 10 BDPs), the controller backs off: after the bottleneck halves,
// and when unresponsive cross traffic takes half of it. It keeps the queue
// under 3/4 of an RTT on average (a quarter of an RTT before it counts,
// and the probes), where not backing off would fill the buffer.
func TestRateCtlQueueBackoff(t *testing.T) {
	t.Run("rate halves", func(t *testing.T) {
		p := newPathSim(100, 50*time.Millisecond, 10, 0)
		f := p.addFlow(-1)
		p.run(3 * time.Second)
		p.setRate(50)
		want := p.payloadRate()
		if bw := bwAt(p, f, 5*time.Second); bw > 1.15*want {
			t.Fatalf("estimate %.1f Mbit/s 2 s after the bottleneck fell to %.1f", bw*8/1e6, want*8/1e6)
		}
		checkQueue(t, p, 5*time.Second, 8*time.Second, 0.75)
	})
	t.Run("cross traffic", func(t *testing.T) {
		p := newPathSim(100, 50*time.Millisecond, 5, 0)
		f := p.addFlow(-1)
		p.run(3 * time.Second)
		p.startCross(50)
		share := p.payloadRate() / 2
		if bw := bwAt(p, f, 6*time.Second); bw > 1.2*share {
			t.Fatalf("estimate %.1f Mbit/s 3 s after cross traffic took half the path (%.1f left)", bw*8/1e6, share*8/1e6)
		}
		checkQueue(t, p, 6*time.Second, 9*time.Second, 0.75)
		if got := p.goodput(f, 9*time.Second, 12*time.Second) / 8; got < 0.8*share {
			t.Fatalf("goodput %.1f Mbit/s beside the cross traffic, %.1f left to it", got*8/1e6, share*8/1e6)
		}
	})
}

// checkQueue fails unless the bottleneck's queue, sampled every 10 ms
// over [from, to], holds less than frac x RTT of data on average.
func checkQueue(t *testing.T, p *pathSim, from, to time.Duration, frac float64) {
	t.Helper()
	sum, n := 0.0, 0
	for at := from; at < to; at += 10 * time.Millisecond {
		p.run(at)
		sum += float64(p.queued)
		n++
	}
	wait := time.Duration(sum / float64(n) / p.rate * 1e9)
	if limit := time.Duration(frac * float64(2*p.delay)); wait > limit {
		t.Fatalf("the queue held %v of data on average over [%v, %v]; allowed %v", wait.Round(time.Millisecond), from, to, limit)
	}
}

// TestRateCtlFollowsStep: the estimate follows the bottleneck from 100 to
// 20 Mbit/s and back within 2 s each way (1% loss, a queue of one BDP, as
// linkem sets it).
func TestRateCtlFollowsStep(t *testing.T) {
	p := newPathSim(100, 50*time.Millisecond, 1, 0.01)
	f := p.addFlow(-1)
	setRate := func(mbit float64) {
		p.setRate(mbit)
		p.queueCap = max(int(p.rate*2*p.delay.Seconds()), 32*(simMTU+simIPUDP))
	}
	p.run(3 * time.Second)
	setRate(20)
	low := p.payloadRate()
	if bw := bwAt(p, f, 5*time.Second); !within(bw, low, 0.2) {
		t.Fatalf("estimate %.1f Mbit/s 2 s after a step down to %.1f", bw*8/1e6, low*8/1e6)
	}
	p.run(7 * time.Second)
	setRate(100)
	high := p.payloadRate()
	if bw := bwAt(p, f, 9*time.Second); !within(bw, high, 0.1) {
		t.Fatalf("estimate %.1f Mbit/s 2 s after a step up to %.1f", bw*8/1e6, high*8/1e6)
	}
}

// TestRateCtlShare: two sessions that share a bottleneck (100 Mbit/s,
// 50 ms, a queue of one BDP, both starting at once, as the benchmark's
// sharing test) converge to within 20% of each other: on average over 8
// draws of the loss and of the controllers' random cycle phases, the
// smaller carries at least 0.85 of what the larger does over [5 s, 20 s],
// the window the benchmark measures, and every draw at least 0.7; together
// they keep the path busy. Before the estimate's ceiling after a queue cut
// (bbr.ceil), the same draws gave 0.66-1.00 (mean 0.88) at 1% loss with
// the simulator's old RTT sampling and 0.49-0.96 (mean 0.76) at 0% with
// kcp-go's; now 0.82-0.99 (0.92) and 0.73-0.99 (0.91). (On a 20 Mbit/s,
// 20 ms path the pacing floor is above the link's rate and sessions are
// not paced: floorRate.)
func TestRateCtlShare(t *testing.T) {
	for _, tc := range []struct {
		name      string
		loss      float64
		kcpRTT    bool
		each, avg float64
	}{
		{"1% loss", 0.01, false, 0.7, 0.85},
		{"0% loss, kcp-go's RTT", 0, true, 0.7, 0.85},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const seeds = 8
			sum := 0.0
			for seed := uint64(1); seed <= seeds; seed++ {
				p := newPathSim(100, 50*time.Millisecond, 1, tc.loss)
				p.kcpRTT = tc.kcpRTT
				p.reseed(seed)
				a, b := p.addFlow(-1), p.addFlow(-1)
				from, to := 5*time.Second, 20*time.Second
				p.run(from)
				da, db := a.delivered, b.delivered
				p.run(to)
				ga, gb := float64(a.delivered-da), float64(b.delivered-db)
				r := min(ga, gb) / max(ga, gb)
				sum += r
				secs := (to - from).Seconds()
				if r < tc.each {
					t.Errorf("seed %d: %.1f and %.1f Mbit/s, the smaller %.0f%% of the larger", seed, ga*8/1e6/secs, gb*8/1e6/secs, 100*r)
				}
				if got, want := (ga+gb)/secs, p.payloadRate(); got < 0.9*want {
					t.Errorf("seed %d: together %.1f Mbit/s, bottleneck %.1f", seed, got*8/1e6, want*8/1e6)
				}
			}
			if avg := sum / seeds; avg < tc.avg {
				t.Errorf("the smaller %.0f%% of the larger on average", 100*avg)
			}
		})
	}
}

// TestRateCtlShareAfterIdle: a session that was set up and then sat idle
// (the tunnel's handshake, a heartbeat a second) is still in Startup when
// a download begins, and takes its share beside a session that starts a
// download at the same moment. Until 2026-12-05 the first write after an
// idle spell was not marked app-limited (nothing was in flight, and the
// mark was compared with what had been delivered), so the handshake's
// rounds counted as a full pipe and ended Startup at an estimate of 0.2
// Mbit/s: the idle session then climbed by probes from the pacing floor
// while the fresh one's Startup filled the path. Here that gave it 21-36
// of the 94 Mbit/s over [2 s, 5 s] (0.29-0.71 of the other, 0.49 on
// average; now 0.57-0.99, 0.83). On linkem it stayed near 10 Mbit/s for
// 4 s beside 55-70: the pacing suite's share test sets its two tunnels up
// one after the other.
func TestRateCtlShareAfterIdle(t *testing.T) {
	const seeds = 8
	sum := 0.0
	for seed := uint64(1); seed <= seeds; seed++ {
		p := newPathSim(100, 50*time.Millisecond, 1, 0)
		p.reseed(seed)
		a := p.addFlow(0)
		for i := range 5 { // the handshake: a few exchanges
			p.at(time.Duration(i)*60*time.Millisecond, func() { a.more(1500) })
		}
		for i := 1; i < 5; i++ { // heartbeats
			p.at(time.Duration(i)*time.Second, func() { a.more(100) })
		}
		start := 5 * time.Second
		p.run(start)
		if st := a.ctl.state(); st.Mode != "startup" {
			t.Errorf("seed %d: after the handshake and heartbeats: %+v, want Startup", seed, st)
		}
		b := p.addFlow(-1)
		a.more(1 << 40)
		p.run(start + 2*time.Second)
		da, db := a.delivered, b.delivered
		p.run(start + 5*time.Second)
		ga, gb := float64(a.delivered-da), float64(b.delivered-db)
		r := min(ga, gb) / max(ga, gb)
		sum += r
		if r < 0.5 {
			t.Errorf("seed %d: over [2 s, 5 s] the idle one %.1f Mbit/s, the fresh one %.1f: the smaller %.0f%% of the larger",
				seed, ga*8/3e6, gb*8/3e6, 100*r)
		}
	}
	if avg := sum / seeds; avg < 0.7 {
		t.Errorf("over [2 s, 5 s] the smaller %.0f%% of the larger on average", 100*avg)
	}
}

// TestRateCtlAckWaitInCap: on a 20 Mbit/s, 20 ms path with a one-BDP
// queue and 1% loss, KCP's 20 ms ACK interval is as long as the path, and
// an in-flight cap of two BDPs plus that wait kept the queue overflowing:
// 866 tail drops beside 222 random losses (4 draws, 13 s each), 17.8 of
// 19.25 Mbit/s. With the wait covered within the two BDPs: 185 drops,
// 18.5 Mbit/s.
func TestRateCtlAckWaitInCap(t *testing.T) {
	const seeds = 4
	var got float64
	var drops, losses int
	for seed := uint64(1); seed <= seeds; seed++ {
		p := newPathSim(20, 20*time.Millisecond, 1, 0.01)
		p.reseed(seed)
		f := p.addFlow(-1)
		got += p.goodput(f, 3*time.Second, 13*time.Second) / seeds
		drops += p.drops
		losses += p.losses
	}
	want := newPathSim(20, 20*time.Millisecond, 1, 0.01).payloadRate() * 8
	if got < 0.94*want || drops > 2*losses {
		t.Errorf("%.2f of %.2f Mbit/s; %d tail drops beside %d random losses", got/1e6, want/1e6, drops, losses)
	}
}

// TestRateCtlShortPath: on a 1 ms path (1 Gbit/s, 4 MB of buffers as
// loopback's sockets have, 1% loss) the session keeps the path busy. KCP
// holds ACKs for up to its interval (20 ms), so what is in flight must
// cover that wait, not only the 1 ms round trip (ackBDP). And with the
// resends of 1% loss, KCP sent segments past what the sampler's records
// hold; those were left out of what was sent, stayed "queued" for good and
// shut the gate with nothing in flight (delivery.go, onSend): the session
// stopped here (0 Mbit/s from 2 s on).
func TestRateCtlShortPath(t *testing.T) {
	p := newPathSim(1000, time.Millisecond, 30, 0.01)
	f := p.addFlow(-1)
	want := p.payloadRate()
	if got := p.goodput(f, 2*time.Second, 6*time.Second) / 8; got < 0.9*want {
		t.Fatalf("goodput %.1f Mbit/s on a 1 ms path, bottleneck %.1f: %+v", got*8/1e6, want*8/1e6, f.ctl.state())
	}
}

// TestRateCtlStarved: a sending process starved of CPU (it runs for the
// first part of every period only; its ACKs, timers and writes wait for
// it) does not make the controller take its own lateness for the path's:
// RTTs inflated by the wait are no standing queue and delivery rates that
// fell with it do not lower the estimate (rateCtl.admit notices a writer
// back later than its timer). The session carries about what the CPU it
// gets allows. Without the guard, the estimate collapsed: 1.4-19 Mbit/s
// at 60 of 100 ms starved on the 100 Mbit/s path (here 36-38), 7.6 at 30
// of 50 on the 1 ms path (here 370-400).
func TestRateCtlStarved(t *testing.T) {
	for _, tc := range []struct {
		name            string
		mbit            float64
		rtt             time.Duration
		queue, loss     float64
		period, starved time.Duration
		estimate, busy  float64 // shares of the bottleneck
	}{
		{"100 Mbit/s 50 ms, 20 of 50 ms starved", 100, 50 * time.Millisecond, 1, 0.01, 50 * time.Millisecond, 20 * time.Millisecond, 0.8, 0.6},
		{"100 Mbit/s 50 ms, 60 of 100 ms starved", 100, 50 * time.Millisecond, 1, 0.01, 100 * time.Millisecond, 60 * time.Millisecond, 0.6, 0.3},
		{"1 Gbit/s 1 ms, 30 of 50 ms starved", 1000, time.Millisecond, 30, 0, 50 * time.Millisecond, 30 * time.Millisecond, 0.4, 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPathSim(tc.mbit, tc.rtt, tc.queue, tc.loss)
			p.period, p.starved = tc.period, tc.starved
			f := p.addFlow(-1)
			want := p.payloadRate()
			got := p.goodput(f, 2*time.Second, 8*time.Second) / 8
			st := f.ctl.state()
			if got < tc.busy*want {
				t.Errorf("goodput %.1f Mbit/s, bottleneck %.1f", got*8/1e6, want*8/1e6)
			}
			if bw := st.Bandwidth / 8; bw < tc.estimate*want {
				t.Errorf("estimate %.1f Mbit/s, bottleneck %.1f: %+v", bw*8/1e6, want*8/1e6, st)
			}
		})
	}
}

// TestRateCtlLongPath: on a 10 Mbit/s, 200 ms path (a queue of one BDP)
// the session keeps the path busy, at 0% and 1% random loss. KCP times a
// segment out when its RTT passes srtt + max(interval, 4 rttvar): a
// probe at 1.25 for a 200 ms round grew the queue by 50 ms, past that
// margin, and KCP resent what was not lost; those resends were not
// counted in flight, so new data went on entering behind them, the
// queue stayed full and the timeouts fed themselves (thousands in 10 s),
// and the queue cut the estimate. Here that carried 5.6-6.9 of 9.6
// Mbit/s at 1% loss over [4 s, 10 s] (7.0-8.1 at 0%; linkem: 6.0-6.6);
// with probes held under the timeout's margin (bbr.probeScale) and
// resends counted in flight (sampler.inflight), 9.3-9.4.
func TestRateCtlLongPath(t *testing.T) {
	for _, loss := range []float64{0, 0.01} {
		for seed := uint64(1); seed <= 4; seed++ {
			p := newPathSim(10, 200*time.Millisecond, 1, loss)
			p.reseed(seed)
			f := p.addFlow(-1)
			want := p.payloadRate() * 8
			if got := p.goodput(f, 4*time.Second, 10*time.Second); got < 0.93*want {
				t.Errorf("%.0f%% loss, seed %d: %.2f of %.2f Mbit/s over [4 s, 10 s]; %d resends on timeout, %d fast: %+v",
					100*loss, seed, got/1e6, want/1e6, f.rtoResends, f.fastResends, f.ctl.state())
			}
		}
	}
}

// TestRateCtlStepEcho: after the bottleneck steps from 100 down to 20
// Mbit/s (50 ms, 0% loss, a queue of one BDP at either rate), an echo
// answered behind the session's data (a request every 100 ms, as the
// benchmark's step test sends) takes under 3 x RTT at the 99th
// percentile from 2 s after the step: the queue a probe builds stays
// under KCP's timeout margin, and the drain round takes off what the
// probe added. With full probes (gain 1.25 plus probeAdd: 17.5 ms of
// queue per probe at 20 Mbit/s) the p99 was 91-184 ms over the first 6
// draws, spurious timeouts and the drops of their resends holding
// answers behind a hole for a round trip or more. With the senders' RTT
// taken as kcp-go takes it (kcpRTT) a draw still misses now and then: 12
// draws, of which at most 2 may reach 3 x RTT and none 4 x RTT (main
// before bbr.ceil: 81-189 ms, 4 of 12 over 150; now 81-166, 2 of 12).
func TestRateCtlStepEcho(t *testing.T) {
	over := 0
	for seed := uint64(1); seed <= 12; seed++ {
		p := newPathSim(100, 50*time.Millisecond, 1, 0)
		p.kcpRTT = true
		p.reseed(seed)
		f := p.addFlow(-1)
		p.run(8 * time.Second)
		p.setRate(20)
		p.queueCap = max(int(p.rate*2*p.delay.Seconds()), 32*(simMTU+simIPUDP))
		e := p.echoes(f, 10*time.Second, 16*time.Second)
		slices.Sort(e)
		p99 := e[len(e)*99/100]
		if p99 >= 3*2*p.delay {
			over++
			t.Logf("seed %d: echo p99 %v from 2 s after the step down; %d resends on timeout, %d fast, %d tail drops",
				seed, p99, f.rtoResends, f.fastResends, p.drops)
		}
		if p99 >= 4*2*p.delay {
			t.Errorf("seed %d: echo p99 %v from 2 s after the step down, 4 x RTT or more", seed, p99)
		}
	}
	if over > 2 {
		t.Errorf("echo p99 at 3 x RTT or more in %d of 12 draws; 2 allowed", over)
	}
}

// TestRateCtlLongPathRoom: on the 10 Mbit/s, 200 ms path, once cross
// traffic that took 3 Mbit/s stops, the estimate grows back to the
// bottleneck within 5 s. On linkem a session left Startup at 8.4 of 9.6
// Mbit/s, and probes scaled to queue 10 ms a round found 1-2% a cycle
// (1.6 s); the probe now lasts as many rounds as it was scaled down.
func TestRateCtlLongPathRoom(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		p := newPathSim(10, 200*time.Millisecond, 1, 0.01)
		p.reseed(seed)
		p.startCross(3)
		f := p.addFlow(-1)
		p.run(6 * time.Second)
		p.startCross(0)
		want := p.payloadRate()
		if bw := bwAt(p, f, 11*time.Second); bw < 0.9*want {
			t.Errorf("seed %d: estimate %.2f Mbit/s 5 s after the cross traffic stopped, bottleneck %.2f: %+v", seed, bw*8/1e6, want*8/1e6, f.ctl.state())
		}
	}
}

// TestRateCtlLongPathLateACKs: on the 10 Mbit/s, 200 ms path at 1% loss,
// ACKs that come 150 ms late every 1.5 s, with no queue before them (on
// linkem: a process not scheduled on a busy machine, warren's or the
// emulator's), cost the session little: each draw keeps at least 0.85 of
// the path over [4 s, 12 s], with the senders' RTT taken as kcp-go takes
// it (kcpRTT). Late ACKs make KCP time out segments that were not lost,
// and their resends queue; with the RTT sampled only from ACKs that name
// a segment's latest transmission (the simulator before 2026-12-06), srtt
// stayed where it was while that queue grew, every segment behind it timed
// out too, and the storm fed itself: 6.2-8.1 Mbit/s over these draws,
// against 8.5-9.0 now (9.0-9.5 with no late ACKs). kcp-go takes a sample
// from every datagram of ACKs, whichever transmission it echoes, so that
// srtt grows with the queue.
func TestRateCtlLongPathLateACKs(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		p := newPathSim(10, 200*time.Millisecond, 1, 0.01)
		p.kcpRTT = true
		p.reseed(seed)
		f := p.addFlow(-1)
		for at := 3 * time.Second; at < 12*time.Second; at += 1500 * time.Millisecond {
			// Set before the ACKs due then are on their way.
			p.at(at, func() { p.ackStall(at+300*time.Millisecond, at+450*time.Millisecond) })
		}
		want := p.payloadRate() * 8
		if got := p.goodput(f, 4*time.Second, 12*time.Second); got < 0.85*want {
			t.Errorf("seed %d: %.2f of %.2f Mbit/s over [4 s, 12 s] with ACKs 150 ms late every 1.5 s; %d resends on timeout, %d fast: %+v",
				seed, got/1e6, want/1e6, f.rtoResends, f.fastResends, f.ctl.state())
		}
	}
}

// TestRateCtlLocalDrops: on a 1 ms path at 1 Gbit/s, where kcp-go drops
// some of its datagrams before the socket (its queue to the socket full)
// and sends them again by its timeouts, the controller counts those
// segments sent when they do leave: once the transfer is delivered,
// nothing stays counted queued in KCP, and the gate's guard (stuckAfter)
// never had to let a write in. Until 2026-12-06 each such segment stayed
// counted queued for good, and the gate shut with nothing in flight
// until the guard let writes in.
func TestRateCtlLocalDrops(t *testing.T) {
	const app = 400e6 // 3.3 s at the path's rate
	p := newPathSim(1000, time.Millisecond, 30, 0)
	p.localDrop = 0.002
	f := p.addFlow(app)
	p.run(5 * time.Second)
	st := f.ctl.state()
	queued := f.ctl.admitted - f.ctl.s.sentBytes
	if p.localDrops == 0 || f.delivered != app || queued != 0 || st.Stuck != 0 {
		t.Fatalf("%d datagrams dropped before the socket: %d of %d bytes delivered by 5 s, %d counted queued, the guard let %d writes in (%+v)",
			p.localDrops, f.delivered, int64(app), queued, st.Stuck, st)
	}
}
