package server

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/warren-tunnel/warren/clock"
	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/internal/domain"
	"github.com/warren-tunnel/warren/session"
)

// A route is what public connections arrive on: a public port, or a domain
// on an entry point ("http" or "https"), and the sessions that serve it.
// Routes outlive sessions: a route whose last session dropped is held for
// the client's return (reconnect grace), its listener open, new
// connections waiting; the returning session adopts it without a gap.
type route struct {
	key    string // "port:2222", "udp:53", "http:www.example.com", "https:*.example.com"
	port   int    // port routes
	udp    bool   // port routes: a UDP port
	entry  string // domain routes: "http" or "https"
	name   string // domain routes: the normalized name or wildcard
	shared bool
	// private: a private service's route, which visitors reach; no
	// listener, no domain.
	private bool
	// service is the service name of the session that created the
	// route: the metrics label of connections no session takes.
	service string
	client  *clientEntry  // the client of a non-shared route's members
	l       net.Listener  // TCP port routes: the public listener
	pc      PacketConn    // UDP port routes: the public socket
	done    chan struct{} // closed when the route is removed
	// limits are a UDP route's, those of the latest claim on it.
	limits atomic.Pointer[session.UDPLimits]
	// flows are a UDP route's flows, once it is served (udp.go).
	flows atomic.Pointer[flowTable]
	// visitorFlows counts a private UDP route's flows (visitudp.go).
	visitorFlows atomic.Int64

	// Guarded by the table's lock:
	members   []*member
	next      int           // round-robin cursor
	heldUntil time.Time     // no members: connections wait until then
	hold      clock.Timer   // ends the hold
	wake      chan struct{} // closed and replaced when members change
	waiting   int           // connections waiting for a member
	// In a cluster (cluster.go): the route's holdings on other servers,
	// as the registry's view has them, and the round-robin cursor among
	// them. remoteHeld: the route is held (heldUntil) for a client that
	// held it only elsewhere and went, as its registry reservation is.
	remote     []cluster.Holding
	remoteNext int
	remoteHeld bool
}

// member is one session serving a route, as one of its services.
type member struct {
	cs      *clientSession
	service string
}

func portKey(p int) string { return "port:" + strconv.Itoa(p) }

func udpKey(p int) string { return "udp:" + strconv.Itoa(p) }

func portKeyOf(udp bool, p int) string {
	if udp {
		return udpKey(p)
	}
	return portKey(p)
}

// socket is a bound public port: a TCP listener or a UDP socket.
type socket struct {
	l  net.Listener
	pc PacketConn
}

func (s socket) Close() error {
	if s.pc != nil {
		return s.pc.Close()
	}
	return s.l.Close()
}

// port is the bound port, 0 if unknown.
func (s socket) port() int {
	var a net.Addr
	if s.pc != nil {
		a = s.pc.LocalAddr()
	} else {
		a = s.l.Addr()
	}
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.Port
	case *net.UDPAddr:
		return a.Port
	}
	return 0
}

// setLimits records the UDP limits of the latest claim on r.
func (r *route) setLimits(l session.UDPLimits) { r.limits.Store(&l) }

func domainKey(entry, name string) string { return entry + ":" + name }

// Route errors.
var (
	// errRouteGone: the route was removed while a connection waited on it.
	errRouteGone = errors.New("no client serves this any more")
	// errGraceOver: no client came back within the reconnect grace.
	errGraceOver = errors.New("client did not come back within the reconnect grace")
	// errTooManyWaiting: MaxWaiting connections already wait on the route.
	errTooManyWaiting = errors.New("too many connections waiting for the client to come back")
)

func newRoute(key string, shared bool, client *clientEntry) *route {
	return &route{key: key, shared: shared, client: client, done: make(chan struct{}), wake: make(chan struct{})}
}

// wakeLocked tells waiting connections that the members changed.
func (r *route) wakeLocked() {
	close(r.wake)
	r.wake = make(chan struct{})
}

// removeMemberLocked takes cs's member out of r and wakes the waiters
// and, on a UDP route, the sweep that ends cs's flows.
func (r *route) removeMemberLocked(cs *clientSession) {
	r.members = slices.DeleteFunc(r.members, func(m *member) bool { return m.cs == cs })
	r.wakeLocked()
	if ft := r.flows.Load(); ft != nil {
		ft.memberLeft() // its flows end
	}
}

