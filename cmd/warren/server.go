package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/config"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/transport"
)

const serverUsage = `Usage:
  warren server -c FILE
  warren server --listen kcp://:7000 --token T --ports 2222,8000-8100

Runs the public side. With -c it reads the [server] table of FILE (see
config.example.toml). Without, the flags describe one client, named
"default", that may claim --ports and --domains with --token.

Flags:
`

func runServer(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("server", serverUsage, stdout, stderr)
	var (
		path      string
		listens   stringList
		tok       = fs.String("token", "", "the client's token (default $WARREN_TOKEN)")
		ports     = fs.String("ports", "", "ports the client may claim, e.g. 2222,8000-8100")
		domains   = fs.String("domains", "", "domains the client may claim, e.g. *.example.com")
		public    = fs.String("public-address", "0.0.0.0", "IP address public ports bind to")
		stateDir  = fs.String("state-dir", defaultStateDir(), "directory for the self-signed certificate")
		noTLS     = fs.Bool("no-tls", false, "run without TLS (plaintext; only on trusted networks)")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat = fs.String("log-format", "text", "text or json")
	)
	fs.StringVar(&path, "c", "", "config file")
	fs.StringVar(&path, "config", "", "config file")
	fs.Var(&listens, "listen", "tunnel endpoint kcp://host:port or tcp://host:port (repeatable; default both on :7000)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}

	var cfg server.Config
	var adminCfg admin.Config
	var fileLog config.Log // as the file says, before flags override it
	var file *config.File
	logCfg := config.Log{Level: *logLevel, Format: *logFormat}
	if path != "" {
		if quick := setFlags(fs.FlagSet, "c", "config", "log-level", "log-format"); len(quick) > 0 {
			return usagef("-c %s and --%s: use either a config file or the quick-mode flags", path, quick[0])
		}
		f, err := config.LoadTable(path, config.TableServer, os.LookupEnv)
		if err != nil {
			return usageError{err}
		}
		if f.Server == nil {
			return usagef("%s: no [server] table", path)
		}
		cfg, logCfg = f.Server.Config, overrideLog(fs.FlagSet, f.Server.Log, *logLevel, *logFormat)
		adminCfg = f.Server.Admin
		fileLog = f.Server.Log
		file = f
	} else {
		var err error
		if cfg, err = quickServer(listens, *tok, *ports, *domains, *public, *stateDir, *noTLS); err != nil {
			return usageError{err}
		}
	}
	if err := logCfg.Validate(); err != nil {
		return usageError{err}
	}
	log := logCfg.Logger(stderr)
	if file != nil {
		logWarnings(log, file)
	}
	srv, err := server.New(cfg, log)
	if err != nil {
		return usageError{err}
	}
	adm, err := newAdmin(adminCfg, metrics.RoleServer, srv, log)
	if err != nil {
		return err
	}
	defer watchReload(srv, log, path, config.TableServer, func(f *config.File) error {
		if f.Server == nil {
			return errors.New("no [server] table")
		}
		if err := restartOnly("server", adminCfg, f.Server.Admin, fileLog, f.Server.Log); err != nil {
			return err
		}
		return srv.Reload(f.Server.Config)
	})()
	ctx, stop := signalContext(stderr)
	defer stop()
	return runWithAdmin(ctx, adm, log, srv.Run)
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
		return "", "", fmt.Errorf("%q: want kcp://host:port or tcp://host:port", s)
	}
	return kind, addr, nil
}

// defaultStateDir is where quick mode keeps the self-signed certificate:
// $XDG_STATE_HOME/warren, else ~/.local/state/warren.
func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "warren")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "warren")
	}
	return "/var/lib/warren"
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
