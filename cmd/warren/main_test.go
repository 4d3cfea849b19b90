package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/server"
)

func TestRun(t *testing.T) {
	t.Setenv("WARREN_TOKEN", "")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring
		wantStderr string // substring
	}{
		{name: "no args", args: nil, wantCode: exitUsage, wantStderr: "Usage:"},
		{name: "help", args: []string{"help"}, wantCode: exitOK, wantStdout: "Usage:"},
		{name: "-h", args: []string{"-h"}, wantCode: exitOK, wantStdout: "Usage:"},
		{name: "--help", args: []string{"--help"}, wantCode: exitOK, wantStdout: "Usage:"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage, wantStderr: `unknown command "frobnicate"`},
		{name: "version", args: []string{"version"}, wantCode: exitOK, wantStdout: "warren "},
		{name: "version help", args: []string{"version", "--help"}, wantCode: exitOK, wantStdout: "Usage: warren version"},
		{name: "--version", args: []string{"--version"}, wantCode: exitOK, wantStdout: "warren "},
		{name: "--version extra arg", args: []string{"--version", "x"}, wantCode: exitUsage, wantStderr: `unexpected argument "x"`},
		{name: "version extra arg", args: []string{"version", "x"}, wantCode: exitUsage, wantStderr: `unexpected argument "x"`},
		{name: "token extra arg", args: []string{"token", "x"}, wantCode: exitUsage, wantStderr: `warren token: unexpected argument "x"`},
		{name: "token bad flag", args: []string{"token", "--length=5"}, wantCode: exitUsage},
		{name: "server bogus flag", args: []string{"server", "--bogus"}, wantCode: exitUsage, wantStderr: "bogus"},
		{name: "server help", args: []string{"server", "--help"}, wantCode: exitOK, wantStdout: "warren server -c FILE"},
		{name: "server no token", args: []string{"server", "--ports", "2222"}, wantCode: exitUsage, wantStderr: "--token"},
		{name: "server nothing to claim", args: []string{"server", "--token", "tok-0123456789abcdef"}, wantCode: exitUsage, wantStderr: "--ports or --domains"},
		{name: "server bad listen", args: []string{"server", "--listen", "udp://:7000"}, wantCode: exitUsage, wantStderr: "--listen"},
		{name: "server config and quick flags", args: []string{"server", "-c", "x.toml", "--ports", "1"}, wantCode: exitUsage, wantStderr: "--ports"},
		{name: "server short token", args: []string{"server", "--token", "short", "--ports", "2222", "--no-tls"}, wantCode: exitUsage, wantStderr: "token"},
		{name: "client bogus flag", args: []string{"client", "--bogus"}, wantCode: exitUsage},
		{name: "client no server", args: []string{"client"}, wantCode: exitUsage, wantStderr: "--server"},
		{name: "client bad service", args: []string{"client", "--server", "tcp://h:7000", "--service", "ssh"}, wantCode: exitUsage, wantStderr: "--service"},
		{name: "demo bogus flag", args: []string{"demo", "--bogus"}, wantCode: exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, &stdout, &stderr)
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("run(%q) stdout %q, want it to contain %q", tt.args, &stdout, tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("run(%q) stderr %q, want it to contain %q", tt.args, &stderr, tt.wantStderr)
			}
			if code != exitOK && stdout.Len() != 0 {
				t.Errorf("run(%q) failed but wrote to stdout: %q", tt.args, &stdout)
			}
		})
	}
}