// pick returns the member a new connection on r goes to: among live
// sessions, the one with the fewest open streams, preferring those
// answering their heartbeats, round robin among equals. With no member it
// waits until the route has one, or its hold ends, or give is closed.
// tried lists members that already failed this connection.
func (t *table) pick(r *route, tried map[*member]bool, give <-chan struct{}) (*member, error) {
	m, _, err := t.pickFor(r, tried, nil, give)
	return m, err
}

// pickFor is pick in a cluster: with no live member here, a connection
// that may be forwarded (skip non-nil; a forwarded one may not) goes to
// a holding on another server, round robin, skipping the servers in
// skip, which already failed it. It returns the member or the holding.
func (t *table) pickFor(r *route, tried map[*member]bool, skip map[string]bool, give <-chan struct{}) (*member, *cluster.Holding, error) {
	t.mu.Lock()
	counted := false
	defer func() {
		if counted {
			r.waiting--
			t.changed.Notify()
		}
		t.mu.Unlock()
	}()
	for {
		select {
		case <-r.done:
			return nil, nil, errRouteGone
		default:
		}
		if m := r.pickLocked(tried); m != nil {
			return m, nil, nil
		}
		if skip != nil {
			if h := r.pickRemoteLocked(skip); h != nil {
				return nil, h, nil
			}
		}
		// Wait while the route is held, or a member is still in its
		// handshake (a client coming back adopts its held route so).
		wait := r.heldUntil.Sub(t.clock.Now())
		if r.heldUntil.IsZero() {
			if !r.joiningLocked() {
				return nil, nil, errRouteGone // members, but all failed
			}
			wait = t.cfg.handshakeTimeout
		}
		if !counted {
			if r.waiting >= t.cfg.maxWaiting {
				return nil, nil, errTooManyWaiting
			}
			r.waiting++
			counted = true
			t.changed.Notify()
		}
		wake := r.wake
		t.mu.Unlock()
		tm := t.clock.NewTimer(wait)
		select {
		case <-wake:
		case <-tm.C():
		case <-give:
		}
		tm.Stop()
		t.mu.Lock()
		select {
		case <-give:
			return nil, nil, errRouteGone
		default:
		}
		if len(r.members) == 0 && len(r.remote) == 0 && !r.heldUntil.IsZero() && t.clock.Now().After(r.heldUntil) {
			return nil, nil, errGraceOver
		}
	}
}

// pickFlow is the member a new UDP flow of r goes to, at its first
// datagram: a live member; else, in a cluster (inCluster), a holding of r
// on another server, round robin; else a member in its handshake, whose
// session the flow waits for (sessionFor). nil, nil when there is none
// (the route is held, or every member failed). A flow another server
// forwarded here picks with inCluster false: no second hop.
func (t *table) pickFlow(r *route, inCluster bool) (*member, *cluster.Holding) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if m := r.pickLocked(nil); m != nil {
		return m, nil
	}
	if inCluster {
		if h := r.pickRemoteLocked(nil); h != nil {
			return nil, h
		}
	}
	for _, m := range r.members {
		if m.cs.sess == nil {
			return m, nil
		}
	}
	return nil, nil
}

// sessionFor returns the session of m, the member of r a UDP flow picked:
// at once when it is up; while m is in its handshake, as soon as up
// records it (its Welcome sent). nil when m is not, or no longer, a
// member of r (its handshake failed, it drained, the route went), when
// give is closed, or after handshakeTimeout.
func (t *table) sessionFor(r *route, m *member, give <-chan struct{}) *session.Session {
	var tm clock.Timer
	t.mu.Lock()
	defer func() {
		t.mu.Unlock()
		if tm != nil {
			tm.Stop()
		}
	}()
	for {
		if !slices.Contains(r.members, m) {
			return nil
		}
		if m.cs.sess != nil {
			return m.cs.sess
		}
		if tm == nil {
			tm = t.clock.NewTimer(t.cfg.handshakeTimeout)
		}
		wake := r.wake // closed by up, and when m leaves
		t.mu.Unlock()
		select {
		case <-wake:
		case <-give:
			t.mu.Lock()
			return nil
		case <-tm.C():
			t.mu.Lock()
			return nil
		}
		t.mu.Lock()
	}
}

// members returns the members serving r now: a UDP flow ends when its
// member leaves the route (a drain, an update without the service).
func (t *table) members(r *route) map[*member]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[*member]bool, len(r.members))
	for _, m := range r.members {
		out[m] = true
	}
	return out
}

