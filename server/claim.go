package server

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/internal/domain"
	"github.com/warren-tunnel/warren/internal/name"
	"github.com/warren-tunnel/warren/session"
)

// maxPortProbes bounds the search for a free port among a client's ranges.
const maxPortProbes = 4096

// Bounds on one claim: the rounds that bind what the plan needs (the next
// round plans again with those listeners in hand; only claims committed
// meanwhile make a plan change), and its waits for other claims. Past
// either it is refused as temporary (limit): the client tries again.
const (
	maxClaimRounds = 4
	maxClaimWaits  = 64
)

// service is a claim being checked: a public port (0: any free port the
// client may claim) and/or domains on an entry point.
type service struct {
	name    string
	port    int
	domains []string
	entry   string
	shared  bool
	udp     bool              // a UDP port (never with domains)
	limits  session.UDPLimits // udp: those granted
	private bool              // reachable by visitors only: a route with no listener
}

// key is the route key of the service's port.
func (svc *service) key() string { return portKeyOf(svc.udp, svc.port) }

// claimOp is one claim in flight: the keys it reserves while it binds.
// done is closed when it releases them.
type claimOp struct {
	done chan struct{}
}

// bound are the listeners a claim has bound and not yet committed.
type bound struct {
	ls  map[string]socket // by route key
	any map[string]int    // any-port service name -> its port in ls
	// claimed are the holdings recorded in the cluster's registry, by
	// route key (cluster.go).
	claimed map[string]cluster.Holding
}

func (b *bound) close() {
	for k, l := range b.ls {
		l.Close()
		delete(b.ls, k)
	}
	clear(b.any)
}

// claim checks the services cs asks for against what its token allows and
// what other sessions hold, binds new public ports, and makes cs a member
// of its routes (one that pick skips until up sets cs.sess). Older
// sessions of the same client that are replaced (rule 4) come back as
// victims, already out of the table; the caller closes them.
//
// For a session already up (its client's Update after a config reload),
// reqs is the whole new list (rule 8).
//
// The table's lock is not held while ports are bound (rule 12): the claim
// plans under the lock, and when the plan needs new listeners it reserves
// their keys, binds them unlocked, and plans again with them in hand;
// the round that needs nothing more commits. A claim that needs a key
// another claim reserved waits for that claim to end, having given up
// what it held, and starts over.
func (t *table) claim(cs *clientSession, reqs []session.Service) (granted []session.Service, victims []*clientSession, rej *session.RejectError) {
	op := &claimOp{done: make(chan struct{})}
	b := &bound{ls: make(map[string]socket), any: make(map[string]int), claimed: make(map[string]cluster.Holding)}
	defer b.close() // what was not committed
	for rounds, waits := 0, 0; ; rounds++ {
		t.mu.Lock()
		p := t.planLocked(cs, reqs, op, b)
		var regClaims []*want // cluster: what the registry must record first
		if p.rej == nil && p.wait == nil && len(p.bindPorts) == 0 && len(p.bindAny) == 0 {
			regClaims = t.claimKeysLocked(cs, p, b)
		}
		switch {
		case p.rej != nil:
			t.giveUpLocked(op, b)
			return nil, nil, p.rej
		case p.wait != nil && waits < maxClaimWaits:
			t.giveUpLocked(op, b)
			<-p.wait
			waits++
			rounds = -1
			continue
		case p.wait == nil && len(p.bindPorts) == 0 && len(p.bindAny) == 0 && len(regClaims) == 0:
			granted, victims = t.commitLocked(cs, p, b)
			t.releaseClosedLocked(op, b) // what the plan bound and did not use
			return granted, victims, nil
		case p.wait != nil || rounds == maxClaimRounds:
			t.giveUpLocked(op, b)
			return nil, nil, session.Rejectf(session.CodeLimit, "the claim of client %q kept changing under other claims; try again", cs.client.name)
		}
		if len(regClaims) > 0 {
			// Cluster (rule 15): record the routes in the registry with no
			// lock held, their keys reserved, then plan again.
			for _, w := range regClaims {
				t.reserved[w.key] = op
			}
			t.mu.Unlock()
			if rej := t.claimRegistry(cs, regClaims, b); rej != nil {
				t.mu.Lock()
				t.giveUpLocked(op, b)
				return nil, nil, rej
			}
			continue
		}
		for _, svc := range p.bindPorts {
			t.reserved[svc.key()] = op
		}
		for _, svc := range p.bindAny {
			if slot := anySlot(cs, svc.name); slot != "" {
				t.reserved[slot] = op
			}
		}
		ranges := portRanges{tcp: slices.Clone(cs.client.ports), udp: slices.Clone(cs.client.udpPorts)}
		t.mu.Unlock()
		if rej := t.bindAll(cs.client, ranges, p, op, b); rej != nil {
			t.mu.Lock()
			t.giveUpLocked(op, b)
			return nil, nil, rej
		}
	}
}

