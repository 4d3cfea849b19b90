package client

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// The pool is the servers the client serves through and the sessions up
// to each. One lock, pool.mu, guards it; its rules:
//
//  1. Known servers. Each entry of the server list stands for one server
//     (resolve = "first": its name is resolved again at each dial), or for
//     one server per address its name resolves to (resolve = "all"),
//     synced at every resolution: new addresses join, vanished ones are
//     gone.
//  2. Held. The client runs Connections slots, each one session and its
//     reconnections, to every server it holds. It holds every known
//     server; with max_servers = N at most N, picked at random among the
//     known servers it does not hold, those not benched (rule 3) first.
//  3. Replacement, only while a known server is not held: a held server
//     is released and benched when replaceAfter attempts in a row got no
//     session, when its last answer is one that retrying cannot change
//     (fatal: the token or a claim refused, a certificate that fails
//     verification), or when it drains; another is held in its place at
//     once. A gone server (rule 1) is released, and forgotten once its
//     slots have stopped.
//  4. Releasing never cuts a session: a released server's slots stop
//     reconnecting, and a session up ends on its own (a draining server
//     closes it). A released server may be held again once all its slots
//     have stopped.
//  5. Stop. The client stops when every known server's last answer is
//     fatal, with that answer: with one server as soon as it refuses, as
//     a client of one server always did; with several only once all of
//     them refuse (a token rotation in progress leaves some accepting the
//     token, which serve while the others are retried with backoff). A
//     server that never answered (down, or not tried yet) keeps the
//     client running.
//  6. Ready while at least min_servers servers have a session up and are
//     not draining.
type pool struct {
	max, min, conns int
	eps             []*endpoint // the server list, for the order of states
	// start runs slot of r (its keep loop) in a goroutine of Run's; stop
	// closes when r is released, firstUp when a session of r is welcomed.
	start func(r *remote, slot int, stop, firstUp <-chan struct{})
	// changed is called after every change, forgot with the label of a
	// server forgotten (rule 1), both with mu not held.
	changed func()
	forgot  func(label string)

	mu         sync.Mutex
	known      []*remote           // in the order they became known
	unresolved map[*endpoint]error // entries whose name did not resolve last time
	closed     bool                // the client stops: no more holding
}

// replaceAfter is how many attempts in a row may fail to get a session
// before a server is replaced by one not held (rule 3): a few backoff
// rounds, about 2 s into the backoff's growth.
const replaceAfter = 3

// remote is one server of the pool.
type remote struct {
	ep *endpoint
	// addr is the server's "ip:port" when its entry resolves to all
	// addresses; "" when the entry's name is resolved at each dial.
	addr string
	// label names the server in logs, status and metrics: the entry as
	// configured, or "entry@ip" for one of the servers at a name's
	// addresses.
	label string
	t     transport.Transport

	// Guarded by pool.mu.
	held     bool
	gone     bool          // its address left its name's resolution
	benched  bool          // released by rule 3: held again only when no other is free
	slots    int           // keep loops running
	stop     chan struct{} // closed when released; one per hold
	firstUp  chan struct{} // closed when a session of this hold is welcomed
	upOnce   *sync.Once
	fails    int                // attempts in a row without a session
	verdict  error              // the last answer, when fatal
	served   bool               // a session was up once: reconnect soon (backoff capped low)
	draining bool               // the server said it drains, until a new session is up
	back     []time.Duration    // by slot: when the draining server said to come back, until used (0: not said)
	sess     []*session.Session // by slot: the session up, nil while down
	conns    []net.Conn         // by slot: the tunnel connection of sess, for its transport's state
	lastErr  error              // why the last session or attempt ended
	dialled  string             // the address dialled last
}

func newPool(cfg Config, eps []*endpoint) *pool {
	return &pool{max: cfg.MaxServers, min: cfg.MinServers, conns: cfg.Connections, eps: eps}
}

// notify calls changed.
func (p *pool) notify() {
	if p.changed != nil {
		p.changed()
	}
}

