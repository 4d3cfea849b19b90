package server

import (
	"container/list"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/clock"
)

// admission decides which tunnel connections may run their handshake, and
// how many TLS handshakes compute at once. Its rules hold together under
// its one lock:
//
//  1. A connection is admitted while fewer than maxTotal connections are in
//     their handshake in all, and fewer than maxPerIP from its source IP.
//  2. A connection in its handshake waits either on its peer (from accept
//     until its TLS ClientHello arrives, and again from when the server
//     has sent its TLS answer until the handshake completes) or on the
//     server (its ClientHello read, queued for or holding a TLS slot).
//     Once its TLS handshake completes it is proven: its peer answered
//     from its address, which a forged source cannot. Without TLS it
//     waits on its peer until the handshake ends.
//  3. At a limit (per IP first, then in all), a new connection takes the
//     place of the oldest connection (of its IP, or of any) that has
//     waited on its peer for evictAfter. Otherwise it queues, unread, for
//     a place (rule 4) or, the queue full, is refused at once, before any
//     TLS work, and its client retries with backoff. So a storm of real
//     clients is served in order while silent connections (a NAT
//     neighbour's, forged KCP sources) make room, and a handshake the
//     server is working on, or that has proven its peer, is never
//     dropped: handshake_timeout bounds it. Dropping those (as this did
//     until issue 21) turned a 10 000-client reconnect storm into a
//     livelock: on two busy cores a handshake took longer than evictAfter
//     and was dropped near its end for a newcomer.
//  4. The queue holds at most maxTotal connections, maxPerIP of one IP,
//     each for queueWait at most (then it is refused). A place freed goes
//     to the first in the queue that its IP's limit lets in. Refusing
//     instead made every client of a storm dial, and start a TLS
//     handshake, again and again until it got a place: at 10 000 clients
//     thousands of attempts a second, more CPU than the handshakes.
//  5. At most slots TLS handshakes compute at once: from their ClientHello
//     until the server's answer is written (the key exchange and the
//     signature, a TLS handshake's CPU). The others queue in arrival order
//     until their handshake deadline. Waiting on the peer's Finished holds
//     no slot, so a forged ClientHello costs one computation, not a slot
//     for a handshake_timeout.
//  6. Once closed (shutdown) it admits nothing and closes what is pending
//     or queued.
type admission struct {
	maxTotal, maxPerIP int
	maxQueued          int // in the queue, in all (rule 4); of one IP, min(this, maxPerIP)
	clock              clock.Clock
	log                *slog.Logger
	changed            *signal
	slots              chan struct{} // rule 5: a token per TLS handshake computing

	mu      sync.Mutex
	closed  bool
	die     chan struct{}              // closed by close: queued connections are refused
	entries map[net.Conn]*list.Element // by the transport connection (under TLS)
	order   *list.List                 // the same (*pendingConn), oldest first
	perIP   map[string]int
	queue   *list.List // connections waiting for a place (*waiter), first first
	queued  map[string]int

	refused        int       // connections over a limit since the last log
	lastRefusedLog time.Time // when that was logged
}

// evictAfter: at a limit, a new connection drops the oldest one that has
// waited this long on its peer (rule 3). A real handshake's peer answers
// within a few round trips, a real HTTP client sends its request at once;
// a burst of real connections from one address, a reconnect storm from
// behind one NAT, is refused for the moment (its clients retry) rather
// than churned into a livelock.
const evictAfter = 3 * time.Second

// queueWait bounds a connection's wait for a place (rule 4); its
// handshake_timeout starts after it. A storm's queue moves in a second or
// two: a place is a handshake of a few milliseconds of CPU.
const queueWait = 5 * time.Second

// waiter is a connection in the queue.
type waiter struct {
	c        net.Conn
	ip       string
	admitted chan struct{} // closed when it gets a place
}

// tlsSlotsPerCPU: TLS handshakes computing at once, per CPU (rule 5). One
// keeps every core busy on handshakes; a second covers the answer's write.
const tlsSlotsPerCPU = 2