// giveUpLocked ends a claim that commits nothing: it rolls back what the
// claim recorded, closes what it bound, and only then releases its keys.
// A key released while its socket was still open could be bound by
// another claim or by the cluster's sync (syncRemote), and fail: the
// cluster e2e test saw a server left without the listener for a port
// another server held, after a conflicting claim here gave the port up.
// Called with t.mu held; returns with it released.
func (t *table) giveUpLocked(op *claimOp, b *bound) {
	t.rollbackClaimedLocked(b)
	t.releaseClosedLocked(op, b)
}

// releaseClosedLocked closes what b still holds, unlocked, and then
// releases op's keys (giveUpLocked says why in that order). Called with
// t.mu held; returns with it released.
func (t *table) releaseClosedLocked(op *claimOp, b *bound) {
	t.mu.Unlock()
	b.close()
	t.mu.Lock()
	t.releaseLocked(op)
	t.mu.Unlock()
}

// releaseLocked drops op's reservations and wakes the claims waiting for
// them.
func (t *table) releaseLocked(op *claimOp) {
	for k, o := range t.reserved {
		if o == op {
			delete(t.reserved, k)
			if t.skipped {
				t.skipped = false
				t.resync.Notify()
			}
		}
	}
	close(op.done)
	op.done = make(chan struct{})
}

// reservedByOther returns the done channel of another claim that reserved
// key, or nil.
func (t *table) reservedByOther(key string, op *claimOp) <-chan struct{} {
	if o := t.reserved[key]; o != nil && o != op {
		return o.done
	}
	return nil
}

// portRanges are the ports a client may claim, per protocol.
type portRanges struct{ tcp, udp []PortRange }

func (pr portRanges) of(udp bool) []PortRange {
	if udp {
		return pr.udp
	}
	return pr.tcp
}

// anySlot is the reservation key of a group's any-port service, "" for a
// session outside a group: the group's sessions share the port (rule 7),
// so while one binds it the others wait for it.
func anySlot(cs *clientSession, name string) string {
	if cs.group == "" {
		return ""
	}
	return fmt.Sprintf("any:%p/%s/%s", cs.client, cs.group, name) // names are unique across protocols
}

// want is one route a claim asks for: the route it names if there is one.
type want struct {
	svc         *service
	key         string
	port        int    // a port route (TCP, or UDP when svc.udp), or
	entry, name string // a domain route
	r           *route // nil: a new route, from a listener in bound for a port
}

// plan is what a claim would do now: refuse (rej), wait for another claim
// (wait), bind listeners (bindPorts, bindAny), or, when it needs nothing
// more, commit.
type plan struct {
	rej       *session.RejectError
	wait      <-chan struct{}
	svcs      []*service
	wants     []*want
	victims   map[*clientSession]bool
	mine      map[*route]bool
	updating  bool
	named     map[string]bool // route keys of the ports the claim names
	bindPorts []*service      // named ports with neither route nor listener
	bindAny   []*service      // any-port services with neither route nor listener
}

