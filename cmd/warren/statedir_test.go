package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-tunnel/warren/transport"
)

func TestDefaultStateDir(t *testing.T) {
	noHome := func() (string, error) { return "", errors.New("no home") }
	home := func() (string, error) { return "/home/ann", nil }
	tests := []struct {
		name string
		env  map[string]string
		uid  int
		home func() (string, error)
		want string
	}{
		{"systemd", map[string]string{"STATE_DIRECTORY": "/var/lib/warren"}, 61234, noHome, "/var/lib/warren"},
		{"systemd, several", map[string]string{"STATE_DIRECTORY": "/var/lib/warren:/var/lib/other"}, 61234, noHome, "/var/lib/warren"},
		{"systemd beats root", map[string]string{"STATE_DIRECTORY": "/srv/state"}, 0, home, "/srv/state"},
		{"root", nil, 0, home, "/var/lib/warren"},
		{"root, XDG set", map[string]string{"XDG_STATE_HOME": "/root/.st"}, 0, home, "/var/lib/warren"},
		{"user, XDG", map[string]string{"XDG_STATE_HOME": "/home/ann/.st"}, 1000, home, "/home/ann/.st/warren"},
		{"user", nil, 1000, home, "/home/ann/.local/state/warren"},
		{"user without home", nil, 1000, noHome, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := stateEnv{getenv: func(k string) string { return tt.env[k] }, uid: tt.uid, home: tt.home}
			if got := e.defaultStateDir(); got != tt.want {
				t.Errorf("defaultStateDir() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestWarnOtherCerts: a new certificate made while another state
// directory holds one is a warning naming both, with both fingerprints.
func TestWarnOtherCerts(t *testing.T) {
	tmp := t.TempDir()
	chosen := filepath.Join(tmp, "systemd")
	home := filepath.Join(tmp, "home")
	user := filepath.Join(home, ".local", "state", "warren")
	e := stateEnv{
		getenv: func(k string) string {
			if k == "STATE_DIRECTORY" {
				return chosen
			}
			return ""
		},
		uid:  1000,
		home: func() (string, error) { return home, nil },
	}
	logs := func() string {
		var b bytes.Buffer
		_, fp, _, err := transport.ServerTLS{}.Config(chosen)
		if err != nil {
			t.Fatal(err)
		}
		e.warnOtherCerts(slog.New(slog.NewTextHandler(&b, nil)), chosen, fp)
		return b.String()
	}
	if got := logs(); strings.Contains(got, "other_state_dir="+user) {
		t.Errorf("no other certificate, yet: %s", got)
	}
	os.RemoveAll(chosen)
	_, otherFP, _, err := transport.ServerTLS{}.Config(user) // quick mode made one before
	if err != nil {
		t.Fatal(err)
	}
	got := logs()
	for _, want := range []string{"level=WARN", "another state directory already holds one", "state_dir=" + chosen, "other_state_dir=" + user, "other_fingerprint=" + otherFP} {
		if !strings.Contains(got, want) {
			t.Errorf("log %q lacks %q", got, want)
		}
	}
}

func TestFingerprintCommand(t *testing.T) {
	tmp := t.TempDir()
	state := filepath.Join(tmp, "state")
	_, fp, _, err := transport.ServerTLS{}.Config(state)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(tmp, "w.toml")
	os.WriteFile(conf, []byte("[server]\nstate_dir = \""+state+"\"\n[[server.clients]]\nname = \"a\"\ntoken_env = \"UNSET_HERE\"\nports = [1]\n"), 0o600)
	certConf := filepath.Join(tmp, "cert.toml")
	os.WriteFile(certConf, []byte("[server.tls]\ncert = \""+transport.SelfSignedCert(state)+"\"\nkey = \"k\"\n"), 0o600)
	tests := []struct {
		name       string
		args       []string
		env        string // $STATE_DIRECTORY
		wantCode   int
		wantStderr string
	}{
		{name: "default state directory", env: state},
		{name: "state dir", args: []string{"--state-dir", state}},
		{name: "cert", args: []string{"--cert", transport.SelfSignedCert(state)}},
		// Only state_dir is read: the token's variable need not be set.
		{name: "config file", args: []string{"-c", conf}},
		{name: "config file with tls.cert", args: []string{"-c", certConf}},
		{name: "no certificate yet", args: []string{"--state-dir", filepath.Join(tmp, "new")}, wantCode: exitRuntime, wantStderr: "the server creates it at its first start"},
		{name: "not a certificate", args: []string{"--cert", conf}, wantCode: exitRuntime, wantStderr: "no PEM certificate"},
		{name: "two sources", args: []string{"--cert", "a", "--state-dir", "b"}, wantCode: exitUsage, wantStderr: "give one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("STATE_DIRECTORY", tt.env)
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"fingerprint"}, tt.args...), &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.wantCode, &stderr)
			}
			if tt.wantCode == exitOK && stdout.String() != fp+"\n" {
				t.Errorf("stdout %q, want %q", &stdout, fp+"\n")
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q lacks %q", &stderr, tt.wantStderr)
			}
		})
	}
}
