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
//     place of the connection (of its IP, or of any) that has waited on
//     its peer longest, if for evictAfter; otherwise it is refused at once,
//     before any TLS work, and its client retries with backoff. So a storm
//     of real clients is served in order while silent connections (a NAT
//     neighbour's, forged KCP sources) make room, and a handshake the
//     server is working on, or that has proven its peer, is never
//     dropped: handshake_timeout bounds it. Dropping those (as this did
//     until issue 21) turned a 10 000-client reconnect storm into a
//     livelock: on two busy cores a handshake took longer than evictAfter
//     and was dropped near its end for a newcomer.
//  4. At most slots TLS handshakes compute at once: from their ClientHello
//     until the server's answer is written (the key exchange and the
//     signature, a TLS handshake's CPU). The others queue in arrival order
//     until their handshake deadline. Waiting on the peer's Finished holds
//     no slot, so a forged ClientHello costs one computation, not a slot
//     for a handshake_timeout.
//  5. Once closed (shutdown) it admits nothing and closes what is pending.
type admission struct {
	maxTotal, maxPerIP int
	clock              clock.Clock
	log                *slog.Logger
	changed            *signal
	slots              chan struct{} // rule 4: a token per TLS handshake computing

	mu      sync.Mutex
	closed  bool
	entries map[net.Conn]*pendingConn // by the transport connection (under TLS)
	perIP   map[string]int
	// silent lists the connections waiting on their peer and not proven
	// (*pendingConn), longest waiting first, and silentByIP the same by
	// source IP: rule 3 takes the front, where a walk of every pending
	// handshake for each newcomer at a limit was 7% of the server's CPU
	// in a 10 000-session storm (perf, docs/benchmarks.md).
	silent     *list.List
	silentByIP map[string]*list.List

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

// tlsSlotsPerCPU: TLS handshakes computing at once, per CPU (rule 4). One
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
	// its elements in silent and silentByIP, while it waits on its peer
	silentEl, ipSilentEl *list.Element
}

func newAdmission(maxTotal, maxPerIP int, clk clock.Clock, log *slog.Logger, changed *signal) *admission {
	return &admission{
		maxTotal: maxTotal, maxPerIP: maxPerIP, clock: clk, log: log, changed: changed,
		slots:      make(chan struct{}, max(4, tlsSlotsPerCPU*runtime.GOMAXPROCS(0))),
		entries:    make(map[net.Conn]*pendingConn),
		perIP:      make(map[string]int),
		silent:     list.New(),
		silentByIP: make(map[string]*list.List),
	}
}

// admit records c (the transport connection, under TLS if any) as in its
// handshake, or refuses it (rules 1, 3, 5): the caller closes it then.
func (a *admission) admit(c net.Conn) bool {
	ip := sourceIP(c)
	a.mu.Lock()
	now := a.clock.Now() // under the lock: the silent lists stay in order
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
		a.removeLocked(victim.c)
	}
	if limit != "" {
		a.refused++
		if now.Sub(a.lastRefusedLog) >= time.Second {
			what := "closing new ones"
			if victim != nil {
				what = "dropping the oldest silent one"
			}
			a.log.Warn("too many connections in their handshake; "+what, "limit", limit, "source", ip, "dropped", a.refused)
			a.lastRefusedLog, a.refused = now, 0
		}
	}
	ok := limit == "" || victim != nil
	if ok {
		p := &pendingConn{c: c, ip: ip}
		a.entries[c] = p
		a.quietLocked(p, now)
		a.perIP[ip]++
		a.changed.Notify()
	}
	a.mu.Unlock()
	if victim != nil {
		victim.c.Close()
	}
	return ok
}

// oldestSilentLocked is the connection, of ip or of any (""), that has
// waited on its peer longest, if for evictAfter, or nil.
func (a *admission) oldestSilentLocked(now time.Time, ip string) *pendingConn {
	l := a.silent
	if ip != "" {
		l = a.silentByIP[ip]
	}
	if l == nil || l.Len() == 0 {
		return nil
	}
	if p := l.Front().Value.(*pendingConn); now.Sub(p.peerSince) >= evictAfter {
		return p
	}
	return nil
}

// quietLocked records that p waits on its peer from now (rule 2). now
// never goes back, so the lists stay in order.
func (a *admission) quietLocked(p *pendingConn, now time.Time) {
	a.heardLocked(p)
	p.peerSince = now
	p.silentEl = a.silent.PushBack(p)
	l := a.silentByIP[p.ip]
	if l == nil {
		l = list.New()
		a.silentByIP[p.ip] = l
	}
	p.ipSilentEl = l.PushBack(p)
}

// heardLocked records that p no longer waits on its peer: the server
// works on it, or it is proven or gone.
func (a *admission) heardLocked(p *pendingConn) {
	p.peerSince = time.Time{}
	if p.silentEl == nil {
		return
	}
	a.silent.Remove(p.silentEl)
	l := a.silentByIP[p.ip]
	l.Remove(p.ipSilentEl)
	if l.Len() == 0 {
		delete(a.silentByIP, p.ip)
	}
	p.silentEl, p.ipSilentEl = nil, nil
}

// done forgets c once its handshake is over, whatever its outcome.
func (a *admission) done(c net.Conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeLocked(c)
}

func (a *admission) removeLocked(c net.Conn) {
	p, ok := a.entries[c]
	if !ok {
		return
	}
	a.heardLocked(p)
	delete(a.entries, c)
	if p.release != nil {
		p.release()
		p.release = nil
	}
	if a.perIP[p.ip]--; a.perIP[p.ip] <= 0 {
		delete(a.perIP, p.ip)
	}
	a.changed.Notify()
}

// proven records that c's TLS handshake completed (rule 2).
func (a *admission) proven(c net.Conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.entries[c]; ok {
		p.proven = true
		a.heardLocked(p)
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
	p, ok := a.entries[c]
	if ok {
		a.heardLocked(p)
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
	p, ok = a.entries[c]
	if ok {
		p.release = release
	}
	a.mu.Unlock()
	if !ok { // dropped (shutdown) while it queued
		release()
		return nil, net.ErrClosed
	}
	return func() {
		a.mu.Lock()
		now := a.clock.Now() // under the lock: the silent lists stay in order
		if p, ok := a.entries[c]; ok {
			p.release = nil
			if !p.proven {
				a.quietLocked(p, now)
			}
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
// (rule 5).
func (a *admission) close() {
	a.mu.Lock()
	a.closed = true
	var cs []net.Conn
	for c := range a.entries {
		cs = append(cs, c)
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