// planLocked works out the claim of reqs by cs against the table as it is,
// with the listeners already in b.
func (t *table) planLocked(cs *clientSession, reqs []session.Service, op *claimOp, b *bound) *plan {
	p := &plan{updating: cs.sess != nil, victims: make(map[*clientSession]bool), mine: make(map[*route]bool), named: make(map[string]bool)}
	refuse := func(rej *session.RejectError) *plan {
		p.rej = rej
		return p
	}
	if t.closing || cs.draining {
		return refuse(session.Rejectf(session.CodeShuttingDown, "server is shutting down"))
	}
	if !t.known[cs.client] {
		return refuse(session.Rejectf(session.CodeUnknownToken, "unknown token")) // removed by a reload meanwhile
	}
	if _, ok := t.sessions[cs]; p.updating && !ok {
		return refuse(session.Rejectf(session.CodeClosed, "this session was replaced or closed"))
	}
	svcs, rej := t.checkServices(cs.client, reqs, cs.private, cs.claimsOther)
	if rej != nil {
		return refuse(rej)
	}
	p.svcs = svcs
	for _, r := range cs.routes {
		p.mine[r] = true
	}
	inGroup := 0
	for other := range t.byClient[cs.client] {
		if !p.updating && other.instance == cs.instance {
			if other.accepted > cs.accepted {
				// This handshake is the stale one: the client gave it up
				// (its handshake timed out on a busy server) and came back
				// on a later connection, which is up or claiming now.
				return refuse(session.Rejectf(session.CodeClosed, "superseded: a later session of this client instance is up"))
			}
			p.victims[other] = true // our own stale session
		} else if cs.group != "" && other.group == cs.group {
			inGroup++
		}
	}
	if !p.updating && inGroup >= session.MaxConnections {
		return refuse(session.Rejectf(session.CodeBadRequest, "client %q already has %d parallel sessions (connections is at most %d)", cs.client.name, inGroup, session.MaxConnections))
	}
	for _, svc := range svcs {
		if svc.private {
			p.wants = append(p.wants, &want{svc: svc, key: privateKey(cs.client.name+"/"+svc.name, svc.udp)})
			continue
		}
		if svc.port > 0 {
			p.named[svc.key()] = true
			p.wants = append(p.wants, &want{svc: svc, key: svc.key(), port: svc.port})
		}
		for _, d := range svc.domains {
			p.wants = append(p.wants, &want{svc: svc, key: domainKey(svc.entry, d), entry: svc.entry, name: d})
		}
	}
	for _, w := range p.wants {
		if wait := t.reservedByOther(w.key, op); wait != nil {
			p.wait = wait
			return p
		}
		r := t.routes[w.key]
		if r == nil {
			if _, ok := b.ls[w.key]; w.port > 0 && !ok {
				p.bindPorts = append(p.bindPorts, w.svc)
			}
			continue
		}
		w.r = r
		if p.mine[r] || t.reg != nil && r.remoteOnlyLocked() { // remote only: the registry's Claim decides
			continue
		}
		if rej := t.mayJoinLocked(cs, w.svc, r, p.victims); rej != nil {
			return refuse(rej)
		}
	}
	if p.updating && len(p.victims) > 0 {
		return refuse(session.Rejectf(session.CodePortInUse, "a claim of the update is served by another session of client %q", cs.client.name))
	}
	// Any-port services: the port the session or its group serves the
	// service on already, unless the request names it for another
	// service; else the listener bound for it; else one to bind.
	for _, svc := range svcs {
		if svc.port != 0 || len(svc.domains) > 0 || svc.private {
			continue
		}
		if r := t.anyPortRouteLocked(cs, svc); r != nil && !p.named[r.key] {
			svc.port = r.port
			p.wants = append(p.wants, &want{svc: svc, key: r.key, r: r})
			continue
		}
		if slot := anySlot(cs, svc.name); slot != "" {
			if wait := t.reservedByOther(slot, op); wait != nil {
				p.wait = wait
				return p
			}
		}
		if port, ok := b.any[svc.name]; ok {
			svc.port = port
			p.wants = append(p.wants, &want{svc: svc, key: svc.key(), port: port})
			continue
		}
		p.bindAny = append(p.bindAny, svc)
	}
	return p
}

