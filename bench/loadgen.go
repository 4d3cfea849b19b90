package main

// The load generator: the public side's users. It runs as its own process
// ("bench _loadgen"), in the server's network namespace in lossy mode,
// takes one JSON request per line on stdin, and answers with JSON lines on
// stdout: events ("window_start", "window_end", when the orchestrator
// should sample CPU time) and then one result or error. It exits when
// stdin closes.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type lgRequest struct {
	Op       string        `json:"op"` // throughput, latency, connect, open, close, ping, udp
	Addr     string        `json:"addr,omitempty"`
	Dir      string        `json:"dir,omitempty"` // throughput: up (to the backend) or down
	Conns    int           `json:"conns,omitempty"`
	Warmup   time.Duration `json:"warmup,omitempty"`
	Duration time.Duration `json:"duration,omitempty"`
	MaxCount int           `json:"max_count,omitempty"` // latency, connect: stop after this many samples
	Size     int           `json:"size,omitempty"`      // latency: message size
	Inflight int64         `json:"inflight,omitempty"`  // throughput up: unacknowledged bytes per connection
	Drain    time.Duration `json:"drain,omitempty"`     // throughput up: wait for the final count this long
	Stuck    int           `json:"stuck,omitempty"`     // attack: stuck downloads, and as many stuck uploads
	Window   int           `json:"window,omitempty"`    // udp: datagrams in flight per flow (closed loop)
	RateMbit float64       `json:"rate_mbit,omitempty"` // udp: send at this rate instead (open loop)
	Ack      bool          `json:"ack,omitempty"`       // udp: ask for 16-byte answers, not echoes
	// series (pacing.go): one download from each of Addrs, and an echo
	// on EchoAddr, reported every Interval.
	Addrs    []string      `json:"addrs,omitempty"`
	EchoAddr string        `json:"echo_addr,omitempty"`
	Interval time.Duration `json:"interval,omitempty"`
}

type lgResponse struct {
	Event  string    `json:"event,omitempty"`
	Result *lgResult `json:"result,omitempty"`
	Error  string    `json:"error,omitempty"`
}

type lgResult struct {
	Bytes      int64     `json:"bytes,omitempty"`     // throughput: delivered in the window
	AckBytes   int64     `json:"ack_bytes,omitempty"` // throughput up: acknowledgements that arrived in the window
	Window     []float64 `json:"window,omitempty"`    // throughput: its start and end, Unix seconds
	Seconds    float64   `json:"seconds,omitempty"`   // length of the window
	Total      int64     `json:"total,omitempty"`     // throughput: bytes sent (up) or received (down) in all
	Verified   int64     `json:"verified,omitempty"`
	Integrity  string    `json:"integrity,omitempty"`
	Lat        *Summary  `json:"lat,omitempty"`
	Count      int       `json:"count,omitempty"`
	Errors     int       `json:"errors,omitempty"`
	FirstError string    `json:"first_error,omitempty"`
	Opened     int       `json:"opened,omitempty"`
	Sent       int64     `json:"sent,omitempty"` // udp: datagrams sent in the window
	Lost       int64     `json:"lost,omitempty"` // udp: of those, not answered
	CC         []string  `json:"cc,omitempty"`   // congestion control of the load generator's sockets
	Series     *series   `json:"series,omitempty"`
}

type loadgen struct {
	outMu sync.Mutex
	out   *json.Encoder
	held  []net.Conn
}

func loadgenMain() {
	lg := &loadgen{out: json.NewEncoder(os.Stdout)}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var req lgRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			lg.emit(lgResponse{Error: "bad request: " + err.Error()})
			continue
		}
		res, err := lg.do(req)
		if err != nil {
			lg.emit(lgResponse{Error: err.Error(), Result: res})
		} else {
			lg.emit(lgResponse{Result: res})
		}
	}
	for _, c := range lg.held {
		c.Close()
	}
}

func (lg *loadgen) emit(r lgResponse) {
	lg.outMu.Lock()
	defer lg.outMu.Unlock()
	lg.out.Encode(r)
}

func (lg *loadgen) event(name string) { lg.emit(lgResponse{Event: name}) }

