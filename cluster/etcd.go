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
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

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
	etcdOwner
	prefix string
	ttl    int64 // seconds, of L

	metrics atomic.Pointer[metrics.Registry]

	abandoned atomic.Bool // tests: die as a killed process does

	mu       sync.Mutex
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
		cfg: cfg, member: member, grace: grace, log: log,
		etcdOwner: newEtcdOwner(c),
		prefix:    cfg.Prefix,
		ttl:       seconds(cfg.LeaseTTL),
		members:   make(map[string]memberEntry),
		holds:     make(map[string]map[string]holdEntry),
		mine:      make(map[string]Holding),
		changed:   make(chan struct{}),
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
		// gRPC's own reconnect backoff grows to 120 s: after an outage of
		// 30 s the client dialled etcd again only 10-12 s after it was
		// back (e2e TestClusterEtcdStopped), past lease_ttl, so every
		// server's lease expired and each member's peer links, with the
		// connections forwarded over them, were closed. Dial again at
		// least every lease_ttl/3, as the lease loop keeps alive.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.LeaseTTL / 3},
			MinConnectTimeout: 5 * time.Second,
		})},
		Logger: zap.NewNop(),
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

// Run, Close.

// Close ends Run; a registry whose Run never started closes its etcd
// client here. Idempotent.
func (r *Etcd) Close() error {
	r.end()
	return nil
}

// abandon ends Run as a killed process ends: nothing is released or
// revoked, the leases expire in etcd. For tests.
func (r *Etcd) abandon() {
	r.abandoned.Store(true)
	r.Close()
}

func (r *Etcd) Run(ctx context.Context) error {
	ctx, done, ok := r.start(ctx)
	if !ok {
		return nil // closed before it ran
	}
	defer done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
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
		if err := r.release(ctx, h, r.grace, g); err != nil {
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