// bindAll binds, with no lock held, the listeners p needs into b: named
// ports, then any-port services, which skip the ports the claim names.
func (t *table) bindAll(c *clientEntry, ranges portRanges, p *plan, op *claimOp, b *bound) *session.RejectError {
	for _, svc := range p.bindPorts {
		l, err := t.bind(svc.udp, svc.port)
		if err != nil {
			return t.bindRefusal(svc, svc.port, err)
		}
		b.ls[svc.key()] = l
	}
	for _, svc := range p.bindAny {
		l, port, rej := t.bindAny(c, ranges.of(svc.udp), svc, p.named, op)
		if rej != nil {
			return rej
		}
		b.ls[portKeyOf(svc.udp, port)] = l
		b.any[svc.name] = port
	}
	return nil
}

// bindRefusal is the refusal of a claim whose bind of svc's port (0: any)
// failed with err. Out of file descriptors it is temporary (limit), so the
// client retries once connections have closed, where port_in_use would
// stop it for good; anything else is the port being unavailable.
func (t *table) bindRefusal(svc *service, port int, err error) *session.RejectError {
	what := fmt.Sprintf("remote_port %d", port)
	if port == 0 {
		what = "any free port"
	}
	if outOfFDs(err) {
		if t.fds != nil {
			t.fds.fail("bind", err)
		}
		soft, _ := fdLimit()
		return session.Rejectf(session.CodeLimit, "the server is out of file descriptors (open files limit %d): service %q %s%s: try again later", soft, svc.name, what, protoNote(svc.udp))
	}
	return session.Rejectf(session.CodePortInUse, "port in use: service %q %s%s: %v", svc.name, what, protoNote(svc.udp), err)
}

// portAt is the i-th port of ranges, counted across them in order.
func portAt(ranges []PortRange, i int) int {
	for _, r := range ranges {
		if n := r.Hi - r.Lo + 1; i >= n {
			i -= n
			continue
		}
		return r.Lo + i
	}
	return 0
}

// protoNote marks UDP in messages about ports: " (udp)".
func protoNote(udp bool) string {
	if udp {
		return " (udp)"
	}
	return ""
}

// bindAny opens a public listener on a free port the client may claim,
// other than those in skip. Each port is reserved for op, under the lock,
// before it is bound without the lock, so that claims naming it wait for
// this one, and other any-port searches pass it by.
func (t *table) bindAny(c *clientEntry, ranges []PortRange, svc *service, skip map[string]bool, op *claimOp) (socket, int, *session.RejectError) {
	take := func(p int) bool {
		t.mu.Lock()
		defer t.mu.Unlock()
		key := portKeyOf(svc.udp, p)
		if !portAllowed(c.portsOf(svc.udp), p) || skip[key] || t.routes[key] != nil || t.reservedByOther(key, op) != nil {
			return false
		}
		t.reserved[key] = op
		return true
	}
	drop := func(p int) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if key := portKeyOf(svc.udp, p); t.reserved[key] == op {
			delete(t.reserved, key)
		}
	}
	// First let the kernel pick (fast when the ranges cover its ephemeral
	// range), then probe the ranges in order.
	for range 3 {
		l, err := t.bind(svc.udp, 0)
		if outOfFDs(err) {
			return socket{}, 0, t.bindRefusal(svc, 0, err)
		}
		if err != nil {
			break
		}
		if p := l.port(); p > 0 && take(p) {
			return l, p, nil
		}
		l.Close()
	}
	// From a random place in the ranges, not their first port: after a
	// server restart, the clients that come back first and ask for any
	// port would otherwise take the lowest ports, which other clients,
	// not back yet, held and will ask for again.
	total := 0
	for _, r := range ranges {
		total += r.Hi - r.Lo + 1
	}
	probes := 0
	for i, start := 0, rand.N(max(total, 1)); i < total && probes < maxPortProbes; i++ {
		p := portAt(ranges, (start+i)%total)
		if !take(p) {
			continue
		}
		probes++
		l, err := t.bind(svc.udp, p)
		if err == nil {
			return l, p, nil
		}
		drop(p)
		if outOfFDs(err) {
			return socket{}, 0, t.bindRefusal(svc, 0, err)
		}
	}
	return socket{}, 0, session.Rejectf(session.CodePortInUse, "port in use: service %q asks for any free port, and none of client %q's %s (%s) is free", svc.name, c.name, portsKey(svc.udp), portList(ranges))
}

