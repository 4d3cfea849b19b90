package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/dgram"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
)

// A UDP visitor: a local UDP socket whose every source address is a flow,
// carried on a stream of its own (Header.Kind "udp", Service
// "client/service") through the server to the private UDP service, whose
// client sends the datagrams to its target (server/visitudp.go).
//
//	local source --> socket --(read)--> flow queue --(send)--> stream --> server
//	local source <-- socket <--(receive)---------------------- stream <-- server
//
// The rules, those of the server's public UDP flows where they apply:
//
//  1. The first datagram from a source makes its flow, which waits for a
//     session (up to dial_timeout) and opens its stream; its datagrams
//     queue meanwhile.
//  2. At most maxVisitorFlows flows per visitor (a new source beyond is
//     dropped), visitorFlowQueue datagrams queued per flow and
//     visitorQueueBudget bytes for every flow of the visitor: beyond, the
//     datagram is dropped. The reader never waits, so one flow cannot
//     hold up another.
//  3. A flow ends when the server ends its stream (idle_timeout, the
//     service gone, a refusal such as a visit pattern that does not
//     allow it), when the session is lost, or with the visitor. The next
//     datagram from its source makes a new flow.
const (
	// visitorFlowQueue is the server's flowQueueLen (server/udp.go).
	visitorFlowQueue = 256
	// maxVisitorFlows is the server's default udp.max_flows: beyond it
	// the server refuses the flows anyway.
	maxVisitorFlows = 4096
	// visitorQueueBudget bounds the bytes queued in a visitor's flows:
	// 256 flows' queues of 1200-byte datagrams, a quarter of the
	// server's queue budget (32 MiB) for every flow of a process.
	visitorQueueBudget = 8 << 20
)

// udpVisitor is a UDP visitor's socket and its flows.
type udpVisitor struct {
	c      *Client
	v      Visitor
	pc     net.PacketConn
	log    *slog.Logger
	stats  *admin.ServiceCounters
	queued atomic.Int64 // bytes in the flows' queues (rule 2)

	mu    sync.Mutex
	flows map[string]*visitorFlow // by source address
	done  bool
	wg    sync.WaitGroup
}

// run reads the socket until it is closed, then ends every flow and
// waits for them.
func (u *udpVisitor) run(ctx context.Context) {
	defer u.shut()
	buf := make([]byte, session.MaxUDPPayload+1)
	for {
		n, src, err := u.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			u.log.Warn("visitor read failed", "err", err)
			if !u.c.pause(ctx, acceptPause) {
				return
			}
			continue
		}
		if n > session.MaxUDPPayload {
			u.c.metrics.UDPDropped(u.v.Service, metrics.DropTooLarge, 1)
			continue
		}
		u.in(ctx, src, buf[:n])
	}
}

// in takes one datagram from src.
func (u *udpVisitor) in(ctx context.Context, src net.Addr, b []byte) {
	key := src.String()
	u.mu.Lock()
	f := u.flows[key]
	if f == nil {
		if u.done || len(u.flows) >= maxVisitorFlows {
			u.mu.Unlock()
			u.c.metrics.UDPDropped(u.v.Service, metrics.DropMaxFlows, 1)
			return
		}
		fctx, cancel := context.WithCancel(ctx)
		f = &visitorFlow{u: u, src: src, key: key, q: make(chan *[]byte, visitorFlowQueue), ctx: fctx, cancel: cancel}
		u.flows[key] = f
		u.wg.Go(f.run)
	}
	defer u.mu.Unlock() // closed drains a flow's queue after it is forgotten under the lock
	if u.queued.Load()+int64(len(b)) > visitorQueueBudget {
		u.c.metrics.UDPDropped(u.v.Service, metrics.DropQueueFull, 1)
		return
	}
	d := dgram.Get(len(b))
	*d = (*d)[:dgram.Head+len(b)]
	copy((*d)[dgram.Head:], b)
	select {
	case f.q <- d:
		u.queued.Add(int64(len(b)))
	default:
		dgram.Put(d)
		u.c.metrics.UDPDropped(u.v.Service, metrics.DropQueueFull, 1)
	}
}

