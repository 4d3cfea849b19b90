package main

// UDP through warren (a service with protocol = "udp") against UDP
// straight to the backend, in the same run: echoed datagrams per second
// and Mbit/s at 64 and 1200 bytes (8 flows, 32 datagrams in flight each),
// loss, and the round trip of one flow in lockstep (p50, p99), whose
// difference from direct is what the tunnel adds. On the lossy link, a
// 20 Mbit/s stream of 1200-byte datagrams, answered by 16-byte acks:
// datagrams lost and the added p99.
//
// The backend answers UDP on the port of its TCP listener. A datagram's
// first byte says how: 'E' echoes it whole, 'A' answers with its first
// 16 bytes (an ack, so that a one-way stream does not double the load on
// the link). Bytes 1-4 are the datagram's sequence number in its flow,
// 5-12 its send time (ns since the load started).

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	udpEcho     = 'E'
	udpAck      = 'A'
	udpAckLen   = 16
	udpMinSize  = 13
	udpRing     = 1 << 20         // send times kept per flow, by sequence number
	udpLostWait = 2 * time.Second // after the window: answers later than this are lost
)

// serveUDPBackend answers datagrams on pc until it is closed.
func serveUDPBackend(pc *net.UDPConn) {
	pc.SetReadBuffer(8 << 20)
	pc.SetWriteBuffer(8 << 20)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			buf := make([]byte, 1<<16)
			for {
				n, from, err := pc.ReadFromUDPAddrPort(buf)
				if errors.Is(err, net.ErrClosed) {
					return
				}
				if err != nil || n == 0 {
					continue
				}
				switch buf[0] {
				case udpEcho:
					pc.WriteToUDPAddrPort(buf[:n], from)
				case udpAck:
					pc.WriteToUDPAddrPort(buf[:min(n, udpAckLen)], from)
				}
			}
		})
	}
	wg.Wait()
}

// udpFlow is one flow of the load: a connected socket and its send times.
type udpFlow struct {
	c      *net.UDPConn
	sentAt []int64 // by seq % udpRing: send time, 0 once answered or not in the window
	mu     sync.Mutex
	inWin  []bool // by seq % udpRing: sent within the window
	seq    uint32
	out    atomic.Int64 // in flight
	kick   chan struct{}
}