// add makes r known (rule 1).
func (p *pool) add(r *remote) {
	p.mu.Lock()
	p.slotsLocked(r)
	p.known = append(p.known, r)
	p.mu.Unlock()
}

// slotsLocked gives r its per-slot state, none up.
func (p *pool) slotsLocked(r *remote) {
	r.sess, r.conns, r.back = make([]*session.Session, p.conns), make([]net.Conn, p.conns), make([]time.Duration, p.conns)
}

// sync makes the servers of ep (resolve = "all") those at addrs (rule 1):
// mk makes the remote of a new address.
func (p *pool) sync(ep *endpoint, addrs []string, mk func(addr string) *remote) {
	p.mu.Lock()
	for _, r := range p.known {
		if r.ep != ep {
			continue
		}
		if slices.Contains(addrs, r.addr) {
			r.gone = false
			continue
		}
		if !r.gone {
			r.gone = true
			p.releaseLocked(r)
		}
	}
	for _, a := range addrs {
		if !slices.ContainsFunc(p.known, func(r *remote) bool { return r.ep == ep && r.addr == a }) {
			r := mk(a)
			p.slotsLocked(r)
			p.known = append(p.known, r)
		}
	}
	forgotten := p.forgetLocked()
	p.mu.Unlock()
	p.forget(forgotten)
	p.fill()
}

// forgetLocked drops the gone servers whose slots have stopped, and
// returns their labels.
func (p *pool) forgetLocked() []string {
	var labels []string
	p.known = slices.DeleteFunc(p.known, func(r *remote) bool {
		if r.gone && r.slots == 0 {
			labels = append(labels, r.label)
			return true
		}
		return false
	})
	return labels
}

// forget reports the servers forgetLocked dropped.
func (p *pool) forget(labels []string) {
	for _, l := range labels {
		if p.forgot != nil {
			p.forgot(l)
		}
	}
}

// fill holds servers up to the limit (rule 2) and starts their slots.
func (p *pool) fill() {
	type start struct {
		r             *remote
		stop, firstUp chan struct{}
	}
	var starts []start
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	held := 0
	for _, r := range p.known {
		if r.held {
			held++
		}
	}
	for p.max == 0 || held < p.max {
		r := p.pickLocked()
		if r == nil {
			break
		}
		r.held = true
		r.stop, r.firstUp, r.upOnce = make(chan struct{}), make(chan struct{}), new(sync.Once)
		r.slots += p.conns
		r.fails = 0
		held++
		starts = append(starts, start{r, r.stop, r.firstUp})
	}
	p.mu.Unlock()
	for _, s := range starts {
		for slot := range p.conns {
			p.start(s.r, slot, s.stop, s.firstUp)
		}
	}
	if len(starts) > 0 {
		p.notify()
	}
}

// pickLocked chooses a server to hold: one not held, not gone and with
// no slot still running, not benched if there is such a one, at random.
func (p *pool) pickLocked() *remote {
	var free, benched []*remote
	for _, r := range p.known {
		switch {
		case r.held || r.gone || r.slots > 0:
		case r.benched:
			benched = append(benched, r)
		default:
			free = append(free, r)
		}
	}
	if len(free) == 0 {
		free = benched
	}
	if len(free) == 0 {
		return nil
	}
	if p.max == 0 {
		return free[0] // all are held: no need to choose
	}
	return free[rand.N(len(free))]
}

// releaseLocked stops r's slots from reconnecting (rule 4).
func (p *pool) releaseLocked(r *remote) {
	if !r.held {
		return
	}
	r.held = false
	close(r.stop)
}

// spareLocked reports whether a known server could take the place of a
// held one (rule 3).
func (p *pool) spareLocked() bool {
	for _, r := range p.known {
		if !r.held && !r.gone && r.slots == 0 {
			return true
		}
	}
	return false
}

// replaceLocked releases r, benched, for another when one is free.
func (p *pool) replaceLocked(r *remote) bool {
	if p.max == 0 || !r.held || !p.spareLocked() {
		return false
	}
	r.benched = true
	p.releaseLocked(r)
	return true
}

