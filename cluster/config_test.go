package cluster

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	good := func() Config {
		c := DefaultConfig()
		c.ID, c.Etcd, c.PeerAddress, c.PeerToken, c.CA, c.Cert, c.Key =
			"s1", []string{"https://etcd:2379"}, "s1.internal:7443", "0123456789abcdef", "ca.pem", "s1.pem", "s1-key.pem"
		return c
	}
	for _, tc := range []struct {
		name, want string
		mod        func(*Config)
	}{
		{"off", "", func(c *Config) { *c = DefaultConfig() }},
		{"good", "", func(c *Config) {}},
		{"fingerprints", "", func(c *Config) { c.CA, c.Cert, c.Key, c.PeerFingerprints = "", "", "", []string{"sha256:00"} }},
		{"no id: the command fills it", "", func(c *Config) { c.ID = "" }},
		{"slash id", "server.cluster.id", func(c *Config) { c.ID = "a/b" }},
		{"etcd scheme", "server.cluster.etcd[0]", func(c *Config) { c.Etcd = []string{"etcd:2379"} }},
		{"prefix", "server.cluster.prefix", func(c *Config) { c.Prefix = "warren" }},
		{"peer address", "server.cluster.peer_address", func(c *Config) { c.PeerAddress = "nohost" }},
		{"peer listen", "server.cluster.peer_listen", func(c *Config) { c.PeerListen = "x" }},
		{"no token", "server.cluster.peer_token: missing", func(c *Config) { c.PeerToken = "" }},
		{"no trust", "server.cluster.ca: missing", func(c *Config) { c.CA = "" }},
		{"ca without cert", "server.cluster.cert", func(c *Config) { c.Cert = "" }},
		{"lease", "server.cluster.lease_ttl", func(c *Config) { c.LeaseTTL = 500_000_000 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrConfig)):
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}
