package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/warren-tunnel/warren/config"
	"github.com/warren-tunnel/warren/internal/quote"
)

const checkUsage = `Usage:
  warren check -c FILE [--role server|client]

Checks a config file as "warren server -c FILE" and "warren client -c FILE"
would load it, without starting anything: every table FILE has (or only
the one --role names), the environment variables and token files they
read, and the TLS files they name (certificate and key, CA). Exits 0 and
says what each table sets up when the file is valid, 2 with the problem
otherwise.

Flags:
`

func runCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", checkUsage, stdout, stderr)
	pathFlag := fs.configFlag("config file")
	role := fs.String("role", "", `check only the [server] ("server") or [client] ("client") table`)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path := *pathFlag
	if path == "" {
		return usagef("-c FILE is required")
	}
	if *role != "" && *role != config.TableServer && *role != config.TableClient {
		return usagef(`--role: %s is not "server" or "client"`, quote.Short(*role))
	}
	f, err := config.LoadTable(path, *role, os.LookupEnv)
	if err != nil {
		return usageError{err}
	}
	for _, w := range f.Warnings {
		fmt.Fprintf(stderr, "warren check: warning: %s\n", w)
	}
	switch {
	case *role == config.TableServer && f.Server == nil:
		return usagef("%s: no [server] table", path)
	case *role == config.TableClient && f.Client == nil:
		return usagef("%s: no [client] table", path)
	}
	if s := f.Server; s != nil {
		var tls string
		switch {
		case s.TLS.Disabled:
			tls = "TLS off"
		case s.TLS.Cert != "":
			if _, fp, _, err := s.TLS.Config(""); err != nil {
				return usagef("%s: server.%w", path, err)
			} else {
				tls = "certificate " + s.TLS.Cert + " (" + fp + ")"
			}
		default:
			tls = "self-signed certificate in " + s.StateDir
		}
		var listens, clients []string
		for _, l := range s.Listen {
			listens = append(listens, l.Transport+" "+l.Address)
		}
		for _, c := range s.Clients {
			clients = append(clients, c.Name)
		}
		fmt.Fprintf(stdout, "%s: [server] ok: listens on %s; %s; clients: %s\n",
			path, strings.Join(listens, ", "), tls, strings.Join(clients, ", "))
	}
	if c := f.Client; c != nil {
		if !c.TLS.Disabled {
			if _, err := c.TLS.Config(); err != nil {
				return usagef("%s: client.%w", path, err)
			}
		}
		var services []string
		for _, s := range c.Services {
			services = append(services, s.Name)
		}
		fmt.Fprintf(stdout, "%s: [client] ok: %s over %s; services: %s\n",
			path, c.Server, c.Transport, strings.Join(services, ", "))
	}
	return nil
}
