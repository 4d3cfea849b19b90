package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckCommand(t *testing.T) {
	const tok = "check-test-token-0123456789"
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose-token")
	os.WriteFile(loose, []byte(tok+"\n"), 0o644)
	os.Chmod(loose, 0o644)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	looseConf := write("loose.toml", "[client]\nserver = \"h:7000\"\ntoken_file = \""+loose+"\"\n[[client.services]]\nname = \"a\"\ntarget = \"127.0.0.1:1\"\n")
	badCert := write("cert.toml", "[server]\n[server.tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent-key.pem\"\n[[server.clients]]\nname = \"a\"\ntoken = \""+tok+"\"\nports = [1]\n")
	typo := write("typo.toml", "[server]\nreconect_grace = \"1s\"\n")
	const example = "../../config.example.toml"

	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantCode   int
		wantStdout []string
		wantStderr string
	}{
		{name: "both tables", args: []string{"-c", example}, env: map[string]string{"WARREN_OFFICE_TOKEN": tok, "WARREN_TOKEN": tok},
			wantStdout: []string{"[server] ok: listens on kcp 0.0.0.0:7000, tcp 0.0.0.0:7000", "clients: office", "[client] ok: tunnel.example.com:7000 over kcp; services: web, ssh"}},
		{name: "both tables, one side's environment", args: []string{"-c", example}, env: map[string]string{"WARREN_TOKEN": tok},
			wantCode: exitUsage, wantStderr: "WARREN_OFFICE_TOKEN is not set"},
		// The case: the client side of the example needs only the
		// client's token.
		{name: "client table", args: []string{"-c", example, "--role", "client"}, env: map[string]string{"WARREN_TOKEN": tok},
			wantStdout: []string{"[client] ok"}},
		{name: "server table", args: []string{"-c", example, "--role", "server"}, env: map[string]string{"WARREN_OFFICE_TOKEN": tok},
			wantStdout: []string{"[server] ok"}},
		{name: "typo", args: []string{"-c", typo}, wantCode: exitUsage, wantStderr: "did you mean server.reconnect_grace?"},
		{name: "missing certificate", args: []string{"-c", badCert}, wantCode: exitUsage, wantStderr: "/nonexistent.pem"},
		{name: "loose token file", args: []string{"-c", looseConf}, wantStdout: []string{"[client] ok"},
			wantStderr: "warning: " + looseConf + ": client.token_file: " + loose + " is readable by its group or others (mode 0644)"},
		{name: "no such table", args: []string{"-c", looseConf, "--role", "server"}, wantCode: exitUsage, wantStderr: "no [server] table"},
		{name: "no file", args: nil, wantCode: exitUsage, wantStderr: "-c FILE is required"},
		{name: "missing file", args: []string{"-c", filepath.Join(dir, "nope.toml")}, wantCode: exitUsage, wantStderr: "no such file"},
		{name: "bad role", args: []string{"-c", example, "--role", "both"}, wantCode: exitUsage, wantStderr: "--role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"WARREN_OFFICE_TOKEN", "WARREN_TOKEN"} {
				t.Setenv(k, tt.env[k])
				if _, ok := tt.env[k]; !ok {
					os.Unsetenv(k)
				}
			}
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"check"}, tt.args...), &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("check %q: exit %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, &stdout, &stderr)
			}
			for _, s := range tt.wantStdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, &stdout)
				}
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q lacks %q", &stderr, tt.wantStderr)
			}
			if strings.Contains(stdout.String()+stderr.String(), tok) {
				t.Errorf("output shows the token")
			}
		})
	}
}
