package server

import (
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/clock"
	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/session"
)

// The route table: which client sessions serve which public ports and
// domains. It is the claim policy of the server, under its own lock; the
// rules below only make sense together, and each is pinned by a test in
// table_test.go (table_udp_test.go for UDP ports).
//
//  1. Tokens: a claim is checked against what the client's token allows
//     (its ports, udp_ports and domains: port_not_allowed,
//     domain_not_allowed), the server's limits.max_services, and the
//     request's form (bad_request; a UDP service has no domains or entry).
//     A UDP claim's limits are the server's [server.udp] ones, lowered
//     where it asks for less, never raised. A client removed by a reload,
//     meanwhile, is unknown_token.
//  2. Owners: a route (a public TCP port, a public UDP port, or a domain
//     on an entry point; a TCP and a UDP port of one number are two
//     routes) belongs to one client unless shared. Another client's claim on it is
//     refused (port_in_use, domain_in_use) naming the holder, also while
//     the route is held for the holder's return.
//  3. Sharing: every service on a shared route must say shared; a shared
//     claim on an unshared route, and an unshared claim on a shared one,
//     are refused.
//  4. Replacing: a new session of the same client that claims a route
//     replaces the sessions serving it, and a new session of the same
//     client instance replaces the old one. The victims come back from the
//     claim already out of the table, for the caller to close. A session
//     still in its handshake is not replaced: the claim is refused (with
//     the temporary code limit when it is the same instance's earlier
//     attempt, which its client gave up: the retry replaces it once up).
//     Of two sessions of one instance, only the later accepted may
//     replace the earlier: a handshake that completes after its client
//     gave it up and came back is refused, not let replace the live one.
//  5. Join before leave: the claiming session joins its routes before the
//     victims leave them, so a route taken over never empties: it is never
//     held or released in between.
//  6. Groups: the parallel sessions of one client process (connections =
//     N) serve its routes together, at most session.MaxConnections of
//     them; they replace nobody of their group.
//  7. Any port: a service with remote_port 0 gets a free port of its
//     protocol that its client may claim (the kernel's pick first, then the client's ranges in
//     order, at most maxPortProbes binds), never one that another service
//     of the same claim names. The sessions of a group share one port, even
//     when they claim at once; an update keeps the port.
//  8. Updates: a session's update is its whole new list. Routes kept stay
//     as they are, new ones are joined or bound, dropped ones are left and,
//     when empty, released at once. An update replaces nobody: it is
//     refused instead, as is the update of a session already replaced.
//  9. Holds: a route left empty by a session that dropped is held for
//     reconnect_grace: its listener stays open, connections wait, and the
//     client's return adopts it without a gap; when the grace ends it is
//     released. Nothing is held for a session that said goodbye, drained,
//     or was released by a reload, nor once the table is closing.
//  10. Waking: every change of a route's members wakes the connections
//     waiting on it, which look again.
//  11. Picking: a connection goes to the live member with the fewest open
//     streams, members late on heartbeats last, round robin among equals.
//     With none, it waits while the route is held or a member is in its
//     handshake (at most limits.max_waiting connections per route); a
//     removed route, or the end of the grace, sends the waiters away.
//     A UDP flow picks the same way but never waits (pickFlow): with no
//     live member it takes one in its handshake, whose session its
//     stream waits for (sessionFor: its client may already have the
//     port), with none its datagram is dropped, and a flow keeps the
//     member it picked for its life (udp.go has the flows' own rules).
//  12. Locking: a claim is planned under the table's lock, binds its ports
//     with no lock held (other claims and every pick go on meanwhile), and
//     is committed, or rolled back, under the lock. A key being bound is
//     reserved by its claim: another claim that needs it waits for that
//     claim to end and then sees its outcome, and an any-port search skips
//     it. Nothing else the table does under its lock can block (it
//     closes listeners, which does not).
//  13. Closing: once the table is closing (shutdown), claims are refused
//     (shutting_down) and nothing is held.
//  14. Reloads: the sessions of a client removed or given a new token, and
//     sessions whose claims the client may no longer make, are released
//     (closed by the caller; their routes are not held), and held routes
//     of removed clients go at once.
//
// In a cluster (WithRegistry; cluster.go, forward.go), beside the rules
// above, which hold among this server's sessions:
//
//  15. Registry claims: before it commits, a claim records in the registry
//     every route its client does not serve here yet (Registry.Claim),
//     with no lock held and the keys reserved as for binding (rule 12).
//     The registry decides between this server and the others: a
//     *ConflictError refuses the claim (port_in_use, domain_in_use, naming
//     the holder and its server); an unreachable registry refuses it as
//     temporary (registry_unavailable to a client that said
//     Auth.Unavailable, limit to others). What a claim recorded and did
//     not commit is released.
//  16. Registry releases: when a route's last session of a client leaves,
//     this server's holding goes from the registry, reserved for the
//     client for reconnect_grace when the route is held (rule 9), else
//     at once. Releases are queued under the lock and made by one
//     goroutine with the key reserved; one whose client serves the route
//     here again by then is dropped. Nothing is released once the table
//     is closing: the registry releases a leaving member's holdings with
//     the grace.
//  17. Remote routes: every port (TCP or UDP) and domain another server
//     holds has a route here (a listener, a socket, an entry), with those
//     holdings (remote). Such a route with no session here is
//     remote-only: a claim on it is the registry's to decide, and the
//     claiming session adopts it (its listener, with no gap). A route
//     whose last holding elsewhere went is held for reconnect_grace, as
//     the registry keeps the key for its client, then removed.
//  18. Picking in a cluster: live sessions here first (rule 11), then the
//     holdings elsewhere, round robin, skipping servers that failed the
//     connection. A UDP flow likewise (pickFlow, at its first datagram;
//     forwardudp.go). A connection or flow forwarded here is served by a
//     session here or refused: never forwarded again.
//  19. A route's owner (client, service, shared) changes only under the
//     lock, when a session adopts a remote-only route: read it with owner.
type table struct {
	cfg     tableConfig
	clock   clock.Clock
	log     *slog.Logger
	changed *signal
	// bind opens a public port (0: any), TCP or UDP; serve starts a new
	// port route's accept or read loop, under the lock (so that none
	// starts once close has returned).
	bind  func(udp bool, port int) (socket, error)
	serve func(*route)
	fds   *fdWarner // nil: binds failing for want of descriptors are not logged

	mu       sync.Mutex
	closing  bool
	clients  []*clientEntry
	known    map[*clientEntry]bool   // the same, as a set
	named    map[string]*clientEntry // the same, by name
	tokens   [][]byte                // tokens[i] belongs to clients[i]
	index    *session.Tokens         // the same, indexed for auth
	sessions map[*clientSession]struct{}
	// byClient indexes sessions by client, so that a claim looks at its
	// own client's sessions, not every session (a claim per session of a
	// 10 000-session reconnect storm, under the lock, was quadratic).
	// Changed only by addSessionLocked and removeSessionLocked.
	byClient map[*clientEntry]map[*clientSession]struct{}
	routes   map[string]*route
	reserved map[string]*claimOp // keys a claim in flight is binding
	// resync is notified when a claim releases keys that syncRemote
	// skipped while they were reserved (skipped set): the other servers'
	// routes on them are then followed without waiting for the view to
	// change again.
	resync  signal
	skipped bool

	// In a cluster (cluster.go): the registry, this server's ID, and the
	// releases of holdings waiting for releaser.
	reg      cluster.Registry
	self     string
	releases []release
	relWake  chan struct{} // closed and replaced when releases grows
}

