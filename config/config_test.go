package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/transport"
)

const goodToken = "0123456789abcdef0123"

func TestParseFull(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tok")
	os.WriteFile(tokFile, []byte("  file-token-0123456789\n"), 0o600)
	env := map[string]string{"WARREN_TOKEN": "env-token-0123456789"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	f, err := Parse("w.toml", []byte(`
[server]
public_address = "127.0.0.1"
heartbeat_interval = "2s"
[[server.listen]]
transport = "tcp"
address = "127.0.0.1:7000"
[server.kcp]
mode = "fast3"
[[server.clients]]
name = "office"
token_file = "`+tokFile+`"
ports = [8080, "2200-2299"]
domains = ["*.Office.example.com."]
[server.log]
level = "debug"
format = "json"

[client]
server = "tunnel.example.com:7000"
token_env = "WARREN_TOKEN"
[client.tls]
fingerprint = "sha256:`+strings.Repeat("ab", 32)+`"
[[client.services]]
name = "ssh"
target = "127.0.0.1:22"
remote_port = 2222
`), lookup)
	if err != nil {
		t.Fatal(err)
	}
	s := f.Server
	if s.Clients[0].Token != "file-token-0123456789" || s.Clients[0].TokenFile != "" {
		t.Errorf("token_file not read: %+v", s.Clients[0])
	}
	if len(s.Listen) != 1 || s.Listen[0].Transport != "tcp" {
		t.Errorf("listen = %+v", s.Listen)
	}
	if s.KCP.Mode != "fast3" || s.KCP.MTU != 1350 {
		t.Errorf("kcp table not merged with defaults: %+v", s.KCP)
	}
	if s.HeartbeatInterval != 2*time.Second || s.HeartbeatMisses != 3 {
		t.Errorf("heartbeat %v x %d", s.HeartbeatInterval, s.HeartbeatMisses)
	}
	if got := s.Clients[0].Ports; len(got) != 2 || got[1].Lo != 2200 || got[1].Hi != 2299 {
		t.Errorf("ports = %v", got)
	}
	if s.Log.Level != "debug" || s.Log.Format != "json" {
		t.Errorf("log = %+v", s.Log)
	}
	c := f.Client
	if c.Token != "env-token-0123456789" || c.Transport != "kcp" || c.Services[0].RemotePort != 2222 {
		t.Errorf("client = %+v", c.Config)
	}
}

func TestDefaultListen(t *testing.T) {
	f, err := Parse("w.toml", []byte(`
[server]
[[server.clients]]
name = "a"
token = "`+goodToken+`"
ports = [1]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Server.Listen) != 2 {
		t.Fatalf("default listen = %+v", f.Server.Listen)
	}
	if f.Client != nil {
		t.Fatal("client table appeared from nowhere")
	}
}

func TestTLSFalse(t *testing.T) {
	f, err := Parse("w.toml", []byte(`
[client]
server = "h:1"
token = "`+goodToken+`"
tls = false
[[client.services]]
name = "a"
target = "127.0.0.1:1"
remote_port = 5
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Client.TLS.Disabled {
		t.Fatal("tls = false did not disable TLS")
	}
}

// TestServers: a client of several servers, each pinned.
func TestServers(t *testing.T) {
	fp1, fp2 := "sha256:"+strings.Repeat("ab", 32), "sha256:"+strings.Repeat("cd", 32)
	f, err := Parse("w.toml", []byte(`
[client]
servers = ["a.example.com:7000", "tcp://b.example.com:7000"]
max_servers = 1
token = "`+goodToken+`"
[client.tls]
fingerprint = ["`+fp1+`", "`+fp2+`"]
[[client.services]]
name = "a"
target = "127.0.0.1:1"
remote_port = 5
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := f.Client
	if len(c.Servers) != 2 || c.Servers[1] != "tcp://b.example.com:7000" || c.Server != "" || c.MaxServers != 1 || c.MinServers != 1 {
		t.Errorf("client = %+v", c.Config)
	}
	if pins := c.TLS.Pins(); len(pins) != 2 || pins[0] != fp1 || pins[1] != fp2 {
		t.Errorf("pins = %q", pins)
	}
}

// TestErrors: each bad file fails with a message naming the file and the
// key at fault.
func TestErrors(t *testing.T) {
	server := "[server]\n[[server.clients]]\nname = \"a\"\ntoken = \"" + goodToken + "\"\nports = [1]\n"
	client := "[client]\nserver = \"h:1\"\ntoken = \"" + goodToken + "\"\n[[client.services]]\nname = \"a\"\ntarget = \"127.0.0.1:1\"\n"
	cases := []struct {
		name, file string
		want       []string
	}{
		{"syntax", "[server\n", []string{"w.toml:2", "end table name"}},
		{"unquoted token not echoed", "[client]\ntoken = s3cret-token-0123456789\n", []string{"w.toml:2", "client.token", `found "…" instead`}},
		{"unknown key", server + "[server.kcp]\nmtuu = 1\n", []string{"w.toml", "unknown key server.kcp.mtuu"}},
		{"unknown top table", "[sever]\n", []string{"unknown key sever"}},
		{"empty file", "", []string{"neither a [server] nor a [client]"}},
		{"wrong type", server + "[server.kcp]\nmtu = \"big\"\n", []string{"server.kcp.mtu", "incompatible types"}},
		{"mtu out of range", server + "[server.kcp]\nmtu = 9000\n", []string{"server.kcp.mtu: 9000 is out of range"}},
		{"bad mode", server + "[server.kcp]\nmode = \"turbo\"\n", []string{"server.kcp.mode", "turbo"}},
		{"rate not auto", server + "[server.kcp]\nrate_mbit = \"fast\"\n", []string{"w.toml", "server.kcp.rate_mbit", `"fast" is not "auto" or a number`}},
		{"rate negative", client + "remote_port = 1\n[client.kcp]\nrate_mbit = -1\n", []string{"client.kcp.rate_mbit", "-1 is out of range"}},
		{"rate fraction", server + "[server.kcp]\nrate_mbit = 2.5\n", []string{"server.kcp.rate_mbit", "2.5 is not"}},
		{"rate too high", server + "[server.kcp]\nrate_mbit = 100000\n", []string{"server.kcp.rate_mbit", "100000 is out of range"}},
		{"bad congestion", server + "[server.tcp]\ncongestion = \"BBR\"\n", []string{"server.tcp.congestion", "BBR"}},
		{"port out of range", "[server]\n[[server.clients]]\nname = \"a\"\ntoken = \"" + goodToken + "\"\nports = [70000]\n", []string{"server.clients.ports", "70000"}},
		{"short token", "[server]\n[[server.clients]]\nname = \"a\"\ntoken = \"short\"\nports = [1]\n", []string{"server.clients[0] (a).token", "too short"}},
		{"empty token", "[server]\n[[server.clients]]\nname = \"a\"\nports = [1]\n", []string{"server.clients[0] (a).token: missing"}},
		{"two token sources", "[server]\n[[server.clients]]\nname = \"a\"\ntoken = \"" + goodToken + "\"\ntoken_env = \"X\"\nports = [1]\n", []string{"set only one"}},
		{"unset token_env", "[server]\n[[server.clients]]\nname = \"a\"\ntoken_env = \"NOPE\"\nports = [1]\n", []string{"server.clients[0] (a).token_env", "NOPE is not set"}},
		{"missing token_file", "[server]\n[[server.clients]]\nname = \"a\"\ntoken_file = \"/nonexistent/tok\"\nports = [1]\n", []string{"token_file", "/nonexistent/tok"}},
		{"duplicate client", server + "[[server.clients]]\nname = \"a\"\ntoken = \"another-token-0123456\"\nports = [1]\n", []string{"server.clients[1] (a).name", "also the name"}},
		{"bad listen address", server + "[[server.listen]]\ntransport = \"tcp\"\naddress = \"7000\"\n", []string{"server.listen[0].address", "host:port"}},
		{"bad transport", server + "[[server.listen]]\ntransport = \"quic\"\naddress = \":7000\"\n", []string{"server.listen[0].transport", "quic"}},
		{"bad duration", "[server]\nheartbeat_interval = 5\n" + server[len("[server]\n"):], []string{"server.heartbeat_interval", "durations are strings"}},
		{"bad domain", "[server]\n[[server.clients]]\nname = \"a\"\ntoken = \"" + goodToken + "\"\ndomains = [\"a..b\"]\n", []string{"server.clients[0] (a).domains[0]"}},
		{"bad log level", server + "[server.log]\nlevel = \"loud\"\n", []string{"server.log.level", "loud"}},
		{"bad fingerprint", client + "remote_port = 1\n[client.tls]\nfingerprint = \"md5:00\"\n", []string{"client.tls.fingerprint"}},
		{"tls unknown key", client + "remote_port = 1\n[client.tls]\nfingerprnt = \"x\"\n", []string{"client.tls", "unknown key \"fingerprnt\""}},
		{"insecure and pinned", client + "remote_port = 1\n[client.tls]\ninsecure_skip_verify = true\nfingerprint = \"sha256:" + strings.Repeat("0", 64) + "\"\n", []string{"insecure_skip_verify contradicts"}},
		{"no services", "[client]\nserver = \"h:1\"\ntoken = \"" + goodToken + "\"\n", []string{"client.services: nothing to serve"}},
		{"bad target", "[client]\nserver = \"h:1\"\ntoken = \"" + goodToken + "\"\n[[client.services]]\nname = \"a\"\ntarget = \"nowhere\"\n", []string{"client.services[0] (a).target"}},
		{"admin beyond loopback without token", server + "[server.admin]\naddress = \"0.0.0.0:7001\"\n", []string{"server.admin.token: required"}},
		{"admin bad address", client + "remote_port = 1\n[client.admin]\naddress = \"7001\"\n", []string{"client.admin.address"}},
		{"admin unset token_env", client + "remote_port = 1\n[client.admin]\naddress = \"0.0.0.0:7001\"\ntoken_env = \"NOPE\"\n", []string{"client.admin.token_env", "NOPE is not set"}},
		{"admin unknown key", server + "[server.admin]\nadress = \"127.0.0.1:7001\"\n", []string{"unknown key server.admin.adress"}},
		{"bad server", "[client]\nserver = \"h\"\ntoken = \"" + goodToken + "\"\n", []string{"client.server", "host:port"}},
		{"server and servers", "[client]\nserver = \"h:1\"\nservers = [\"h:2\"]\ntoken = \"" + goodToken + "\"\n", []string{"client.server and client.servers: set one of the two"}},
		{"servers empty", "[client]\nservers = []\ntoken = \"" + goodToken + "\"\n", []string{"client.servers: the list is empty"}},
		{"servers duplicate", "[client]\nservers = [\"h:1\", \"kcp://h:1\"]\ntoken = \"" + goodToken + "\"\n", []string{"client.servers[1]", "same server as client.servers[0]"}},
		{"servers not a list", "[client]\nservers = \"h:1\"\ntoken = \"" + goodToken + "\"\n", []string{"client.servers"}},
		{"fingerprint list empty", client + "remote_port = 1\n[client.tls]\nfingerprint = []\n", []string{"client.tls", "fingerprint: an empty list pins nothing"}},
		{"fingerprint list bad entry", client + "remote_port = 1\n[client.tls]\nfingerprint = [\"sha256:" + strings.Repeat("0", 64) + "\", \"md5:00\"]\n", []string{"client.tls.fingerprint[1]"}},
		{"fingerprint list of numbers", client + "remote_port = 1\n[client.tls]\nfingerprint = [1]\n", []string{"client.tls", "fingerprint[0]: want a string"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("w.toml", []byte(tc.file), func(string) (string, bool) { return "", false })
			if err == nil {
				t.Fatal("parsed without error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows the token", err)
			}
			if !strings.HasPrefix(err.Error(), "w.toml") {
				t.Errorf("error %q does not name the file first", err)
			}
		})
	}
}

// TestAdmin: [server.admin] and [client.admin] are read, off by default,
// and their token_env resolved.
func TestAdmin(t *testing.T) {
	env := map[string]string{"ADMIN_TOKEN": "admin-token-0123456789"}
	f, err := Parse("w.toml", []byte(`
[server]
[server.admin]
address = "127.0.0.1:7001"
[[server.clients]]
name = "a"
token = "`+goodToken+`"
ports = [1]
[client]
server = "h:1"
token = "`+goodToken+`"
[client.admin]
address = "0.0.0.0:7002"
token_env = "ADMIN_TOKEN"
[[client.services]]
name = "a"
target = "127.0.0.1:1"
remote_port = 1
`), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if a := f.Server.Admin; a.Address != "127.0.0.1:7001" || a.Token != "" {
		t.Errorf("server admin = %+v", a)
	}
	if a := f.Client.Admin; a.Address != "0.0.0.0:7002" || a.Token != "admin-token-0123456789" || a.TokenEnv != "" {
		t.Errorf("client admin = %+v", a)
	}
	f, err = Parse("w.toml", []byte("[server]\n[[server.clients]]\nname = \"a\"\ntoken = \""+goodToken+"\"\nports = [1]\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.Server.Admin.Enabled() {
		t.Errorf("admin on by default: %+v", f.Server.Admin)
	}
}

func TestNoSectionIsSentinel(t *testing.T) {
	_, err := Parse("w.toml", []byte("# nothing\n"), nil)
	if !errors.Is(err, ErrNoSection) {
		t.Fatalf("err = %v", err)
	}
}

// FuzzParse: any file parses or fails with an error; never a panic, with
// or without ${NAME} references.
func FuzzParse(f *testing.F) {
	f.Add([]byte("[server]\n[[server.clients]]\nname = \"a\"\ntoken = \"" + goodToken + "\"\nports = [1, \"2-3\"]\n"))
	f.Add([]byte("[client]\nserver = \"h:1\"\ntls = false\n[[client.services]]\nname = \"a\"\n"))
	f.Add([]byte("[server.tls]\ncert = 1\n"))
	f.Add([]byte(expandBase))
	f.Add([]byte("[client]\nserver = '${A}:1'\ntoken = \"\"\"$${B}${CC}\"\"\"\n[[client.services]]\nname = \"${\"\n"))
	// Names of odd length are set, to values TOML would need to escape.
	lookup := func(k string) (string, bool) { return "\"'\\\n${" + k + "}", len(k)%2 == 1 }
	f.Fuzz(func(t *testing.T, data []byte) {
		Parse("fuzz.toml", data, lookup)
	})
}

// TestRateMbit: [kcp] rate_mbit takes "auto" (the rate controller, the
// default), a number of Mbit/s, or 0 for unpaced; [tcp] congestion
// defaults to "auto".
func TestRateMbit(t *testing.T) {
	server := "[server]\n[[server.clients]]\nname = \"a\"\ntoken = \"" + goodToken + "\"\nports = [1]\n"
	for _, tc := range []struct {
		kcp  string
		want transport.Rate
	}{
		{"", transport.RateAuto},
		{"rate_mbit = \"auto\"\n", transport.RateAuto},
		{"rate_mbit = 90\n", 90},
		{"rate_mbit = 0\n", 0},
	} {
		f, err := Parse("w.toml", []byte(server+"[server.kcp]\n"+tc.kcp), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatalf("%q: %v", tc.kcp, err)
		}
		if got := f.Server.KCP.RateMbit; got != tc.want {
			t.Errorf("%q: rate_mbit = %v, want %v", tc.kcp, got, tc.want)
		}
		if got := f.Server.TCP.Congestion; got != transport.CongestionAuto {
			t.Errorf("tcp congestion = %q, want auto", got)
		}
	}
}
