package config

import (
	"strings"
	"testing"
	"time"
)

// expandBase is a valid file with both tables; cases append to it or
// replace a line of it.
const expandBase = `[server]
state_dir = "${STATE}"
heartbeat_interval = "${HB}"
[server.tls]
cert = "${CERTS}/server.pem"
key = '${CERTS}/server.key'
[[server.clients]]
name = "a"
token = "${A_TOKEN}"
ports = [1]
[[server.clients]]
name = "${B_NAME}"
token = "${B_TOKEN}"
ports = ["${B_PORTS}", 9]
domains = ["x.example.com", "${B_DOMAIN}"]

[client]
server = "${HOST}:7000"
token = """
${A_TOKEN}"""
[client.tls]
ca = "${CERTS}/ca.pem"
server_name = "${EMPTY}"
[[client.services]]
name = "web"
target = "backend:${PORT}"
remote_port = 8080
[[client.services]]
name = "ssh"
target = "127.0.0.1:22"
remote_port = 2222
domains = ["${SSH_DOMAIN}"]
`

var expandEnv = map[string]string{
	"STATE":      "/srv/warren",
	"HB":         "2s",
	"CERTS":      "/etc/warren",
	"A_TOKEN":    `quote"back\slash'0123456789`,
	"B_NAME":     "branch",
	"B_TOKEN":    "b-token-0123456789abcdef",
	"B_PORTS":    "2200-2299",
	"B_DOMAIN":   "*.branch.example.com",
	"HOST":       "tunnel.example.com",
	"EMPTY":      "",
	"PORT":       "80",
	"SSH_DOMAIN": "ssh.example.com",
}

func envLookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// TestExpand: ${NAME} is replaced in every string value, whatever its
// quoting, in nested tables and arrays of tables, and in values that are
// decoded further (durations, port ranges).
func TestExpand(t *testing.T) {
	f, err := Parse("w.toml", []byte(expandBase), envLookup(expandEnv))
	if err != nil {
		t.Fatal(err)
	}
	s, c := f.Server, f.Client
	cases := []struct {
		name, got, want string
	}{
		{"top-level string", s.StateDir, "/srv/warren"},
		{"duration", s.HeartbeatInterval.String(), (2 * time.Second).String()},
		{"nested table, basic string", s.TLS.Cert, "/etc/warren/server.pem"},
		{"nested table, literal string", s.TLS.Key, "/etc/warren/server.key"},
		{"value with quotes and backslashes", s.Clients[0].Token, expandEnv["A_TOKEN"]},
		{"second array-of-tables entry", s.Clients[1].Name, "branch"},
		{"port range in an array", s.Clients[1].Ports[0].String(), "2200-2299"},
		{"number next to it untouched", s.Clients[1].Ports[1].String(), "9"},
		{"string array element", s.Clients[1].Domains[1], "*.branch.example.com"},
		{"reference inside a value", c.Server, "tunnel.example.com:7000"},
		{"multi-line string", c.Token, expandEnv["A_TOKEN"]},
		{"set but empty", c.TLS.ServerName, ""},
		{"client array of tables", c.Services[0].Target, "backend:80"},
		{"array in an array of tables", c.Services[1].Domains[0], "ssh.example.com"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

// TestExpandLiteral: what is not a ${NAME} reference in a string value is
// left as written, and $${ writes a literal ${.
func TestExpandLiteral(t *testing.T) {
	env := map[string]string{"X": "expanded", "HOME": "/root"}
	cases := []struct {
		name, value, want string
	}{
		{"no braces", `$HOME/x`, `$HOME/x`},
		{"lone dollar", `a$b$`, `a$b$`},
		{"double dollar", `a$$b`, `a$$b`},
		{"escape", `$${X}`, `${X}`},
		{"escape of an unset name", `$${NOT_SET}`, `${NOT_SET}`},
		{"escape then reference", `$${X}${X}`, `${X}expanded`},
		{"three dollars", `$$${X}`, `$${X}`},
		{"escaped malformed", `$${1}`, `${1}`},
		{"braces without dollar", `{X}`, `{X}`},
		{"adjacent references", `${X}${X}`, `expandedexpanded`},
		{"underscore and digits", `${X}_1`, `expanded_1`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := expandString(tc.value, envLookup(env))
			if err != nil {
				t.Fatalf("%q: %s", tc.value, err.msg)
			}
			if got != tc.want {
				t.Errorf("%q expanded to %q, want %q", tc.value, got, tc.want)
			}
		})
	}
}

// TestExpandNotValues: keys and comments are never expanded, so an unset
// name there is no error.
func TestExpandNotValues(t *testing.T) {
	file := "# ${NOT_SET} in a comment\n" + expandBase
	if _, err := Parse("w.toml", []byte(file), envLookup(expandEnv)); err != nil {
		t.Fatalf("a comment was expanded: %v", err)
	}
	file = strings.Replace(expandBase, "[server.tls]\n", "[server.tls]\n\"${NOT_SET}\" = \"v\"\n", 1)
	_, err := Parse("w.toml", []byte(file), envLookup(expandEnv))
	if err == nil || !strings.Contains(err.Error(), "unknown key") || strings.Contains(err.Error(), "not set") {
		t.Fatalf("a quoted key was expanded or accepted: %v", err)
	}
}

// TestExpandErrors: an unset variable or a malformed reference fails with
// the file, the key, and the line when the reference is on one line only.
func TestExpandErrors(t *testing.T) {
	without := func(names ...string) map[string]string {
		env := map[string]string{}
		for k, v := range expandEnv {
			env[k] = v
		}
		for _, n := range names {
			delete(env, n)
		}
		return env
	}
	withValue := func(old, new string) string {
		if !strings.Contains(expandBase, old) {
			panic(old)
		}
		return strings.Replace(expandBase, old, new, 1)
	}
	cases := []struct {
		name string
		file string
		env  map[string]string
		want string // the whole error
	}{
		{"unset in an array of tables", expandBase, without("B_TOKEN"),
			"w.toml:13: server.clients[1].token: ${B_TOKEN} is not set"},
		{"unset in a nested table", expandBase, without("HOST"),
			"w.toml:18: client.server: ${HOST} is not set"},
		{"unset in an array", expandBase, without("B_DOMAIN"),
			"w.toml:15: server.clients[1].domains[1]: ${B_DOMAIN} is not set"},
		{"unset in a duration", expandBase, without("HB"),
			"w.toml:3: server.heartbeat_interval: ${HB} is not set"},
		{"unset twice: no line", expandBase, without("A_TOKEN"),
			"w.toml: server.clients[0].token: ${A_TOKEN} is not set\n" +
				"w.toml: client.token: ${A_TOKEN} is not set"},
		{"several unset, in key order", expandBase, without("PORT", "STATE"),
			"w.toml:2: server.state_dir: ${STATE} is not set\n" +
				"w.toml:26: client.services[0].target: ${PORT} is not set"},
		{"unset with the same name also in a comment: no line",
			"# use ${STATE}\n" + expandBase, without("STATE"),
			"w.toml: server.state_dir: ${STATE} is not set"},
		{"unclosed", withValue(`"${HOST}:7000"`, `"${HOST:7000"`), expandEnv,
			`w.toml: client.server: "${HOST:7000" is not a ${NAME} reference (NAME is letters, digits and _, not starting with a digit; write $${ for a literal ${)`},
		{"default syntax is not supported", withValue(`"${HOST}:7000"`, `"${HOST:-localhost}:7000"`), expandEnv,
			`w.toml: client.server: "${HOST:-localhost}" is not a ${NAME} reference (NAME is letters, digits and _, not starting with a digit; write $${ for a literal ${)`},
		{"empty name", withValue(`"${HOST}:7000"`, `"${}:7000"`), expandEnv,
			`w.toml: client.server: "${}" is not a ${NAME} reference (NAME is letters, digits and _, not starting with a digit; write $${ for a literal ${)`},
		{"leading digit", withValue(`"${HOST}:7000"`, `"${1HOST}:7000"`), expandEnv,
			`w.toml: client.server: "${1HOST}" is not a ${NAME} reference (NAME is letters, digits and _, not starting with a digit; write $${ for a literal ${)`},
		{"no environment at all", "[client]\nserver = \"${HOST}:1\"\n", nil,
			"w.toml:2: client.server: ${HOST} is not set"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lookup := envLookup(tc.env)
			if tc.env == nil {
				lookup = nil
			}
			_, err := Parse("w.toml", []byte(tc.file), lookup)
			if err == nil {
				t.Fatal("parsed without error")
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n%s\nwant:\n%s", err, tc.want)
			}
		})
	}
}

// TestExpandedValueIsValidated: an expanded value goes through the same
// checks as one written in the file.
func TestExpandedValueIsValidated(t *testing.T) {
	env := map[string]string{}
	for k, v := range expandEnv {
		env[k] = v
	}
	env["HB"] = "soon"
	_, err := Parse("w.toml", []byte(expandBase), envLookup(env))
	if err == nil || !strings.Contains(err.Error(), "w.toml:3: server.heartbeat_interval") {
		t.Fatalf("err = %v", err)
	}
	env["HB"], env["B_PORTS"] = "2s", "70000"
	_, err = Parse("w.toml", []byte(expandBase), envLookup(env))
	if err == nil || !strings.Contains(err.Error(), "70000") {
		t.Fatalf("err = %v", err)
	}
}

// FuzzExpand: expansion never panics; text without "${" is left alone;
// escaping every "${" as "$${" gives back the text exactly.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{"", "${A}", "$${A}", "$$${A}", "${A", "${", "$", "${A}${B}x", "a$b", "${1}", "${A:-b}", "$${${A}}"} {
		f.Add(s)
	}
	lookup := func(k string) (string, bool) { return "<" + k + ">", len(k)%2 == 1 }
	f.Fuzz(func(t *testing.T, s string) {
		got, err := expandString(s, lookup)
		if !strings.Contains(s, "${") && (err != nil || got != s) {
			t.Fatalf("%q changed to %q (%v)", s, got, err)
		}
		escaped := strings.ReplaceAll(s, "${", "$${")
		back, err := expandString(escaped, nil)
		if err != nil || back != s {
			t.Fatalf("%q escaped as %q expanded to %q (%v)", s, escaped, back, err)
		}
	})
}
