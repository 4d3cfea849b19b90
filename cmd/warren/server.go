package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/config"
	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/transport"
)

const serverUsage = `Usage:
  warren server -c FILE
  warren server --listen kcp://:7000 --token T --ports 2222,8000-8100

Runs the public side. With -c it reads the [server] table of FILE (see
config.example.toml). Without, the flags describe one client, named
"default", that may claim --ports and --domains with --token (better:
$WARREN_TOKEN, which the process list does not show), and once up the
server prints the command line of such a client.

The self-signed certificate, whose fingerprint clients pin, is kept in
--state-dir (state_dir): by default $STATE_DIRECTORY, /var/lib/warren when
run as root, else $XDG_STATE_HOME/warren or ~/.local/state/warren, in both
modes. "warren fingerprint" prints it again.

Flags:
`

func runServer(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("server", serverUsage, stdout, stderr)
	d := addDaemonFlags(fs)
	var (
		listens  stringList
		tok      = fs.String("token", "", "the client's token (default $WARREN_TOKEN)")
		ports    = fs.String("ports", "", "ports the client may claim, e.g. 2222,8000-8100")
		domains  = fs.String("domains", "", "domains the client may claim, e.g. *.example.com")
		public   = fs.String("public-address", "0.0.0.0", "IP address public ports bind to")
		stateDir = fs.String("state-dir", "", "directory for the self-signed certificate (default: $STATE_DIRECTORY, /var/lib/warren as root, else ~/.local/state/warren)")
		noTLS    = fs.Bool("no-tls", false, "run without TLS (plaintext; only on trusted networks)")
	)
	fs.Var(&listens, "listen", "tunnel endpoint kcp://host:port or tcp://host:port (repeatable; default both on :7000)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	file, table, err := d.load(config.TableServer)
	if err != nil {
		return err
	}
	var cfg server.Config
	if file != nil {
		cfg = file.Server.Config
	} else {
		if cfg, err = quickServer(listens, *tok, *ports, *domains, *public, *stateDir, *noTLS); err != nil {
			return usageError{err}
		}
		if table.admin, err = quickAdmin(*d.adminAddr); err != nil {
			return usageError{err}
		}
	}
	env := osStateEnv()
	if cfg.StateDir == "" {
		cfg.StateDir = env.defaultStateDir()
	}
	selfSigned := !cfg.TLS.Disabled && cfg.TLS.Cert == ""
	fresh := selfSigned && cfg.StateDir != "" && !hasCert(cfg.StateDir)
	log, err := d.logger(stderr, table, file)
	if err != nil {
		return err
	}
	var member *clusterMember
	var opts []server.Option
	if cfg.Cluster.Enabled() {
		if member, err = newClusterMember(&cfg, log); err != nil {
			return err
		}
		opts = member.options()
	}
	srv, err := server.New(cfg, log, opts...)
	if err != nil {
		if member != nil {
			member.close()
		}
		return usageError{err}
	}
	if fresh {
		env.warnOtherCerts(log, cfg.StateDir, srv.Fingerprint())
	}
	run := srv.Run
	if file == nil { // quick mode: say how a client connects
		run = func(ctx context.Context) error {
			var printed sync.WaitGroup
			printCtx, cancelPrint := context.WithCancel(ctx)
			printed.Go(func() {
				select {
				case <-srv.Ready():
					fmt.Fprint(stdout, clientCommand(srv, cfg))
				case <-printCtx.Done():
				}
			})
			err := srv.Run(ctx)
			cancelPrint()
			printed.Wait()
			return err
		}
	}
	var target adminDaemon = srv
	apply := func(f *config.File) error { return srv.Reload(f.Server.Config) }
	if member != nil {
		run = member.wrap(srv, run)
		target = clusterDaemon{srv, member}
		apply = func(f *config.File) error { return member.reloadFile(f.Server.Config) }
	}
	return d.serve(stderr, config.TableServer, table, log, target, run, apply)
}

// clientCommand is what quick mode prints once the server is up: the
// command line of a client of it, ready to paste, with the token left to
// $WARREN_TOKEN (a secret is never printed, nor belongs in argv).
func clientCommand(srv *server.Server, cfg server.Config) string {
	l := cfg.Listen[0]
	host, port, _ := net.SplitHostPort(l.Address)
	if a := srv.Addr(l.Transport); a != nil {
		_, port, _ = net.SplitHostPort(a.String())
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "SERVER"
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	args := []string{"warren client --server", l.Transport + "://" + net.JoinHostPort(host, port)}
	if cfg.TLS.Disabled {
		args = append(args, "--no-tls")
	} else {
		args = append(args, "--fingerprint", srv.Fingerprint())
	}
	c := cfg.Clients[0]
	note := "--service NAME=PUBLIC_PORT:TARGET_HOST:TARGET_PORT is what the client serves: change it to yours."
	if len(c.Ports) > 0 {
		// The target is an example; not the public port, which would
		// loop were both sides tried on one machine.
		args = append(args, "--service", fmt.Sprintf("app=%d:127.0.0.1:8080", c.Ports[0].Lo))
	} else {
		note = "Quick-mode clients serve ports; to serve the allowed domains, give the client a config file\n" +
			"with [[client.services]] domains (see config.example.toml)."
	}
	return "\nClients connect with this command, the token in $WARREN_TOKEN (not on the command line):\n\n  " +
		strings.Join(args, " ") + "\n\n" + note + "\n\n"
}

// quickAdmin is the admin listener of quick mode's --admin: off when addr
// is empty; its token, which beyond loopback it needs, from
// $WARREN_ADMIN_TOKEN.
func quickAdmin(addr string) (admin.Config, error) {
	cfg := admin.Config{Address: addr, Token: os.Getenv("WARREN_ADMIN_TOKEN")}
	if err := cfg.Validate(); err != nil {
		if cfg.Token == "" && addr != "" {
			return cfg, fmt.Errorf("--admin %s: not a loopback address, so the admin API needs a token: set $WARREN_ADMIN_TOKEN (warren token prints one)", quote.Short(addr))
		}
		return cfg, fmt.Errorf("--admin: %w", err)
	}
	return cfg, nil
}

// quickServer builds a server config from quick-mode flags.
func quickServer(listens []string, tok, ports, domains, public, stateDir string, noTLS bool) (server.Config, error) {
	cfg := server.DefaultConfig()
	cfg.PublicAddress = public
	cfg.StateDir = stateDir
	cfg.TLS.Disabled = noTLS
	if len(listens) > 0 {
		cfg.Listen = nil
		for _, l := range listens {
			kind, addr, err := parseEndpoint(l)
			if err != nil {
				return cfg, fmt.Errorf("--listen: %w", err)
			}
			cfg.Listen = append(cfg.Listen, server.Listen{Transport: kind, Address: addr})
		}
	}
	if tok == "" {
		tok = os.Getenv("WARREN_TOKEN")
	}
	if tok == "" {
		return cfg, fmt.Errorf("--token (or $WARREN_TOKEN) is required; warren token prints a new one")
	}
	c := server.Client{Name: "default", Token: tok}
	for _, p := range splitList(ports) {
		r, err := server.ParsePortRange(p)
		if err != nil {
			return cfg, fmt.Errorf("--ports: %w", err)
		}
		c.Ports = append(c.Ports, r)
	}
	c.Domains = splitList(domains)
	if len(c.Ports) == 0 && len(c.Domains) == 0 {
		return cfg, fmt.Errorf("--ports or --domains is required: what may the client claim?")
	}
	cfg.Clients = []server.Client{c}
	return cfg, nil
}

// parseEndpoint splits "kcp://host:port" into its transport and address.
func parseEndpoint(s string) (kind, addr string, err error) {
	kind, addr, ok := strings.Cut(s, "://")
	if !ok || (kind != transport.KindKCP && kind != transport.KindTCP) {
		return "", "", fmt.Errorf("%s: want kcp://host:port or tcp://host:port", quote.Short(s))
	}
	return kind, addr, nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// overrideLog applies --log-level and --log-format, when given, over the
// config file's [log] table.
func overrideLog(fs *flag.FlagSet, l config.Log, level, format string) config.Log {
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "log-level":
			l.Level = level
		case "log-format":
			l.Format = format
		}
	})
	return l
}

// setFlags lists the flags given on the command line, except those named.
func setFlags(fs *flag.FlagSet, except ...string) []string {
	var out []string
	fs.Visit(func(f *flag.Flag) {
		for _, e := range except {
			if f.Name == e {
				return
			}
		}
		out = append(out, f.Name)
	})
	return out
}
