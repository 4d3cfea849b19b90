package server

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/internal/dgram"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
)

// A UDP route's public socket is read by one goroutine, which hands each
// datagram to the flow of its source address: one public source, one
// flow, one stream of its own to the client (so that a slow or lossy flow
// holds up no other), carrying datagram chunks.
//
//	public peer --> socket --(read)--> flow queue --(send)--> stream --> client --> target
//	public peer <-- socket <--(receive)--------------------- stream <-- client <-- target
//
// The rules of a route's flow table, which hold together under its lock:
//
//  1. Flows. The first datagram from a source makes its flow and picks
//     its member at once (table.pickFlow): the flow stays with that
//     session for its life. In a cluster, with no live member here, it
//     picks a holding on another server and the flow's stream is a
//     forwarded one to that server (forwardudp.go). With neither, a
//     member in its handshake: the flow's datagrams queue (rule 3) until
//     its session is up (table.sessionFor), for its client may already
//     have the port from its Welcome and a public peer may have been
//     told it; a handshake that fails ends the flow and drops what it
//     queued (no_session). No member at all (the route is held for its
//     client's return): the datagram is dropped (no_session), never
//     queued. A flow forwarded here picks alike, with no holding
//     elsewhere (no second hop): the holder waits for a member in its
//     handshake before it accepts the flow, while the forwarding
//     server's flow queues; a refusal then (the handshake failed) ends
//     that flow, and what it queued is dropped there (no_session).
//  2. Caps. At most max_flows flows per route: a new source beyond it
//     ends the flow that had a datagram from its source least recently,
//     among those not yet assured (fewer than two datagrams in, or none
//     out) first, so that a flood of one-datagram sources cannot push
//     out a real one (flow_evicted). Flows evicted take a round trip to
//     close; while max_flows of them are still closing, a new source is
//     dropped instead (max_flows), so that a flood holds at most twice
//     max_flows flows' memory. At most udp.max_session_flows flows
//     per session, counted apart from limits.max_streams: a new flow
//     beyond it is dropped (session_flows).
//  3. Queues. A datagram waits in its flow's queue while the stream
//     opens or is blocked: at most flowQueueLen datagrams per flow and
//     queueBudget bytes for every flow of the server; beyond, it is
//     dropped (queue_full). The reader never waits, so one flow cannot
//     hold up another.
//  4. Sizes. A datagram longer than max_datagram is dropped (too_large).
//  5. Ends. A flow ends after idle_timeout with no datagram either way,
//     when its stream ends (the client's end or abort, as on ICMP
//     unreachable from the target; session loss), when its member stops
//     serving the route (drain, an update without the service), and with
//     the route (released, reloaded away, shutdown).
type flowTable struct {
	s     *Server
	r     *route
	stats udpCounts
	local string        // the socket's address, for stream headers
	die   chan struct{} // closed when the reader has stopped
	kick  chan struct{} // wakes the sweep: a member left the route
	n     atomic.Int64  // flows open, for RouteInfo (read under the table's lock)
	all   atomic.Int64  // flows open and closing
	wg    sync.WaitGroup

	mu      sync.Mutex
	flows   map[netip.AddrPort]*flow
	fresh   list.List // flows not assured, by their last datagram in
	assured list.List // assured flows, likewise
	closed  bool
}

const (
	// flowQueueLen bounds the datagrams a flow queues while its stream
	// opens or is blocked: 25 ms of a 100 Mbit/s flow of 1200-byte
	// datagrams (at 64, iperf3 -u at 100 Mbit/s lost 0.4% to full queues
	// on a busy machine here).
	flowQueueLen = 256
	// queueBudget bounds the bytes queued in every flow of the server.
	queueBudget = 32 << 20
	// minSweep and maxSweep bound how often idle flows are looked for:
	// a quarter of idle_timeout between them.
	minSweep = 250 * time.Millisecond
	maxSweep = time.Second
)

// queued counts the bytes in every flow queue of the process (rule 3).
var queued atomic.Int64

// udpCounts are a route's counters, flushed to the metrics by the sweep.
type udpCounts struct {
	in, out           atomic.Int64 // datagrams
	bytesIn, bytesOut atomic.Int64
	drops             [6]atomic.Int64 // by dropReason index
}

