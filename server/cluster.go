package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/session"
)

// The route table in a cluster (rules 15-19 of table.go): the registry
// records which server holds which route for which client; the table
// claims there what it grants, releases what its sessions leave, and
// follows the view of the other servers' holdings.

// registryTimeout bounds one registry call of a claim or a release.
const registryTimeout = 5 * time.Second

// release is a holding to take out of the registry: the table queues it
// under its lock and releaser makes the call with no lock held.
type release struct {
	h     cluster.Holding
	grace time.Duration
}

// leftLocked records that client's member left r: when no member of that
// client is left on r, this server's holding of it goes from the
// registry, reserved for the client's return for the grace when the
// route is held.
func (t *table) leftLocked(r *route, c *clientEntry, held bool) {
	if t.reg == nil || r.private || t.closing || hasClientLocked(r, c.name) {
		return // closing: the registry releases this member's holdings with the grace when it leaves
	}
	grace := time.Duration(0)
	if held {
		grace = t.cfg.grace
	}
	t.queueReleaseLocked(cluster.Holding{Key: r.key, Shared: r.shared, Client: c.name, Server: t.self}, grace)
}

func (t *table) queueReleaseLocked(h cluster.Holding, grace time.Duration) {
	t.releases = append(t.releases, release{h: h, grace: grace})
	close(t.relWake)
	t.relWake = make(chan struct{})
}

// hasClientLocked reports whether a session of client serves r here.
func hasClientLocked(r *route, client string) bool {
	return slices.ContainsFunc(r.members, func(m *member) bool { return m.cs.client.name == client })
}

// releaser makes the queued releases until stop is closed. A release
// whose client serves the route here again by then is dropped; while it
// runs, its key is reserved as a claim's is (rule 12), so that a claim
// of the same holding waits for it and then claims it again. A release
// the registry cannot take now is tried again every second: meanwhile
// the holding goes anyway when this server's lease expires.
func (t *table) releaser(stop <-chan struct{}) {
	for {
		t.mu.Lock()
		wake := t.relWake
		todo := t.releases
		t.releases = nil
		t.mu.Unlock()
		for len(todo) > 0 {
			if t.releaseOne(todo[0]) {
				todo = todo[1:]
				continue
			}
			tm := t.clock.NewTimer(time.Second)
			select {
			case <-stop:
				tm.Stop()
				return
			case <-tm.C():
			}
		}
		select {
		case <-stop:
			return
		case <-wake:
		}
	}
}

// releaseOne makes one release; false when the registry failed it.
func (t *table) releaseOne(rel release) bool {
	op := &claimOp{done: make(chan struct{})}
	t.mu.Lock()
	for {
		if r := t.routes[rel.h.Key]; r != nil && hasClientLocked(r, rel.h.Client) {
			t.mu.Unlock()
			return true
		}
		o := t.reserved[rel.h.Key]
		if o == nil {
			break
		}
		wait := o.done
		t.mu.Unlock()
		<-wait
		t.mu.Lock()
	}
	t.reserved[rel.h.Key] = op
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), registryTimeout)
	err := t.reg.Release(ctx, rel.h, rel.grace)
	cancel()
	t.mu.Lock()
	t.releaseLocked(op)
	t.mu.Unlock()
	if err != nil {
		t.log.Warn("cluster: releasing a route failed; trying again", "route", rel.h.Key, "client", rel.h.Client, "err", err)
		return false
	}
	return true
}

// claimKeysLocked lists the route keys of p that cs's client must claim
// in the registry: those no session of its client serves here yet, and
// that this claim has not claimed already.
func (t *table) claimKeysLocked(cs *clientSession, p *plan, b *bound) []*want {
	if t.reg == nil {
		return nil
	}
	var out []*want
	for _, w := range p.wants {
		if _, ok := b.claimed[w.key]; ok || w.svc.private {
			continue
		}
		if w.r != nil && hasClientLocked(w.r, cs.client.name) {
			continue
		}
		out = append(out, w)
	}
	return out
}

