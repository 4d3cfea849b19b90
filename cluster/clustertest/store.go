// Package clustertest is the in-memory twin of the cluster registry: one
// Store stands for the etcd cluster behind several servers, and each
// Registry it makes is one server's view of it. Views are always current
// (a watch with no delay), which keeps tests of the layers above the
// registry fast and deterministic; the etcd registry's own tests run the
// same behaviour against a real etcd.
package clustertest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/clock"
	"github.com/warren-tunnel/warren/cluster"
)

// Store holds the members, holdings and reservations of one cluster.
type Store struct {
	clock clock.Clock

	mu       sync.Mutex
	down     bool
	members  map[string]*registry // running members by ID
	holdings map[string][]cluster.Holding
	reserved map[string]*reservation
	forged   int
	changed  chan struct{}
}

// reservation keeps a key for its client's return after its last holding
// went (Registry.Release with a grace).
type reservation struct {
	client string
	shared bool
	timer  clock.Timer
}

// New returns an empty store whose reservations run on clk (nil: the
// system clock).
func New(clk clock.Clock) *Store {
	return &Store{
		clock:    clock.Or(clk),
		members:  make(map[string]*registry),
		holdings: make(map[string][]cluster.Holding),
		reserved: make(map[string]*reservation),
		changed:  make(chan struct{}),
	}
}

// Registry returns the registry of the server m; grace is what its
// holdings are reserved for when it leaves without releasing them.
func (s *Store) Registry(m cluster.Member, grace time.Duration) cluster.Registry {
	return &registry{store: s, member: m, grace: grace, done: make(chan struct{})}
}

// SetDown makes the store unreachable (true) or reachable again: while
// down, claims and releases fail with ErrUnavailable and every Err says
// so; the views stay as they were.
func (s *Store) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down != down {
		s.down = down
		s.notifyLocked()
	}
}

// Expire makes member id leave as if its lease expired: it is no longer a
// member and its holdings are released with its grace. Its Run goes on
// (a real server would register again once it noticed).
func (s *Store) Expire(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.members[id]; ok {
		s.leaveLocked(r)
	}
}

// Forge writes a holding as someone with write access to the store
// could, not through a member's registry. Registries ignore it, as the
// etcd registry ignores an entry that is not under its server's lease.
func (s *Store) Forge(h cluster.Holding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forged++
	s.notifyLocked()
}

// Keys returns how many keys the store holds: holdings, reservations,
// members and forged entries.
func (s *Store) Keys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.members) + len(s.reserved) + s.forged
	for _, hs := range s.holdings {
		n += len(hs)
	}
	return n
}

func (s *Store) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Store) leaveLocked(r *registry) {
	delete(s.members, r.member.ID)
	var gone []cluster.Holding
	for _, hs := range s.holdings {
		for _, h := range hs {
			if h.Server == r.member.ID {
				gone = append(gone, h)
			}
		}
	}
	for _, h := range gone { // not while ranging over the map it changes
		s.releaseLocked(h, r.grace)
	}
	s.notifyLocked()
}

func (s *Store) releaseLocked(h cluster.Holding, grace time.Duration) {
	hs := slices.DeleteFunc(s.holdings[h.Key], func(e cluster.Holding) bool {
		return e.Server == h.Server && e.Client == h.Client
	})
	if len(hs) > 0 {
		s.holdings[h.Key] = hs
		return
	}
	delete(s.holdings, h.Key)
	if grace <= 0 {
		return
	}
	s.unreserveLocked(h.Key)
	res := &reservation{client: h.Client, shared: h.Shared}
	res.timer = s.clock.AfterFunc(grace, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.reserved[h.Key] == res {
			delete(s.reserved, h.Key)
			s.notifyLocked()
		}
	})
	s.reserved[h.Key] = res
}

func (s *Store) unreserveLocked(key string) {
	if res := s.reserved[key]; res != nil {
		res.timer.Stop()
		delete(s.reserved, key)
	}
}