var dropReasons = [6]string{metrics.DropTooLarge, metrics.DropQueueFull, metrics.DropNoSession, metrics.DropSessionFlows, metrics.DropFlowEvicted, metrics.DropMaxFlows}

const (
	dropTooLarge = iota
	dropQueueFull
	dropNoSession
	dropSessionFlows
	dropEvicted
	dropMaxFlows
)

// serveUDP starts a UDP route's reader and sweeper; called under the
// table's lock.
func (s *Server) serveUDP(r *route) {
	ft := &flowTable{s: s, r: r, die: make(chan struct{}), kick: make(chan struct{}, 1), flows: make(map[netip.AddrPort]*flow), local: r.pc.LocalAddr().String()}
	r.flows.Store(ft)
	s.acceptWG.Go(ft.read)
	s.acceptWG.Go(ft.sweep)
}

// count is the number of flows.
func (ft *flowTable) count() int { return int(ft.n.Load()) }

// read reads the route's socket until it is closed, then ends every flow
// and waits for them.
func (ft *flowTable) read() {
	defer ft.shut()
	buf := make([]byte, session.MaxDatagram+1)
	for {
		n, peer, err := ft.r.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// An ICMP error queued on the socket, out of memory: not the
			// end of the route.
			ft.s.log.Debug("reading a public UDP port failed", "route", ft.r.key, "err", err)
			t := ft.s.edges.clock.NewTimer(time.Millisecond)
			select {
			case <-t.C():
			case <-ft.r.done:
				t.Stop()
				return
			}
			continue
		}
		ft.in(peer, buf[:n])
	}
}

// in takes one datagram from peer.
func (ft *flowTable) in(peer netip.AddrPort, b []byte) {
	lim := ft.r.limits.Load()
	if len(b) > lim.MaxDatagram {
		ft.stats.drops[dropTooLarge].Add(1)
		return
	}
	now := ft.s.edges.clock.Now().UnixNano()
	ft.mu.Lock()
	f := ft.flows[peer]
	if f == nil {
		var drop int
		if f, drop = ft.openLocked(peer, lim); f == nil {
			ft.mu.Unlock()
			if drop >= 0 {
				ft.stats.drops[drop].Add(1)
			}
			return
		}
	} else {
		f.ins++
		ft.touchLocked(f)
	}
	f.last.Store(now)
	// Queued under the lock, as f was found: f's end (closed) forgets it
	// under the lock before it drains f.q, so nothing is queued behind
	// the drain, where it would stay, its bytes counted in queued for good.
	defer ft.mu.Unlock()
	if queued.Load()+int64(len(b)) > queueBudget {
		ft.stats.drops[dropQueueFull].Add(1)
		return
	}
	buf := dgram.Get(len(b))
	copy((*buf)[dgram.Head:], b)
	select {
	case f.q <- queuedDatagram{buf: buf, n: len(b)}:
		queued.Add(int64(len(b)))
	default:
		dgram.Put(buf)
		ft.stats.drops[dropQueueFull].Add(1)
	}
}

// openLocked makes the flow of a new source, or says which drop reason
// applies (-1: none to count, the route is closing).
func (ft *flowTable) openLocked(peer netip.AddrPort, lim *session.UDPLimits) (*flow, int) {
	if ft.closed {
		return nil, -1
	}
	m, remote := ft.s.table.pickFlow(ft.r, ft.s.node != nil)
	if m == nil && remote == nil {
		return nil, dropNoSession
	}
	if m != nil && m.cs.flows.Load() >= int64(ft.s.cfg.UDP.MaxSessionFlows) {
		return nil, dropSessionFlows
	}
	if len(ft.flows) >= lim.MaxFlows && ft.all.Load()-int64(len(ft.flows)) >= int64(lim.MaxFlows) {
		return nil, dropMaxFlows
	}
	for len(ft.flows) >= lim.MaxFlows {
		v := ft.fresh.Front()
		if v == nil {
			v = ft.assured.Front()
		}
		f := v.Value.(*flow)
		ft.forgetLocked(f)
		f.end("evicted for a new flow beyond max_flows")
		ft.stats.drops[dropEvicted].Add(1)
	}
	f := &flow{ft: ft, peer: peer, m: m, remote: remote, ins: 1, maxDatagram: lim.MaxDatagram, q: make(chan queuedDatagram, flowQueueLen), die: make(chan struct{})}
	f.getBuf = f.recvBuf
	f.elem = ft.fresh.PushBack(f)
	ft.flows[peer] = f
	ft.n.Add(1)
	ft.all.Add(1)
	if m != nil {
		m.cs.flows.Add(1) // its stats count it once its session is up (run)
	}
	ft.s.metrics.UDPFlows(f.service(), 1)
	ft.s.changed.Notify()
	ft.wg.Go(f.run)
	return f, 0
}

