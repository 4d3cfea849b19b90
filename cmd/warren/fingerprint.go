package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/warren-tunnel/warren/transport"
)

const fingerprintUsage = `Usage:
  warren fingerprint                      the server's self-signed certificate
  warren fingerprint --state-dir DIR
  warren fingerprint -c FILE              the certificate FILE's [server] uses
  warren fingerprint --cert FILE.pem

Prints the fingerprint of the server's certificate as clients pin it
(--fingerprint sha256:..., [client.tls] fingerprint), the same line the
server logs at start. Without flags it reads the self-signed certificate
in the state directory the server uses by default: $STATE_DIRECTORY,
/var/lib/warren when run as root, else $XDG_STATE_HOME/warren or
~/.local/state/warren.

Flags:
`

func runFingerprint(args []string, stdout, stderr io.Writer) error {
	fl := newFlags("fingerprint", fingerprintUsage, stdout, stderr)
	pathFlag := fl.configFlag("config file whose [server] state_dir or tls.cert to read")
	stateDir := fl.String("state-dir", "", "the server's state directory")
	cert := fl.String("cert", "", "a PEM certificate file")
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	path := *pathFlag
	given := 0
	for _, s := range []string{path, *stateDir, *cert} {
		if s != "" {
			given++
		}
	}
	if given > 1 {
		return usagef("-c, --state-dir and --cert: give one")
	}
	file := *cert
	switch {
	case path != "":
		var err error
		if file, err = certFromConfig(path); err != nil {
			return usageError{err}
		}
	case file == "":
		dir := *stateDir
		if dir == "" {
			dir = osStateEnv().defaultStateDir()
		}
		file = transport.SelfSignedCert(dir)
	}
	fp, err := certFingerprint(file)
	if errors.Is(err, fs.ErrNotExist) && *cert == "" && path == "" {
		return fmt.Errorf("no certificate at %s: the server creates it at its first start (or give --state-dir, -c or --cert)", file)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, fp)
	return nil
}

// certFromConfig returns the certificate file the [server] table of the
// config file at path uses: tls.cert, or the self-signed one in state_dir
// (or the default state directory). It reads only those keys, so that it
// works where the server's secrets are not at hand.
func certFromConfig(path string) (string, error) {
	var raw struct {
		Server *struct {
			StateDir string              `toml:"state_dir"`
			TLS      transport.ServerTLS `toml:"tls"`
		} `toml:"server"`
	}
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	s := raw.Server
	switch {
	case s == nil:
		return "", fmt.Errorf("%s: no [server] table", path)
	case s.TLS.Disabled:
		return "", fmt.Errorf("%s: server.tls = false: no certificate", path)
	case strings.Contains(s.StateDir+s.TLS.Cert, "${"):
		return "", fmt.Errorf("%s: server.state_dir or server.tls.cert uses ${...}, which fingerprint does not expand: give --state-dir or --cert", path)
	case s.TLS.Cert != "":
		return s.TLS.Cert, nil
	case s.StateDir != "":
		return transport.SelfSignedCert(s.StateDir), nil
	}
	return transport.SelfSignedCert(osStateEnv().defaultStateDir()), nil
}