// shut ends every flow once the socket is closed, and waits for them.
func (u *udpVisitor) shut() {
	u.mu.Lock()
	u.done = true
	for _, f := range u.flows {
		f.end("the visitor stopped")
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// visitorFlow is one local source of a UDP visitor.
type visitorFlow struct {
	u      *udpVisitor
	src    net.Addr
	key    string
	q      chan *[]byte // datagrams, each after dgram.Head bytes of room
	ctx    context.Context
	cancel context.CancelFunc

	st      atomic.Pointer[session.Stream]
	dieOnce sync.Once
	why     string // set before ctx ends, by end

	bytesIn, bytesOut int64 // send's and receive's
}

// end ends the flow for why; send and receive wake at once.
func (f *visitorFlow) end(why string) {
	f.dieOnce.Do(func() {
		f.why = why
		f.cancel()
		if st := f.st.Load(); st != nil {
			past := time.Unix(1, 0)
			st.SetReadDeadline(past)
			st.SetWriteDeadline(past)
		}
	})
}

// run opens the flow's stream and carries its datagrams until it ends.
func (f *visitorFlow) run() {
	u, c := f.u, f.u.c
	log := u.log.With("peer", f.key)
	defer f.closed()
	sess := c.visitSession(f.ctx, c.cfg.DialTimeout, true)
	if sess == nil {
		if f.ctx.Err() == nil {
			log.Warn("udp visitor flow dropped: not connected to the server")
			c.metrics.VisitorConn(u.v.Service, metrics.OutcomeNoSession)
		}
		f.end("not connected to the server")
		return
	}
	st, err := sess.Open(session.Header{Service: u.v.Service, Peer: f.key, Local: u.pc.LocalAddr().String(), Kind: session.KindDatagram})
	if err != nil {
		log.Warn("udp visitor flow dropped: cannot open a stream", "err", err)
		c.metrics.VisitorConn(u.v.Service, metrics.OutcomeAborted)
		f.end("cannot open a stream")
		return
	}
	f.st.Store(st)
	if f.ctx.Err() != nil { // ended while opening: end's deadlines missed st
		st.Close()
		return
	}
	u.stats.Opened()
	client := sess.Info().Client
	c.metrics.StreamUp(client)
	start := c.edges.clock.Now()
	recvErr := make(chan error, 1)
	go func() { recvErr <- f.receive(st) }()
	f.send(st)
	// send stops once the flow has ended, or when the visitor's context
	// has (its parent): end, a no-op in the first case, wakes receive in
	// the second and, returning after why is set, lets it be read.
	f.end("the visitor stopped")
	rerr := <-recvErr
	mine := f.why // the flow's own end (the visitor stopped, a write failed), or the server's
	if rerr == nil {
		st.Abort(mine)
	}
	st.Close()
	c.metrics.StreamDown(client)
	u.stats.Add(f.bytesIn, f.bytesOut)
	u.stats.Closed()
	c.metrics.AddBytes(u.v.Service, f.bytesIn, f.bytesOut)
	outcome, level, reason := metrics.OutcomeOK, slog.LevelDebug, mine
	var ab *session.AbortError
	switch {
	case errors.As(rerr, &ab) && f.bytesOut == 0:
		outcome, level, reason = metrics.OutcomeAborted, slog.LevelWarn, ab.Reason // refused by the server or the serving client
	case errors.As(rerr, &ab):
		reason = ab.Reason
	case rerr != nil && rerr != io.EOF:
		level, reason = slog.LevelInfo, rerr.Error()
	}
	c.metrics.VisitorConn(u.v.Service, outcome)
	log.Log(context.Background(), level, "udp visitor flow closed",
		"bytes_to_service", f.bytesIn, "bytes_from_service", f.bytesOut,
		"duration", c.edges.clock.Now().Sub(start).Round(time.Millisecond).String(), "reason", reason)
}

// send writes the queued datagrams to the stream until the flow ends.
func (f *visitorFlow) send(st *session.Stream) {
	for {
		var d *[]byte
		select {
		case d = <-f.q:
		case <-f.ctx.Done():
			return
		}
		n := len(*d) - dgram.Head
		f.u.queued.Add(-int64(n))
		if err := st.WriteDatagram(*d); err != nil {
			f.end("writing to the stream failed: " + err.Error()) // d may still be in smux: not reused
			return
		}
		dgram.Put(d)
		f.bytesIn += int64(n)
	}
}

// receive sends the service's datagrams to the local source until the
// stream ends; it returns the server's end (io.EOF or an
// *session.AbortError), the stream's failure, or nil when the flow
// ended on its own.
func (f *visitorFlow) receive(st *session.Stream) error {
	var rb *[]byte
	get := func(n int) []byte {
		rb = dgram.Get(n)
		return (*rb)[dgram.Head:]
	}
	for {
		p, err := st.ReadDatagram(session.MaxUDPPayload, get)
		if err != nil {
			if f.ctx.Err() != nil {
				return nil
			}
			f.end("the server ended it")
			return err
		}
		_, werr := f.u.pc.WriteTo(p, f.src)
		dgram.Put(rb)
		if werr != nil && errors.Is(werr, net.ErrClosed) {
			f.end("the visitor stopped")
			return nil
		}
		f.bytesOut += int64(len(p))
	}
}

// closed forgets the flow and drops what it queued.
func (f *visitorFlow) closed() {
	u := f.u
	u.mu.Lock()
	if u.flows[f.key] == f {
		delete(u.flows, f.key)
	}
	u.mu.Unlock()
	f.cancel()
	for {
		select {
		case d := <-f.q:
			u.queued.Add(-int64(len(*d) - dgram.Head))
			dgram.Put(d)
			continue
		default:
		}
		return
	}
}
