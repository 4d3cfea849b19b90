package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/config"
	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/server"
)

// The server's cluster membership (docs/cluster.md): the etcd registry it
// runs for its whole life, and with clients_from_registry the
// [[server.clients]] entries kept in etcd, merged with the file's and
// applied through Server.Reload.

// clusterDefaults fills what the command decides for [server.cluster]:
// the id, by default the host name.
func clusterDefaults(cfg *server.Config) error {
	if !cfg.Cluster.Enabled() || cfg.Cluster.ID != "" {
		return nil
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return fmt.Errorf("server.cluster.id: not set, and no host name to default to (%v)", err)
	}
	cfg.Cluster.ID = h
	return nil
}

// clusterMember is a server's cluster side, made before the server.
type clusterMember struct {
	log     *slog.Logger
	reg     *cluster.Etcd
	tenants *cluster.Tenants // nil: clients_from_registry is off
	srv     *server.Server

	mu      sync.Mutex // serializes reloads; guards file and applied
	file    server.Config
	applied string // the registry clients last applied, for the log
}

// newClusterMember prepares cfg's cluster side; cfg gets its id default
// and, with clients_from_registry, the registry's clients as etcd has
// them now (when it answers within lease_ttl; else the watch brings them
// later).
func newClusterMember(cfg *server.Config, log *slog.Logger) (*clusterMember, error) {
	if err := clusterDefaults(cfg); err != nil {
		return nil, usageError{err}
	}
	cc := cfg.Cluster
	m := cluster.Member{ID: cc.ID, PeerAddress: cc.PeerAddress}
	reg, err := cluster.NewEtcd(cc, m, cfg.ReconnectGrace, log.With("cluster", cc.ID))
	if err != nil {
		return nil, usageError{err}
	}
	cm := &clusterMember{log: log, reg: reg, file: *cfg}
	if !cc.ClientsFromRegistry {
		return cm, nil
	}
	if cm.tenants, err = cluster.NewTenants(cc, log); err != nil {
		return nil, usageError{err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cc.LeaseTTL)
	defer cancel()
	list, bad, err := cm.tenants.List(ctx)
	if err != nil {
		log.Warn("cluster: registry clients not read at start; they are applied once etcd answers", "err", err)
		return cm, nil
	}
	merged, errs := mergeClients(*cfg, list, bad)
	cm.logMerge(errs, list)
	*cfg = merged
	return cm, nil
}

// close closes the registry and the clients' watch when they will not
// run (the server could not be made).
func (cm *clusterMember) close() {
	cm.reg.Close()
	if cm.tenants != nil {
		cm.tenants.Close()
	}
}

// options are the server options that make it a member.
func (cm *clusterMember) options() []server.Option {
	return []server.Option{server.WithRegistry(cm.reg)}
}

// wrap returns run (the server's Run) with the registry and the registry
// clients' watch running beside it. The registry stops after the server
// (which releases its routes first); if the registry cannot run (a
// duplicate id), the server is stopped and that error returned.
func (cm *clusterMember) wrap(srv *server.Server, run func(context.Context) error) func(context.Context) error {
	cm.srv = srv
	return func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		regCtx, stopReg := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var regErr error
		wg.Go(func() {
			if regErr = cm.reg.Run(regCtx); regErr != nil {
				cm.log.Error("cluster registry failed; stopping", "err", regErr)
				cancel()
			}
		})
		if cm.tenants != nil {
			wg.Go(func() { cm.tenants.Run(regCtx) })
			wg.Go(func() { cm.watchTenants(regCtx) })
		}
		err := run(ctx)
		stopReg()
		cm.reg.Close()
		if cm.tenants != nil {
			cm.tenants.Close()
		}
		wg.Wait()
		if regErr != nil {
			return regErr
		}
		return err
	}
}

