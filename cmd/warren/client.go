package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/config"
	"github.com/warren-tunnel/warren/internal/quote"
)

const clientUsage = `Usage:
  warren client -c FILE
  warren client --server kcp://host:7000 --token T --fingerprint sha256:... \
                --service ssh=2222:127.0.0.1:22 [--service web=8080:127.0.0.1:80]
  warren client --server kcp://a:7000 --server kcp://b:7000 --token T --ca ca.pem \
                --service ssh=2222:127.0.0.1:22

Runs the private side. With -c it reads the [client] table of FILE (see
config.example.toml). Without, the flags say where the server is, how to
verify it (--fingerprint, as the server logs it, or --ca), and which
services to serve: NAME=REMOTE_PORT:TARGET_HOST:TARGET_PORT. Repeat
--server to serve through several servers at once (--fingerprint then
takes a comma-separated list, one per server's certificate).

Flags:
`

func runClient(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("client", clientUsage, stdout, stderr)
	d := addDaemonFlags(fs)
	var (
		services   stringList
		servers    stringList
		tok        = fs.String("token", "", "the client's token (default $WARREN_TOKEN)")
		fp         = fs.String("fingerprint", "", "pin the server certificate: sha256:<64 hex>, as the server logs it (several: comma-separated)")
		ca         = fs.String("ca", "", "verify the server by this CA file (PEM)")
		serverName = fs.String("server-name", "", "name to verify in the server certificate (default: the server's host)")
		insecure   = fs.Bool("insecure-skip-verify", false, "accept any server certificate (unsafe; warns)")
		noTLS      = fs.Bool("no-tls", false, "connect without TLS (plaintext; only on trusted networks)")
	)
	fs.Var(&servers, "server", "the server, kcp://host:port or tcp://host:port (repeatable: served through every one at once)")
	fs.Var(&services, "service", "a service, NAME=REMOTE_PORT:TARGET_HOST:TARGET_PORT (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	file, table, err := d.load(config.TableClient)
	if err != nil {
		return err
	}
	var cfg client.Config
	if file != nil {
		cfg = file.Client.Config
	} else {
		cfg = client.DefaultConfig()
		if len(servers) == 0 {
			servers = stringList{""} // parseEndpoint says what it wants
		}
		for _, s := range servers {
			kind, addr, err := parseEndpoint(s)
			if err != nil {
				return usagef("--server: %w", err)
			}
			cfg.Transport, cfg.Server = kind, addr
		}
		if len(servers) > 1 {
			cfg.Server, cfg.Servers = "", servers
		}
		cfg.Token = *tok
		if cfg.Token == "" {
			cfg.Token = os.Getenv("WARREN_TOKEN")
		}
		cfg.TLS.CA, cfg.TLS.ServerName = *ca, *serverName
		if pins := splitList(*fp); len(pins) > 1 {
			cfg.TLS.Fingerprints = pins
		} else {
			cfg.TLS.Fingerprint = *fp
		}
		cfg.TLS.InsecureSkipVerify, cfg.TLS.Disabled = *insecure, *noTLS
		if table.admin, err = quickAdmin(*d.adminAddr); err != nil {
			return usageError{err}
		}
		for _, s := range services {
			svc, err := parseService(s)
			if err != nil {
				return usagef("--service: %w", err)
			}
			cfg.Services = append(cfg.Services, svc)
		}
	}
	log, err := d.logger(stderr, table, file)
	if err != nil {
		return err
	}
	c, err := client.New(cfg, log)
	if err != nil {
		return usageError{err}
	}
	return d.serve(stderr, config.TableClient, table, log, c, c.Run, func(f *config.File) error {
		return c.Reload(f.Client.Config)
	})
}

// parseService parses NAME=REMOTE_PORT:TARGET_HOST:TARGET_PORT.
func parseService(s string) (client.Service, error) {
	bad := fmt.Errorf("%s: want NAME=REMOTE_PORT:TARGET_HOST:TARGET_PORT, e.g. ssh=2222:127.0.0.1:22", quote.Short(s))
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return client.Service{}, bad
	}
	port, target, ok := strings.Cut(rest, ":")
	if !ok {
		return client.Service{}, bad
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return client.Service{}, bad
	}
	return client.Service{Name: name, RemotePort: p, Target: target}, nil
}