func (lg *loadgen) do(req lgRequest) (*lgResult, error) {
	switch req.Op {
	case "ping":
		return &lgResult{}, nil
	case "probe":
		return probe(req)
	case "throughput":
		if req.Dir == "down" {
			return lg.throughputDown(req)
		}
		return lg.throughputUp(req)
	case "latency":
		return lg.latency(req)
	case "attack":
		return lg.attack(req)
	case "udp":
		return lg.udpLoad(req)
	case "series":
		return lg.series(req)
	case "connect":
		return lg.connect(req)
	case "open":
		return lg.open(req)
	case "close":
		n := len(lg.held)
		for _, c := range lg.held {
			c.Close()
		}
		lg.held = nil
		return &lgResult{Count: n}, nil
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}

var dialer = net.Dialer{Timeout: 10 * time.Second}

// dialMode dials addr and sends the mode byte; for echo it waits for the
// byte to come back.
func dialMode(addr string, mode byte) (*net.TCPConn, error) {
	c, err := dialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	if _, err := tc.Write([]byte{mode}); err != nil {
		tc.Close()
		return nil, err
	}
	if mode == modeEcho {
		tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		var b [1]byte
		if _, err := io.ReadFull(tc, b[:]); err != nil {
			tc.Close()
			return nil, fmt.Errorf("first echo: %w", err)
		}
		tc.SetReadDeadline(time.Time{})
	}
	return tc, nil
}

func dialN(addr string, n int, mode byte) ([]*net.TCPConn, error) {
	var cs []*net.TCPConn
	for range n {
		c, err := dialMode(addr, mode)
		if err != nil {
			closeAll(cs)
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// closeAll closes every connection of cs.
func closeAll(cs []*net.TCPConn) {
	for _, c := range cs {
		c.Close()
	}
}

// congestion returns the distinct congestion-control algorithms of cs.
func congestion(cs []*net.TCPConn) []string {
	var out []string
	for _, c := range cs {
		rc, err := c.SyscallConn()
		if err != nil {
			continue
		}
		rc.Control(func(fd uintptr) {
			if s, err := unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION); err == nil && !slices.Contains(out, s) {
				out = append(out, s)
			}
		})
	}
	return out
}

// window sleeps to t0, samples, announces the window, sleeps to t1,
// samples again; it returns the difference and when the window began and
// ended.
func (lg *loadgen) window(t0, t1 time.Time, sample func() int64) (int64, time.Time, time.Time) {
	time.Sleep(time.Until(t0))
	a0, s0 := sample(), time.Now()
	lg.event("window_start")
	time.Sleep(time.Until(t1))
	a1, s1 := sample(), time.Now()
	lg.event("window_end")
	return a1 - a0, s0, s1
}

// throughputUp sends the pattern on each connection for warmup+duration,
// never more than req.Inflight bytes ahead of the backend's count, counts
// what the backend received during the window by the backend's clock (its
// acknowledgements carry their time), then half-closes and waits (up to
// req.Drain) for the backend's final count: every byte sent must have
// arrived intact.
//
// Until 2026-12-06 the window counted the acknowledgements that arrived
// during it. They come back through the tunnel, late by a delay that
// varies (over KCP on a lossy 200 ms path, a lost segment holds them back
// for a retransmission timeout, 0.2-0.4 s), so the window moved by that
// much at either end: on a 4 s window at 10 Mbit/s, up to about 1 Mbit/s
// either way (TCP BBR read 10.5 Mbit/s "up" on a 10 Mbit/s link). AckBytes
// keeps that count beside.
func (lg *loadgen) throughputUp(req lgRequest) (*lgResult, error) {
	cs, err := dialN(req.Addr, req.Conns, modeSink)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	type state struct {
		acked   atomic.Int64
		seen    []ackAt // the acknowledgements, in order; read after wg.Wait
		written int64
		final   int64
		err     error
		corrupt bool
		timeout bool
		kick    chan struct{}
	}
	st := make([]*state, len(cs))
	start := time.Now()
	t0 := start.Add(req.Warmup)
	t1 := t0.Add(req.Duration)
	stop := make(chan struct{})
	time.AfterFunc(time.Until(t1), func() { close(stop) })
	inflight := max(req.Inflight, 1<<20)
	var wg sync.WaitGroup
	for i, c := range cs {
		s := &state{final: -1, kick: make(chan struct{}, 1)}
		st[i] = s
		wg.Add(2)
		go func() { // acknowledgements
			defer wg.Done()
			c.SetReadDeadline(t1.Add(req.Drain))
			var b [ackLen]byte
			for {
				if _, err := io.ReadFull(c, b[:]); err != nil {
					s.err = err
					s.timeout = errors.Is(err, os.ErrDeadlineExceeded)
					return
				}
				v := binary.BigEndian.Uint64(b[:])
				if v&ackBad == 0 {
					s.seen = append(s.seen, ackAt{t: int64(binary.BigEndian.Uint64(b[8:])), n: int64(v & ackCount)})
				}
				switch {
				case v&ackBad != 0:
					s.corrupt = true
					s.err = fmt.Errorf("backend found a data mismatch at byte %d", v&ackCount)
					return
				case v&ackFinal != 0:
					s.acked.Store(int64(v & ackCount))
					s.final = int64(v & ackCount)
					return
				}
				s.acked.Store(int64(v))
				select {
				case s.kick <- struct{}{}:
				default:
				}
			}
		}()
		go func() { // data
			defer wg.Done()
			c.SetWriteDeadline(t1)
			var off int64
			for {
				select {
				case <-stop:
				default:
					if room := inflight - (off - s.acked.Load()); room <= 0 {
						select {
						case <-s.kick:
						case <-stop:
						}
						continue
					}
					n, err := c.Write(patternAt(off, int(min(128<<10, inflight-(off-s.acked.Load())))))
					off += int64(n)
					if err == nil {
						continue
					}
				}
				break
			}
			s.written = off
			c.CloseWrite()
		}()
	}
	sum := func() int64 {
		var t int64
		for _, s := range st {
			t += s.acked.Load()
		}
		return t
	}
	ackBytes, w0, w1 := lg.window(t0, t1, sum)
	wg.Wait()
	var bytes int64
	for _, s := range st {
		bytes += countAt(s.seen, w1.UnixNano()) - countAt(s.seen, w0.UnixNano())
	}
	res := &lgResult{Bytes: bytes, AckBytes: ackBytes, Seconds: w1.Sub(w0).Seconds(), Window: unixPair(w0, w1), CC: congestion(cs)}
	var verified int64
	integrity := "ok"
	for i, s := range st {
		res.Total += s.written
		verified += s.acked.Load()
		switch {
		case s.corrupt:
			integrity = fmt.Sprintf("CORRUPT (connection %d: %v)", i, s.err)
		case s.final == s.written:
		case s.final >= 0:
			if integrity == "ok" || integrity == "drain timeout" {
				integrity = fmt.Sprintf("LOST DATA (connection %d: sent %d, backend got %d)", i, s.written, s.final)
			}
		case s.timeout:
			if integrity == "ok" {
				integrity = "drain timeout"
			}
		default:
			if integrity == "ok" || integrity == "drain timeout" {
				integrity = fmt.Sprintf("ERROR (connection %d: %v)", i, s.err)
			}
		}
	}
	res.Verified = verified
	if integrity == "drain timeout" {
		integrity = fmt.Sprintf("ok so far: %d of %d bytes verified, the rest still in flight after the %v drain wait", verified, res.Total, req.Drain)
	}
	res.Integrity = integrity
	return res, nil
}

// unixPair is a and b in Unix seconds.
func unixPair(a, b time.Time) []float64 {
	return []float64{float64(a.UnixNano()) / 1e9, float64(b.UnixNano()) / 1e9}
}

// ackAt is one of the backend's acknowledgements: it had received n
// bytes at t (Unix nanoseconds, its clock, the machine's).
type ackAt struct{ t, n int64 }

// countAt is what the backend had acknowledged by t from its
// acknowledgements (in order). Between two of them it may have read up to
// ackEvery more, at either end of a window alike; and after a stall (a
// segment lost on the way) one read takes what waited, so a line between
// the two would be wrong.
func countAt(seen []ackAt, t int64) int64 {
	i := sort.Search(len(seen), func(i int) bool { return seen[i].t > t })
	if i == 0 {
		return 0
	}
	return seen[i-1].n
}

// throughputDown reads the backend's pattern stream on each connection for
// warmup+duration, checking every byte.
func (lg *loadgen) throughputDown(req lgRequest) (*lgResult, error) {
	cs, err := dialN(req.Addr, req.Conns, modeSource)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	start := time.Now()
	t0 := start.Add(req.Warmup)
	t1 := t0.Add(req.Duration)
	recv := make([]atomic.Int64, len(cs))
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = readChecked(c, t1, &recv[i])
		}()
	}
	sum := func() int64 {
		var t int64
		for i := range recv {
			t += recv[i].Load()
		}
		return t
	}
	bytes, w0, w1 := lg.window(t0, t1, sum)
	wg.Wait()
	res := &lgResult{Bytes: bytes, Seconds: w1.Sub(w0).Seconds(), Window: unixPair(w0, w1), Total: sum(), Verified: sum(), Integrity: "ok", CC: congestion(cs)}
	for i, err := range errs {
		if err != nil {
			res.Integrity = fmt.Sprintf("ERROR (connection %d: %v)", i, err)
		}
	}
	return res, nil
}

// latency: on each connection, one req.Size-byte message at a time, echoed
// back and checked, until the window ends or req.MaxCount samples.
func (lg *loadgen) latency(req lgRequest) (*lgResult, error) {
	cs, err := dialN(req.Addr, req.Conns, modeEcho)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	start := time.Now()
	t0 := start.Add(req.Warmup)
	t1 := t0.Add(req.Duration)
	var budget atomic.Int64
	budget.Store(int64(req.MaxCount))
	if req.MaxCount <= 0 {
		budget.Store(1 << 62)
	}
	size := max(req.Size, 8)
	samples := make([][]time.Duration, len(cs))
	last := make([]time.Time, len(cs))
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	lg.event("window_start")
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, size)
			got := make([]byte, size)
			for seq := uint64(0); ; seq++ {
				now := time.Now()
				if !now.Before(t1) {
					return
				}
				inWindow := !now.Before(t0)
				if inWindow && budget.Add(-1) < 0 {
					return
				}
				binary.BigEndian.PutUint64(msg, seq)
				c.SetDeadline(t1.Add(30 * time.Second))
				if _, err := c.Write(msg); err != nil {
					errs[i] = err
					return
				}
				if _, err := io.ReadFull(c, got); err != nil {
					errs[i] = err
					return
				}
				d := time.Since(now)
				if string(got) != string(msg) {
					errs[i] = fmt.Errorf("echo mismatch")
					return
				}
				if inWindow {
					samples[i] = append(samples[i], d)
					last[i] = now.Add(d)
				}
			}
		}()
	}
	wg.Wait()
	lg.event("window_end")
	var all []time.Duration
	end := t0
	for i := range cs {
		all = append(all, samples[i]...)
		if last[i].After(end) {
			end = last[i]
		}
	}
	sum := Summarize(all)
	res := &lgResult{Lat: &sum, Count: len(all), Seconds: end.Sub(t0).Seconds()}
	for _, err := range errs {
		if err != nil {
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
		}
	}
	return res, nil
}