// udpLoad runs op "udp": req.Conns flows to req.Addr of req.Size-byte
// datagrams, each flow keeping req.Window datagrams in flight (closed
// loop) or, with req.RateMbit, sending at its share of that rate (open
// loop); answers are acks with req.Ack. It counts the datagrams sent in
// the window and their answers, and the answers' round trips.
func (lg *loadgen) udpLoad(req lgRequest) (*lgResult, error) {
	flows := max(req.Conns, 1)
	size := max(req.Size, udpMinSize)
	mode := byte(udpEcho)
	if req.Ack {
		mode = udpAck
	}
	raddr, err := net.ResolveUDPAddr("udp", req.Addr)
	if err != nil {
		return nil, err
	}
	fs := make([]*udpFlow, flows)
	for i := range fs {
		c, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			return nil, err
		}
		c.SetReadBuffer(4 << 20)
		c.SetWriteBuffer(4 << 20)
		defer c.Close()
		fs[i] = &udpFlow{c: c, sentAt: make([]int64, udpRing), inWin: make([]bool, udpRing), kick: make(chan struct{}, 1)}
	}
	start := time.Now()
	t0 := start.Add(req.Warmup)
	t1 := t0.Add(req.Duration)
	var inWindow atomic.Bool
	var stopSend atomic.Bool
	var latMu sync.Mutex
	var rtts []time.Duration
	var answered atomic.Int64
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Go(func() { // answers
			buf := make([]byte, 1<<16)
			f.c.SetReadDeadline(t1.Add(udpLostWait))
			var local []time.Duration
			for {
				n, err := f.c.Read(buf)
				if err != nil {
					break
				}
				if n < udpMinSize {
					continue
				}
				now := time.Since(start).Nanoseconds()
				seq := binary.BigEndian.Uint32(buf[1:])
				sent := int64(binary.BigEndian.Uint64(buf[5:]))
				f.mu.Lock()
				i := seq % udpRing
				fresh := f.sentAt[i] == sent && sent != 0
				win := fresh && f.inWin[i]
				if fresh {
					f.sentAt[i] = 0
				}
				f.mu.Unlock()
				if !fresh {
					continue
				}
				f.out.Add(-1)
				select {
				case f.kick <- struct{}{}:
				default:
				}
				if win {
					answered.Add(1)
					if len(local) < 1<<20 {
						local = append(local, time.Duration(now-sent))
					}
				}
			}
			latMu.Lock()
			rtts = append(rtts, local...)
			latMu.Unlock()
		})
	}
	var sentWin atomic.Int64
	send := func(f *udpFlow, b []byte) {
		now := time.Since(start).Nanoseconds()
		win := inWindow.Load()
		f.mu.Lock()
		seq := f.seq
		f.seq++
		i := seq % udpRing
		f.sentAt[i], f.inWin[i] = now, win
		f.mu.Unlock()
		b[0] = mode
		binary.BigEndian.PutUint32(b[1:], seq)
		binary.BigEndian.PutUint64(b[5:], uint64(now))
		if win {
			sentWin.Add(1)
		}
		f.out.Add(1)
		f.c.Write(b)
	}
	for _, f := range fs {
		wg.Go(func() { // sending
			b := make([]byte, size)
			for i := udpMinSize; i < size; i++ {
				b[i] = byte(i)
			}
			if req.RateMbit > 0 {
				per := req.RateMbit * 1e6 / 8 / float64(size) / float64(flows) // datagrams/s of this flow
				t := time.NewTicker(time.Millisecond)
				defer t.Stop()
				begin, n := time.Now(), 0.0
				for !stopSend.Load() {
					<-t.C
					due := time.Since(begin).Seconds() * per
					for ; n < due; n++ {
						send(f, b)
					}
				}
				return
			}
			window := int64(max(req.Window, 1))
			last := time.Now()
			for !stopSend.Load() {
				if f.out.Load() < window {
					send(f, b)
					continue
				}
				select {
				case <-f.kick:
					last = time.Now()
				case <-time.After(50 * time.Millisecond):
					if time.Since(last) > 500*time.Millisecond {
						f.out.Store(0) // the outstanding ones are lost
						last = time.Now()
					}
				}
			}
		})
	}
	time.Sleep(time.Until(t0))
	inWindow.Store(true)
	lg.event("window_start")
	time.Sleep(time.Until(t1))
	inWindow.Store(false)
	lg.event("window_end")
	stopSend.Store(true)
	wg.Wait()
	res := &lgResult{Sent: sentWin.Load(), Count: int(answered.Load()), Seconds: req.Duration.Seconds()}
	res.Lost = res.Sent - int64(res.Count)
	res.Bytes = int64(res.Count) * int64(size)
	s := Summarize(rtts)
	res.Lat = &s
	return res, nil
}

// udpCases are the UDP measurements of one path; baseline builds, whose
// tunnels have no UDP service, skip them.
func (rn *runner) udpCases(d durations) []testCase {
	var cs []testCase
	for _, size := range []int{64, 1200} {
		cs = append(cs, testCase{fmt.Sprintf("udp x8 %dB", size), func(lg *lgClient, t target, base Record) error {
			return rn.udpRun(lg, t, base, "udp", lgRequest{Conns: 8, Size: size, Window: 32, Warmup: d.Warmup, Duration: d.Dur})
		}})
	}
	for _, size := range []int{64, 1200} {
		cs = append(cs, testCase{fmt.Sprintf("udp-lat x1 %dB", size), func(lg *lgClient, t target, base Record) error {
			return rn.udpRun(lg, t, base, "udp-lat", lgRequest{Conns: 1, Size: size, Window: 1, Warmup: min(d.Lat1/5, time.Second), Duration: d.Lat1})
		}})
	}
	return cs
}

