package cluster

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Config is the [server.cluster] table. The cluster is off while Etcd is
// empty.
type Config struct {
	// ID names this server in the cluster; unique. Empty: the daemon's
	// command fills in the host name.
	ID string `toml:"id"`
	// Etcd are the etcd endpoints ("https://etcd-1:2379").
	Etcd    []string `toml:"etcd"`
	EtcdTLS EtcdTLS  `toml:"etcd_tls"`
	// Prefix is the etcd key prefix under which the cluster keeps its
	// members, routes and (ClientsFromRegistry) clients.
	Prefix string `toml:"prefix"`
	// PeerAddress is host:port where the other servers reach this one's
	// peer listener; PeerListen is the address that listener binds
	// (empty: PeerAddress).
	PeerAddress string `toml:"peer_address"`
	PeerListen  string `toml:"peer_listen"`
	// PeerToken, PeerTokenFile or PeerTokenEnv: exactly one; the same on
	// every server. Servers authenticate each other with it (HMAC over a
	// nonce and the TLS exporter, as clients do).
	PeerToken     string `toml:"peer_token"`
	PeerTokenFile string `toml:"peer_token_file"`
	PeerTokenEnv  string `toml:"peer_token_env"`
	// CA, Cert and Key: mutual TLS between peers with a cluster CA. Or,
	// instead of CA, PeerFingerprints pins the peers' certificates
	// (SHA-256, as `warren fingerprint` prints them).
	CA               string   `toml:"ca"`
	Cert             string   `toml:"cert"`
	Key              string   `toml:"key"`
	PeerFingerprints []string `toml:"peer_fingerprints"`
	// LeaseTTL is the lease of this server's membership and route keys:
	// a server that dies leaves the cluster, and its routes go, within it.
	LeaseTTL time.Duration `toml:"lease_ttl"`
	// ClientsFromRegistry: [[server.clients]] entries may also live in
	// the registry (warren cluster client add|remove|list).
	ClientsFromRegistry bool `toml:"clients_from_registry"`
}

// EtcdTLS is [server.cluster.etcd_tls]: the CA that verifies etcd, and a
// client certificate when etcd asks for one.
type EtcdTLS struct {
	CA   string `toml:"ca"`
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

// DefaultConfig is the cluster off, with the defaults its keys take once
// it is on.
func DefaultConfig() Config {
	// Empty lists, not nil: the example config shows them as [].
	return Config{Etcd: []string{}, PeerFingerprints: []string{}, Prefix: "/warren/", LeaseTTL: 10 * time.Second}
}

// Enabled reports whether the cluster is on.
func (c *Config) Enabled() bool { return len(c.Etcd) > 0 }

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("invalid cluster config")

// Validate checks c; errors name the key ("server.cluster.<key>"). A
// cluster that is off is valid whatever its other keys say. The peer
// token must have been resolved (token_file, token_env) before.
func (c *Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("%w: server.cluster.%s: %s", ErrConfig, key, fmt.Sprintf(format, a...))
	}
	// An empty ID is valid here: the daemon's command fills in the host
	// name after loading the file (NewEtcd refuses an empty one).
	if strings.ContainsAny(c.ID, "/ \t\n") {
		return bad("id", "%q: no '/' or white space", c.ID)
	}
	for i, e := range c.Etcd {
		if !strings.HasPrefix(e, "https://") && !strings.HasPrefix(e, "http://") {
			return bad(fmt.Sprintf("etcd[%d]", i), "%q: want http:// or https:// and host:port", e)
		}
	}
	if !strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/") {
		return bad("prefix", "%q: must start and end with '/'", c.Prefix)
	}
	if _, _, err := net.SplitHostPort(c.PeerAddress); err != nil {
		return bad("peer_address", "%q: want host:port (%v)", c.PeerAddress, err)
	}
	if c.PeerListen != "" {
		if _, _, err := net.SplitHostPort(c.PeerListen); err != nil {
			return bad("peer_listen", "%q: want host:port (%v)", c.PeerListen, err)
		}
	}
	if c.PeerToken == "" {
		if c.PeerTokenFile != "" || c.PeerTokenEnv != "" {
			return bad("peer_token", "peer_token_file or peer_token_env was not read")
		}
		return bad("peer_token", "missing; set peer_token, peer_token_file or peer_token_env")
	}
	if c.CA == "" && len(c.PeerFingerprints) == 0 {
		return bad("ca", "missing; peers verify each other with a cluster CA (ca, cert, key) or peer_fingerprints")
	}
	if c.CA != "" && (c.Cert == "" || c.Key == "") {
		return bad("cert", "ca needs cert and key (this server's certificate from the cluster CA)")
	}
	if c.LeaseTTL < 2*time.Second {
		return bad("lease_ttl", "%v: at least 2s (etcd leases are whole seconds)", c.LeaseTTL)
	}
	return nil
}