// commitLocked applies p, whose new port routes have their listeners in
// b: join first, so that routes the victims leave stay non-empty (rule 5).
func (t *table) commitLocked(cs *clientSession, p *plan, b *bound) (granted []session.Service, victims []*clientSession) {
	var fresh []*route
	for _, w := range p.wants {
		if w.r != nil {
			continue
		}
		w.r = newRoute(w.key, w.svc.shared, cs.client)
		w.r.service = w.svc.name
		w.r.private = w.svc.private
		w.r.udp = w.svc.udp // a private UDP service's route has no socket
		w.r.port, w.r.entry, w.r.name = w.port, w.entry, w.name
		if w.port > 0 {
			sock := b.ls[w.key]
			w.r.l, w.r.pc, w.r.udp = sock.l, sock.pc, w.svc.udp
			delete(b.ls, w.key)
		}
		t.routes[w.key] = w.r
		fresh = append(fresh, w.r)
	}
	for _, w := range p.wants {
		if w.svc.udp {
			w.r.setLimits(w.svc.limits) // the latest claim's
		}
	}
	for _, r := range fresh {
		if r.l != nil || r.pc != nil {
			t.serve(r)
		}
	}
	if len(fresh) > 0 {
		t.changed.Notify()
	}
	kept := make(map[*route]bool)
	var routes []*route
	for _, w := range p.wants {
		if kept[w.r] {
			continue
		}
		kept[w.r] = true
		routes = append(routes, w.r)
		if p.mine[w.r] {
			for i, m := range w.r.members {
				if m.cs == cs && m.service != w.svc.name {
					// A new member, not a changed one: connections being
					// served read the old without a lock.
					w.r.members[i] = &member{cs: cs, service: w.svc.name}
				}
			}
			continue
		}
		if t.reg != nil && !slices.Contains(fresh, w.r) && w.r.remoteOnlyLocked() {
			w.r.adoptLocked(cs, w.svc) // (a fresh route is cs's already, and may be served)
		}
		t.addMemberLocked(w.r, &member{cs: cs, service: w.svc.name})
	}
	clear(b.claimed) // committed: the routes hold them now
	for _, r := range cs.routes {
		if !kept[r] {
			t.leaveRouteLocked(cs, r)
		}
	}
	cs.routes = routes
	for v := range p.victims {
		t.removeSessionLocked(v)
		t.leaveLocked(v, false)
		victims = append(victims, v)
	}
	for _, svc := range p.svcs {
		if svc.private {
			continue // cs.private, as claimed
		}
		g := session.Service{Name: svc.name, RemotePort: svc.port, Domains: svc.domains, Entry: svc.entry, Shared: svc.shared}
		if svc.udp {
			lim := svc.limits
			g.Protocol, g.UDP = session.ProtoUDP, &lim
		}
		granted = append(granted, g)
	}
	if p.updating {
		cs.granted = granted // (byte counts of services new to the session start with its next one)
	}
	return granted, victims
}

// anyPortRouteLocked is the port route of svc's protocol that cs, or
// another session of its group, serves as the any-port service svc: an
// update keeps the port, and parallel sessions share it even when they
// claim at once.
func (t *table) anyPortRouteLocked(cs *clientSession, svc *service) *route {
	for _, r := range t.routes {
		if r.port == 0 || r.udp != svc.udp {
			continue
		}
		for _, m := range r.members {
			sameGroup := cs.group != "" && m.cs.client == cs.client && m.cs.group == cs.group
			if (m.cs == cs || sameGroup) && m.service == svc.name {
				return r
			}
		}
	}
	return nil
}