// up records the session of r's slot welcomed, over conn, and reports
// whether r is still held (a released server's late session is not
// wanted).
func (p *pool) up(r *remote, slot int, sess *session.Session, conn net.Conn) bool {
	p.mu.Lock()
	held := r.held
	if held {
		r.sess[slot], r.conns[slot] = sess, conn
		r.fails, r.verdict, r.lastErr = 0, nil, nil
		r.served, r.benched, r.draining, r.back[slot] = true, false, false, 0
		r.upOnce.Do(func() { close(r.firstUp) })
	}
	p.mu.Unlock()
	p.notify()
	return held
}

// close stops holding servers: the client stops.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

// resolved records whether ep's name resolved (err nil) or not.
func (p *pool) resolved(ep *endpoint, err error) {
	p.mu.Lock()
	if err == nil {
		delete(p.unresolved, ep)
	} else {
		if p.unresolved == nil {
			p.unresolved = make(map[*endpoint]error)
		}
		p.unresolved[ep] = err
	}
	p.mu.Unlock()
	p.notify()
}

// down records that the session of r's slot ended.
func (p *pool) down(r *remote, slot int) {
	p.mu.Lock()
	r.sess[slot], r.conns[slot] = nil, nil
	p.mu.Unlock()
	p.notify()
}

// dialling records the address a slot of r dials.
func (p *pool) dialling(r *remote, addr string) {
	p.mu.Lock()
	r.dialled = addr
	p.mu.Unlock()
}

// ended records how a slot's session or attempt ended: welcomed says it
// got a session (which now ended with err), else err is why the attempt
// failed. It returns the error to stop the client with (rule 5), nil to
// carry on.
func (p *pool) ended(r *remote, slot int, welcomed bool, err error) error {
	p.mu.Lock()
	r.sess[slot], r.conns[slot] = nil, nil
	r.lastErr = err
	if welcomed {
		r.fails = 0
	} else {
		r.fails++
	}
	if fatal(err) {
		r.verdict = err
	} else if welcomed {
		r.verdict = nil
	}
	var stopErr error
	if err := p.allRefusedLocked(); err != nil {
		stopErr = err
	} else if r.verdict != nil || r.fails >= replaceAfter && !r.liveLocked() {
		p.replaceLocked(r)
	}
	p.mu.Unlock()
	p.notify()
	if stopErr == nil {
		p.fill()
	}
	return stopErr
}

// allRefusedLocked returns the error to stop with when every known server
// refused (rule 5), nil otherwise.
func (p *pool) allRefusedLocked() error {
	var live []*remote
	for _, r := range p.known {
		if !r.gone {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return nil
	}
	for _, r := range live {
		if r.verdict == nil {
			return nil
		}
	}
	if len(live) == 1 {
		return live[0].verdict
	}
	errs := make([]error, len(live))
	for i, r := range live {
		errs[i] = fmt.Errorf("%s: %w", r.label, r.verdict)
	}
	return &refusedError{errs}
}

// refusedError: every server refused the client.
type refusedError struct{ errs []error }

func (e *refusedError) Error() string {
	parts := make([]string, len(e.errs))
	for i, err := range e.errs {
		parts[i] = err.Error()
	}
	return "every server refused: " + strings.Join(parts, "; ")
}

func (e *refusedError) Unwrap() []error { return e.errs }

// drains records that r's server drains, and that the session of slot
// should come back after back (0: it did not say), and replaces r when it
// may (rule 3).
func (p *pool) drains(r *remote, slot int, back time.Duration) {
	p.mu.Lock()
	r.draining, r.back[slot] = true, back
	p.replaceLocked(r)
	p.mu.Unlock()
	p.notify()
	p.fill()
}

// comeBack returns when r's draining server told the session of slot to
// come back after its goodbye (0: not said), once: the attempts after
// that one, refused while the server restarts, wait with backoff.
func (p *pool) comeBack(r *remote, slot int) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	back := r.back[slot]
	r.back[slot] = 0
	return back
}

// served reports whether r had a session up once.
func (p *pool) served(r *remote) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return r.served
}