// claimRegistry claims ws in the registry for cs's client, with no lock
// held (their keys are reserved by the claim). What it claimed is in
// b.claimed, which the claim releases when it does not commit.
func (t *table) claimRegistry(cs *clientSession, ws []*want, b *bound) *session.RejectError {
	for _, w := range ws {
		ctx, cancel := context.WithTimeout(context.Background(), registryTimeout)
		h := cluster.Holding{Key: w.key, Shared: w.svc.shared, Client: cs.client.name, Server: t.self}
		err := t.reg.Claim(ctx, h)
		cancel()
		if err != nil {
			return t.registryReject(cs, w, err)
		}
		b.claimed[w.key] = h
	}
	return nil
}

// registryReject is the refusal of a claim the registry failed.
func (t *table) registryReject(cs *clientSession, w *want, err error) *session.RejectError {
	what := fmt.Sprintf("%s (service %q)", describeKey(w.key), w.svc.name)
	code := session.CodePortInUse
	if w.port == 0 && w.name != "" {
		code = session.CodeDomainInUse
	}
	var ce *cluster.ConflictError
	switch {
	case errors.As(err, &ce) && ce.Sharing:
		return session.Rejectf(code, "%s: shared = %v by client %q in the cluster; every service on it must agree", what, ce.Holder.Shared, ce.Holder.Client)
	case errors.As(err, &ce) && ce.Holder.Server == "":
		return session.Rejectf(code, "%s is held by client %q for its reconnect grace (cluster)", what, ce.Holder.Client)
	case errors.As(err, &ce):
		return session.Rejectf(code, "%s is held by client %q on server %s", what, ce.Holder.Client, ce.Holder.Server)
	case errors.Is(err, cluster.ErrUnavailable) && cs.unavailable:
		return session.Rejectf(session.CodeUnavailable, "%s: the cluster registry is unavailable; try again (%v)", what, err)
	case errors.Is(err, cluster.ErrUnavailable):
		return session.Rejectf(session.CodeLimit, "%s: the cluster registry is unavailable; try again (%v)", what, err)
	}
	return session.Rejectf(session.CodeLimit, "%s: cluster registry: %v", what, err)
}

// rollbackClaimedLocked releases what a claim claimed in the registry and
// did not commit.
func (t *table) rollbackClaimedLocked(b *bound) {
	for k, h := range b.claimed {
		t.queueReleaseLocked(h, 0)
		delete(b.claimed, k)
	}
}

// describeKey names a route key for messages, as describeRoute does.
func describeKey(key string) string {
	kind, rest, _ := strings.Cut(key, ":")
	switch kind {
	case "port":
		return "port " + rest
	case "udp":
		return "udp port " + rest
	}
	return "domain " + rest + " (" + kind + ")"
}

// remoteOnlyLocked reports whether r is here only for the other servers'
// holdings: no session here serves it or is held for.
func (r *route) remoteOnlyLocked() bool {
	return len(r.members) == 0 && (r.heldUntil.IsZero() || r.remoteHeld)
}

// owner returns r's service name and client name: a cluster's route
// changes owner when a session here adopts it (adoptLocked).
func (t *table) owner(r *route) (service, client string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return r.service, r.client.name
}

// adoptLocked makes a remote-only route cs's as svc, before cs joins it.
func (r *route) adoptLocked(cs *clientSession, svc *service) {
	r.client, r.shared, r.service = cs.client, svc.shared, svc.name
	r.remoteHeld = false
}