// tableConfig is what the table takes from the server's config; a reload
// changes none of it.
type tableConfig struct {
	grace            time.Duration // ReconnectGrace
	handshakeTimeout time.Duration // how long pick waits for a member in its handshake
	maxWaiting       int
	maxServices      int
	udp              UDP // the limits a UDP service may lower
}

func newTable(cfg tableConfig, clk clock.Clock, log *slog.Logger, changed *signal, bind func(bool, int) (socket, error), serve func(*route)) *table {
	return &table{
		cfg: cfg, clock: clk, log: log, changed: changed, bind: bind, serve: serve,
		sessions: make(map[*clientSession]struct{}),
		byClient: make(map[*clientEntry]map[*clientSession]struct{}),
		routes:   make(map[string]*route),
		reserved: make(map[string]*claimOp),
		relWake:  make(chan struct{}),
	}
}

// setClientsLocked replaces the configured clients (New, reload).
func (t *table) setClientsLocked(clients []*clientEntry, tokens [][]byte) {
	t.clients, t.tokens, t.index = clients, tokens, session.NewTokens(tokens)
	t.known = make(map[*clientEntry]bool, len(clients))
	t.named = make(map[string]*clientEntry, len(clients))
	for _, c := range clients {
		t.known[c] = true
		t.named[c.name] = c
	}
}

// addSessionLocked records cs as up.
func (t *table) addSessionLocked(cs *clientSession) {
	t.sessions[cs] = struct{}{}
	m := t.byClient[cs.client]
	if m == nil {
		m = make(map[*clientSession]struct{})
		t.byClient[cs.client] = m
	}
	m[cs] = struct{}{}
	t.changed.Notify()
}

// removeSessionLocked forgets cs, if it was up.
func (t *table) removeSessionLocked(cs *clientSession) {
	if _, ok := t.sessions[cs]; !ok {
		return
	}
	delete(t.sessions, cs)
	if m := t.byClient[cs.client]; m != nil {
		delete(m, cs)
		if len(m) == 0 {
			delete(t.byClient, cs.client)
		}
	}
	t.changed.Notify()
}

// credentials returns the clients and their tokens, for auth outside the
// lock.
func (t *table) credentials() ([]*clientEntry, *session.Tokens) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.clients, t.index
}