// mayJoinLocked decides whether cs may serve route r as svc: join a shared
// route, join the sessions of its own group (connections = N), adopt its
// own client's route that is held for it or served by older sessions
// (which become victims), or not.
func (t *table) mayJoinLocked(cs *clientSession, svc *service, r *route, isVictim map[*clientSession]bool) *session.RejectError {
	what := fmt.Sprintf("%s (service %q)", describeRoute(r), svc.name)
	code := session.CodePortInUse
	if r.port == 0 && !r.private {
		code = session.CodeDomainInUse
	}
	switch {
	case r.shared && svc.shared:
		return nil
	case r.shared:
		return session.Rejectf(code, "%s is shared by client(s) %s; set shared = true to serve it too", what, holders(r))
	case svc.shared:
		return session.Rejectf(code, "%s is held by client %q and not shared: shared = true needs every service on it to say so", what, r.client.name)
	case r.client != cs.client:
		if len(r.members) == 0 {
			return session.Rejectf(code, "%s is held by client %q for its reconnect grace", what, r.client.name)
		}
		return session.Rejectf(code, "%s is held by client %q", what, r.client.name)
	}
	for _, m := range r.members {
		if cs.group != "" && m.cs.group == cs.group {
			continue // a parallel session of the same process: serve together
		}
		if m.cs.sess == nil { // still in its handshake
			if m.cs.instance == cs.instance {
				// The client's own earlier attempt, which it gave up: a
				// retry replaces it once it is up (or gone).
				return session.Rejectf(session.CodeLimit, "%s is being claimed by an earlier attempt of this client instance, still in its handshake; retry", what)
			}
			return session.Rejectf(code, "%s is being claimed by another session of client %q", what, r.client.name)
		}
		isVictim[m.cs] = true
	}
	return nil
}