// connect: req.Conns workers each dial, send one byte and wait for its
// echo, close, and again, until the window ends or req.MaxCount samples.
func (lg *loadgen) connect(req lgRequest) (*lgResult, error) {
	start := time.Now()
	t0 := start.Add(req.Warmup)
	t1 := t0.Add(req.Duration)
	var budget atomic.Int64
	budget.Store(int64(req.MaxCount))
	if req.MaxCount <= 0 {
		budget.Store(1 << 62)
	}
	workers := max(req.Conns, 1)
	samples := make([][]time.Duration, workers)
	last := make([]time.Time, workers)
	nerr := make([]int, workers)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	lg.event("window_start")
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := []byte{modeEcho}
			for {
				now := time.Now()
				if !now.Before(t1) {
					return
				}
				inWindow := !now.Before(t0)
				if inWindow && budget.Add(-1) < 0 {
					return
				}
				err := func() error {
					c, err := dialer.Dial("tcp", req.Addr)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(now.Add(10 * time.Second))
					if _, err := c.Write(one); err != nil {
						return err
					}
					var b [1]byte
					if _, err := io.ReadFull(c, b[:]); err != nil {
						return fmt.Errorf("first echo: %w", err)
					}
					return nil
				}()
				d := time.Since(now)
				if err != nil {
					nerr[i]++
					firstErr.CompareAndSwap(nil, err.Error())
					if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.EADDRNOTAVAIL) {
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				if inWindow {
					samples[i] = append(samples[i], d)
					last[i] = now.Add(d)
				}
			}
		}()
	}
	wg.Wait()
	lg.event("window_end")
	var all []time.Duration
	end := t0
	res := &lgResult{}
	for i := range workers {
		all = append(all, samples[i]...)
		if last[i].After(end) {
			end = last[i]
		}
		res.Errors += nerr[i]
	}
	if s, ok := firstErr.Load().(string); ok {
		res.FirstError = s
	}
	sum := Summarize(all)
	res.Lat, res.Count, res.Seconds = &sum, len(all), end.Sub(t0).Seconds()
	return res, nil
}