func (r *route) pickLocked(tried map[*member]bool) *member {
	var best *member
	bestScore := 0
	n := len(r.members)
	for i := range n {
		m := r.members[(r.next+i)%n]
		if tried[m] || m.cs.sess == nil || m.cs.sess.Err() != nil {
			continue
		}
		score := m.cs.sess.NumStreams()
		if m.cs.sess.Missed() > 1 { // late on heartbeats: last resort
			score += 1 << 30
		}
		if best == nil || score < bestScore {
			best, bestScore = m, score
		}
	}
	if n > 0 {
		r.next = (r.next + 1) % n
	}
	return best
}

// pickRemoteLocked is the next holding of r on another server, round
// robin, that is not in skip; nil if none.
func (r *route) pickRemoteLocked(skip map[string]bool) *cluster.Holding {
	n := len(r.remote)
	for i := range n {
		h := r.remote[(r.remoteNext+i)%n]
		if !skip[h.Server] {
			r.remoteNext = (r.remoteNext + i + 1) % n
			return &h
		}
	}
	return nil
}

// joiningLocked reports whether a member is still in its handshake, or
// has just died and not yet left (the route may then be held for it).
func (r *route) joiningLocked() bool {
	for _, m := range r.members {
		if m.cs.sess == nil || m.cs.sess.Err() != nil {
			return true
		}
	}
	return false
}

// lookupDomain finds the route for host on an entry point: the exact
// name, else the longest wildcard that matches.
func (t *table) lookupDomain(entry, host string) *route {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.routes[domainKey(entry, host)]; r != nil {
		return r
	}
	var best *route
	for _, r := range t.routes {
		if r.entry == entry && domain.IsWildcard(r.name) && domain.Match(r.name, host) {
			if best == nil || domain.Specificity(r.name) > domain.Specificity(best.name) {
				best = r
			}
		}
	}
	return best
}

// describeRoute names a route for messages: "port 2222", "udp port 53",
// "domain x (http)".
func describeRoute(r *route) string {
	if r.private {
		_, full, _ := strings.Cut(r.key, ":")
		if r.udp {
			return "private udp service " + full
		}
		return "private service " + full
	}
	if r.port > 0 && r.udp {
		return "udp port " + strconv.Itoa(r.port)
	}
	if r.port > 0 {
		return "port " + strconv.Itoa(r.port)
	}
	return "domain " + r.name + " (" + r.entry + ")"
}

// holders names the clients serving r, for "in use" messages.
func holders(r *route) string {
	if r.client != nil && !r.shared {
		return r.client.name
	}
	seen := map[string]bool{}
	out := ""
	for _, m := range r.members {
		if !seen[m.cs.client.name] {
			seen[m.cs.client.name] = true
			if out != "" {
				out += ", "
			}
			out += m.cs.client.name
		}
	}
	return out
}

// RouteInfo describes a route: what public connections arrive on.
type RouteInfo struct {
	// Key names it: "port:2222", "udp:53", "http:www.example.com".
	Key string
	// Client is the client whose sessions serve it; "" when shared.
	Client string
	Shared bool
	// Sessions counts the sessions serving it (those in their handshake
	// included).
	Sessions int
	// Held: no session serves it, and it is kept for its client's return
	// until the reconnect grace ends.
	Held bool
	// Waiting counts the public connections waiting for a session.
	Waiting int
	// Flows counts a UDP route's flows.
	Flows int
	// Elsewhere counts its holdings on other servers of the cluster, as
	// this server's table knows them (what it forwards by); it follows
	// the registry's view a moment later.
	Elsewhere int
}

// info lists the routes, by key.
func (t *table) info() []RouteInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]RouteInfo, 0, len(t.routes))
	for _, r := range t.routes {
		ri := RouteInfo{Key: r.key, Shared: r.shared, Sessions: len(r.members), Held: !r.heldUntil.IsZero(), Waiting: r.waiting, Elsewhere: len(r.remote)}
		if ft := r.flows.Load(); ft != nil {
			ri.Flows = ft.count()
		}
		ri.Flows += int(r.visitorFlows.Load())
		if !r.shared && r.client != nil {
			ri.Client = r.client.name
		}
		out = append(out, ri)
	}
	slices.SortFunc(out, func(a, b RouteInfo) int { return strings.Compare(a.Key, b.Key) })
	return out
}