// TestClientServersUsage: the server list's mistakes exit 2 with the
// keys named, in a config file and on the command line.
func TestClientServersUsage(t *testing.T) {
	t.Setenv("WARREN_TOKEN", "")
	file := filepath.Join(t.TempDir(), "c.toml")
	err := os.WriteFile(file, []byte(`[client]
server = "a.example.com:7000"
servers = ["b.example.com:7000"]
token = "tok-0123456789abcdef"
[[client.services]]
name = "ssh"
target = "127.0.0.1:22"
remote_port = 2222
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	quick := []string{"client", "--token", "tok-0123456789abcdef", "--no-tls"}
	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"file with server and servers", []string{"client", "-c", file}, "client.server and client.servers: set one of the two, not both"},
		{"the same server twice", append(quick, "--server", "tcp://a:7000", "--server", "tcp://a:7000", "--service", "ssh=2222:127.0.0.1:22"),
			`client.servers[1]: "tcp://a:7000" is the same server as client.servers[0]`},
		{"any port with two servers", append(quick, "--server", "tcp://a:7000", "--server", "kcp://b:7000", "--service", "ssh=0:127.0.0.1:22"),
			"client.services[0] (ssh).remote_port: 0 (any free port) with several servers"},
		{"a bad one of two", append(quick, "--server", "tcp://a:7000", "--server", "b:7000", "--service", "ssh=2222:127.0.0.1:22"),
			`--server: "b:7000": want kcp://host:port or tcp://host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != exitUsage {
				t.Fatalf("run(%q) = %d, want %d\nstderr: %s", tt.args, code, exitUsage, &stderr)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", &stderr, tt.wantStderr)
			}
		})
	}
}

// TestHelpOnStdout: "--help" and "-h" print a command's usage and flags
// to stdout and exit 0; a bad flag prints the error and the usage to
// stderr and exits 2.
func TestHelpOnStdout(t *testing.T) {
	for _, cmd := range []string{"server", "client", "demo", "check", "fingerprint", "status", "health", "token", "version"} {
		for _, h := range []string{"--help", "-h", "-help"} {
			var stdout, stderr bytes.Buffer
			if code := run([]string{cmd, h}, &stdout, &stderr); code != exitOK {
				t.Errorf("warren %s %s: exit %d, want 0; stderr %q", cmd, h, code, &stderr)
			}
			if !strings.Contains(stdout.String(), "Usage") || stderr.Len() != 0 {
				t.Errorf("warren %s %s: stdout %q, stderr %q: want the usage on stdout only", cmd, h, &stdout, &stderr)
			}
		}
		var stdout, stderr bytes.Buffer
		if code := run([]string{cmd, "--no-such-flag"}, &stdout, &stderr); code != exitUsage {
			t.Errorf("warren %s --no-such-flag: exit %d, want %d", cmd, code, exitUsage)
		}
		if stdout.Len() != 0 || !strings.Contains(stderr.String(), "no-such-flag") || !strings.Contains(stderr.String(), "Usage") {
			t.Errorf("warren %s --no-such-flag: stdout %q, stderr %q: want the error and usage on stderr only", cmd, &stdout, &stderr)
		}
	}
}

func TestRunVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("run(version) = %d; stderr %s", code, &stderr)
	}
	out := stdout.String()
	if !strings.HasPrefix(out, "warren ") || !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("version output %q: want one line starting \"warren \"", out)
	}
	if stderr.Len() != 0 {
		t.Errorf("version wrote to stderr: %q", &stderr)
	}
}

func TestRunToken(t *testing.T) {
	seen := make(map[string]bool)
	for range 5 {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"token"}, &stdout, &stderr); code != exitOK {
			t.Fatalf("run(token) = %d; stderr %s", code, &stderr)
		}
		out := stdout.String()
		tok, ok := strings.CutSuffix(out, "\n")
		if !ok || strings.Contains(tok, "\n") {
			t.Fatalf("token output %q: want one line", out)
		}
		if len(tok) != 43 {
			t.Fatalf("token %q: %d characters, want 43", tok, len(tok))
		}
		if b, err := base64.RawURLEncoding.DecodeString(tok); err != nil || len(b) != 32 {
			t.Fatalf("token %q: not 32 bytes of raw base64url (%d bytes, %v)", tok, len(b), err)
		}
		if seen[tok] {
			t.Fatalf("token %q printed twice", tok)
		}
		seen[tok] = true
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in       string
		wantKind string
		wantAddr string
		wantErr  bool
	}{
		{in: "kcp://:7000", wantKind: "kcp", wantAddr: ":7000"},
		{in: "tcp://0.0.0.0:7000", wantKind: "tcp", wantAddr: "0.0.0.0:7000"},
		{in: "tcp://[::1]:7000", wantKind: "tcp", wantAddr: "[::1]:7000"},
		{in: "kcp://tunnel.example.com:7000", wantKind: "kcp", wantAddr: "tunnel.example.com:7000"},
		{in: "", wantErr: true},
		{in: "host:7000", wantErr: true},
		{in: "udp://host:7000", wantErr: true},
		{in: "TCP://host:7000", wantErr: true},
		{in: "tcp:/host:7000", wantErr: true},
		{in: "://host:7000", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			kind, addr, err := parseEndpoint(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseEndpoint(%q) = %q, %q, nil; want error", tt.in, kind, addr)
				}
				if !strings.Contains(err.Error(), "kcp://host:port or tcp://host:port") {
					t.Errorf("parseEndpoint(%q) error %q does not show the form", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseEndpoint(%q): %v", tt.in, err)
			}
			if kind != tt.wantKind || addr != tt.wantAddr {
				t.Fatalf("parseEndpoint(%q) = %q, %q; want %q, %q", tt.in, kind, addr, tt.wantKind, tt.wantAddr)
			}
		})
	}
}