// open adds req.Conns idle connections to those held: each dials, and
// carries one byte each way (the echo mode byte). 32 dial at a time.
func (lg *loadgen) open(req lgRequest) (*lgResult, error) {
	start := time.Now()
	var mu sync.Mutex
	var errs int
	var firstErr string
	next := make(chan struct{})
	go func() {
		defer close(next)
		for range req.Conns {
			next <- struct{}{}
		}
	}()
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				c, err := dialMode(req.Addr, modeEcho)
				mu.Lock()
				if err != nil {
					errs++
					if firstErr == "" {
						firstErr = err.Error()
					}
				} else {
					lg.held = append(lg.held, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res := &lgResult{Opened: len(lg.held), Errors: errs, FirstError: firstErr, Seconds: time.Since(start).Seconds()}
	if errs > 0 {
		return res, fmt.Errorf("%d of %d connections failed: %s", errs, req.Conns, firstErr)
	}
	return res, nil
}

// probe dials addr until one connection echoes its first byte, for up to
// req.Duration: the tunnel is up.
func probe(req lgRequest) (*lgResult, error) {
	start := time.Now()
	var last error
	for time.Since(start) < req.Duration {
		c, err := dialMode(req.Addr, modeEcho)
		if err == nil {
			c.Close()
			return &lgResult{Seconds: time.Since(start).Seconds()}, nil
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("no echo from %s in %v: %v", req.Addr, req.Duration, last)
}

// attack measures echo latency (req as for latency) while req.Stuck
// downloads that are never read and req.Stuck uploads into a backend that
// never reads press on the same tunnel, all opened at the window's start;
// at its end they are reset.
func (lg *loadgen) attack(req lgRequest) (*lgResult, error) {
	var stuck []*net.TCPConn
	var uploads sync.WaitGroup
	defer func() {
		for _, c := range stuck {
			c.SetLinger(0)
			c.Close()
		}
		uploads.Wait()
	}()
	for range req.Stuck {
		down, err := dialMode(req.Addr, modeSource)
		if err != nil {
			return nil, fmt.Errorf("stuck download: %w", err)
		}
		up, err := dialMode(req.Addr, modeDeaf)
		if err != nil {
			down.Close()
			return nil, fmt.Errorf("stuck upload: %w", err)
		}
		stuck = append(stuck, down, up)
		uploads.Go(func() { // writes until the tunnel or the end resets it
			buf := patternAt(0, 64<<10)
			for {
				if _, err := up.Write(buf); err != nil {
					return
				}
			}
		})
	}
	return lg.latency(req)
}

// readChecked reads the pattern stream from c until deadline, checking
// every byte and counting them in n; it returns what broke the stream
// before the deadline, or nil.
func readChecked(c net.Conn, deadline time.Time, n *atomic.Int64) error {
	c.SetReadDeadline(deadline)
	buf := make([]byte, 256<<10)
	var chk checker
	for {
		m, err := c.Read(buf)
		if m > 0 {
			if !chk.check(buf[:m]) {
				return chk.Err()
			}
			n.Add(int64(m))
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("stream ended early: %w", err)
			}
			return nil
		}
	}
}