// slotDone records that a slot of r stopped.
func (p *pool) slotDone(r *remote) {
	p.mu.Lock()
	r.slots--
	forgotten := p.forgetLocked()
	p.mu.Unlock()
	p.forget(forgotten)
	p.notify()
	p.fill()
}

func (r *remote) liveLocked() bool {
	for _, s := range r.sess {
		if s != nil {
			return true
		}
	}
	return false
}

// live returns the sessions up, by server and slot.
func (p *pool) live() []*session.Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	var up []*session.Session
	for _, r := range p.known {
		for _, s := range r.sess {
			if s != nil {
				up = append(up, s)
			}
		}
	}
	return up
}

// ready says whether min_servers servers serve (rule 6), and if not, why.
func (p *pool) ready() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	serving := 0
	var why []string
	for _, r := range p.known {
		switch {
		case r.liveLocked() && !r.draining:
			serving++
		case r.liveLocked():
			why = append(why, r.label+": draining")
		case r.held && r.lastErr != nil:
			why = append(why, r.label+": "+r.lastErr.Error())
		case r.held:
			why = append(why, r.label+": connecting")
		}
	}
	for _, ep := range p.eps {
		if err := p.unresolved[ep]; err != nil {
			why = append(why, ep.entry+": "+err.Error())
		}
	}
	switch {
	case serving >= p.min:
		return true, ""
	case len(p.eps) == 1 && len(p.known) <= 1 && p.min == 1: // one server, as the client always said
		for _, r := range p.known {
			if r.lastErr != nil {
				return false, "no session: " + r.lastErr.Error()
			}
		}
		if len(why) > 0 {
			return false, "no session: " + why[0]
		}
		return false, "no session yet"
	}
	msg := strconv.Itoa(serving) + " of min_servers = " + strconv.Itoa(p.min) + " servers serving"
	if len(why) > 0 {
		msg += ": " + strings.Join(why, "; ")
	}
	return false, msg
}

// ServerState is one server of the client, as Status shows it.
type ServerState struct {
	// Server names it: the entry of the server list, or the address of
	// one of a name's servers (resolve = "all").
	Server string
	// Address is the address dialled last.
	Address string
	// Transport is the transport to it: "kcp+tls", "tcp+tls", ...
	Transport string
	// State says how it is: admin.ServerUp, ServerDraining, ...
	State string
	// Held says the client keeps sessions to it (max_servers may leave
	// some known servers aside).
	Held bool
	// Up counts its sessions up.
	Up int
	// Draining: the server said it drains; its sessions take no new
	// connections and end when their streams have.
	Draining bool
	// LastError is why its last session or attempt ended.
	LastError error

	sessions []*session.Session // up now
	conns    []net.Conn         // the tunnel connection of each of sessions
}

// states describes every known server, then every entry whose name does
// not resolve.
func (p *pool) states() []ServerState {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ServerState, 0, len(p.known)+len(p.unresolved))
	for _, r := range p.known {
		st := ServerState{Server: r.label, Address: r.dialled, Transport: r.t.String(), Held: r.held, Draining: r.draining, LastError: r.lastErr}
		for i, s := range r.sess {
			if s != nil {
				st.sessions, st.conns = append(st.sessions, s), append(st.conns, r.conns[i])
			}
		}
		st.Up = len(st.sessions)
		switch {
		case st.Up > 0 && r.draining:
			st.State = admin.ServerDraining
		case st.Up > 0:
			st.State = admin.ServerUp
		case !r.held:
			st.State = admin.ServerStandby
		case r.verdict != nil:
			st.State = admin.ServerRefused
		case r.lastErr != nil:
			st.State = admin.ServerRetrying
		default:
			st.State = admin.ServerConnecting
		}
		out = append(out, st)
	}
	for _, ep := range p.eps {
		if err := p.unresolved[ep]; err != nil {
			out = append(out, ServerState{Server: ep.entry, Transport: ep.t.String(), State: admin.ServerUnresolved, LastError: err})
		}
	}
	return out
}

// upCount is how many sessions of r are up.
func (p *pool) upCount(r *remote) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range r.sess {
		if s != nil {
			n++
		}
	}
	return n
}
