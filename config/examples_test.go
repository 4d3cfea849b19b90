package config

import (
	"crypto/tls"
	"path/filepath"
	"testing"

	"github.com/warren-tunnel/warren/transport"
)

// TestMinimalExamples: examples/minimal-*.toml load with nothing from the
// environment, agree on the address, token and port, and the client pins
// the certificate the server uses (paths are relative to the repository
// root, where the examples are run from). e2e TestMinimalExamples runs
// them.
func TestMinimalExamples(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	srv, err := Load("../examples/minimal-server.toml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Load("../examples/minimal-client.toml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Server == nil || srv.Client != nil || cli.Client == nil || cli.Server != nil {
		t.Fatal("want one server table and one client table")
	}
	s, c := srv.Server, cli.Client
	if len(s.Listen) != 1 || s.Listen[0].Address != c.Server || s.Listen[0].Transport != c.Transport {
		t.Errorf("client dials %s %s; server listens on %v", c.Transport, c.Server, s.Listen)
	}
	if len(s.Clients) != 1 || s.Clients[0].Token != c.Token {
		t.Errorf("the client's token is not the server's")
	}
	if len(c.Services) != 1 || !s.Clients[0].Ports[0].Contains(c.Services[0].RemotePort) {
		t.Errorf("the client's service %v is not in the server's ports %v", c.Services, s.Clients[0].Ports)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join("..", s.TLS.Cert), filepath.Join("..", s.TLS.Key))
	if err != nil {
		t.Fatal(err)
	}
	if got := transport.Fingerprint(pair.Certificate[0]); got != c.TLS.Fingerprint {
		t.Errorf("the client pins %s; the server's certificate is %s", c.TLS.Fingerprint, got)
	}
}
