package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// bothTables has a server and a client table, each with a secret from the
// environment that only its own side has, a ${NAME} only the client's
// environment sets, and a typo only in the client table.
const bothTables = `
[server]
[[server.clients]]
name = "office"
token_env = "SERVER_SIDE_TOKEN"
ports = [2222]

[client]
server = "${TUNNEL_HOST}:7000"
token_env = "CLIENT_SIDE_TOKEN"
%s
[[client.services]]
name = "ssh"
target = "127.0.0.1:22"
remote_port = 2222
`

// TestTableOnly: a file holding both tables runs either side with only
// that side's environment; checking both needs both.
func TestTableOnly(t *testing.T) {
	serverEnv := envLookup(map[string]string{"SERVER_SIDE_TOKEN": goodToken + "-server"})
	clientEnv := envLookup(map[string]string{"CLIENT_SIDE_TOKEN": goodToken + "-client", "TUNNEL_HOST": "tunnel.example.com"})
	bothEnv := envLookup(map[string]string{"SERVER_SIDE_TOKEN": goodToken + "-server", "CLIENT_SIDE_TOKEN": goodToken + "-client", "TUNNEL_HOST": "h"})
	file := []byte(strings.Replace(bothTables, "%s", "", 1))

	f, err := ParseTable("w.toml", file, TableServer, serverEnv)
	if err != nil {
		t.Fatalf("server table with the server's environment: %v", err)
	}
	if f.Server == nil || f.Client != nil || f.Server.Clients[0].Token != goodToken+"-server" {
		t.Errorf("server table: got server %v, client %v", f.Server != nil, f.Client != nil)
	}
	f, err = ParseTable("w.toml", file, TableClient, clientEnv)
	if err != nil {
		t.Fatalf("client table with the client's environment: %v", err)
	}
	if f.Client == nil || f.Server != nil || f.Client.Server != "tunnel.example.com:7000" {
		t.Errorf("client table: got server %v, client %v", f.Server != nil, f.Client != nil)
	}
	if _, err := Parse("w.toml", file, bothEnv); err != nil {
		t.Errorf("both tables with both environments: %v", err)
	}
	for _, tt := range []struct {
		name, table string
		lookup      func(string) (string, bool)
		wantErr     string
	}{
		{"both tables, server's environment", "", serverEnv, "TUNNEL_HOST"},
		{"both tables, client's environment", "", clientEnv, "SERVER_SIDE_TOKEN"},
		{"server table, client's environment", TableServer, clientEnv, "server.clients[0] (office).token_env: environment variable SERVER_SIDE_TOKEN is not set"},
		{"client table, server's environment", TableClient, serverEnv, "${TUNNEL_HOST} is not set"},
		{"no such table", "proxy", bothEnv, `table "proxy"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTable("w.toml", file, tt.table, tt.lookup)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}

	// A typo in the table not run is not this side's business; checking
	// the whole file finds it.
	typo := []byte(strings.Replace(bothTables, "%s", "heartbeat_intervall = \"5s\"", 1))
	if _, err := ParseTable("w.toml", typo, TableServer, serverEnv); err != nil {
		t.Errorf("server table, typo in the client's: %v", err)
	}
	if _, err := Parse("w.toml", typo, bothEnv); err == nil || !strings.Contains(err.Error(), "client.heartbeat_intervall") {
		t.Errorf("both tables, typo in the client's: err = %v", err)
	}
}

// TestUnknownKeySuggestions: an unknown key is named with the nearest key
// that exists.
func TestUnknownKeySuggestions(t *testing.T) {
	clients := "\n[[server.clients]]\nname = \"a\"\ntoken = \"" + goodToken + "\"\nports = [1]\n"
	tests := []struct {
		name, file, want string
	}{
		{"typo", "[server]\nheartbeat_intervall = \"5s\"\n", "unknown key server.heartbeat_intervall (did you mean server.heartbeat_interval?)"},
		{"in a sub-table", "[server.admin]\nadress = \"127.0.0.1:1\"\n", "unknown key server.admin.adress (did you mean server.admin.address?)"},
		{"in an array table", "[[server.listen]]\ntransprot = \"tcp\"\naddress = \":1\"\n", "(did you mean server.listen.transport?)"},
		{"hyphen for underscore", "[server.limits]\nmax-streams = 5\n", "(did you mean server.limits.max_streams?)"},
		{"right key, wrong table", "[server]\nmode = \"fast\"\n", "unknown key server.mode (did you mean server.kcp.mode?)"},
		{"client key in the client table", "[client]\nfingerprint = \"x\"\n", "unknown key client.fingerprint (did you mean client.tls.fingerprint?)"},
		{"in the tls table", "[client.tls]\nfingerprnt = \"x\"\n", `client.tls: unknown key "fingerprnt" (did you mean fingerprint?)`},
		{"misspelled table", "[sever]\npublic_address = \"1.2.3.4\"\n", "(did you mean server?)"},
		{"nothing near", "[server]\nfrobnicate = 1\n", "unknown key server.frobnicate"},
		{"two keys", "[server]\nfrobnicate = 1\nreconect_grace = \"1s\"\n", "unknown key server.frobnicate; unknown key server.reconect_grace (did you mean server.reconnect_grace?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.file
			if strings.HasPrefix(file, "[server") || strings.HasPrefix(file, "[[server") {
				file += clients
			}
			_, err := Parse("w.toml", []byte(file), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tt.want)
			}
			if tt.name == "nothing near" && strings.Contains(err.Error(), "did you mean") {
				t.Errorf("err = %v: suggests a key nothing like it", err)
			}
		})
	}
}

// TestTokenFileModeWarning: a token file its group or others may read is
// a warning that names it, its key and its mode; a private one is not.
func TestTokenFileModeWarning(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o644, true}, {0o604, true}} {
		path := filepath.Join(dir, "token")
		os.Remove(path)
		if err := os.WriteFile(path, []byte(goodToken+"\n"), tt.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, tt.mode) // whatever the umask
		f, err := Parse("w.toml", []byte("[client]\nserver = \"h:1\"\ntoken_file = \""+path+"\"\n[[client.services]]\nname = \"a\"\ntarget = \"127.0.0.1:1\"\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(f.Warnings, "\n")
		if !tt.warn {
			if got != "" {
				t.Errorf("mode %04o: warnings %q, want none", tt.mode, got)
			}
			continue
		}
		for _, want := range []string{"client.token_file", path, "group or others", "0" + strings.TrimPrefix(tt.mode.String(), "-")[:0]} {
			if !strings.Contains(got, want) {
				t.Errorf("mode %04o: warnings %q lack %q", tt.mode, got, want)
			}
		}
		if want := "(mode 0" + string("01234567"[tt.mode>>6&7]) + string("01234567"[tt.mode>>3&7]) + string("01234567"[tt.mode&7]) + ")"; !strings.Contains(got, want) {
			t.Errorf("mode %04o: warnings %q lack %q", tt.mode, got, want)
		}
	}
}

// TestURLInsteadOfAddress: the quick-mode form kcp://host:port in a file
// says how the file spells it.
func TestURLInsteadOfAddress(t *testing.T) {
	for _, tt := range []struct{ file, want string }{
		{"[client]\nserver = \"kcp://tunnel.example.com:7000\"\ntoken = \"" + goodToken + "\"\n[[client.services]]\nname = \"a\"\ntarget = \"127.0.0.1:1\"\n",
			`client.server: "kcp://tunnel.example.com:7000": the config file takes host:port here and the transport apart: server = "tunnel.example.com:7000" and transport = "kcp"`},
		{"[server]\n[[server.listen]]\naddress = \"tcp://0.0.0.0:7000\"\ntransport = \"tcp\"\n[[server.clients]]\nname = \"a\"\ntoken = \"" + goodToken + "\"\nports = [1]\n",
			`server.listen[0].address: "tcp://0.0.0.0:7000": the config file takes host:port here and the transport apart: address = "0.0.0.0:7000" and transport = "tcp"`},
	} {
		_, err := Parse("w.toml", []byte(tt.file), nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err = %v\nwant it to contain %s", err, tt.want)
		}
	}
}