// touchLocked moves f, which had a datagram in, to the back of its list,
// or to the assured list once it has had two in and one out.
func (ft *flowTable) touchLocked(f *flow) {
	if f.elem == nil {
		return // forgotten: ending
	}
	if !f.isAssured && f.ins >= 2 && f.replied.Load() {
		ft.fresh.Remove(f.elem)
		f.elem, f.isAssured = ft.assured.PushBack(f), true
		return
	}
	if f.isAssured {
		ft.assured.MoveToBack(f.elem)
	} else {
		ft.fresh.MoveToBack(f.elem)
	}
}

// forgetLocked takes f out of the table: a datagram from its source makes
// a new flow from now on.
func (ft *flowTable) forgetLocked(f *flow) {
	if f.elem == nil {
		return
	}
	if f.isAssured {
		ft.assured.Remove(f.elem)
	} else {
		ft.fresh.Remove(f.elem)
	}
	f.elem = nil
	if ft.flows[f.peer] == f {
		delete(ft.flows, f.peer)
	}
	ft.n.Add(-1)
	ft.s.changed.Notify()
}

// sweep ends idle flows and flows whose member left the route, and
// flushes the counters, until the reader stops.
func (ft *flowTable) sweep() {
	clk := ft.s.edges.clock
	for {
		lim := ft.r.limits.Load()
		idle := time.Duration(lim.IdleMillis) * time.Millisecond
		t := clk.NewTimer(min(max(idle/4, minSweep), maxSweep))
		select {
		case <-t.C():
		case <-ft.kick:
			t.Stop()
		case <-ft.die:
			t.Stop()
			ft.flush()
			return
		}
		now := clk.Now().UnixNano()
		members := ft.s.table.members(ft.r)
		var idled, left []*flow
		ft.mu.Lock()
		for _, f := range ft.flows {
			switch {
			case now-f.last.Load() >= int64(idle):
				idled = append(idled, f)
			case f.m != nil && !members[f.m]:
				left = append(left, f)
			}
		}
		for _, f := range idled {
			ft.forgetLocked(f)
		}
		for _, f := range left {
			ft.forgetLocked(f)
		}
		ft.mu.Unlock()
		for _, f := range idled {
			f.end(fmt.Sprintf("idle for %v (idle_timeout)", idle))
		}
		for _, f := range left {
			f.end("its session no longer serves " + describeRoute(ft.r))
		}
		ft.flush()
	}
}

// memberLeft wakes the sweep to end the flows of a member that left the
// route; called under the table's lock, so it takes no other.
func (ft *flowTable) memberLeft() {
	select {
	case ft.kick <- struct{}{}:
	default:
	}
}

// flush adds the counters since the last flush to the metrics.
func (ft *flowTable) flush() {
	svc := ft.r.service
	m := ft.s.metrics
	m.AddDatagrams(svc, ft.stats.in.Swap(0), ft.stats.out.Swap(0))
	m.AddBytes(svc, ft.stats.bytesIn.Swap(0), ft.stats.bytesOut.Swap(0))
	for i := range ft.stats.drops {
		m.UDPDropped(svc, dropReasons[i], ft.stats.drops[i].Swap(0))
	}
}

// shut ends every flow, once the socket is closed, and waits for them.
func (ft *flowTable) shut() {
	ft.mu.Lock()
	ft.closed = true
	var all []*flow
	for _, f := range ft.flows {
		all = append(all, f)
		ft.forgetLocked(f)
	}
	ft.mu.Unlock()
	for _, f := range all {
		f.end("the port was closed: " + describeRoute(ft.r) + " is not served any more")
	}
	ft.wg.Wait()
	close(ft.die)
}

// queuedDatagram is a datagram in a flow's queue: (*buf)[dgram.Head:][:n].
type queuedDatagram struct {
	buf *[]byte
	n   int
}