// up records cs, whose Welcome is sent, as serving: pick may give it
// connections. It reports false, and takes cs out of its routes, when a
// reload removed its client meanwhile; closing tells whether shutdown has
// begun (then the caller says goodbye).
func (t *table) up(cs *clientSession, sess *session.Session) (ok, closing bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.known[cs.client] {
		t.leaveLocked(cs, false)
		return false, t.closing
	}
	cs.sess = sess
	t.addSessionLocked(cs)
	for _, r := range cs.routes {
		r.wakeLocked() // connections waiting for this client may go
	}
	return true, t.closing
}

// drain takes cs out of its routes at its client's request: no new
// connections for it, nothing held.
func (t *table) drain(cs *clientSession) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs.draining = true
	t.leaveLocked(cs, false)
}

// down takes cs, whose session ended, out of the table. Its routes are
// held when it dropped (hold), its client is still configured and the
// reload did not release it; it reports whether any were.
func (t *table) down(cs *clientSession, hold bool) (held bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeSessionLocked(cs)
	hold = hold && t.known[cs.client] && !cs.released
	held = hold && len(cs.routes) > 0 && t.cfg.grace > 0 && !t.closing
	t.leaveLocked(cs, hold)
	return held
}

// view calls f with the clients and the sessions up, under the lock: f
// must only read them.
func (t *table) view(f func(clients []*clientEntry, sessions map[*clientSession]struct{})) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f(t.clients, t.sessions)
}

// list returns the sessions up.
func (t *table) list() []*clientSession {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*clientSession, 0, len(t.sessions))
	for cs := range t.sessions {
		out = append(out, cs)
	}
	return out
}

// close begins shutdown: claims are refused from now on, holds end, and
// it returns the public ports for the caller to close.
func (t *table) close() []io.Closer {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closing = true
	var ls []io.Closer
	for _, r := range t.routes {
		if r.hold != nil {
			r.hold.Stop()
		}
		if r.l != nil {
			ls = append(ls, r.l)
		}
		if r.pc != nil {
			ls = append(ls, r.pc)
		}
	}
	return ls
}

// leaveLocked removes cs from every route it serves. A route left empty is
// held for the reconnect grace when hold is set, else removed.
func (t *table) leaveLocked(cs *clientSession, hold bool) {
	for _, r := range cs.routes {
		r.removeMemberLocked(cs)
		held := len(r.members) == 0 && hold && t.cfg.grace > 0 && !t.closing
		t.leftLocked(r, cs.client, held)
		if len(r.members) > 0 {
			continue
		}
		switch {
		case held:
			t.holdLocked(r)
		case len(r.remote) > 0:
			// Served elsewhere in the cluster: keep its listener.
		default:
			t.removeRouteLocked(r)
		}
	}
	if len(cs.routes) > 0 {
		t.changed.Notify()
	}
	cs.routes = nil
}

// leaveRouteLocked removes cs from r, which is released at once when it
// is left empty (cs stopped claiming it on purpose).
func (t *table) leaveRouteLocked(cs *clientSession, r *route) {
	r.removeMemberLocked(cs)
	t.leftLocked(r, cs.client, false)
	t.changed.Notify()
	if len(r.members) == 0 && len(r.remote) == 0 {
		t.removeRouteLocked(r)
	}
}

// addMemberLocked adds m to r and ends a hold.
func (t *table) addMemberLocked(r *route, m *member) {
	r.members = append(r.members, m)
	r.heldUntil = time.Time{}
	r.remoteHeld = false
	if r.hold != nil {
		r.hold.Stop()
		r.hold = nil
	}
	r.wakeLocked()
	t.changed.Notify()
}

// holdLocked keeps an empty route for the reconnect grace.
func (t *table) holdLocked(r *route) {
	t.log.Info("held for the client's return", "route", r.key, "client", r.client.name, "grace", t.cfg.grace.String())
	r.heldUntil = t.clock.Now().Add(t.cfg.grace)
	r.hold = t.clock.AfterFunc(t.cfg.grace, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if len(r.members) == 0 && t.routes[r.key] == r {
			t.log.Info("reconnect grace over; released", "route", r.key, "client", r.client.name)
			if len(r.remote) > 0 { // served elsewhere in the cluster now
				r.heldUntil, r.hold, r.remoteHeld = time.Time{}, nil, false
				r.wakeLocked()
				t.changed.Notify()
				return
			}
			t.removeRouteLocked(r)
		}
	})
	t.changed.Notify()
}

// removeRouteLocked deletes r, closes its listener and sends its waiting
// connections away.
func (t *table) removeRouteLocked(r *route) {
	if t.routes[r.key] != r {
		return
	}
	delete(t.routes, r.key)
	if r.hold != nil {
		r.hold.Stop()
		r.hold = nil
	}
	if r.l != nil {
		r.l.Close()
	}
	if r.pc != nil {
		r.pc.Close() // its flows end (udp.go)
	}
	close(r.done)
	r.wakeLocked()
	t.changed.Notify()
}