// pendingConn is a connection in its handshake.
type pendingConn struct {
	c  net.Conn // the transport connection, under TLS if any
	ip string
	// peerSince is when it began waiting on its peer; zero while it
	// waits on the server (rule 2).
	peerSince time.Time
	proven    bool
	release   func() // gives back its TLS slot; nil when it holds none
}

func newAdmission(maxTotal, maxPerIP int, clk clock.Clock, log *slog.Logger, changed *signal) *admission {
	return &admission{
		maxTotal: maxTotal, maxPerIP: maxPerIP, maxQueued: maxTotal, clock: clk, log: log, changed: changed,
		die:     make(chan struct{}),
		slots:   make(chan struct{}, max(4, tlsSlotsPerCPU*runtime.GOMAXPROCS(0))),
		entries: make(map[net.Conn]*list.Element),
		order:   list.New(),
		perIP:   make(map[string]int),
		queue:   list.New(),
		queued:  make(map[string]int),
	}
}

// admit records c (the transport connection, under TLS if any) as in its
// handshake, waiting in the queue if need be, or refuses it (rules 1, 3,
// 4, 6): the caller closes it then.
func (a *admission) admit(c net.Conn) bool {
	ip := sourceIP(c)
	now := a.clock.Now()
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return false
	}
	var victim *pendingConn
	limit := ""
	switch {
	case a.perIP[ip] >= a.maxPerIP:
		limit = "limits.max_handshakes_per_ip"
		victim = a.oldestSilentLocked(now, ip)
	case len(a.entries) >= a.maxTotal:
		limit = "limits.max_handshakes"
		victim = a.oldestSilentLocked(now, "")
	}
	if victim != nil {
		a.removeLocked(victim.c, false) // its place is the newcomer's
	}
	queue := limit != "" && victim == nil && a.queue.Len() < a.maxQueued && a.queued[ip] < min(a.maxQueued, a.maxPerIP)
	if limit != "" {
		if !queue {
			a.refused++
		}
		if now.Sub(a.lastRefusedLog) >= time.Second {
			what := "closing new ones"
			switch {
			case victim != nil:
				what = "dropping the oldest silent one"
			case queue:
				what = "queueing new ones"
			}
			a.log.Warn("too many connections in their handshake; "+what, "limit", limit, "source", ip, "dropped", a.refused, "queued", a.queue.Len())
			a.lastRefusedLog, a.refused = now, 0
		}
	}
	if queue {
		w := &waiter{c: c, ip: ip, admitted: make(chan struct{})}
		e := a.queue.PushBack(w)
		a.queued[ip]++
		a.mu.Unlock()
		return a.wait(w, e)
	}
	ok := limit == "" || victim != nil
	if ok {
		a.addLocked(c, ip, now)
	}
	a.mu.Unlock()
	if victim != nil {
		victim.c.Close()
	}
	return ok
}

func (a *admission) addLocked(c net.Conn, ip string, now time.Time) {
	a.entries[c] = a.order.PushBack(&pendingConn{c: c, ip: ip, peerSince: now})
	a.perIP[ip]++
	a.changed.Notify()
}

// wait waits for w, queued at e, to get a place, for queueWait at most.
func (a *admission) wait(w *waiter, e *list.Element) bool {
	t := a.clock.NewTimer(queueWait)
	defer t.Stop()
	select {
	case <-w.admitted:
		return true
	case <-t.C():
	case <-a.die:
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-w.admitted: // meanwhile
		return true
	default:
	}
	a.unqueueLocked(w, e)
	a.refused++
	return false
}

func (a *admission) unqueueLocked(w *waiter, e *list.Element) {
	a.queue.Remove(e)
	if a.queued[w.ip]--; a.queued[w.ip] <= 0 {
		delete(a.queued, w.ip)
	}
}

// handoffLocked gives the places free to the first in the queue that
// the limits let in (rule 4).
func (a *admission) handoffLocked() {
	if a.closed {
		return
	}
	for e := a.queue.Front(); e != nil && len(a.entries) < a.maxTotal; {
		next := e.Next()
		if w := e.Value.(*waiter); a.perIP[w.ip] < a.maxPerIP {
			a.unqueueLocked(w, e)
			a.addLocked(w.c, w.ip, a.clock.Now())
			close(w.admitted)
		}
		e = next
	}
}