func TestParseService(t *testing.T) {
	tests := []struct {
		in      string
		want    client.Service
		wantErr bool
	}{
		{in: "ssh=2222:127.0.0.1:22", want: client.Service{Name: "ssh", RemotePort: 2222, Target: "127.0.0.1:22"}},
		{in: "web=0:localhost:80", want: client.Service{Name: "web", RemotePort: 0, Target: "localhost:80"}},
		{in: "v6=8080:[::1]:80", want: client.Service{Name: "v6", RemotePort: 8080, Target: "[::1]:80"}},
		{in: "", wantErr: true},
		{in: "ssh", wantErr: true},
		{in: "ssh=2222", wantErr: true},
		{in: "ssh=abc:127.0.0.1:22", wantErr: true},
		{in: "ssh=:127.0.0.1:22", wantErr: true},
		{in: "2222:127.0.0.1:22", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseService(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseService(%q) = %+v, nil; want error", tt.in, got)
				}
				if !strings.Contains(err.Error(), "NAME=REMOTE_PORT:TARGET_HOST:TARGET_PORT") {
					t.Errorf("parseService(%q) error %q does not show the form", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseService(%q): %v", tt.in, err)
			}
			if got.Name != tt.want.Name || got.RemotePort != tt.want.RemotePort || got.Target != tt.want.Target || len(got.Domains) != 0 {
				t.Fatalf("parseService(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSplitList(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"only commas and spaces", " , ,, ", nil},
		{"one", "2222", []string{"2222"}},
		{"several", "2222,8000-8100", []string{"2222", "8000-8100"}},
		{"spaces and empties dropped", " a , b,,c ,", []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := splitList(tt.in); !slices.Equal(got, tt.want) {
				t.Fatalf("splitList(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestQuickServer(t *testing.T) {
	const tok = "quick-token-0123456789"
	type args struct {
		listens                     []string
		tok, ports, domains, public string
		noTLS                       bool
	}
	tests := []struct {
		name    string
		env     string // $WARREN_TOKEN
		args    args
		wantErr string // prefix
		check   func(t *testing.T, cfg server.Config)
	}{
		{
			name: "ports with default listeners",
			args: args{tok: tok, ports: "2222, 8000-8100", public: "0.0.0.0"},
			check: func(t *testing.T, cfg server.Config) {
				if len(cfg.Listen) != 2 {
					t.Errorf("Listen = %v, want the two defaults", cfg.Listen)
				}
				if len(cfg.Clients) != 1 {
					t.Fatalf("Clients = %v, want one", cfg.Clients)
				}
				c := cfg.Clients[0]
				if c.Name != "default" || c.Token != tok {
					t.Errorf("client = %q with token %q", c.Name, c.Token)
				}
				want := []server.PortRange{{Lo: 2222, Hi: 2222}, {Lo: 8000, Hi: 8100}}
				if !slices.Equal(c.Ports, want) {
					t.Errorf("Ports = %v, want %v", c.Ports, want)
				}
				if len(c.Domains) != 0 {
					t.Errorf("Domains = %v, want none", c.Domains)
				}
				if cfg.TLS.Disabled {
					t.Error("TLS disabled without --no-tls")
				}
			},
		},
		{
			name: "listens domains no-tls public",
			args: args{listens: []string{"tcp://127.0.0.1:0", "kcp://:7001"}, tok: tok, domains: "*.example.com,app.example.org", public: "127.0.0.1", noTLS: true},
			check: func(t *testing.T, cfg server.Config) {
				want := []server.Listen{{Transport: "tcp", Address: "127.0.0.1:0"}, {Transport: "kcp", Address: ":7001"}}
				if !slices.Equal(cfg.Listen, want) {
					t.Errorf("Listen = %v, want %v", cfg.Listen, want)
				}
				if !slices.Equal(cfg.Clients[0].Domains, []string{"*.example.com", "app.example.org"}) {
					t.Errorf("Domains = %v", cfg.Clients[0].Domains)
				}
				if !cfg.TLS.Disabled || cfg.PublicAddress != "127.0.0.1" {
					t.Errorf("TLS.Disabled %v, PublicAddress %q", cfg.TLS.Disabled, cfg.PublicAddress)
				}
			},
		},
		{
			name: "token from environment",
			env:  "env-token-0123456789",
			args: args{ports: "2222", public: "0.0.0.0"},
			check: func(t *testing.T, cfg server.Config) {
				if got := cfg.Clients[0].Token; got != "env-token-0123456789" {
					t.Errorf("Token = %q, want the $WARREN_TOKEN value", got)
				}
			},
		},
		{
			name: "flag beats environment",
			env:  "env-token-0123456789",
			args: args{tok: tok, ports: "2222", public: "0.0.0.0"},
			check: func(t *testing.T, cfg server.Config) {
				if got := cfg.Clients[0].Token; got != tok {
					t.Errorf("Token = %q, want the --token value", got)
				}
			},
		},
		{name: "no token", args: args{ports: "2222"}, wantErr: "--token"},
		{name: "nothing to claim", args: args{tok: tok}, wantErr: "--ports or --domains"},
		{name: "empty lists claim nothing", args: args{tok: tok, ports: " , ", domains: ","}, wantErr: "--ports or --domains"},
		{name: "bad port", args: args{tok: tok, ports: "2222,0"}, wantErr: "--ports: "},
		{name: "backwards range", args: args{tok: tok, ports: "10-5"}, wantErr: "--ports: "},
		{name: "bad listen", args: args{listens: []string{"tcp://:7000", "quic://:7000"}, tok: tok, ports: "1"}, wantErr: "--listen: "},
		{name: "listen without scheme", args: args{listens: []string{":7000"}, tok: tok, ports: "1"}, wantErr: "--listen: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WARREN_TOKEN", tt.env)
			stateDir := t.TempDir()
			a := tt.args
			cfg, err := quickServer(a.listens, a.tok, a.ports, a.domains, a.public, stateDir, a.noTLS)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("quickServer() = %v, want error starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("quickServer(): %v", err)
			}
			if cfg.StateDir != stateDir {
				t.Errorf("StateDir = %q, want %q", cfg.StateDir, stateDir)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("quick config does not validate: %v", err)
			}
			tt.check(t, cfg)
		})
	}
}

// TestLongFlagValuesQuotedShort: a huge value on the command line is
// quoted by a short prefix and its length in the error, as config values
// are.
func TestLongFlagValuesQuotedShort(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	for _, args := range [][]string{
		{huge},
		{"version", huge},
		{"server", "--listen", huge, "--token", "tok-0123456789abcdef", "--ports", "1"},
		{"server", "--ports", huge, "--token", "tok-0123456789abcdef"},
		{"server", "--admin", huge, "--token", "tok-0123456789abcdef", "--ports", "1"},
		{"client", "--server", huge},
		{"client", "--server", "tcp://h:1", "--service", huge},
		{"status", "--admin", huge},
		{"check", "-c", "x", "--role", huge},
		{"demo", "--transport", huge},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != exitUsage {
			t.Errorf("warren %.30q: exit %d, want %d", args, code, exitUsage)
		}
		if n := stderr.Len(); n > 2000 || !strings.Contains(stderr.String(), "(1048576 bytes)") {
			t.Errorf("warren %.30q: %d bytes on stderr: %.300s", args, n, &stderr)
		}
	}
}