// syncRemote makes the table follow the registry's view: every route
// another server holds gets a route here (a listener for a port, a
// socket for a UDP port), with its holdings; a route here only for
// them goes when they do (after the reconnect grace, as the registry
// keeps the key for its client meanwhile).
func (t *table) syncRemote(view []cluster.Holding) {
	remote := make(map[string][]cluster.Holding)
	for _, h := range view {
		if h.Server != t.self && !strings.HasPrefix(h.Key, "private:") {
			remote[h.Key] = append(remote[h.Key], h)
		}
	}
	op := &claimOp{done: make(chan struct{})}
	var ports []string
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return
	}
	for key, r := range t.routes {
		if r.private {
			continue
		}
		hs := remote[key]
		if !slices.Equal(r.remote, hs) {
			r.remote = hs
			r.wakeLocked()
			t.changed.Notify()
		}
		if len(r.members) > 0 {
			continue
		}
		if len(hs) > 0 && r.remoteOnlyLocked() { // the owner is the registry's
			r.client, r.shared = t.clientNamedLocked(hs[0].Client), hs[0].Shared
		}
		switch {
		case len(hs) > 0 && r.remoteHeld: // its client is back, elsewhere
			r.hold.Stop()
			r.heldUntil, r.hold, r.remoteHeld = time.Time{}, nil, false
			r.wakeLocked()
		case len(hs) == 0 && r.heldUntil.IsZero() && t.reserved[key] == nil:
			t.holdRemoteLocked(r)
		}
	}
	for key, hs := range remote {
		if t.routes[key] == nil && t.reserved[key] != nil {
			t.skipped = true // a local claim in flight: again once it is done (resync)
			continue
		}
		if t.routes[key] != nil {
			continue
		}
		kind, rest, _ := strings.Cut(key, ":")
		if kind == "port" || kind == "udp" {
			t.reserved[key] = op
			ports = append(ports, key)
			continue
		}
		if kind != session.EntryHTTP && kind != session.EntryHTTPS {
			continue
		}
		r := t.remoteRouteLocked(key, hs)
		r.entry, r.name = kind, rest
		t.routes[key] = r
		t.changed.Notify()
	}
	t.mu.Unlock()
	bound := make(map[string]socket)
	for _, key := range ports {
		kind, rest, _ := strings.Cut(key, ":")
		port, _ := strconv.Atoi(rest)
		sock, err := t.bind(kind == "udp", port)
		if err != nil {
			t.log.Warn("cluster: cannot listen on a port another server holds; its connections do not reach this server", "route", key, "err", err)
			continue
		}
		bound[key] = sock
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, sock := range bound {
		if t.closing || t.routes[key] != nil || len(remote[key]) == 0 {
			sock.Close()
			continue
		}
		r := t.remoteRouteLocked(key, remote[key])
		r.port, r.l, r.pc, r.udp = sock.port(), sock.l, sock.pc, sock.pc != nil
		if r.udp { // the flows read here keep this server's [server.udp]
			r.setLimits(t.cfg.udp.lower(nil))
		}
		t.routes[key] = r
		t.serve(r)
		t.changed.Notify()
	}
	t.releaseLocked(op)
}

// remoteRouteLocked is a new route for the holdings hs of other servers.
func (t *table) remoteRouteLocked(key string, hs []cluster.Holding) *route {
	r := newRoute(key, hs[0].Shared, t.clientNamedLocked(hs[0].Client))
	r.service = "cluster"
	r.remote = hs
	return r
}

// clientNamedLocked is the configured client name, or a stand-in for a
// client this server does not know (another server's tenant): routes
// name their client in messages.
func (t *table) clientNamedLocked(name string) *clientEntry {
	if e := t.named[name]; e != nil {
		return e
	}
	return &clientEntry{name: name}
}

// holdRemoteLocked keeps a route whose last holding elsewhere went for
// the reconnect grace, as the registry keeps its key for its client:
// connections wait for the client's return on any server. Without a
// grace it goes at once.
func (t *table) holdRemoteLocked(r *route) {
	if t.cfg.grace <= 0 || t.closing {
		t.removeRouteLocked(r)
		return
	}
	r.remoteHeld = true
	r.heldUntil = t.clock.Now().Add(t.cfg.grace)
	r.hold = t.clock.AfterFunc(t.cfg.grace, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.routes[r.key] == r && len(r.members) == 0 && len(r.remote) == 0 && r.remoteHeld {
			t.removeRouteLocked(r)
		}
	})
	t.changed.Notify()
}

// servedHere returns the route of key when a session here serves it,
// live or still in its handshake (its claim is in the registry before
// the session is up; pick waits for it then): what a forwarded
// connection needs, for there is no second hop. Nil otherwise.
func (t *table) servedHere(key string) *route {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.routes[key]; r != nil && len(r.members) > 0 {
		return r
	}
	return nil
}
