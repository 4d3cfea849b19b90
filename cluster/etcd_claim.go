package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claims and releases: one etcd transaction each (the flow is in
// etcd.go's comment).

func (r *Etcd) Claim(ctx context.Context, h Holding) error {
	if h.Server != r.member.ID {
		return fmt.Errorf("cluster: claim for server %q made on %q", h.Server, r.member.ID)
	}
	l, g, err := r.leases()
	if err != nil {
		return err
	}
	ctx, cancel := bounded(ctx, r.cfg.LeaseTTL)
	defer cancel()
	err = r.claim(ctx, h, l, g)
	var ce *ConflictError
	if err != nil && !errors.As(err, &ce) {
		r.countError("claim")
		return unavailable(err)
	}
	return err
}

// leases returns L and G, or ErrUnavailable while the server is not
// registered or etcd did not answer the lease loop's last keepalive (so
// that claims fail at once, not at their deadline).
func (r *Etcd) leases() (l, g clientv3.LeaseID, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.die:
		return 0, 0, fmt.Errorf("%w: the registry is closed", ErrUnavailable)
	default:
	}
	if r.lease == 0 {
		if r.down != nil {
			return 0, 0, unavailable(r.down)
		}
		return 0, 0, fmt.Errorf("%w: %s is not registered", ErrUnavailable, r.member.ID)
	}
	if r.down != nil {
		return 0, 0, unavailable(r.down)
	}
	return r.lease, r.gLease, nil
}

// routeState is a route's keys and the members, read at one revision.
type routeState struct {
	rev      int64
	members  map[string]int64 // id -> lease of its member key
	holdings []stored[Holding]
	reserves []stored[reservation]
}

type stored[T any] struct {
	v              T
	key            string
	server, client string
	lease          int64
}

func (s *routeState) live(server string, lease int64) bool {
	ml, ok := s.members[server]
	return ok && lease != 0 && ml == lease
}

// liveHoldings are the holdings of live members under their leases.
func (s *routeState) liveHoldings() []stored[Holding] {
	var out []stored[Holding]
	for _, h := range s.holdings {
		if s.live(h.server, h.lease) {
			out = append(out, h)
		}
	}
	return out
}

// counting are the reservations that count: those with a lease, of a
// (server, client) with no live holding.
func (s *routeState) counting() []stored[reservation] {
	live := s.liveHoldings()
	var out []stored[reservation]
	for _, res := range s.reserves {
		if res.lease == 0 {
			continue
		}
		if slices.ContainsFunc(live, func(h stored[Holding]) bool { return h.server == res.server && h.client == res.client }) {
			continue
		}
		out = append(out, res)
	}
	return out
}

func (r *Etcd) readRoute(ctx context.Context, key string) (*routeState, error) {
	resp, err := r.client.Txn(ctx).Then(
		clientv3.OpGet(r.routePrefix(key), clientv3.WithPrefix()),
		clientv3.OpGet(r.membersPrefix(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, err
	}
	s := &routeState{rev: resp.Header.Revision, members: make(map[string]int64)}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		s.members[unesc.Replace(strings.TrimPrefix(string(kv.Key), r.membersPrefix()))] = kv.Lease
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		_, kind, server, client, ok := r.parseRouteKey(string(kv.Key))
		if !ok {
			continue
		}
		switch kind {
		case "h":
			var h Holding
			if json.Unmarshal(kv.Value, &h) != nil || h.Key != key || h.Server != server || h.Client != client {
				continue // not ours to read: ignored like a dead one
			}
			s.holdings = append(s.holdings, stored[Holding]{h, string(kv.Key), server, client, kv.Lease})
		case "r":
			var res reservation
			if json.Unmarshal(kv.Value, &res) != nil || res.Client != client {
				continue
			}
			s.reserves = append(s.reserves, stored[reservation]{res, string(kv.Key), server, client, kv.Lease})
		}
	}
	return s, nil
}

// unchanged is the compare of a route transaction: no key under the
// route's prefix was written since rev.
func (r *Etcd) unchanged(key string, rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(r.routePrefix(key)), "<", rev+1).WithPrefix()
}

// maxRaces bounds the read-decide-commit rounds of one claim or release;
// each lost round means another server wrote the same route meanwhile.
const maxRaces = 16