// udpStream is the lossy suite's UDP figure: a 20 Mbit/s stream of
// 1200-byte datagrams, answered by acks.
func (rn *runner) udpStream(lg *lgClient, t target, base Record, dur time.Duration) error {
	return rn.udpRun(lg, t, base, "udp-stream", lgRequest{Conns: 1, Size: 1200, RateMbit: 20, Ack: true, Warmup: time.Second, Duration: dur})
}

func (rn *runner) udpRun(lg *lgClient, t target, base Record, test string, req lgRequest) error {
	if base.Build != "" {
		return nil
	}
	req.Op, req.Addr = "udp", t.addr
	w := rn.newWindow(t.pids)
	res, err := lg.do(req, w.event)
	if err != nil {
		return fmt.Errorf("%s x%d %dB via %s: %w", test, req.Conns, req.Size, base.Path, err)
	}
	r := base
	r.Kind, r.Test, r.Dir, r.Conns = "result", test, fmt.Sprintf("%dB", req.Size), req.Conns
	r.Seconds, r.Count, r.Sent, r.Lat = res.Seconds, res.Count, res.Sent, res.Lat
	if res.Seconds > 0 {
		r.PerSecond = float64(res.Count) / res.Seconds
		r.Mbitps = r.PerSecond * float64(req.Size) * 8 / 1e6
		r.MBps = r.Mbitps / 8
	}
	if res.Sent > 0 {
		r.LossPct = 100 * float64(res.Lost) / float64(res.Sent)
	}
	w.fill(&r, res.Bytes)
	rn.rec.emit(r)
	return nil
}

