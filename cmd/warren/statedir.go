package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/warren-tunnel/warren/transport"
)

// The state directory holds the server's self-signed certificate, whose
// fingerprint clients pin, so quick mode and config mode must agree on it:
// a server moved from flags to a file must keep its certificate. One rule,
// when neither --state-dir nor state_dir says:
//
//  1. $STATE_DIRECTORY, which systemd sets from StateDirectory= (its first
//     entry), and the Docker image sets to /var/lib/warren;
//  2. /var/lib/warren when running as root;
//  3. $XDG_STATE_HOME/warren, else ~/.local/state/warren.
//
// Before this rule, quick mode used 3 and config mode /var/lib/warren:
// when the server creates a certificate while another of these places
// already holds one, it warns, naming both.

// systemStateDir is the state directory of a server run as root, by
// systemd (StateDirectory=warren) and in the Docker image.
const systemStateDir = "/var/lib/warren"

// stateEnv is what the rule reads: the environment and the user.
type stateEnv struct {
	getenv func(string) string
	uid    int
	home   func() (string, error)
}

func osStateEnv() stateEnv {
	return stateEnv{getenv: os.Getenv, uid: os.Getuid(), home: os.UserHomeDir}
}

// defaultStateDir is the rule above.
func (e stateEnv) defaultStateDir() string {
	if d := e.systemd(); d != "" {
		return d
	}
	if e.uid == 0 {
		return systemStateDir
	}
	return e.userStateDir()
}

// systemd returns the first directory of $STATE_DIRECTORY (colon-separated).
func (e stateEnv) systemd() string {
	d, _, _ := strings.Cut(e.getenv("STATE_DIRECTORY"), ":")
	return d
}

// userStateDir is $XDG_STATE_HOME/warren, else ~/.local/state/warren, or
// "" without a home directory.
func (e stateEnv) userStateDir() string {
	if d := e.getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "warren")
	}
	if home, err := e.home(); err == nil && home != "" {
		return filepath.Join(home, ".local", "state", "warren")
	}
	return ""
}

// otherStateDirs lists the places the rule, or the rules before it, could
// have put a certificate, except dir.
func (e stateEnv) otherStateDirs(dir string) []string {
	var out []string
	for _, d := range []string{e.systemd(), systemStateDir, e.userStateDir()} {
		if d != "" && filepath.Clean(d) != filepath.Clean(dir) && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// hasCert reports whether dir holds a self-signed certificate.
func hasCert(dir string) bool {
	_, err := os.Stat(transport.SelfSignedCert(dir))
	return err == nil
}

// warnOtherCerts logs, after the server created a new certificate in dir,
// each other state directory that already holds one: clients pinned to
// that one will fail against this.
func (e stateEnv) warnOtherCerts(log *slog.Logger, dir, fingerprint string) {
	for _, other := range e.otherStateDirs(dir) {
		if !hasCert(other) {
			continue
		}
		otherFP, err := certFingerprint(transport.SelfSignedCert(other))
		if err != nil {
			otherFP = "unreadable: " + err.Error()
		}
		log.Warn("created a new self-signed certificate, but another state directory already holds one: clients that pinned it will fail; "+
			"to keep it, set state_dir (or --state-dir) to that directory",
			"state_dir", dir, "fingerprint", fingerprint, "other_state_dir", other, "other_fingerprint", otherFP)
	}
}

// certFingerprint reads the first certificate of a PEM file and returns
// its fingerprint as clients pin it.
func certFingerprint(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return "", fmt.Errorf("%s: no PEM certificate", path)
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		return transport.Fingerprint(block.Bytes), nil
	}
}