// oldestSilentLocked is the oldest connection, of ip or of any ("") that
// has waited on its peer for evictAfter, or nil.
func (a *admission) oldestSilentLocked(now time.Time, ip string) *pendingConn {
	for e := a.order.Front(); e != nil; e = e.Next() {
		p := e.Value.(*pendingConn)
		if (ip == "" || p.ip == ip) && !p.proven && !p.peerSince.IsZero() && now.Sub(p.peerSince) >= evictAfter {
			return p
		}
	}
	return nil
}

// done forgets c once its handshake is over, whatever its outcome.
func (a *admission) done(c net.Conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeLocked(c, true)
}

// removeLocked forgets c; handoff gives its place to the queue.
func (a *admission) removeLocked(c net.Conn, handoff bool) {
	e, ok := a.entries[c]
	if !ok {
		return
	}
	p := e.Value.(*pendingConn)
	a.order.Remove(e)
	delete(a.entries, c)
	if p.release != nil {
		p.release()
		p.release = nil
	}
	if a.perIP[p.ip]--; a.perIP[p.ip] <= 0 {
		delete(a.perIP, p.ip)
	}
	a.changed.Notify()
	if handoff {
		a.handoffLocked()
	}
}

// proven records that c's TLS handshake completed (rule 2).
func (a *admission) proven(c net.Conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.entries[c]; ok {
		p := e.Value.(*pendingConn)
		p.proven = true
		if p.release != nil {
			p.release()
			p.release = nil
		}
	}
}

// hello is called when c's ClientHello has arrived: c now waits on the
// server, for a TLS slot first (rule 4) until ctx ends. It returns the
// function to call once the server's answer is written, or an error when
// c is not admitted (any more) or ctx ended first.
func (a *admission) hello(ctx context.Context, c net.Conn) (answered func(), err error) {
	a.mu.Lock()
	e, ok := a.entries[c]
	if ok {
		e.Value.(*pendingConn).peerSince = time.Time{}
	}
	a.mu.Unlock()
	if !ok {
		return nil, net.ErrClosed
	}
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	release := func() { once.Do(func() { <-a.slots }) }
	a.mu.Lock()
	e, ok = a.entries[c]
	if ok {
		e.Value.(*pendingConn).release = release
	}
	a.mu.Unlock()
	if !ok { // dropped (shutdown) while it queued
		release()
		return nil, net.ErrClosed
	}
	return func() {
		now := a.clock.Now()
		a.mu.Lock()
		if e, ok := a.entries[c]; ok {
			p := e.Value.(*pendingConn)
			p.peerSince, p.release = now, nil
		}
		a.mu.Unlock()
		release()
	}, nil
}

// gate returns base with a ClientHello hook that runs the handshake
// through hello: the CPU of the handshake waits for a slot, and the
// answer's end (VerifyConnection, which crypto/tls calls once the
// server's flight is written, before it reads the client's Finished)
// gives the slot back. base itself is not changed.
func (a *admission) gate(base *tls.Config) *tls.Config {
	inner := base.Clone()
	cfg := base.Clone()
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		answered, err := a.hello(h.Context(), h.Conn)
		if err != nil {
			return nil, err
		}
		c := inner.Clone()
		verify := inner.VerifyConnection
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			answered()
			if verify != nil {
				return verify(cs)
			}
			return nil
		}
		return c, nil
	}
	return cfg
}

// close admits nothing from now on and closes every connection pending
// or queued (rule 6).
func (a *admission) close() {
	a.mu.Lock()
	if !a.closed {
		close(a.die)
	}
	a.closed = true
	var cs []net.Conn
	for c := range a.entries {
		cs = append(cs, c)
	}
	for e := a.queue.Front(); e != nil; e = e.Next() {
		cs = append(cs, e.Value.(*waiter).c) // its wait ends with a refusal
	}
	a.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// pending is the number of connections in their handshake.
func (a *admission) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}

// sourceIP is the IP address a connection comes from.
func sourceIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}