// iperfUDP runs iperf3 -u from the public side to an iperf3 server, via
// addr, for the cross-check: the receiver's bitrate and loss.
func (rn *runner) iperfUDP(base Record, addr string, rateMbit int, dur time.Duration) error {
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("iperf3", "-c", host, "-p", port, "-u", "-l", "1200", "-b", fmt.Sprintf("%dM", rateMbit),
		"-t", fmt.Sprint(int(dur.Seconds())), "-J").Output()
	if err != nil {
		return fmt.Errorf("iperf3 via %s: %v", base.Path, err)
	}
	var v struct {
		End struct {
			Sum struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				LostPercent   float64 `json:"lost_percent"`
				Packets       int64   `json:"packets"`
				LostPackets   int64   `json:"lost_packets"`
				JitterMs      float64 `json:"jitter_ms"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return fmt.Errorf("iperf3 via %s: %v", base.Path, err)
	}
	s := v.End.Sum
	r := base
	r.Kind, r.Test, r.Dir, r.Conns = "result", "iperf3-udp", fmt.Sprintf("%dM", rateMbit), 1
	r.Seconds, r.Mbitps, r.MBps = dur.Seconds(), s.BitsPerSecond/1e6, s.BitsPerSecond/8e6
	r.Sent, r.Count, r.LossPct = s.Packets, int(s.Packets-s.LostPackets), s.LostPercent
	r.Note = fmt.Sprintf("jitter %.3f ms", s.JitterMs)
	rn.rec.emit(r)
	return nil
}

// iperfCrossCheck measures UDP with Debian's iperf3 (when installed):
// direct, then through a tunnel of path to an iperf3 server, whose TCP
// control connection and UDP data share one port, as warren's TCP and UDP
// services on one port number do.
func (rn *runner) iperfCrossCheck(dir string, paths []string, lg *lgClient) error {
	if _, err := exec.LookPath("iperf3"); err != nil {
		fmt.Fprintln(os.Stderr, "bench: no iperf3 (apt-get install iperf3): skipping the iperf3 cross-check")
		return nil
	}
	sport, err := freePort()
	if err != nil {
		return err
	}
	saddr := fmt.Sprintf("127.0.0.1:%d", sport)
	srv, _, err := startProc("iperf3", "", dir, false, nil, "iperf3", "-s", "-B", "127.0.0.1", "-p", fmt.Sprint(sport))
	if err != nil {
		return err
	}
	defer srv.stop(2 * time.Second)
	time.Sleep(300 * time.Millisecond)
	var errs firstError
	for _, rate := range []int{100, 400} {
		fmt.Fprintf(os.Stderr, "== iperf3 -u %d Mbit/s: direct\n", rate)
		errs.add(rn.iperfUDP(Record{Suite: "loopback", Path: "direct"}, saddr, rate, 5*time.Second))
	}
	for _, name := range paths {
		ps := allPaths[name]
		if name != "tcp" && name != "kcp" {
			continue
		}
		port, err := freePort()
		if err != nil {
			return err
		}
		pub, err := freePort()
		if err != nil {
			return err
		}
		spec := &tunnelSpec{Path: ps, Dir: filepath.Join(dir, name+"-iperf"), UDP: true,
			TunnelAddr: fmt.Sprintf("127.0.0.1:%d", port), PublicAddr: "127.0.0.1", PublicPort: pub,
			Target: saddr, Cert: rn.cert, Key: rn.key, Fingerprint: rn.fp, Token: rn.token,
			ExtraServer: rn.extraServer, ExtraClient: rn.extraClient, Env: rn.env, NoProbe: true}
		tn, err := startTunnel(rn.warren, spec, "", "", lg)
		if err != nil {
			errs.add(err)
			continue
		}
		time.Sleep(500 * time.Millisecond)
		for _, rate := range []int{100, 400} {
			fmt.Fprintf(os.Stderr, "== iperf3 -u %d Mbit/s: %s\n", rate, name)
			errs.add(rn.iperfUDP(Record{Suite: "loopback", Path: name}, tn.public, rate, 5*time.Second))
		}
		tn.stop()
	}
	return errs.err
}

// udpMarkdown is the UDP section of the report: loopback, then the lossy
// link's stream, then iperf3's cross-check.
func (rs *results) udpMarkdown() string {
	var b strings.Builder
	if rs.machine("loopback") != nil && rs.find(nil, "direct", "", "udp", "1200B", 8) != nil {
		b.WriteString("## UDP, loopback\n\n8 flows, 32 datagrams in flight each, every datagram echoed: datagrams/s answered, Mbit/s each way, datagrams lost; then one flow in lockstep: round trip, and what the tunnel adds to direct.\n\n")
		t := &table{head: []string{"path", "size", "datagrams/s", "Mbit/s", "vs direct", "lost", "lockstep p50 µs", "p99 µs", "added p50", "added p99"}}
		for _, size := range []string{"64B", "1200B"} {
			d := rs.find(nil, "direct", "", "udp", size, 8)
			dl := lat(rs.find(nil, "direct", "", "udp-lat", size, 1))
			for _, p := range rs.paths("loopback") {
				r := rs.find(nil, p[0], "", "udp", size, 8)
				if r == nil {
					continue
				}
				vs := "–"
				if d != nil && d.PerSecond > 0 && p[0] != "direct" {
					vs = fmt.Sprintf("%.0f%%", 100*r.PerSecond/d.PerSecond)
				}
				l := lat(rs.find(nil, p[0], "", "udp-lat", size, 1))
				cells := []string{p[0], size, f0(r.PerSecond), f1(r.Mbitps), vs, fmt.Sprintf("%.3f%%", r.LossPct), "–", "–", "–", "–"}
				if l != nil {
					cells[6], cells[7] = f0(l.P50), f0(l.P99)
					if dl != nil && p[0] != "direct" {
						cells[8], cells[9] = fmt.Sprintf("+%.0f", l.P50-dl.P50), fmt.Sprintf("+%.0f", l.P99-dl.P99)
					}
				}
				t.add(cells...)
			}
		}
		b.WriteString(t.String() + "\n")
	}
	if lossy := rs.ofTest("udp-stream"); len(lossy) > 0 {
		b.WriteString("## UDP, lossy link\n\nA 20 Mbit/s stream of 1200-byte datagrams, each answered by a 16-byte ack: datagrams sent in the window and not answered, and the round trip (the link's RTT included) against direct UDP on the same link.\n\n")
		t := &table{head: []string{"link", "path", "sent", "lost", "p50 ms", "p99 ms", "added p99 ms"}}
		for _, r := range lossy {
			d := rs.findAnyCC(r.Link, "direct", "udp-stream", r.Dir, r.Conns)
			cells := []string{r.Link.String(), pathLabel(r.Path, r.CC), fmt.Sprint(r.Sent), fmt.Sprintf("%d (%.2f%%)", r.Sent-int64(r.Count), r.LossPct), "–", "–", "–"}
			if r.Lat != nil {
				cells[4], cells[5] = f1(r.Lat.P50/1e3), f1(r.Lat.P99/1e3)
				if d != nil && d.Lat != nil && r.Path != "direct" {
					cells[6] = fmt.Sprintf("+%.1f", (r.Lat.P99-d.Lat.P99)/1e3)
				}
			}
			t.add(cells...)
		}
		b.WriteString(t.String() + "\n")
	}
	if ip := rs.ofTest("iperf3-udp"); len(ip) > 0 {
		b.WriteString("## UDP, iperf3 cross-check\n\n`iperf3 -u -l 1200 -b RATE -t 5`, the receiver's figures.\n\n")
		t := &table{head: []string{"path", "offered", "received Mbit/s", "lost", "jitter"}}
		for _, r := range ip {
			t.add(r.Path, r.Dir+"bit/s", f1(r.Mbitps), fmt.Sprintf("%d of %d (%.2f%%)", r.Sent-int64(r.Count), r.Sent, r.LossPct), strings.TrimPrefix(r.Note, "jitter "))
		}
		b.WriteString(t.String() + "\n")
	}
	return b.String()
}

// udpTargets are issue 16's targets.
func (rs *results) udpTargets(status func(met, known bool) string) []verdict {
	var out []verdict
	if d := rs.find(nil, "direct", "", "udp", "1200B", 8); d != nil && d.PerSecond > 0 {
		for _, path := range []string{"tcp", "kcp"} {
			r := rs.find(nil, path, "", "udp", "1200B", 8)
			if r == nil {
				continue
			}
			ratio := r.PerSecond / d.PerSecond
			out = append(out, verdict{fmt.Sprintf("UDP, %s+TLS, 1200 B: ≥ 25%% of direct's datagrams/s", path),
				fmt.Sprintf("%.0f%% (%s/s, %s Mbit/s; direct %s/s)", 100*ratio, f0(r.PerSecond), f0(r.Mbitps), f0(d.PerSecond)), status(ratio >= 0.25, true)})
		}
	}
	for _, r := range rs.recs {
		if r.Kind != "result" || r.Test != "udp-stream" || r.Path != "kcp" || r.Link == nil {
			continue
		}
		d := rs.findAnyCC(r.Link, "direct", "udp-stream", r.Dir, r.Conns)
		lost := r.Sent - int64(r.Count)
		added := math.NaN()
		if d != nil && d.Lat != nil && r.Lat != nil {
			added = (r.Lat.P99 - d.Lat.P99) / 1e3
		}
		out = append(out, verdict{fmt.Sprintf("UDP, lossy (%s), kcp: 20 Mbit/s, no datagram lost, added p99 < 3× RTT (%g ms)", r.Link, 3*r.Link.RTTms),
			fmt.Sprintf("%d lost of %d, added p99 %+.1f ms", lost, r.Sent, added), status(lost == 0 && added < 3*r.Link.RTTms, !math.IsNaN(added))})
	}
	return out
}

// findAnyCC is find for UDP figures, which no TCP congestion control
// touches: the first of path's, whatever its cc.
func (rs *results) findAnyCC(link *LinkSpec, path, test, dir string, conns int) *Record {
	if r := rs.find(link, path, "", test, dir, conns); r != nil {
		return r
	}
	for i := range rs.recs {
		r := &rs.recs[i]
		if r.Kind == "result" && r.Path == path && r.Test == test && r.Dir == dir && r.Conns == conns && r.Link != nil && link != nil && *r.Link == *link {
			return r
		}
	}
	return nil
}

// ofTest returns the results of test, in the order measured.
func (rs *results) ofTest(test string) []Record {
	var out []Record
	for _, r := range rs.recs {
		if r.Kind == "result" && r.Test == test {
			out = append(out, r)
		}
	}
	return out
}