// watchTenants applies the registry's clients at each change.
func (cm *clusterMember) watchTenants(ctx context.Context) {
	for {
		ch := cm.tenants.Changed()
		if list, bad, loaded := cm.tenants.Current(); loaded {
			cm.mu.Lock()
			merged, errs := mergeClients(cm.file, list, bad)
			if err := cm.srv.Reload(merged); err != nil {
				cm.log.Error("cluster: registry clients rejected; the running clients stay", "err", err)
			} else {
				cm.logMerge(errs, list)
			}
			cm.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// reloadFile applies a reloaded config file: its clients with the
// registry's.
func (cm *clusterMember) reloadFile(cfg server.Config) error {
	if err := clusterDefaults(&cfg); err != nil {
		return err
	}
	cm.mu.Lock()
	defer cm.mu.Unlock()
	merged := cfg
	if cm.tenants != nil {
		list, bad, _ := cm.tenants.Current()
		var errs []error
		merged, errs = mergeClients(cfg, list, bad)
		defer cm.logMerge(errs, list)
	}
	if err := cm.srv.Reload(merged); err != nil {
		return err
	}
	cm.file = cfg
	return nil
}

// logMerge logs what the registry's clients are now and which entries
// were not applied, when that changed. Never a token.
func (cm *clusterMember) logMerge(errs []error, list []cluster.Tenant) {
	var names []string
	for _, t := range list {
		names = append(names, t.Name)
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	state := strings.Join(names, ",") + "|" + strings.Join(msgs, "|")
	if state == cm.applied {
		return
	}
	cm.applied = state
	for _, err := range errs {
		cm.log.Error("cluster: a registry client is not applied", "err", err)
	}
	cm.log.Info("cluster: registry clients", "names", names, "not_applied", len(errs))
}

// mergeClients returns file with the registry's clients (list) added,
// and why each one left out was: its name is also in the file, or it is
// not a valid [[server.clients]] entry beside the file's. bad are the
// registry entries that are not clients at all.
func mergeClients(file server.Config, list []cluster.Tenant, bad []error) (server.Config, []error) {
	errs := slices.Clone(bad)
	out := file
	out.Clients = slices.Clone(file.Clients)
	key := func(name string) string { return cluster.TenantsPrefix(file.Cluster) + name }
	for _, t := range list {
		if slices.ContainsFunc(file.Clients, func(c server.Client) bool { return c.Name == t.Name }) {
			errs = append(errs, fmt.Errorf("client %q is both in the config file and in the registry (%s): the registry entry is not applied; remove one", t.Name, key(t.Name)))
			continue
		}
		c, err := tenantClient(t)
		if err == nil {
			test := out
			test.Clients = append(slices.Clone(out.Clients), c)
			err = test.Validate()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("registry client %q (%s): %w", t.Name, key(t.Name), err))
			continue
		}
		out.Clients = append(out.Clients, c)
	}
	return out, errs
}

// tenantClient is the [[server.clients]] entry of a registry tenant.
func tenantClient(t cluster.Tenant) (server.Client, error) {
	c := server.Client{Name: t.Name, Token: t.Token, Domains: t.Domains, Dial: t.Dial, Visit: t.Visit}
	var err error
	if c.Ports, err = portRanges("ports", t.Ports); err != nil {
		return c, err
	}
	if c.UDPPorts, err = portRanges("udp_ports", t.UDPPorts); err != nil {
		return c, err
	}
	return c, nil
}

func portRanges(key string, ss []string) ([]server.PortRange, error) {
	var out []server.PortRange
	for _, s := range ss {
		r, err := server.ParsePortRange(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// clusterDaemon is the server as the admin API sees it in a cluster: its
// metrics registry is the registry's too. (Readiness is the server's:
// with etcd unreachable it stays ready and says why.)
type clusterDaemon struct {
	*server.Server
	member *clusterMember
}

func (d clusterDaemon) SetMetrics(m *metrics.Registry) {
	d.Server.SetMetrics(m)
	d.member.reg.SetMetrics(m)
	if d.member.tenants != nil {
		d.member.tenants.SetMetrics(m)
	}
}

// The command "warren cluster".

const clusterUsage = `Usage:
  warren cluster client add -c FILE --name NAME [--token-file F] [--ports P] [--udp-ports P] [--domains D] [--visit V] [--dial]
  warren cluster client remove -c FILE --name NAME
  warren cluster client list -c FILE

Manages the [[server.clients]] entries kept in the cluster's etcd
(server.cluster.clients_from_registry = true): every server of the cluster
applies a change at once, as a reload would. FILE is a server's config
file, whose [server.cluster] says where etcd is (etcd, etcd_tls, prefix).
The token comes from --token-file, or $WARREN_TOKEN ("warren token"
prints a new one); list never shows tokens. Anyone who can read the
prefix in etcd can read the tokens (docs/cluster.md: etcd roles).

Flags:
`

func runCluster(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("cluster", clusterUsage, stdout, stderr)
	if len(args) < 2 || args[0] != "client" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fs.printUsage(stdout)
			return nil
		}
		fs.printUsage(stderr)
		return usagef("want: cluster client add|remove|list")
	}
	verb := args[1]
	path := fs.configFlag("a server's config file (its [server.cluster] table)")
	name := fs.String("name", "", "the client's name")
	tokenFile := fs.String("token-file", "", "file holding the client's token (default: $WARREN_TOKEN)")
	ports := fs.String("ports", "", "ports the client may claim, e.g. 2222,8000-8100")
	udpPorts := fs.String("udp-ports", "", "UDP ports the client may claim")
	domains := fs.String("domains", "", "domains the client may claim, e.g. *.example.com")
	visit := fs.String("visit", "", "private services the client may visit, e.g. office/db,office/*")
	dial := fs.Bool("dial", false, "let code beside the server dial through this client")
	if err := parseFlags(fs, args[2:]); err != nil {
		return err
	}
	if *path == "" {
		return usagef("-c FILE is required: a server's config file with [server.cluster]")
	}
	f, err := config.LoadTable(*path, config.TableServer, os.LookupEnv)
	if err != nil {
		return usageError{err}
	}
	if f.Server == nil {
		return usagef("%s: no [server] table", *path)
	}
	cfg := f.Server.Config
	if !cfg.Cluster.Enabled() {
		return usagef("%s: server.cluster.etcd is empty: not a cluster", *path)
	}
	if !cfg.Cluster.ClientsFromRegistry {
		return usagef("%s: server.cluster.clients_from_registry is off: the servers would not read registry clients", *path)
	}
	tenants, err := cluster.NewTenants(cfg.Cluster, nil)
	if err != nil {
		return usageError{err}
	}
	defer tenants.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*cfg.Cluster.LeaseTTL+5*time.Second)
	defer cancel()
	switch verb {
	case "add":
		t := cluster.Tenant{Name: *name, Ports: splitList(*ports), UDPPorts: splitList(*udpPorts),
			Domains: splitList(*domains), Visit: splitList(*visit), Dial: *dial}
		if t.Token, err = tenantToken(*tokenFile); err != nil {
			return usageError{err}
		}
		if t.Name == "" {
			return usagef("--name is required")
		}
		// Checked as the servers will check it: beside the file's
		// clients and the registry's others.
		list, _, err := tenants.List(ctx)
		if err != nil {
			return err
		}
		list = slices.DeleteFunc(list, func(o cluster.Tenant) bool { return o.Name == t.Name })
		if _, errs := mergeClients(cfg, append(list, t), nil); len(errs) > 0 {
			for _, err := range errs {
				if strings.Contains(err.Error(), fmt.Sprintf("%q", t.Name)) {
					return usageError{err}
				}
			}
		}
		if err := tenants.Put(ctx, t); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "client %s written to %s%s; every server applies it now\n", quote.Short(t.Name), cluster.TenantsPrefix(cfg.Cluster), t.Name)
	case "remove":
		if *name == "" {
			return usagef("--name is required")
		}
		ok, err := tenants.Delete(ctx, *name)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("no client %s in the registry (%s)", quote.Short(*name), cluster.TenantsPrefix(cfg.Cluster))
		}
		fmt.Fprintf(stdout, "client %s removed; its sessions are closed on every server\n", quote.Short(*name))
	case "list":
		list, bad, err := tenants.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPORTS\tUDP_PORTS\tDOMAINS\tVISIT\tDIAL")
		dash := func(ss []string) string {
			if len(ss) == 0 {
				return "-"
			}
			return strings.Join(ss, ",")
		}
		for _, t := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", t.Name, dash(t.Ports), dash(t.UDPPorts), dash(t.Domains), dash(t.Visit), t.Dial)
		}
		tw.Flush()
		for _, err := range bad {
			fmt.Fprintf(stderr, "warren cluster: %v\n", err)
		}
	default:
		return usagef("unknown cluster client command %s: want add, remove or list", quote.Short(verb))
	}
	return nil
}

// tenantToken reads the new client's token: from file, else $WARREN_TOKEN.
func tenantToken(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("--token-file %s: empty", quote.Short(file))
		}
		return tok, nil
	}
	if tok := os.Getenv("WARREN_TOKEN"); tok != "" {
		return tok, nil
	}
	return "", errors.New("no token: give --token-file or $WARREN_TOKEN (warren token prints a new one)")
}
