package config

import (
	"strings"
	"testing"
)

// TestLongValuesQuotedShort: a huge value in any key gives an error of a
// few hundred bytes that quotes its start and says how long it was, never
// the whole value (a 10 MB line on stderr helps nobody).
func TestLongValuesQuotedShort(t *testing.T) {
	const base = `
[server]
public_address = "127.0.0.1"
heartbeat_interval = "5s"
[[server.listen]]
transport = "tcp"
address = "127.0.0.1:7000"
[server.kcp]
mode = "fast2"
[server.http]
address = ""
[server.admin]
address = "127.0.0.1:7001"
[server.log]
level = "info"
format = "text"
[[server.clients]]
name = "office"
token = "0123456789abcdef0123"
ports = ["2200-2299"]
domains = ["a.example.com"]

[client]
server = "tunnel.example.com:7000"
transport = "kcp"
token = "0123456789abcdef0123"
dial_timeout = "5s"
[client.tls]
fingerprint = "sha256:` + "abababababababababababababababababababababababababababababababab" + `"
[client.admin]
address = "127.0.0.1:7002"
[[client.services]]
name = "ssh"
target = "127.0.0.1:22"
remote_port = 2222
entry = ""
proxy_protocol = ""
`
	huge := strings.Repeat("x", 1<<20)
	tests := []struct {
		key string // as written in base, first occurrence
		old string // the value written there
		new string // what replaces it; huge where empty
	}{
		{key: "public_address", old: `"127.0.0.1"`},
		{key: "heartbeat_interval", old: `"5s"`},
		{key: "transport", old: `"tcp"`},
		{key: "address", old: `"127.0.0.1:7000"`},
		{key: "mode", old: `"fast2"`},
		{key: "address", old: `""`, new: `"` + huge + `:80"`},
		{key: "address", old: `"127.0.0.1:7001"`},
		{key: "level", old: `"info"`},
		{key: "format", old: `"text"`},
		{key: "name", old: `"office"`},
		{key: "token", old: `"0123456789abcdef0123"`, new: `"${` + huge + `}"`},
		{key: "token", old: `"0123456789abcdef0123"`, new: `"${X-` + huge + `}"`},
		{key: "ports", old: `["2200-2299"]`, new: `["` + huge + `"]`},
		{key: "domains", old: `["a.example.com"]`, new: `["` + huge + `"]`},
		{key: "domains", old: `["a.example.com"]`, new: `["*` + huge + `"]`},
		{key: "server", old: `"tunnel.example.com:7000"`},
		{key: "transport", old: `"kcp"`},
		{key: "dial_timeout", old: `"5s"`},
		{key: "fingerprint", old: `"sha256:` + strings.Repeat("ab", 32) + `"`},
		{key: "address", old: `"127.0.0.1:7002"`},
		{key: "name", old: `"ssh"`},
		{key: "target", old: `"127.0.0.1:22"`},
		{key: "entry", old: `""`},
		{key: "proxy_protocol", old: `""`},
		{key: "remote_port", old: `2222`, new: `2222` + "\n" + huge + ` = 1`},
		{key: "remote_port", old: `2222`, new: `2222` + "\n" + `"` + huge + `" = 1`},
		{key: "token", old: `"0123456789abcdef0123"`, new: `""` + "\ntoken_file = \"" + huge + `"`},
		{key: "token", old: `"0123456789abcdef0123"`, new: `""` + "\ntoken_env = \"" + huge + `"`},
		{key: "address", old: `"127.0.0.1:7001"`, new: `"127.0.0.1:7001"` + "\ntoken_env = \"" + huge + `"`},
	}
	for _, tt := range tests {
		value := tt.new
		if value == "" {
			value = `"` + huge + `"`
		}
		from := tt.key + " = " + tt.old
		if !strings.Contains(base, from) {
			t.Fatalf("base has no %q", from)
		}
		data := strings.Replace(base, from, tt.key+" = "+value, 1)
		_, err := Parse("w.toml", []byte(data), func(string) (string, bool) { return "", false })
		if err == nil {
			t.Errorf("%s = %.40s...: no error", tt.key, value)
			continue
		}
		if msg := err.Error(); len(msg) > 500 {
			t.Errorf("%s = %.40s...: error of %d bytes: %.300s...", tt.key, value, len(msg), msg)
		} else {
			t.Logf("%s: %s", tt.key, msg)
		}
	}
}
