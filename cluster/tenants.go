package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/warren-tunnel/warren/metrics"
)

// Tenant is a [[server.clients]] entry kept in the registry, under
// <prefix>clients/<name> as JSON (clients_from_registry). Its fields are
// server.Client's, with port ranges as the config file writes them
// ("2222", "8000-8100"). Reading the prefix gives the tokens: docs/
// cluster.md shows etcd roles that keep it from whoever needs no more
// than the routes.
type Tenant struct {
	Name     string   `json:"name"`
	Token    string   `json:"token"`
	Ports    []string `json:"ports,omitempty"`
	UDPPorts []string `json:"udp_ports,omitempty"`
	Domains  []string `json:"domains,omitempty"`
	Dial     bool     `json:"dial,omitempty"`
	Visit    []string `json:"visit,omitempty"`
}

// ErrTenant is wrapped by the errors of entries under clients/ that are
// not a Tenant.
var ErrTenant = errors.New("bad registry client")

// TenantsPrefix is where cfg keeps its tenants.
func TenantsPrefix(cfg Config) string { return cfg.Prefix + "clients/" }

// parseTenant decodes the entry at key k (under prefix p).
func parseTenant(p, k string, v []byte) (Tenant, error) {
	var t Tenant
	name := strings.TrimPrefix(k, p)
	if err := json.Unmarshal(v, &t); err != nil {
		return t, fmt.Errorf("%w: %s: %v", ErrTenant, k, err)
	}
	if t.Name != name {
		return t, fmt.Errorf("%w: %s: its name is %q, not the key's %q", ErrTenant, k, t.Name, name)
	}
	return t, nil
}

// Tenants reads and writes the tenants of a cluster in etcd, and (Run)
// keeps a current list of them.
type Tenants struct {
	cfg Config
	etcdOwner
	prefix  string
	log     *slog.Logger
	metrics atomic.Pointer[metrics.Registry]

	mu      sync.Mutex
	list    map[string]Tenant
	bad     map[string]error // entries that are not Tenants, by key
	loaded  bool
	err     error
	changed chan struct{}
}

// NewTenants returns the tenants of cfg's cluster. It reads the etcd TLS
// files now and reaches etcd only when used.
func NewTenants(cfg Config, log *slog.Logger) (*Tenants, error) {
	if !cfg.Enabled() {
		return nil, fmt.Errorf("%w: server.cluster.etcd: no endpoints", ErrConfig)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := newEtcdClient(cfg)
	if err != nil {
		return nil, err
	}
	return &Tenants{
		cfg: cfg, etcdOwner: newEtcdOwner(c), prefix: TenantsPrefix(cfg), log: log,
		list: make(map[string]Tenant), bad: make(map[string]error),
		changed: make(chan struct{}),
	}, nil
}

func (t *Tenants) key(name string) string { return t.prefix + name }

func validTenantName(name string) error {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return fmt.Errorf("%w: name %q: not empty, no '/' or white space", ErrTenant, name)
	}
	return nil
}

// Put writes tenant c (replacing one of the same name). The caller
// validated it as a [[server.clients]] entry.
func (t *Tenants) Put(ctx context.Context, c Tenant) error {
	ctx, cancel := bounded(ctx, t.cfg.LeaseTTL)
	defer cancel()
	if err := validTenantName(c.Name); err != nil {
		return err
	}
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := t.client.Put(ctx, t.key(c.Name), string(v)); err != nil {
		return unavailable(err)
	}
	return nil
}

// Delete removes tenant name; it reports whether there was one.
func (t *Tenants) Delete(ctx context.Context, name string) (bool, error) {
	ctx, cancel := bounded(ctx, t.cfg.LeaseTTL)
	defer cancel()
	if err := validTenantName(name); err != nil {
		return false, err
	}
	resp, err := t.client.Delete(ctx, t.key(name))
	if err != nil {
		return false, unavailable(err)
	}
	return resp.Deleted > 0, nil
}

// List reads the tenants from etcd, sorted by name, with the errors of
// entries that are not tenants.
func (t *Tenants) List(ctx context.Context) ([]Tenant, []error, error) {
	ctx, cancel := bounded(ctx, t.cfg.LeaseTTL)
	defer cancel()
	resp, err := t.client.Get(ctx, t.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, unavailable(err)
	}
	var out []Tenant
	var bad []error
	for _, kv := range resp.Kvs {
		c, err := parseTenant(t.prefix, string(kv.Key), kv.Value)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Tenant) int { return strings.Compare(a.Name, b.Name) })
	return out, bad, nil
}

// Current returns the tenants as Run last saw them, sorted by name, the
// errors of entries that are not tenants, and whether Run has read them
// at all yet.
func (t *Tenants) Current() (list []Tenant, bad []error, loaded bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.list {
		list = append(list, c)
	}
	slices.SortFunc(list, func(a, b Tenant) int { return strings.Compare(a.Name, b.Name) })
	for _, err := range t.bad {
		bad = append(bad, err)
	}
	slices.SortFunc(bad, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return list, bad, t.loaded
}

// Changed is closed at the next change of Current (or of Err).
func (t *Tenants) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// Err says why the list may be stale (etcd unreachable), nil when the
// watch is current.
func (t *Tenants) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

func (t *Tenants) notifyLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// Close ends Run, which closes the etcd client as it returns; when Run
// never started, Close closes it. Idempotent.
func (t *Tenants) Close() error {
	t.end()
	return nil
}

// Run keeps Current: a snapshot of the prefix, then a watch from its
// revision; again from a snapshot after a watch error. It returns nil
// when ctx ends or Close is called, with its goroutines ended.
func (t *Tenants) Run(ctx context.Context) error {
	ctx, done, ok := t.start(ctx)
	if !ok {
		return nil
	}
	defer done()
	watchPrefix(ctx, t.client, t.prefix, t.snapshot, t.apply, func(err error) { t.setErr(unavailable(err)) })
	return nil
}

// SetMetrics makes Run count its errors in m (op "clients").
func (t *Tenants) SetMetrics(m *metrics.Registry) { t.metrics.Store(m) }

func (t *Tenants) setErr(err error) {
	if err != nil {
		t.metrics.Load().ClusterRegistryError("clients")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if (t.err == nil) != (err == nil) {
		t.notifyLocked()
		if err != nil {
			t.log.Warn("cluster: registry clients: etcd unreachable; the last known ones stay", "err", err)
		}
	}
	t.err = err
}

func (t *Tenants) snapshot(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.LeaseTTL)
	defer cancel()
	resp, err := t.client.Get(ctx, t.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.list, t.bad = make(map[string]Tenant), make(map[string]error)
	for _, kv := range resp.Kvs {
		t.putLocked(string(kv.Key), kv.Value)
	}
	t.loaded = true
	t.notifyLocked()
	return resp.Header.Revision, nil
}

func (t *Tenants) apply(evs []*clientv3.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		if ev.Type == clientv3.EventTypeDelete {
			delete(t.list, strings.TrimPrefix(k, t.prefix))
			delete(t.bad, k)
			continue
		}
		t.putLocked(k, ev.Kv.Value)
	}
	t.notifyLocked()
}

func (t *Tenants) putLocked(k string, v []byte) {
	name := strings.TrimPrefix(k, t.prefix)
	c, err := parseTenant(t.prefix, k, v)
	if err != nil {
		delete(t.list, name)
		t.bad[k] = err
		return
	}
	delete(t.bad, k)
	t.list[name] = c
}
