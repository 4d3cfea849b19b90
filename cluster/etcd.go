package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/warren-tunnel/warren/metrics"
)

// The etcd registry: how the Registry contract maps onto etcd (the key
// layout and its reasons are in docs/cluster.md).
//
// Keys, under Config.Prefix (P):
//
//	P members/<id>                        Member JSON         lease L
//	P routes/<key>/h/<server>/<client>    Holding JSON        lease L
//	P routes/<key>/r/<server>/<client>    reservation JSON    lease G, or a grace lease
//	P clients/<name>                      a [[server.clients]] entry (tenants.go)
//
// L is this server's lease of lease_ttl, kept alive every lease_ttl/3: a
// server that dies leaves the cluster, and its holdings go, within
// lease_ttl. G is its second lease, of lease_ttl + grace, kept alive
// beside L: every holding has a reservation key under G, so when the
// server dies its holdings go with L and the reservations stay grace
// longer, reserving each key for its client (the grace wins over the
// lease, with no clock but etcd's). Release of a key's last holding
// moves its reservation onto a lease of its own, of grace. A reservation
// counts only while no live holding of its (server, client) exists, and
// a successful claim deletes the key's reservations that count.
//
// A holding is live when its server's member key exists and the holding
// is under that member key's lease: an entry written by hand, with no
// lease or another lease, is ignored (it cannot outlive a lease check).
//
// Claims are transactions: read the route's keys and the members at one
// revision, decide as clustertest.Store does, and commit the writes only
// if no key under P routes/<key>/ changed since (a compare on the
// prefix's mod revisions). Of two claims at once one commit wins; the
// other reads again and sees the winner.
//
// One goroutine keeps the leases alive and registers again when L is
// lost (with this server's holdings, claimed again); another keeps the
// view: a snapshot of the prefix, then a watch from its revision, again
// from a snapshot after any watch error. Every call to etcd has a
// deadline.

// Etcd is the Registry kept in etcd.
type Etcd struct {
	cfg    Config
	member Member
	grace  time.Duration
	log    *slog.Logger
	client *clientv3.Client
	prefix string
	ttl    int64 // seconds, of L

	metrics atomic.Pointer[metrics.Registry]

	once      sync.Once
	die       chan struct{}
	abandoned atomic.Bool // tests: die as a killed process does

	mu       sync.Mutex
	running  bool             // Run started: it closes the client
	lease    clientv3.LeaseID // L; 0: not registered
	gLease   clientv3.LeaseID // G
	down     error            // the lease loop's last error (nil: etcd answered)
	watchErr error
	members  map[string]memberEntry
	holds    map[string]map[string]holdEntry // route key -> etcd key -> entry
	mine     map[string]Holding              // this server's holdings by etcd key
	changed  chan struct{}
}

type memberEntry struct {
	m     Member
	lease int64
	rev   int64
}

type holdEntry struct {
	h     Holding
	lease int64
	rev   int64
}

// reservation is the value of a .../r/<server>/<client> key.
type reservation struct {
	Client string `json:"client"`
	Shared bool   `json:"shared"`
}

var _ Registry = (*Etcd)(nil)

// errDuplicate: another live member has this server's ID.
var errDuplicate = errors.New("cluster: duplicate server id")