// checkServices validates a client's requested services against its token,
// and its private services (names only). A session that claims nothing
// else (visitors, dial) may claim no service.
func (t *table) checkServices(c *clientEntry, reqs, private []session.Service, other bool) ([]*service, *session.RejectError) {
	if len(reqs) == 0 && len(private) == 0 && !other {
		return nil, session.Rejectf(session.CodeBadRequest, "no services claimed")
	}
	if len(reqs)+len(private) > t.cfg.maxServices {
		return nil, session.Rejectf(session.CodeBadRequest, "%d services claimed; the server allows %d per client (limits.max_services)", len(reqs)+len(private), t.cfg.maxServices)
	}
	names := make(map[string]bool)
	var svcs []*service
	for _, r := range private {
		if !name.Valid(r.Name) {
			return nil, session.Rejectf(session.CodeBadRequest, "private service name %q: want "+name.Rule, r.Name)
		}
		if names[r.Name] {
			return nil, session.Rejectf(session.CodeBadRequest, "service %q is claimed twice", r.Name)
		}
		if r.RemotePort != 0 || len(r.Domains) > 0 || r.Entry != "" || r.Shared {
			return nil, session.Rejectf(session.CodeBadRequest, "private service %q: a private service has no port, domains, entry or shared", r.Name)
		}
		names[r.Name] = true
		svc := &service{name: r.Name, private: true}
		switch r.Protocol {
		case "", session.ProtoTCP:
			if r.UDP != nil {
				return nil, session.Rejectf(session.CodeBadRequest, "private service %q: UDP limits on a TCP service", r.Name)
			}
		case session.ProtoUDP:
			svc.udp = true
			svc.limits = t.cfg.udp.lower(r.UDP)
		default:
			return nil, session.Rejectf(session.CodeBadRequest, "private service %q: protocol %q is not \"tcp\" or \"udp\"", r.Name, r.Protocol)
		}
		svcs = append(svcs, svc)
	}
	ports := make(map[string]bool)   // route keys
	domains := make(map[string]bool) // entry:name
	for _, r := range reqs {
		if !name.Valid(r.Name) {
			return nil, session.Rejectf(session.CodeBadRequest, "service name %q: want "+name.Rule, r.Name)
		}
		if names[r.Name] {
			return nil, session.Rejectf(session.CodeBadRequest, "service %q is claimed twice", r.Name)
		}
		names[r.Name] = true
		svc := &service{name: r.Name, port: r.RemotePort, shared: r.Shared, entry: r.Entry}
		switch r.Protocol {
		case "", session.ProtoTCP:
			if r.UDP != nil {
				return nil, session.Rejectf(session.CodeBadRequest, "service %q: UDP limits on a TCP service", r.Name)
			}
		case session.ProtoUDP:
			if len(r.Domains) > 0 || r.Entry != "" {
				return nil, session.Rejectf(session.CodeBadRequest, "service %q: a UDP service has no domains or entry point", r.Name)
			}
			svc.udp = true
			svc.limits = t.cfg.udp.lower(r.UDP)
		default:
			return nil, session.Rejectf(session.CodeBadRequest, "service %q: protocol %q is not \"tcp\" or \"udp\"", r.Name, r.Protocol)
		}
		switch {
		case len(r.Domains) == 0 && r.Entry != "":
			return nil, session.Rejectf(session.CodeBadRequest, "service %q: entry %q without domains", r.Name, r.Entry)
		case len(r.Domains) > 0 && r.Entry == "":
			svc.entry = session.EntryHTTP
		case len(r.Domains) > 0 && r.Entry != session.EntryHTTP && r.Entry != session.EntryHTTPS:
			return nil, session.Rejectf(session.CodeBadRequest, "service %q: entry %q is not \"http\" or \"https\"", r.Name, r.Entry)
		}
		if r.RemotePort < 0 || r.RemotePort > 65535 {
			return nil, session.Rejectf(session.CodeBadRequest, "service %q: remote_port %d is out of range", r.Name, r.RemotePort)
		}
		if r.RemotePort > 0 {
			if ports[svc.key()] {
				return nil, session.Rejectf(session.CodeBadRequest, "remote_port %d%s is claimed by two services", r.RemotePort, protoNote(svc.udp))
			}
			ports[svc.key()] = true
			if !portAllowed(c.portsOf(svc.udp), r.RemotePort) {
				return nil, session.Rejectf(session.CodePortNotAllowed, "port not allowed: service %q remote_port %d%s is not in client %q's %s (%s)", r.Name, r.RemotePort, protoNote(svc.udp), c.name, portsKey(svc.udp), portList(c.portsOf(svc.udp)))
			}
		}
		for _, d := range r.Domains {
			n, err := domain.Normalize(d)
			if err != nil {
				return nil, session.Rejectf(session.CodeBadRequest, "service %q: %v", r.Name, err)
			}
			if domains[svc.entry+":"+n] {
				return nil, session.Rejectf(session.CodeBadRequest, "domain %s is claimed twice", n)
			}
			domains[svc.entry+":"+n] = true
			if !domainAllowed(c.domains, n) {
				return nil, session.Rejectf(session.CodeDomainNotAllowed, "domain not allowed: service %q domain %s is not in client %q's domains (%s)", r.Name, n, c.name, strings.Join(c.domains, ", "))
			}
			svc.domains = append(svc.domains, n)
		}
		if svc.port == 0 && len(svc.domains) == 0 && len(c.portsOf(svc.udp)) == 0 {
			return nil, session.Rejectf(session.CodePortNotAllowed, "port not allowed: service %q asks for any free port, but client %q may claim no %s", r.Name, c.name, portsKey(svc.udp))
		}
		svcs = append(svcs, svc)
	}
	return svcs, nil
}

// portsKey names a client's list of ports of a protocol, as the config
// file does.
func portsKey(udp bool) string {
	if udp {
		return "udp_ports"
	}
	return "ports"
}

func portAllowed(rs []PortRange, p int) bool {
	for _, r := range rs {
		if r.Contains(p) {
			return true
		}
	}
	return false
}

func domainAllowed(allowed []string, claim string) bool {
	for _, a := range allowed {
		if domain.Covers(a, claim) {
			return true
		}
	}
	return false
}

// describe summarizes granted services for the log.
func describe(svcs []session.Service) string {
	parts := make([]string, 0, len(svcs))
	for _, s := range svcs {
		var claims []string
		if s.RemotePort > 0 && s.IsUDP() {
			claims = append(claims, "udp port "+strconv.Itoa(s.RemotePort))
		} else if s.RemotePort > 0 {
			claims = append(claims, "port "+strconv.Itoa(s.RemotePort))
		}
		claims = append(claims, s.Domains...)
		parts = append(parts, s.Name+" ("+strings.Join(claims, ", ")+")")
	}
	return strings.Join(parts, ", ")
}
