package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

const cfgTestToken = "client-token-0123456789"

var cfgTestFingerprint = "sha256:" + strings.Repeat("ab", 32)

// cfgTestValid returns a valid client config with two services.
func cfgTestValid() Config {
	cfg := DefaultConfig()
	cfg.Server = "tunnel.example.com:7000"
	cfg.Token = cfgTestToken
	cfg.TLS.Fingerprint = cfgTestFingerprint
	cfg.Services = []Service{
		{Name: "ssh", Target: "127.0.0.1:22", RemotePort: 2222},
		{Name: "web", Target: "localhost:80", Domains: []string{"app.example.com"}},
	}
	return cfg
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string // the error starts with this; "" means valid
	}{
		{name: "valid", mod: func(*Config) {}},
		{name: "ipv6 server", mod: func(c *Config) { c.Server = "[::1]:7000" }},
		{name: "tcp", mod: func(c *Config) { c.Transport = "tcp" }},
		{name: "tls disabled", mod: func(c *Config) { c.TLS = transport.ClientTLS{Disabled: true} }},
		{name: "insecure alone", mod: func(c *Config) { c.TLS = transport.ClientTLS{InsecureSkipVerify: true} }},
		{name: "system roots", mod: func(c *Config) { c.TLS = transport.ClientTLS{} }},
		{name: "any port twice", mod: func(c *Config) {
			c.Services = []Service{{Name: "a", Target: "h:1"}, {Name: "b", Target: "h:2"}}
		}},
		{name: "wildcard domain", mod: func(c *Config) { c.Services[1].Domains = []string{"*.example.com"} }},
		{name: "remote_port 65535", mod: func(c *Config) { c.Services[0].RemotePort = 65535 }},
		{name: "entry http", mod: func(c *Config) { c.Services[1].Entry = "http" }},
		{name: "entry https", mod: func(c *Config) { c.Services[1].Entry = "https" }},
		{name: "shared port and domains", mod: func(c *Config) { c.Services[0].Shared, c.Services[1].Shared = true, true }},
		{name: "proxy_protocol v1", mod: func(c *Config) { c.Services[0].ProxyProtocol = "v1" }},
		{name: "proxy_protocol v2 with https entry", mod: func(c *Config) {
			c.Services[1].ProxyProtocol, c.Services[1].Entry = "v2", "https"
		}},
		{name: "proxy_protocol off", mod: func(c *Config) { c.Services[0].ProxyProtocol = "" }},
		{name: "udp", mod: func(c *Config) {
			c.Services = append(c.Services, Service{Name: "dns", Target: "127.0.0.1:53", RemotePort: 53, Protocol: "udp", IdleTimeout: 5 * time.Second, MaxFlows: 10, MaxDatagram: 1500})
		}},
		{name: "udp and tcp on one port", mod: func(c *Config) {
			c.Services = append(c.Services, Service{Name: "dns", Target: "127.0.0.1:53", RemotePort: 2222, Protocol: "udp"})
		}},
		{name: "protocol tcp", mod: func(c *Config) { c.Services[0].Protocol = "tcp" }},

		{name: "servers", mod: func(c *Config) {
			c.Server, c.Servers = "", []string{"a.example.com:7000", "tcp://b.example.com:7000", "kcp://10.0.0.3:7000"}
		}},
		{name: "servers with the same address over both transports", mod: func(c *Config) {
			c.Server, c.Servers = "", []string{"a.example.com:7000", "tcp://a.example.com:7000"}
		}},
		{name: "one server by address, any port", mod: func(c *Config) {
			c.Server, c.Servers = "", []string{"10.0.0.1:7000"}
			c.Services = append(c.Services, Service{Name: "db", Target: "h:5432"})
		}},
		{name: "server resolving to its first address, any port", mod: func(c *Config) {
			c.Services = append(c.Services, Service{Name: "db", Target: "h:5432"})
		}},
		{name: "servers resolving to their first address", mod: func(c *Config) {
			c.Server, c.Servers, c.Resolve = "", []string{"a.example.com:7000", "b.example.com:7000"}, "first"
		}},
		{name: "server resolving to all", mod: func(c *Config) { c.Resolve = "all" }},
		{name: "max and min servers", mod: func(c *Config) {
			c.Server, c.Servers, c.MaxServers, c.MinServers = "", []string{"a:7000", "b:7000", "c:7000"}, 2, 2
		}},
		{name: "min servers above a list that resolves to more", mod: func(c *Config) {
			c.Server, c.Servers, c.MinServers = "", []string{"ha.example.com:7000"}, 3
		}},

		{name: "server and servers", mod: func(c *Config) { c.Servers = []string{"a:7000"} },
			wantErr: "client.server and client.servers: set one of the two, not both"},
		{name: "servers empty", mod: func(c *Config) { c.Server, c.Servers = "", []string{} },
			wantErr: "client.servers: the list is empty"},
		{name: "servers duplicate", mod: func(c *Config) { c.Server, c.Servers = "", []string{"a.example.com:7000", "b:1", "A.example.com:7000"} },
			wantErr: `client.servers[2]: "A.example.com:7000" is the same server as client.servers[0]`},
		{name: "servers duplicate by scheme", mod: func(c *Config) { c.Server, c.Servers = "", []string{"a:7000", "kcp://a:7000"} },
			wantErr: `client.servers[1]: "kcp://a:7000" is the same server as client.servers[0]`},
		{name: "servers unknown scheme", mod: func(c *Config) { c.Server, c.Servers = "", []string{"a:7000", "udp://b:7000"} },
			wantErr: `client.servers[1]: "udp://b:7000": the scheme is kcp:// or tcp://`},
		{name: "servers without port", mod: func(c *Config) { c.Server, c.Servers = "", []string{"tcp://b"} },
			wantErr: `client.servers[0]: "b": want host:port`},
		{name: "servers empty entry", mod: func(c *Config) { c.Server, c.Servers = "", []string{""} },
			wantErr: `client.servers[0]: "": want host:port`},
		{name: "resolve unknown", mod: func(c *Config) { c.Resolve = "any" },
			wantErr: `client.resolve: "any": want "first" or "all"`},
		{name: "any port with several servers", mod: func(c *Config) {
			c.Server, c.Servers = "", []string{"10.0.0.1:7000", "10.0.0.2:7000"}
			c.Services = append(c.Services, Service{Name: "db", Target: "h:5432"})
		}, wantErr: "client.services[2] (db).remote_port: 0 (any free port) with several servers: each server would pick a port of its own"},
		{name: "any port with a name resolving to all", mod: func(c *Config) {
			c.Server, c.Servers = "", []string{"ha.example.com:7000"}
			c.Services = append(c.Services, Service{Name: "db", Target: "h:5432"})
		}, wantErr: "client.services[2] (db).remote_port: 0 (any free port) with several servers"},
		{name: "max servers negative", mod: func(c *Config) { c.MaxServers = -1 },
			wantErr: "client.max_servers: -1 is negative"},
		{name: "min servers zero", mod: func(c *Config) { c.MinServers = 0 },
			wantErr: "client.min_servers: 0: want at least 1"},
		{name: "min servers above max", mod: func(c *Config) {
			c.Server, c.Servers, c.MaxServers, c.MinServers = "", []string{"a:7000", "b:7000", "c:7000"}, 1, 2
		}, wantErr: "client.min_servers: 2 is more than max_servers = 1"},
		{name: "min servers above the list", mod: func(c *Config) { c.MinServers = 2 },
			wantErr: "client.min_servers: 2 is more than the 1 server(s) listed"},
		{name: "server empty", mod: func(c *Config) { c.Server = "" },
			wantErr: "client.server: missing"},
		{name: "server without port", mod: func(c *Config) { c.Server = "tunnel.example.com" },
			wantErr: "client.server: "},
		{name: "server without host", mod: func(c *Config) { c.Server = ":7000" },
			wantErr: "client.server: "},
		{name: "server port zero", mod: func(c *Config) { c.Server = "h:0" },
			wantErr: "client.server: "},
		{name: "server port too big", mod: func(c *Config) { c.Server = "h:65536" },
			wantErr: "client.server: "},
		{name: "server url", mod: func(c *Config) { c.Server = "kcp://h:7000" },
			wantErr: "client.server: "},
		{name: "transport", mod: func(c *Config) { c.Transport = "udp" },
			wantErr: "client.transport: "},
		{name: "transport empty", mod: func(c *Config) { c.Transport = "" },
			wantErr: "client.transport: "},
		{name: "token missing", mod: func(c *Config) { c.Token = "" },
			wantErr: "client.token: missing"},
		{name: "token short", mod: func(c *Config) { c.Token = "short" },
			wantErr: "client.token: "},
		{name: "token_file unresolved", mod: func(c *Config) { c.Token, c.TokenFile = "", "/etc/warren/token" },
			wantErr: "client: token_file or token_env was not read"},
		{name: "token_env unresolved", mod: func(c *Config) { c.Token, c.TokenEnv = "", "WARREN_TOKEN" },
			wantErr: "client: token_file or token_env was not read"},
		{name: "tls insecure with fingerprint", mod: func(c *Config) { c.TLS.InsecureSkipVerify = true },
			wantErr: "client.tls.insecure_skip_verify contradicts"},
		{name: "tls insecure with ca", mod: func(c *Config) {
			c.TLS = transport.ClientTLS{CA: "/ca.pem", InsecureSkipVerify: true}
		}, wantErr: "client.tls.insecure_skip_verify contradicts"},
		{name: "tls bad fingerprint", mod: func(c *Config) { c.TLS.Fingerprint = "sha256:abc" },
			wantErr: "client.tls.fingerprint: "},
		{name: "tls fingerprint of another hash", mod: func(c *Config) { c.TLS.Fingerprint = "sha1:" + strings.Repeat("ab", 32) },
			wantErr: "client.tls.fingerprint: "},
		{name: "tls disabled with fingerprint", mod: func(c *Config) { c.TLS.Disabled = true },
			wantErr: "client.tls = false"},
		{name: "kcp mtu", mod: func(c *Config) { c.KCP.MTU = 9000 },
			wantErr: "client.kcp.mtu: "},
		{name: "kcp send window", mod: func(c *Config) { c.KCP.SendWindow = 0 },
			wantErr: "client.kcp.send_window: "},
		{name: "no connections", mod: func(c *Config) { c.Connections = 0 },
			wantErr: "client.connections: 0 is out of range 1-16"},
		{name: "too many connections", mod: func(c *Config) { c.Connections = 17 },
			wantErr: "client.connections: 17 is out of range 1-16"},
		{name: "kcp rate", mod: func(c *Config) { c.KCP.RateMbit = -2 },
			wantErr: "client.kcp.rate_mbit: -2 is out of range"},
		{name: "mux session window", mod: func(c *Config) { c.Mux.SessionWindow = 1 },
			wantErr: "client.mux.session_window: "},
		{name: "handshake timeout", mod: func(c *Config) { c.HandshakeTimeout = 0 },
			wantErr: "client.handshake_timeout: "},
		{name: "heartbeat interval too small", mod: func(c *Config) { c.HeartbeatInterval = 9 * time.Millisecond },
			wantErr: "client.heartbeat_interval: "},
		{name: "heartbeat misses", mod: func(c *Config) { c.HeartbeatMisses = 1001 },
			wantErr: "client.heartbeat_misses: "},
		{name: "dial timeout zero", mod: func(c *Config) { c.DialTimeout = 0 },
			wantErr: "client.dial_timeout: "},
		{name: "dial timeout negative", mod: func(c *Config) { c.DialTimeout = -time.Second },
			wantErr: "client.dial_timeout: "},
		{name: "no services", mod: func(c *Config) { c.Services = nil },
			wantErr: "client.services: "},
		{name: "service name empty", mod: func(c *Config) { c.Services[0].Name = "" },
			wantErr: "client.services[0].name: "},
		{name: "service name bad", mod: func(c *Config) { c.Services[1].Name = "-web" },
			wantErr: "client.services[1].name: "},
		{name: "service name duplicate", mod: func(c *Config) { c.Services[1].Name = "ssh" },
			wantErr: "client.services[1] (ssh).name: also the name of client.services[0]"},
		{name: "target empty", mod: func(c *Config) { c.Services[0].Target = "" },
			wantErr: "client.services[0] (ssh).target: "},
		{name: "target without port", mod: func(c *Config) { c.Services[1].Target = "localhost" },
			wantErr: "client.services[1] (web).target: "},
		{name: "target port zero", mod: func(c *Config) { c.Services[0].Target = "127.0.0.1:0" },
			wantErr: "client.services[0] (ssh).target: "},
		{name: "remote_port negative", mod: func(c *Config) { c.Services[0].RemotePort = -1 },
			wantErr: "client.services[0] (ssh).remote_port: "},
		{name: "remote_port too big", mod: func(c *Config) { c.Services[1].RemotePort = 65536 },
			wantErr: "client.services[1] (web).remote_port: "},
		{name: "remote_port duplicate", mod: func(c *Config) { c.Services[1].RemotePort = 2222 },
			wantErr: "client.services[1] (web).remote_port: 2222 is also claimed by client.services[0]"},
		{name: "domain bad", mod: func(c *Config) { c.Services[1].Domains = []string{"app.example.com", "bad..name"} },
			wantErr: "client.services[1] (web).domains[1]: "},
		{name: "domain empty", mod: func(c *Config) { c.Services[1].Domains = []string{""} },
			wantErr: "client.services[1] (web).domains[0]: "},
		{name: "entry unknown", mod: func(c *Config) { c.Services[1].Entry = "tls" },
			wantErr: `client.services[1] (web).entry: "tls": want "http" or "https"`},
		{name: "entry without domains", mod: func(c *Config) { c.Services[0].Entry = "https" },
			wantErr: `client.services[0] (ssh).entry: "https" without domains`},
		{name: "proxy_protocol v3", mod: func(c *Config) {
			c.Services = append(c.Services, Service{Name: "db", Target: "h:5432", ProxyProtocol: "v3"})
		}, wantErr: `client.services[2] (db).proxy_protocol: "v3" is not one of v1, v2`},
		{name: "protocol unknown", mod: func(c *Config) { c.Services[0].Protocol = "sctp" },
			wantErr: `client.services[0] (ssh).protocol: "sctp": want "tcp" or "udp"`},
		{name: "udp with domains", mod: func(c *Config) { c.Services[1].Protocol = "udp" },
			wantErr: `client.services[1] (web).domains: a UDP service has no domains`},
		{name: "udp with proxy_protocol", mod: func(c *Config) { c.Services[0].Protocol, c.Services[0].ProxyProtocol = "udp", "v2" },
			wantErr: `client.services[0] (ssh).proxy_protocol: not available for UDP services`},
		{name: "udp ports twice", mod: func(c *Config) {
			c.Services[0].Protocol = "udp"
			c.Services = append(c.Services, Service{Name: "dns", Target: "h:53", RemotePort: 2222, Protocol: "udp"})
		}, wantErr: `client.services[2] (dns).remote_port: 2222 is also claimed by client.services[0]`},
		{name: "idle_timeout on tcp", mod: func(c *Config) { c.Services[0].IdleTimeout = time.Second },
			wantErr: `client.services[0] (ssh).idle_timeout: only for protocol = "udp"`},
		{name: "udp idle_timeout short", mod: func(c *Config) { c.Services[0].Protocol, c.Services[0].IdleTimeout = "udp", time.Millisecond },
			wantErr: `client.services[0] (ssh).idle_timeout: `},
		{name: "udp max_datagram", mod: func(c *Config) { c.Services[0].Protocol, c.Services[0].MaxDatagram = "udp", 70000 },
			wantErr: `client.services[0] (ssh).max_datagram: 70000 is out of range`},
		{name: "udp max_flows", mod: func(c *Config) { c.Services[0].Protocol, c.Services[0].MaxFlows = "udp", -1 },
			wantErr: `client.services[0] (ssh).max_flows: -1 is negative`},
		{name: "proxy_protocol upper case", mod: func(c *Config) { c.Services[0].ProxyProtocol = "V1" },
			wantErr: `client.services[0] (ssh).proxy_protocol: "V1" is not one of v1, v2`},
		{name: "proxy_protocol number", mod: func(c *Config) { c.Services[1].ProxyProtocol = "2" },
			wantErr: `client.services[1] (web).proxy_protocol: "2" is not one of v1, v2`},
		{name: "udp visitor", mod: func(c *Config) {
			c.Visitors = []Visitor{{Name: "dns", Service: "office/dns", Bind: "127.0.0.1:5353", Protocol: "udp"}}
		}},
		{name: "udp and tcp visitors on one address", mod: func(c *Config) {
			c.Visitors = []Visitor{{Name: "dns", Service: "office/dns", Bind: "127.0.0.1:5353", Protocol: "udp"},
				{Name: "dnstcp", Service: "office/dnstcp", Bind: "127.0.0.1:5353"}}
		}},
		{name: "udp visitors on one address", mod: func(c *Config) {
			c.Visitors = []Visitor{{Name: "dns", Service: "office/dns", Bind: "127.0.0.1:5353", Protocol: "udp"},
				{Name: "dns2", Service: "office/dns2", Bind: "127.0.0.1:5353", Protocol: "udp"}}
		}, wantErr: `client.visitors[1] (dns2).bind: also the bind address of client.visitors[0]`},
		{name: "visitor protocol unknown", mod: func(c *Config) {
			c.Visitors = []Visitor{{Name: "dns", Service: "office/dns", Bind: "127.0.0.1:5353", Protocol: "quic"}}
		}, wantErr: `client.visitors[0] (dns).protocol: "quic": want "tcp" or "udp"`},
		{name: "private udp service", mod: func(c *Config) {
			c.Services = append(c.Services, Service{Name: "dns", Target: "h:53", Protocol: "udp", Private: true, IdleTimeout: 2 * time.Second})
		}},
		{name: "private udp service with a port", mod: func(c *Config) {
			c.Services = append(c.Services, Service{Name: "dns", Target: "h:53", Protocol: "udp", Private: true, RemotePort: 53})
		}, wantErr: `client.services[2] (dns).private: a private service has no remote_port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := cfgTestValid()
			tt.mod(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error starting %q", tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %q\nwant it to start with %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), cfgTestToken) {
				t.Errorf("error %q leaks the token", err)
			}
		})
	}
}

func TestResolveToken(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tok")
	if err := os.WriteFile(tokFile, []byte("\n file-token-0123456789 \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) {
		switch k {
		case "TOK":
			return "env-token-0123456789", true
		case "EMPTY":
			return "", true
		}
		return "", false
	}
	tests := []struct {
		name                string
		token, file, envVar string
		lookup              func(string) (string, bool)
		want                string
		wantErr             string // prefix
	}{
		{name: "inline untouched", token: "inline-token-0123456", want: "inline-token-0123456"},
		{name: "nothing set is left to Validate", want: ""},
		{name: "file", file: tokFile, want: "file-token-0123456789"},
		{name: "env", envVar: "TOK", lookup: lookup, want: "env-token-0123456789"},
		{name: "file missing", file: filepath.Join(dir, "nope"), wantErr: "client.token_file: "},
		{name: "file empty", file: emptyFile, wantErr: "client.token_file: " + emptyFile + " is empty"},
		{name: "env unset", envVar: "UNSET", lookup: lookup, wantErr: "client.token_env: environment variable UNSET is not set"},
		{name: "env empty", envVar: "EMPTY", lookup: lookup, wantErr: "client.token_env: environment variable EMPTY is empty"},
		{name: "env nil lookup", envVar: "TOK", wantErr: "client.token_env: "},
		{name: "token and file", token: "inline-token-0123456", file: tokFile, wantErr: "client.token, token_file, token_env: set only one"},
		{name: "file and env", file: tokFile, envVar: "TOK", lookup: lookup, wantErr: "client.token, token_file, token_env: set only one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Token: tt.token, TokenFile: tt.file, TokenEnv: tt.envVar}
			err := cfg.ResolveToken(tt.lookup)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("ResolveToken() = %v, want error starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveToken() = %v", err)
			}
			if cfg.Token != tt.want {
				t.Errorf("Token = %q, want %q", cfg.Token, tt.want)
			}
			if cfg.TokenFile != "" || cfg.TokenEnv != "" {
				t.Errorf("token_file %q / token_env %q not cleared", cfg.TokenFile, cfg.TokenEnv)
			}
		})
	}
}

func TestResolveTokenThenValidate(t *testing.T) {
	cfg := cfgTestValid()
	cfg.Token, cfg.TokenEnv = "", "WARREN_TEST_TOKEN"
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate() before ResolveToken = nil, want an error")
	}
	err := cfg.ResolveToken(func(k string) (string, bool) {
		if k == "WARREN_TEST_TOKEN" {
			return cfgTestToken, true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() after ResolveToken = %v", err)
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name     string
		min, max time.Duration
	}{
		{"defaults", minBackoff, maxBackoff},
		{"small", time.Millisecond, 10 * time.Millisecond},
		{"min equals max", time.Second, time.Second},
		{"one nanosecond", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := backoff{min: tt.min, max: tt.max}
			for attempt := range 100 {
				ceil := tt.max
				if attempt < 30 {
					ceil = min(tt.max, tt.min<<attempt)
				}
				for range 20 {
					b.attempt = attempt
					d := b.next()
					if d <= 0 {
						t.Fatalf("attempt %d: next() = %v, want > 0", attempt, d)
					}
					if d > ceil {
						t.Fatalf("attempt %d: next() = %v, above ceiling %v", attempt, d, ceil)
					}
					if d > tt.max {
						t.Fatalf("attempt %d: next() = %v, above max %v", attempt, d, tt.max)
					}
					if b.attempt != attempt+1 {
						t.Fatalf("attempt %d: next() left attempt at %d", attempt, b.attempt)
					}
				}
			}
		})
	}
}

func TestBackoffGrowsAndResets(t *testing.T) {
	b := backoff{min: minBackoff, max: maxBackoff}
	// The first wait is at most min.
	for range 100 {
		b.reset()
		if d := b.next(); d > minBackoff {
			t.Fatalf("first next() = %v, want <= %v", d, minBackoff)
		}
	}
	// After enough attempts the ceiling is max: of 200 draws from (0, 30s],
	// at least one is above min (all at or below it: chance 60^-200).
	b.reset()
	for range 10 {
		b.next()
	}
	var most time.Duration
	for range 200 {
		most = max(most, b.next())
	}
	if most <= minBackoff {
		t.Fatalf("after 10 attempts the longest of 200 waits is %v, want above %v", most, minBackoff)
	}
	// reset starts over.
	b.reset()
	if b.attempt != 0 {
		t.Fatalf("reset left attempt at %d", b.attempt)
	}
	if d := b.next(); d > minBackoff {
		t.Fatalf("next() after reset = %v, want <= %v", d, minBackoff)
	}
	// Many attempts never panic or overflow.
	b.attempt = 1 << 20
	if d := b.next(); d <= 0 || d > maxBackoff {
		t.Fatalf("next() at attempt 2^20 = %v", d)
	}
}

func TestFatal(t *testing.T) {
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"unknown token", session.Rejectf(session.CodeUnknownToken, "unknown token"), true},
		{"port not allowed", session.Rejectf(session.CodePortNotAllowed, "no"), true},
		{"port in use", session.Rejectf(session.CodePortInUse, "no"), true},
		{"domain not allowed", session.Rejectf(session.CodeDomainNotAllowed, "no"), true},
		{"bad request", session.Rejectf(session.CodeBadRequest, "no"), true},
		{"reject wrapped", fmt.Errorf("connect: %w", session.Rejectf(session.CodeUnknownToken, "x")), true},
		{"reject shutting down", session.Rejectf(session.CodeShuttingDown, "bye"), false},
		{"reject limit", session.Rejectf(session.CodeLimit, "full"), false},
		{"reject limit wrapped", fmt.Errorf("connect: %w", session.Rejectf(session.CodeLimit, "full")), false},
		{"goodbye replaced", &session.GoodbyeError{Code: session.CodeReplaced, Peer: "server"}, true},
		{"goodbye replaced wrapped", fmt.Errorf("session: %w", &session.GoodbyeError{Code: session.CodeReplaced, Peer: "server"}), true},
		{"goodbye shutting down", &session.GoodbyeError{Code: session.CodeShuttingDown, Peer: "server"}, false},
		{"goodbye protocol", &session.GoodbyeError{Code: session.CodeProtocol, Peer: "server"}, false},
		{"goodbye closed", &session.GoodbyeError{Code: session.CodeClosed, Peer: "server"}, false},
		{"fingerprint mismatch", transport.ErrFingerprintMismatch, true},
		{"fingerprint mismatch wrapped", fmt.Errorf("%w with h:1: %w", transport.ErrHandshake,
			fmt.Errorf("%w: server sent x, pinned y", transport.ErrFingerprintMismatch)), true},
		{"version", session.ErrVersion, true},
		{"version wrapped", fmt.Errorf("hello: %w", session.ErrVersion), true},
		{"unknown authority", fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), true},
		{"hostname", fmt.Errorf("tls: %w", x509.HostnameError{Host: "h"}), true},
		{"certificate verification", &tls.CertificateVerificationError{Err: errors.New("bad")}, true},
		{"plain handshake failure", fmt.Errorf("%w: %w", transport.ErrHandshake, io.EOF), false},
		{"net error", netErr, false},
		{"net error wrapped", fmt.Errorf("dial: %w", netErr), false},
		{"conn lost", session.ErrConnLost, false},
		{"heartbeat", session.ErrHeartbeat, false},
		{"protocol", session.ErrProtocol, false},
		{"deadline", context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fatal(tt.err); got != tt.want {
				t.Fatalf("fatal(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestTurnedAway: an attempt a server answered and sent away (it hung up
// in the TLS handshake, as its admission does at a limit, or rejected it
// as over a limit) backs off in full; one it did not answer (nothing
// listens: restarting), a drain's rejection and a timeout keep the short
// cap toward a server that was serving. The hang-up and the refusal are
// real sockets and real TLS, as the transport reports them.
func TestTurnedAway(t *testing.T) {
	tcfg := transport.DefaultConfig()
	tcfg.TLS = &tls.Config{InsecureSkipVerify: true}
	tr, err := transport.New(transport.KindTCP, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := tr.Dial(ctx, addr)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s succeeded", addr)
		}
		return err
	}
	// A server that hangs up on every connection.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	hungUp := dial(l.Addr().String())
	l.Close()
	<-done
	// Nothing listens there now.
	refused := dial(l.Addr().String())

	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"hung up in the handshake", hungUp, true},
		{"over a limit", &session.RejectError{Code: session.CodeLimit}, true},
		{"connection refused", refused, false},
		{"shutting down", &session.RejectError{Code: session.CodeShuttingDown}, false},
		{"registry unavailable", &session.RejectError{Code: session.CodeUnavailable}, false},
		{"timeout", context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		if got := turnedAway(tt.err); got != tt.want {
			t.Errorf("%s: turnedAway(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