// claim records h under leases l and g; its rules are those of
// clustertest.Store.Claim.
func (r *Etcd) claim(ctx context.Context, h Holding, l, g clientv3.LeaseID) error {
	hk, rk := r.holdKey(h), r.resKey(h)
	for range maxRaces {
		s, err := r.readRoute(ctx, h.Key)
		if err != nil {
			return err
		}
		var ops []clientv3.Op
		own := false
		for _, e := range s.liveHoldings() {
			if e.v.Shared != h.Shared {
				return &ConflictError{Key: h.Key, Holder: e.v, Sharing: true}
			}
			if !h.Shared && e.v.Client != h.Client {
				return &ConflictError{Key: h.Key, Holder: e.v}
			}
			if e.key == hk && e.lease == int64(l) {
				own = true
			}
		}
		ownRes := false
		for _, res := range s.counting() {
			if res.v.Client != h.Client && !(res.v.Shared && h.Shared) {
				return &ConflictError{Key: h.Key, Holder: Holding{Key: h.Key, Shared: res.v.Shared, Client: res.v.Client}, Sharing: res.v.Shared != h.Shared}
			}
			if res.key != rk {
				ops = append(ops, clientv3.OpDelete(res.key)) // the reservation ends
			}
		}
		for _, res := range s.reserves {
			if res.key == rk && res.lease == int64(g) {
				ownRes = true
			}
		}
		if !own {
			v, _ := json.Marshal(h)
			ops = append(ops, clientv3.OpPut(hk, string(v), clientv3.WithLease(l)))
		}
		if !ownRes {
			v, _ := json.Marshal(reservation{Client: h.Client, Shared: h.Shared})
			ops = append(ops, clientv3.OpPut(rk, string(v), clientv3.WithLease(g)))
		}
		if len(ops) == 0 {
			r.remember(hk, h, int64(l), s.rev)
			return nil
		}
		resp, err := r.client.Txn(ctx).If(r.unchanged(h.Key, s.rev)).Then(ops...).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			r.remember(hk, h, int64(l), resp.Header.Revision)
			return nil
		}
	}
	return fmt.Errorf("claim of %s: lost %d races in a row", h.Key, maxRaces)
}

// remember puts this server's holding into mine and the view.
func (r *Etcd) remember(hk string, h Holding, lease, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mine[hk] = h
	if r.putHoldLocked(hk, h, lease, rev) {
		r.notifyLocked()
	}
}

func (r *Etcd) Release(ctx context.Context, h Holding, grace time.Duration) error {
	h.Server = r.member.ID
	_, g, err := r.leases()
	if err != nil {
		return err
	}
	ctx, cancel := bounded(ctx, r.cfg.LeaseTTL)
	defer cancel()
	err = r.release(ctx, h, grace, g)
	if err != nil {
		r.countError("release")
		return unavailable(err)
	}
	return nil
}

// release removes h (of this server, whose lease G is g); its rules are
// those of clustertest.Store.Release.
func (r *Etcd) release(ctx context.Context, h Holding, grace time.Duration, g clientv3.LeaseID) error {
	hk, rk := r.holdKey(h), r.resKey(h)
	var graceLease clientv3.LeaseID
	defer func() {
		if graceLease != 0 { // granted but not used
			r.revoke(graceLease)
		}
	}()
	for range maxRaces {
		s, err := r.readRoute(ctx, h.Key)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(s.holdings, func(e stored[Holding]) bool { return e.key == hk }) {
			// Not held. A reservation under G without its holding (not
			// one a release put under a grace lease) would last as long
			// as this server: end it.
			if g != 0 && slices.ContainsFunc(s.reserves, func(e stored[reservation]) bool { return e.key == rk && e.lease == int64(g) }) {
				if _, err := r.client.Txn(ctx).If(r.unchanged(h.Key, s.rev)).Then(clientv3.OpDelete(rk)).Commit(); err != nil {
					return err
				}
			}
			r.forget(hk, s.rev)
			return nil
		}
		ops := []clientv3.Op{clientv3.OpDelete(hk)}
		last := !slices.ContainsFunc(s.liveHoldings(), func(e stored[Holding]) bool { return e.key != hk })
		putRes := false
		if last {
			for _, res := range s.counting() {
				if res.key != rk {
					ops = append(ops, clientv3.OpDelete(res.key))
				}
			}
			if grace > 0 {
				if graceLease == 0 {
					lr, err := r.client.Grant(ctx, seconds(grace))
					if err != nil {
						return err
					}
					graceLease = lr.ID
				}
				v, _ := json.Marshal(reservation{Client: h.Client, Shared: h.Shared})
				ops = append(ops, clientv3.OpPut(rk, string(v), clientv3.WithLease(graceLease)))
				putRes = true
			}
		}
		if !putRes {
			ops = append(ops, clientv3.OpDelete(rk))
		}
		resp, err := r.client.Txn(ctx).If(r.unchanged(h.Key, s.rev)).Then(ops...).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			if putRes {
				graceLease = 0 // the reservation has it now
			}
			r.forget(hk, resp.Header.Revision)
			return nil
		}
	}
	return fmt.Errorf("release of %s: lost %d races in a row", h.Key, maxRaces)
}

// forget removes this server's holding from mine and the view.
func (r *Etcd) forget(hk string, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.mine, hk)
	if r.deleteHoldLocked(hk, rev) {
		r.notifyLocked()
	}
}

// revoke revokes a lease, best effort (it expires anyway).
func (r *Etcd) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.client.Revoke(ctx, id)
}
