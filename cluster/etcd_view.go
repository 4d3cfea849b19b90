package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The view: members and live holdings in memory, kept by a watch.

func (r *Etcd) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
	m := r.metrics.Load()
	if m == nil {
		return
	}
	n := 0
	for _, hs := range r.holds {
		for _, e := range hs {
			if r.liveLocked(e) {
				n++
			}
		}
	}
	m.SetClusterRoutes(n)
}

func (r *Etcd) liveLocked(e holdEntry) bool {
	m, ok := r.members[e.h.Server]
	return ok && e.lease != 0 && m.lease == e.lease
}

// putHoldLocked records a holding at rev unless the view has a later
// write of that key; it reports whether the view changed.
func (r *Etcd) putHoldLocked(ek string, h Holding, lease, rev int64) bool {
	hs := r.holds[h.Key]
	if old, ok := hs[ek]; ok && old.rev >= rev {
		return false
	}
	if hs == nil {
		hs = make(map[string]holdEntry)
		r.holds[h.Key] = hs
	}
	hs[ek] = holdEntry{h: h, lease: lease, rev: rev}
	return true
}

func (r *Etcd) deleteHoldLocked(ek string, rev int64) bool {
	key, _, _, _, ok := r.parseRouteKey(ek)
	if !ok {
		return false
	}
	hs := r.holds[key]
	if old, ok := hs[ek]; !ok || old.rev > rev {
		return false
	}
	delete(hs, ek)
	if len(hs) == 0 {
		delete(r.holds, key)
	}
	return true
}

func (r *Etcd) Holders(key string) []Holding {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Holding
	for _, e := range r.holds[key] {
		if r.liveLocked(e) {
			out = append(out, e.h)
		}
	}
	sortHoldings(out)
	return out
}

func (r *Etcd) Routes() []Holding {
	r.mu.Lock()
	var out []Holding
	for _, hs := range r.holds {
		for _, e := range hs {
			if r.liveLocked(e) {
				out = append(out, e.h)
			}
		}
	}
	r.mu.Unlock()
	sortHoldings(out)
	return out
}

// sortHoldings sorts by key, then server, then client.
func sortHoldings(hs []Holding) {
	slices.SortFunc(hs, func(a, b Holding) int {
		if c := strings.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		if c := strings.Compare(a.Server, b.Server); c != 0 {
			return c
		}
		return strings.Compare(a.Client, b.Client)
	})
}

func (r *Etcd) Members() []Member {
	r.mu.Lock()
	ms := make([]Member, 0, len(r.members))
	for _, e := range r.members {
		ms = append(ms, e.m)
	}
	r.mu.Unlock()
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return ms
}

func (r *Etcd) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

func (r *Etcd) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.down != nil:
		return unavailable(r.down)
	case r.lease == 0:
		return fmt.Errorf("%w: %s is not registered yet", ErrUnavailable, r.member.ID)
	case r.watchErr != nil:
		return unavailable(fmt.Errorf("watching %s: %v", r.prefix, r.watchErr))
	}
	return nil
}

// setDown records the lease loop's outcome; it notifies on a change.
func (r *Etcd) setDown(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if (r.down == nil) != (err == nil) {
		if err != nil {
			r.log.Warn("cluster: etcd unreachable; claims are refused for now", "err", err)
		} else {
			r.log.Info("cluster: etcd reachable again")
		}
		r.down = err
		r.notifyLocked()
	}
	r.down = err
}

func (r *Etcd) setWatchErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if (r.watchErr == nil) != (err == nil) {
		r.watchErr = err
		r.notifyLocked()
	}
	r.watchErr = err
}

// watchLoop keeps the view: a snapshot of the members and routes, then a
// watch from its revision; again from a snapshot after a watch error.
func (r *Etcd) watchLoop(ctx context.Context) {
	watchPrefix(ctx, r.client, r.prefix, r.snapshot, r.apply, func(err error) {
		if err != nil {
			r.countError("watch")
		}
		r.setWatchErr(err)
	})
}

// snapshot replaces the view by the members and routes in etcd now, and
// returns the revision it was read at.
func (r *Etcd) snapshot(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.LeaseTTL)
	defer cancel()
	resp, err := r.client.Txn(ctx).Then(
		clientv3.OpGet(r.membersPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(r.routesPrefix(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	r.mu.Lock()
	defer r.mu.Unlock()
	members := make(map[string]memberEntry)
	holds := make(map[string]map[string]holdEntry)
	// What this server wrote after the snapshot was read stays; the watch
	// brings anything later.
	for id, m := range r.members {
		if m.rev > rev {
			members[id] = m
		}
	}
	for key, hs := range r.holds {
		for ek, e := range hs {
			if e.rev > rev {
				if holds[key] == nil {
					holds[key] = make(map[string]holdEntry)
				}
				holds[key][ek] = e
			}
		}
	}
	r.members, r.holds = members, holds
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		r.putMemberLocked(string(kv.Key), kv.Value, kv.Lease, kv.ModRevision)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		r.putRouteLocked(string(kv.Key), kv.Value, kv.Lease, kv.ModRevision)
	}
	r.notifyLocked()
	return rev, nil
}

func (r *Etcd) apply(evs []*clientv3.Event) {
	if len(evs) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		switch {
		case ev.Type == clientv3.EventTypePut && strings.HasPrefix(k, r.membersPrefix()):
			r.putMemberLocked(k, ev.Kv.Value, ev.Kv.Lease, ev.Kv.ModRevision)
		case ev.Type == clientv3.EventTypePut:
			r.putRouteLocked(k, ev.Kv.Value, ev.Kv.Lease, ev.Kv.ModRevision)
		case strings.HasPrefix(k, r.membersPrefix()):
			id := unesc.Replace(strings.TrimPrefix(k, r.membersPrefix()))
			if m, ok := r.members[id]; ok && m.rev <= ev.Kv.ModRevision {
				delete(r.members, id)
			}
		default:
			r.deleteHoldLocked(k, ev.Kv.ModRevision)
		}
	}
	r.notifyLocked()
}

func (r *Etcd) putMemberLocked(k string, v []byte, lease, rev int64) {
	id := unesc.Replace(strings.TrimPrefix(k, r.membersPrefix()))
	var m Member
	if json.Unmarshal(v, &m) != nil || m.ID != id {
		return // not a member key warren wrote: ignored
	}
	if old, ok := r.members[id]; ok && old.rev > rev {
		return
	}
	r.members[id] = memberEntry{m: m, lease: lease, rev: rev}
}

func (r *Etcd) putRouteLocked(k string, v []byte, lease, rev int64) {
	key, kind, server, client, ok := r.parseRouteKey(k)
	if !ok || kind != "h" {
		return
	}
	var h Holding
	if json.Unmarshal(v, &h) != nil || h.Key != key || h.Server != server || h.Client != client {
		return
	}
	r.putHoldLocked(k, h, lease, rev)
}
