package config

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/server"
)

// The files under deploy/ and the compose file are checked here because no
// Docker engine or systemd runs in CI: the configs must load, their TLS
// files must fit together, and every stop timeout must leave room for the
// drain.

// composeMounts maps the container paths docker-compose.yml mounts the
// demo's files at to where they are in the repository.
var composeMounts = map[string]string{
	"/etc/warren/tls/": "../deploy/compose/demo-tls/",
}

func hostPath(p string) string {
	for in, out := range composeMounts {
		if rest, ok := strings.CutPrefix(p, in); ok {
			return out + rest
		}
	}
	return p
}

// TestComposeConfigsLoad: every deploy/compose/*.toml loads as the daemon
// would load it, with the environment docker-compose.yml gives it, and
// needs no variable the compose file does not set.
func TestComposeConfigsLoad(t *testing.T) {
	compose, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("../deploy/compose/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy/compose/*.toml: %v", err)
	}
	lookup := func(k string) (string, bool) {
		// Every variable a config reads must be passed by the compose file.
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(k) + `:`).Match(compose) {
			t.Errorf("a config reads $%s, which docker-compose.yml does not set", k)
			return "", false
		}
		return "compose-test-token-0123456789", true
	}
	var sides []string
	for _, path := range files {
		f, err := Load(path, lookup)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if f.Server != nil {
			sides = append(sides, "server")
			tlsCfg := f.Server.TLS
			if _, err := tls.LoadX509KeyPair(hostPath(tlsCfg.Cert), hostPath(tlsCfg.Key)); err != nil {
				t.Errorf("%s: [server.tls]: %v", path, err)
			}
		}
		if f.Client != nil {
			sides = append(sides, "client")
		}
	}
	if strings.Join(sides, ",") != "client,server" {
		t.Errorf("deploy/compose has configs for %v, want one client and one server", sides)
	}
}

// TestComposeDemoTLS: the client's CA and server_name accept the server's
// certificate, which has years left.
func TestComposeDemoTLS(t *testing.T) {
	env := func(string) (string, bool) { return "compose-test-token-0123456789", true }
	srv, err := Load("../deploy/compose/server.toml", env)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := Load("../deploy/compose/client.toml", env)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(hostPath(srv.Server.TLS.Cert), hostPath(srv.Server.TLS.Key))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(hostPath(cl.Client.TLS.CA))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("client.tls.ca holds no certificate")
	}
	name := cl.Client.TLS.ServerName
	if name == "" {
		name = strings.Split(cl.Client.Server, ":")[0]
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
		t.Errorf("the client would reject the server's certificate: %v", err)
	}
	if left := time.Until(leaf.NotAfter); left < 365*24*time.Hour {
		t.Errorf("the demo certificate expires %s: run deploy/compose/demo-tls/generate.sh", leaf.NotAfter.Format(time.DateOnly))
	}
	if !strings.Contains(leaf.Subject.CommonName, "DEMO ONLY") {
		t.Errorf("the demo certificate's name %q does not say DEMO ONLY", leaf.Subject.CommonName)
	}
}

// TestStopTimeoutsExceedDrain: SIGTERM starts a drain of up to
// shutdown_timeout; docker-compose.yml's stop_grace_period and the systemd
// units' TimeoutStopSec must be longer, or the SIGKILL that follows cuts
// it short.
func TestStopTimeoutsExceedDrain(t *testing.T) {
	env := func(string) (string, bool) { return "compose-test-token-0123456789", true }
	drain := server.DefaultConfig().ShutdownTimeout
	for _, path := range []string{"../deploy/compose/server.toml", "../deploy/compose/client.toml"} {
		f, err := Load(path, env)
		if err != nil {
			t.Fatal(err)
		}
		if f.Server != nil {
			drain = max(drain, f.Server.ShutdownTimeout)
		}
		if f.Client != nil {
			drain = max(drain, f.Client.ShutdownTimeout)
		}
	}
	check := func(file, pattern string) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(pattern).FindAllSubmatch(data, -1)
		if len(m) == 0 {
			t.Errorf("%s: no %s", file, pattern)
		}
		for _, sub := range m {
			d, err := time.ParseDuration(string(sub[1]))
			if err != nil {
				t.Errorf("%s: %s: %v", file, sub[0], err)
				continue
			}
			if d <= drain {
				t.Errorf("%s: %s is not longer than shutdown_timeout %v", file, sub[0], drain)
			}
		}
	}
	check("../docker-compose.yml", `(?m)^\s*stop_grace_period:\s*(\S+)`)
	check("../deploy/systemd/warren-server.service", `(?m)^TimeoutStopSec=(\S+)`)
	check("../deploy/systemd/warren-client.service", `(?m)^TimeoutStopSec=(\S+)`)
}

// TestSystemdTokenFromCredentials: the token_file the units' comments
// show, "${CREDENTIALS_DIRECTORY}/NAME", reads the credential systemd
// provides.
func TestSystemdTokenFromCredentials(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "office.token"), []byte("credential-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("../deploy/systemd/warren-server.service")
	if err != nil {
		t.Fatal(err)
	}
	const line = `token_file = "${CREDENTIALS_DIRECTORY}/office.token"`
	if !strings.Contains(string(unit), line) || !strings.Contains(string(unit), "LoadCredential=office.token:") {
		t.Fatalf("warren-server.service no longer shows %s with its LoadCredential", line)
	}
	f, err := Parse("w.toml", []byte("[server]\n[[server.clients]]\nname = \"office\"\n"+line+"\nports = [1]\n"),
		func(k string) (string, bool) { return dir, k == "CREDENTIALS_DIRECTORY" })
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Server.Clients[0].Token; got != "credential-token-0123456789" {
		t.Errorf("token = %q", got)
	}
}