// registry is one server's view of a Store.
type registry struct {
	store  *Store
	member cluster.Member
	grace  time.Duration

	once sync.Once
	done chan struct{}
}

var _ cluster.Registry = (*registry)(nil)

func (r *registry) unavailableLocked() error {
	if r.store.down {
		return fmt.Errorf("%w: the store is down", cluster.ErrUnavailable)
	}
	if r.store.members[r.member.ID] != r {
		return fmt.Errorf("%w: %s is not registered", cluster.ErrUnavailable, r.member.ID)
	}
	return nil
}

func (r *registry) Claim(ctx context.Context, h cluster.Holding) error {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := r.unavailableLocked(); err != nil {
		return err
	}
	if h.Server != r.member.ID {
		return fmt.Errorf("clustertest: claim for server %q made on %q", h.Server, r.member.ID)
	}
	if res := s.reserved[h.Key]; res != nil && res.client != h.Client && !(res.shared && h.Shared) {
		return &cluster.ConflictError{Key: h.Key, Holder: cluster.Holding{Key: h.Key, Shared: res.shared, Client: res.client}, Sharing: res.shared != h.Shared}
	}
	for _, e := range s.holdings[h.Key] {
		if e.Shared != h.Shared {
			return &cluster.ConflictError{Key: h.Key, Holder: e, Sharing: true}
		}
		if !h.Shared && e.Client != h.Client {
			return &cluster.ConflictError{Key: h.Key, Holder: e}
		}
	}
	s.unreserveLocked(h.Key)
	if !slices.Contains(s.holdings[h.Key], h) {
		s.holdings[h.Key] = append(s.holdings[h.Key], h)
	}
	s.notifyLocked()
	return nil
}

func (r *registry) Release(ctx context.Context, h cluster.Holding, grace time.Duration) error {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := r.unavailableLocked(); err != nil {
		return err
	}
	h.Server = r.member.ID
	if slices.ContainsFunc(s.holdings[h.Key], func(e cluster.Holding) bool { return e.Server == h.Server && e.Client == h.Client }) {
		s.releaseLocked(h, grace)
		s.notifyLocked()
	}
	return nil
}

func (r *registry) Holders(key string) []cluster.Holding {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.holdings[key])
}

func (r *registry) Routes() []cluster.Holding {
	s := r.store
	s.mu.Lock()
	var all []cluster.Holding
	for _, hs := range s.holdings {
		all = append(all, hs...)
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b cluster.Holding) int {
		if c := strings.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		if c := strings.Compare(a.Server, b.Server); c != 0 {
			return c
		}
		return strings.Compare(a.Client, b.Client)
	})
	return all
}

func (r *registry) Members() []cluster.Member {
	s := r.store
	s.mu.Lock()
	ms := make([]cluster.Member, 0, len(s.members))
	for _, m := range s.members {
		ms = append(ms, m.member)
	}
	s.mu.Unlock()
	slices.SortFunc(ms, func(a, b cluster.Member) int { return strings.Compare(a.ID, b.ID) })
	return ms
}

func (r *registry) Changed() <-chan struct{} {
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	return r.store.changed
}

func (r *registry) Err() error {
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	if r.store.down {
		return fmt.Errorf("%w: the store is down", cluster.ErrUnavailable)
	}
	return nil
}

func (r *registry) Run(ctx context.Context) error {
	s := r.store
	s.mu.Lock()
	if other, ok := s.members[r.member.ID]; ok && other != r {
		s.mu.Unlock()
		return fmt.Errorf("cluster: server id %q is already a live member", r.member.ID)
	}
	s.members[r.member.ID] = r
	s.notifyLocked()
	s.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-r.done:
	}
	s.mu.Lock()
	if s.members[r.member.ID] == r {
		s.leaveLocked(r)
	}
	s.mu.Unlock()
	return nil
}

func (r *registry) Close() error {
	r.once.Do(func() { close(r.done) })
	return nil
}