// flowStream is what a flow's datagrams travel on: a stream of a session
// here (*session.Stream), or of a peer link to the server of a member
// (forwardedFlow, forwardudp.go). The methods are session.Stream's, with
// its contract.
type flowStream interface {
	WriteDatagram(b []byte) error
	WriteDatagrams(b []byte) error
	ReadDatagram(max int, buf func(n int) []byte) ([]byte, error)
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	Abort(reason string) error
	Close() error
}

// streamRef holds a flow's stream for atomic.Pointer.
type streamRef struct{ flowStream }

// flow is one public source address of a UDP route.
type flow struct {
	ft          *flowTable
	peer        netip.AddrPort
	m           *member          // the member here; nil for a forwarded flow
	remote      *cluster.Holding // else the holding elsewhere it went to first
	maxDatagram int
	q           chan queuedDatagram
	last        atomic.Int64 // unix ns of the last datagram either way
	replied     atomic.Bool  // a datagram went back to the peer

	// Guarded by ft.mu:
	ins       int           // datagrams in, to tell an assured flow
	elem      *list.Element // in fresh or assured; nil once forgotten
	isAssured bool

	// Counted for the status API and the log when the flow ends.
	in, out, bytesIn, bytesOut atomic.Int64

	st     atomic.Pointer[streamRef]
	stats  *admin.ServiceCounters // its session's, once up; run's goroutine only
	rbuf   *[]byte                // the receiver's buffer under way
	getBuf func(int) []byte

	die     chan struct{}
	dieOnce sync.Once
	why     string // set before die closes
}

// end ends the flow for why; its goroutines leave at once (past
// deadlines wake their stream calls). It never blocks.
func (f *flow) end(why string) {
	f.dieOnce.Do(func() {
		f.why = why
		close(f.die)
		if st := f.st.Load(); st != nil {
			past := time.Unix(1, 0)
			st.SetReadDeadline(past)
			st.SetWriteDeadline(past)
		}
	})
}

// run opens the flow's stream and sends the queued datagrams into it
// until the flow ends; then it closes the stream and counts the flow
// closed.
func (f *flow) run() {
	ft, m := f.ft, f.m
	defer f.closed()
	var st flowStream
	var err error
	if m != nil {
		sess := ft.s.table.sessionFor(ft.r, m, f.die)
		if sess == nil {
			f.end("its session stopped serving " + describeRoute(ft.r) + " before the flow's stream opened")
			return
		}
		// The handshake fills cs.stats before up: read it only now.
		if f.stats = m.cs.stats[m.service]; f.stats != nil {
			f.stats.Opened()
		}
		st, err = sess.Open(session.Header{Service: m.service, Peer: f.peer.String(), Local: ft.local, Kind: session.KindDatagram})
	} else {
		st, err = ft.s.forwardFlow(f)
	}
	if err != nil {
		f.end("opening its stream failed: " + err.Error())
		return
	}
	f.st.Store(&streamRef{st})
	select {
	case <-f.die: // ended while opening: end's deadlines missed st
		st.Close()
		return
	default:
	}
	ft.wg.Go(func() { f.receive(st) })
	for f.send(st) {
	}
	st.Abort(f.why) // the client learns why; a no-op after its own end
}

// batchBytes bounds a burst of queued datagrams sent in one write: half a
// smux frame of the default size (32 KiB), so a burst never waits for a
// second frame's window.
const batchBytes = 16 << 10