// NewEtcd returns the registry of the server member (whose ID is cfg.ID)
// in the etcd cluster cfg names; grace is what its holdings stay reserved
// for when it dies. It reads the etcd TLS files now; it does not reach
// etcd before Run.
func NewEtcd(cfg Config, member Member, grace time.Duration, log *slog.Logger) (*Etcd, error) {
	if !cfg.Enabled() {
		return nil, fmt.Errorf("%w: server.cluster.etcd: no endpoints", ErrConfig)
	}
	if member.ID == "" || member.ID != cfg.ID {
		return nil, fmt.Errorf("%w: server.cluster.id: %q (member %q)", ErrConfig, cfg.ID, member.ID)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := newEtcdClient(cfg)
	if err != nil {
		return nil, err
	}
	return &Etcd{
		cfg: cfg, member: member, grace: grace, log: log, client: c,
		prefix:  cfg.Prefix,
		ttl:     seconds(cfg.LeaseTTL),
		die:     make(chan struct{}),
		members: make(map[string]memberEntry),
		holds:   make(map[string]map[string]holdEntry),
		mine:    make(map[string]Holding),
		changed: make(chan struct{}),
	}, nil
}

// newEtcdClient makes an etcd client for cfg's endpoints and TLS. It does
// not connect yet.
func newEtcdClient(cfg Config) (*clientv3.Client, error) {
	tc, err := EtcdTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Etcd,
		TLS:         tc,
		DialTimeout: 5 * time.Second,
		// Dead connections are found by the lease loop's deadlines
		// anyway; these make gRPC notice sooner.
		DialKeepAliveTime:    cfg.LeaseTTL / 3,
		DialKeepAliveTimeout: cfg.LeaseTTL / 3,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client: %w", err)
	}
	return c, nil
}

// EtcdTLSConfig is the TLS config for cfg's etcd endpoints: nil for
// http:// endpoints; for https:// ones, verified with etcd_tls.ca (else
// the system's roots), with etcd_tls.cert and key as the client
// certificate when set.
func EtcdTLSConfig(cfg Config) (*tls.Config, error) {
	t := cfg.EtcdTLS
	https := slices.ContainsFunc(cfg.Etcd, func(e string) bool { return strings.HasPrefix(e, "https://") })
	if !https {
		if t.CA != "" || t.Cert != "" {
			return nil, fmt.Errorf("%w: server.cluster.etcd_tls: set, but no etcd endpoint is https://", ErrConfig)
		}
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("%w: server.cluster.etcd_tls.ca: %v", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: server.cluster.etcd_tls.ca: %s: no PEM certificate", ErrConfig, t.CA)
		}
		tc.RootCAs = pool
	}
	if (t.Cert == "") != (t.Key == "") {
		return nil, fmt.Errorf("%w: server.cluster.etcd_tls: cert and key go together", ErrConfig)
	}
	if t.Cert != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: server.cluster.etcd_tls.cert: %v", ErrConfig, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// seconds rounds d up to whole seconds, at least 1: etcd's lease TTLs.
func seconds(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}

// SetMetrics makes the registry count its errors and export its route
// count in m (nil: none).
func (r *Etcd) SetMetrics(m *metrics.Registry) { r.metrics.Store(m) }

// Keys.

// esc keeps one path element of a key free of '/'.
var esc = strings.NewReplacer("%", "%25", "/", "%2F")
var unesc = strings.NewReplacer("%2F", "/", "%25", "%")

func (r *Etcd) memberKey(id string) string { return r.prefix + "members/" + esc.Replace(id) }
func (r *Etcd) membersPrefix() string      { return r.prefix + "members/" }
func (r *Etcd) routesPrefix() string       { return r.prefix + "routes/" }
func (r *Etcd) routePrefix(key string) string {
	return r.routesPrefix() + esc.Replace(key) + "/"
}
func (r *Etcd) holdKey(h Holding) string {
	return r.routePrefix(h.Key) + "h/" + esc.Replace(h.Server) + "/" + esc.Replace(h.Client)
}
func (r *Etcd) resKey(h Holding) string {
	return r.routePrefix(h.Key) + "r/" + esc.Replace(h.Server) + "/" + esc.Replace(h.Client)
}

// parseRouteKey splits an etcd key under routes/ into the route key, the
// kind ("h" or "r"), server and client.
func (r *Etcd) parseRouteKey(k string) (key, kind, server, client string, ok bool) {
	rest, found := strings.CutPrefix(k, r.routesPrefix())
	if !found {
		return
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || (parts[1] != "h" && parts[1] != "r") {
		return
	}
	return unesc.Replace(parts[0]), parts[1], unesc.Replace(parts[2]), unesc.Replace(parts[3]), true
}

// Errors.

func unavailable(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// countError counts a failed etcd operation op (claim, release, lease,
// watch, register).
func (r *Etcd) countError(op string) { r.metrics.Load().ClusterRegistryError(op) }

// Claim and Release.

func (r *Etcd) Claim(ctx context.Context, h Holding) error {
	if h.Server != r.member.ID {
		return fmt.Errorf("cluster: claim for server %q made on %q", h.Server, r.member.ID)
	}
	l, g, err := r.leases()
	if err != nil {
		return err
	}
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
	if _, _, err := r.leases(); err != nil {
		return err
	}
	err := r.release(ctx, h, grace)
	if err != nil {
		r.countError("release")
		return unavailable(err)
	}
	return nil
}

func (r *Etcd) release(ctx context.Context, h Holding, grace time.Duration) error {
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

// The view.

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

// Run, Close.

// Close ends Run; a registry whose Run never started closes its etcd
// client here. Idempotent.
func (r *Etcd) Close() error {
	r.once.Do(func() {
		close(r.die)
		r.mu.Lock()
		running := r.running
		r.mu.Unlock()
		if !running {
			r.client.Close()
		}
	})
	return nil
}

// abandon ends Run as a killed process ends: nothing is released or
// revoked, the leases expire in etcd. For tests.
func (r *Etcd) abandon() {
	r.abandoned.Store(true)
	r.Close()
}

func (r *Etcd) Run(ctx context.Context) error {
	r.mu.Lock()
	select {
	case <-r.die:
		r.mu.Unlock()
		return nil // closed before it ran
	default:
	}
	r.running = true
	r.mu.Unlock()
	defer r.client.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-r.die:
			cancel()
		case <-ctx.Done():
		}
	}()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		r.watchLoop(ctx)
	}()
	err := r.leaseLoop(ctx)
	cancel()
	<-watchDone
	r.Close()
	if !r.abandoned.Load() {
		r.leave()
	}
	return err
}

// leave releases this server's holdings with the registry's grace and
// revokes its leases, in at most min(lease_ttl, 5 s).
func (r *Etcd) leave() {
	r.mu.Lock()
	l, g := r.lease, r.gLease
	mine := make([]Holding, 0, len(r.mine))
	for _, h := range r.mine {
		mine = append(mine, h)
	}
	r.lease, r.gLease = 0, 0
	r.mu.Unlock()
	if l == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(r.cfg.LeaseTTL, 5*time.Second))
	defer cancel()
	all := true
	for _, h := range mine {
		if err := r.release(ctx, h, r.grace); err != nil {
			r.log.Warn("cluster: leaving: a holding stays until its lease ends", "key", h.Key, "client", h.Client, "err", err)
			all = false
		}
	}
	r.client.Revoke(ctx, l)
	if all { // else G keeps the reservations for the grace
		r.client.Revoke(ctx, g)
	}
}

