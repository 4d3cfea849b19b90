package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/config"
	"github.com/warren-tunnel/warren/internal/etcdtest"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/server"
)

// clusterFile writes a server config file of a cluster member on e, with
// one file client, "filec".
func clusterFile(t *testing.T, e *etcdtest.Etcd) string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "s.toml")
	err := os.WriteFile(file, fmt.Appendf(nil, `[server]
state_dir = %q
[[server.listen]]
transport = "tcp"
address = "127.0.0.1:0"
[[server.clients]]
name = "filec"
token = "tok-0123456789abcdef"
ports = ["2222"]
[server.cluster]
id = "s1"
etcd = [%q]
prefix = "/cmdtest/"
peer_address = "127.0.0.1:7443"
peer_listen = "127.0.0.1:0"
peer_token = "peer-0123456789abcdef"
peer_fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
lease_ttl = "2s"
clients_from_registry = true
`, dir, e.Endpoints()[0]), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return file
}

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != exitOK {
		t.Fatalf("warren %s: exit %d: %s", strings.Join(args, " "), code, &errOut)
	}
	return out.String()
}

// TestClusterClientCommand: "warren cluster client add|list|remove"
// write the registry's clients; bad input exits 2 naming what is wrong,
// and no token is ever printed.
func TestClusterClientCommand(t *testing.T) {
	e := etcdtest.Start(t, nil)
	file := clusterFile(t, e)
	t.Setenv("WARREN_TOKEN", "tok-secret-0123456789")
	out := runOK(t, "cluster", "client", "add", "-c", file, "--name", "t1", "--ports", "3000-3009", "--domains", "*.t1.example")
	if !strings.Contains(out, "/cmdtest/clients/t1") {
		t.Fatalf("add: %q", out)
	}
	out = runOK(t, "cluster", "client", "list", "-c", file)
	if !strings.Contains(out, "t1") || !strings.Contains(out, "3000-3009") || strings.Contains(out, "secret") {
		t.Fatalf("list: %q", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"add", "-c", file, "--name", "filec", "--ports", "1"}, `client "filec" is both in the config file and in the registry`},
		{[]string{"add", "-c", file, "--name", "t2", "--ports", "99999"}, "ports"},
		{[]string{"add", "-c", file, "--ports", "1"}, "--name is required"},
		{[]string{"remove", "-c", file, "--name", "nobody"}, `no client "nobody"`},
		{[]string{"list"}, "-c FILE is required"},
		{[]string{"frob", "-c", file}, "unknown cluster client command"},
	} {
		var o, eo bytes.Buffer
		code := run(append([]string{"cluster", "client"}, tc.args...), &o, &eo)
		if code == exitOK || !strings.Contains(eo.String(), tc.want) || strings.Contains(eo.String(), "secret") {
			t.Errorf("%v: exit %d, stderr %q; want it to contain %q", tc.args, code, &eo, tc.want)
		}
	}
	runOK(t, "cluster", "client", "remove", "-c", file, "--name", "t1")
	if out := runOK(t, "cluster", "client", "list", "-c", file); strings.Contains(out, "t1") {
		t.Fatalf("list after remove: %q", out)
	}
}

// TestClusterDaemon: a server of a cluster runs its registry for its
// life; the registry's clients are applied as a reload applies the file's
// (the same name in both: the registry entry is not applied); the
// registry's errors while etcd is unreachable are counted.
func TestClusterDaemon(t *testing.T) {
	e := etcdtest.Start(t, nil)
	file := clusterFile(t, e)
	t.Setenv("WARREN_TOKEN", "tok-registry-0123456789")
	runOK(t, "cluster", "client", "add", "-c", file, "--name", "early", "--ports", "4000")

	f, err := config.LoadTable(file, config.TableServer, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.Server.Config
	log := slog.New(slog.DiscardHandler)
	member, err := newClusterMember(&cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, log, member.options()...)
	if err != nil {
		t.Fatal(err)
	}
	addr := startDaemon(t, metrics.RoleServer, clusterDaemon{srv, member}, member.wrap(srv, srv.Run))
	names := func() []string {
		var out []string
		for _, c := range srv.AdminSource().Status().Clients {
			out = append(out, c.Name)
		}
		return out
	}
	// Read at start, before the server ran.
	if got := names(); !slices.Equal(got, []string{"early", "filec"}) {
		t.Fatalf("clients at start: %v", got)
	}
	waitUntil(t, "ready", func() bool { code, _ := httpGet(t, addr, "/readyz"); return code == 200 })

	var o, eo bytes.Buffer
	if code := run([]string{"cluster", "client", "add", "-c", file, "--name", "late", "--ports", "4001"}, &o, &eo); code != exitUsage || !strings.Contains(eo.String(), "same token as") {
		t.Fatalf("a second client with the same token: exit %d, %q", code, &eo)
	}
	t.Setenv("WARREN_TOKEN", "tok-late-0123456789")
	runOK(t, "cluster", "client", "add", "-c", file, "--name", "late", "--ports", "4001")
	waitUntil(t, "late applied", func() bool { return slices.Equal(names(), []string{"early", "filec", "late"}) })
	runOK(t, "cluster", "client", "remove", "-c", file, "--name", "early")
	waitUntil(t, "early removed", func() bool { return slices.Equal(names(), []string{"filec", "late"}) })

	// A registry entry with a file client's name is not applied; nor is
	// one that is not valid; the others stay.
	c := e.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for k, v := range map[string]string{
		"/cmdtest/clients/filec": `{"name":"filec","token":"tok-other-0123456789","ports":["5000"]}`,
		"/cmdtest/clients/bad":   `{"name":"bad","token":"x","ports":["5001"]}`,
		"/cmdtest/clients/junk":  `not json`,
		"/cmdtest/clients/last":  `{"name":"last","token":"tok-last-0123456789","ports":["5002"]}`,
	} {
		if _, err := c.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "last applied", func() bool { return slices.Equal(names(), []string{"filec", "last", "late"}) })

	// A reload of the file keeps the registry's clients; a file client
	// that takes a registry client's name wins over it.
	f, err = config.LoadTable(file, config.TableServer, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	if err := member.reloadFile(f.Server.Config); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"filec", "last", "late"}) {
		t.Fatalf("after a file reload: %v", got)
	}
	reloaded := f.Server.Config
	reloaded.Clients = append(reloaded.Clients, server.Client{Name: "last", Token: "tok-file-last-0123456789", Ports: []server.PortRange{{Lo: 6000, Hi: 6000}}})
	if err := member.reloadFile(reloaded); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"filec", "last", "late"}) {
		t.Fatalf("after a file reload with last: %v", got)
	}
	if err := member.reloadFile(f.Server.Config); err != nil {
		t.Fatal(err)
	}

	// etcd unreachable: the registry says why (the server's /readyz
	// reports it); back: current again. The metrics count the errors.
	e.Stop()
	waitUntil(t, "registry error", func() bool { return member.reg.Err() != nil })
	e.Start()
	waitUntil(t, "registry current", func() bool { return member.reg.Err() == nil })
	_, body := httpGet(t, addr, "/metrics")
	if v, ok := metricValue(body, "warren_cluster_registry_errors_total", `op="lease"`); !ok || v < 1 {
		t.Fatalf("registry errors: %v %v", v, ok)
	}
	if _, ok := metricValue(body, "warren_cluster_registry_errors_total", `op="clients"`); !ok {
		t.Fatal("no registry clients' errors")
	}
	if _, ok := metricValue(body, "warren_cluster_routes"); !ok {
		t.Fatal("no warren_cluster_routes")
	}
}