// send sends what the flow's queue holds, waiting for a datagram first; it
// reports false when the flow has ended. A lone datagram leaves in one
// write with no copy; a burst (more datagrams already queued) is copied
// into one buffer and leaves in one write too, so that under load the
// session pays one frame for many datagrams.
func (f *flow) send(st flowStream) bool {
	var d queuedDatagram
	select {
	case d = <-f.q:
	case <-f.die:
		return false
	}
	queued.Add(-int64(d.n))
	var bb *[]byte // the burst's buffer, once there is one
	var b []byte
	defer func() {
		if bb != nil {
			dgram.Put(bb)
		}
	}()
	flush := func() bool {
		if len(b) == 0 {
			return true
		}
		if err := st.WriteDatagrams(b); err != nil {
			f.end("writing to its stream failed: " + err.Error())
			bb = nil // smux may still hold it: not reused
			return false
		}
		b = b[:0]
		return true
	}
	for {
		if session.DatagramHeaderLen+d.n > batchBytes/2 || bb == nil && len(f.q) == 0 {
			if !flush() {
				dgram.Put(d.buf)
				return false
			}
			if err := st.WriteDatagram((*d.buf)[:dgram.Head+d.n]); err != nil {
				f.end("writing to its stream failed: " + err.Error())
				return false // d.buf may still be in smux: not reused
			}
		} else {
			if bb == nil {
				bb = dgram.Get(batchBytes - dgram.Head)
				b = (*bb)[:0]
			}
			if len(b)+session.DatagramHeaderLen+d.n > cap(b) && !flush() {
				dgram.Put(d.buf)
				return false
			}
			b = session.AppendDatagram(b, (*d.buf)[dgram.Head:dgram.Head+d.n])
		}
		f.sent(d)
		if len(f.q) == 0 {
			return flush()
		}
		d = <-f.q // only this goroutine takes from the queue
		queued.Add(-int64(d.n))
	}
}

// sent counts d, written, and frees its buffer.
func (f *flow) sent(d queuedDatagram) {
	dgram.Put(d.buf)
	f.in.Add(1)
	f.bytesIn.Add(int64(d.n))
	f.ft.stats.in.Add(1)
	f.ft.stats.bytesIn.Add(int64(d.n))
}

// receive sends the client's datagrams to the public peer until the
// stream ends.
func (f *flow) receive(st flowStream) {
	ft := f.ft
	for {
		p, err := st.ReadDatagram(f.maxDatagram, f.getBuf)
		if err != nil {
			var ab *session.AbortError
			switch {
			case err == io.EOF:
				f.end("the client ended it")
			case errors.As(err, &ab):
				f.end("the client ended it: " + ab.Reason)
			default:
				f.end("its stream failed: " + err.Error())
			}
			return
		}
		_, werr := ft.r.pc.WriteToUDPAddrPort(p, f.peer)
		dgram.Put(f.rbuf)
		f.rbuf = nil
		if werr != nil && errors.Is(werr, net.ErrClosed) {
			f.end("the port was closed")
			return
		}
		f.last.Store(ft.s.edges.clock.Now().UnixNano())
		f.replied.Store(true)
		f.out.Add(1)
		f.bytesOut.Add(int64(len(p)))
		ft.stats.out.Add(1)
		ft.stats.bytesOut.Add(int64(len(p)))
	}
}

// service is the flow's service name for metrics: its member's, or the
// route's for a forwarded flow (a route here only for other servers'
// holdings is service "cluster").
func (f *flow) service() string {
	if f.m != nil {
		return f.m.service
	}
	return f.ft.r.service
}

// recvBuf is ReadDatagram's buffer source (f.getBuf, made once).
func (f *flow) recvBuf(n int) []byte {
	f.rbuf = dgram.Get(n)
	return (*f.rbuf)[dgram.Head:]
}

// closed is the end of run: it forgets the flow, drops what it queued
// and counts it closed.
func (f *flow) closed() {
	ft, m := f.ft, f.m
	ft.mu.Lock()
	ft.forgetLocked(f)
	ft.mu.Unlock()
	dropped := int64(0)
	for {
		select {
		case d := <-f.q:
			queued.Add(-int64(d.n))
			dgram.Put(d.buf)
			dropped++
			continue
		default:
		}
		break
	}
	if f.st.Load() == nil { // no session took them (rule 1)
		ft.stats.drops[dropNoSession].Add(dropped)
	}
	ft.all.Add(-1)
	in, out := f.bytesIn.Load(), f.bytesOut.Load()
	ft.s.metrics.UDPFlows(f.service(), -1)
	log := ft.s.log
	if m != nil {
		m.cs.flows.Add(-1)
		if st := f.stats; st != nil {
			st.Add(in, out) // a flow's bytes show when it ends
			st.Closed()
		}
		ft.s.rec.AddBytes(m.cs.client.name, m.service, in, out)
		log = m.cs.log
	} else {
		log = log.With("forwarded_to", f.remote.Server)
	}
	log.Debug("udp flow ended", "service", f.service(), "route", ft.r.key, "peer", f.peer.String(),
		"datagrams_from_public", f.in.Load(), "datagrams_to_public", f.out.Load(),
		"bytes_from_public", in, "bytes_to_public", out, "reason", f.why)
}