// leaseLoop registers this server, keeps its leases alive every
// lease_ttl/3, and registers it again when its lease is lost. It returns
// nil when ctx ends, or the error that makes Run fail.
func (r *Etcd) leaseLoop(ctx context.Context) error {
	every := time.Duration(r.ttl) * time.Second / 3
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		t.Reset(every)
		r.mu.Lock()
		l, g := r.lease, r.gLease
		r.mu.Unlock()
		if l == 0 {
			err := r.register(ctx)
			if errors.Is(err, errDuplicate) {
				return err
			}
			if err != nil && ctx.Err() == nil {
				r.countError("register")
				r.setDown(err)
				t.Reset(min(every, time.Second))
			}
			continue
		}
		err := r.keepAlive(ctx, l, g, every)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			r.log.Warn("cluster: this server's lease expired in etcd; registering again", "id", r.member.ID)
			r.mu.Lock()
			r.lease, r.gLease = 0, 0
			r.notifyLocked()
			r.mu.Unlock()
			r.revoke(g) // if only L was lost
			t.Reset(0)
		case err != nil:
			r.countError("lease")
			r.setDown(err)
		default:
			r.setDown(nil)
		}
	}
}

func (r *Etcd) keepAlive(ctx context.Context, l, g clientv3.LeaseID, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, id := range []clientv3.LeaseID{l, g} {
		if _, err := r.client.KeepAliveOnce(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// register grants L and G, writes the member key (refusing a live member
// with the same ID: one whose key outlives lease_ttl), and claims this
// server's holdings again.
func (r *Etcd) register(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*r.cfg.LeaseTTL+5*time.Second)
	defer cancel()
	lr, err := r.client.Grant(ctx, r.ttl)
	if err != nil {
		return err
	}
	gr, err := r.client.Grant(ctx, r.ttl+seconds(r.grace))
	if err != nil {
		r.revoke(lr.ID)
		return err
	}
	l, g := lr.ID, gr.ID
	defer func() {
		if err != nil {
			r.revoke(l)
			r.revoke(g)
		}
	}()
	mk := r.memberKey(r.member.ID)
	mv, _ := json.Marshal(r.member)
	var memberRev int64
	for attempt := 0; ; attempt++ {
		resp, err := r.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(mk), "=", 0)).
			Then(clientv3.OpPut(mk, string(mv), clientv3.WithLease(l))).
			Else(clientv3.OpGet(mk)).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			memberRev = resp.Header.Revision
			break
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if attempt > 0 || len(kvs) == 0 {
			var other Member
			if len(kvs) > 0 {
				json.Unmarshal(kvs[0].Value, &other)
			}
			return fmt.Errorf("%w: server id %q is already a live member of the cluster (peer address %q; its key %s outlived lease_ttl %v): give each server its own server.cluster.id",
				errDuplicate, r.member.ID, other.PeerAddress, mk, r.cfg.LeaseTTL)
		}
		// Maybe this server's previous process, killed less than
		// lease_ttl ago: wait for its lease to end.
		if err := r.waitDeleted(ctx, mk, resp.Header.Revision); err != nil {
			return err
		}
	}
	r.mu.Lock()
	mine := make([]Holding, 0, len(r.mine))
	for _, h := range r.mine {
		mine = append(mine, h)
	}
	r.mu.Unlock()
	for _, h := range mine {
		var ce *ConflictError
		if err := r.claim(ctx, h, l, g); errors.As(err, &ce) {
			r.log.Warn("cluster: a holding was lost while this server was away", "key", h.Key, "client", h.Client, "conflict", ce.Error())
			r.mu.Lock()
			delete(r.mine, r.holdKey(h))
			r.mu.Unlock()
		} else if err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.lease, r.gLease = l, g
	r.members[r.member.ID] = memberEntry{m: r.member, lease: int64(l), rev: memberRev}
	r.down = nil
	r.notifyLocked()
	r.mu.Unlock()
	r.log.Info("cluster: registered", "id", r.member.ID, "holdings", len(mine))
	return nil
}

// waitDeleted waits until key is deleted (after rev) or lease_ttl plus a
// second passes; it returns nil either way, or ctx's error.
func (r *Etcd) waitDeleted(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithTimeout(ctx, r.cfg.LeaseTTL+time.Second)
	defer cancel()
	for wr := range r.client.Watch(wctx, key, clientv3.WithRev(rev+1)) {
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
		if wr.Err() != nil {
			break
		}
	}
	return ctx.Err()
}

// watchLoop keeps the view: a snapshot of the members and routes, then a
// watch from its revision; again from a snapshot after a watch error.
func (r *Etcd) watchLoop(ctx context.Context) {
	backoff := time.NewTimer(0)
	defer backoff.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-backoff.C:
		}
		backoff.Reset(time.Second)
		rev, err := r.snapshot(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.countError("watch")
				r.setWatchErr(err)
			}
			continue
		}
		r.setWatchErr(nil)
		wch := r.client.Watch(clientv3.WithRequireLeader(ctx), r.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				if ctx.Err() == nil {
					r.countError("watch")
					r.setWatchErr(err)
				}
				break
			}
			r.apply(wr.Events)
		}
		// The channel is closed when ctx ends, and (with RequireLeader)
		// when etcd loses its leader: read a snapshot again.
	}
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
