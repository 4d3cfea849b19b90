package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

const (
	cfgTestTokenA = "token-a-0123456789abcdef"
	cfgTestTokenB = "token-b-0123456789abcdef"
)

// cfgTestValid returns a valid config with two clients, "a" and "b".
func cfgTestValid() Config {
	cfg := DefaultConfig()
	cfg.Clients = []Client{
		{Name: "a", Token: cfgTestTokenA, Ports: []PortRange{{2200, 2299}, {8080, 8080}}},
		{Name: "b", Token: cfgTestTokenB, Domains: []string{"*.example.com"}},
	}
	return cfg
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string // the error starts with this; "" means valid
	}{
		{name: "default with clients", mod: func(*Config) {}},
		{name: "ipv6 public address and listen", mod: func(c *Config) {
			c.PublicAddress = "::"
			c.Listen = []Listen{{Transport: "tcp", Address: "[::1]:0"}}
		}},
		{name: "empty listen host", mod: func(c *Config) {
			c.Listen = []Listen{{Transport: "kcp", Address: ":7000"}}
		}},
		{name: "same address on both transports", mod: func(c *Config) {
			c.Listen = []Listen{{"tcp", "127.0.0.1:7000"}, {"kcp", "127.0.0.1:7000"}}
		}},
		{name: "tls disabled", mod: func(c *Config) { c.TLS.Disabled = true }},
		{name: "tls cert and key", mod: func(c *Config) { c.TLS.Cert, c.TLS.Key = "c.pem", "k.pem" }},
		{name: "domains only", mod: func(c *Config) { c.Clients[0].Ports = nil; c.Clients[0].Domains = []string{"a.example.org"} }},
		{name: "entry points", mod: func(c *Config) { c.HTTP.Address, c.HTTPS.Address = "0.0.0.0:80", "[::]:443" }},
		{name: "entry points on free ports", mod: func(c *Config) { c.HTTP.Address, c.HTTPS.Address = "127.0.0.1:0", "127.0.0.1:0" }},
		{name: "sniff limits at bounds", mod: func(c *Config) { c.Limits.SniffMax, c.Limits.MaxSniffing = 1024, 1 }},

		{name: "public address not an IP", mod: func(c *Config) { c.PublicAddress = "example.com" },
			wantErr: "server.public_address: "},
		{name: "public address empty", mod: func(c *Config) { c.PublicAddress = "" },
			wantErr: "server.public_address: "},
		{name: "no listen", mod: func(c *Config) { c.Listen = nil },
			wantErr: "server.listen: "},
		{name: "listen transport", mod: func(c *Config) { c.Listen[1].Transport = "udp" },
			wantErr: "server.listen[1].transport: "},
		{name: "listen address no port", mod: func(c *Config) { c.Listen[0].Address = "0.0.0.0" },
			wantErr: "server.listen[0].address: "},
		{name: "listen address host name", mod: func(c *Config) { c.Listen[0].Address = "localhost:7000" },
			wantErr: "server.listen[0].address: "},
		{name: "listen address port too big", mod: func(c *Config) { c.Listen[1].Address = "0.0.0.0:65536" },
			wantErr: "server.listen[1].address: "},
		{name: "listen address port not a number", mod: func(c *Config) { c.Listen[0].Address = "0.0.0.0:http" },
			wantErr: "server.listen[0].address: "},
		{name: "listen twice", mod: func(c *Config) { c.Listen = append(c.Listen, c.Listen[0]) },
			wantErr: "server.listen[2]: "},
		{name: "tls cert without key", mod: func(c *Config) { c.TLS.Cert = "c.pem" },
			wantErr: "server.tls.cert and tls.key: "},
		{name: "tls disabled with cert", mod: func(c *Config) { c.TLS.Disabled, c.TLS.Cert, c.TLS.Key = true, "c", "k" },
			wantErr: "server.tls = false"},
		{name: "kcp mode", mod: func(c *Config) { c.KCP.Mode = "turbo" },
			wantErr: "server.kcp.mode: "},
		{name: "kcp mtu", mod: func(c *Config) { c.KCP.MTU = 100 },
			wantErr: "server.kcp.mtu: "},
		{name: "kcp fec half set", mod: func(c *Config) { c.KCP.DataShards = 10 },
			wantErr: "server.kcp.data_shards and parity_shards: "},
		{name: "mux frame size", mod: func(c *Config) { c.Mux.FrameSize = 10 },
			wantErr: "server.mux.frame_size: "},
		{name: "mux stream window", mod: func(c *Config) { c.Mux.StreamWindow = 1024 },
			wantErr: "server.mux.stream_window: "},
		{name: "handshake timeout", mod: func(c *Config) { c.Limits.HandshakeTimeout = 0 },
			wantErr: "server.limits.handshake_timeout: "},
		{name: "max control frame", mod: func(c *Config) { c.Limits.MaxControlFrame = 10 },
			wantErr: "server.limits.max_control_frame: "},
		{name: "heartbeat interval", mod: func(c *Config) { c.HeartbeatInterval = time.Millisecond },
			wantErr: "server.heartbeat_interval: "},
		{name: "heartbeat misses", mod: func(c *Config) { c.HeartbeatMisses = 0 },
			wantErr: "server.heartbeat_misses: "},
		{name: "http address no port", mod: func(c *Config) { c.HTTP.Address = "0.0.0.0" },
			wantErr: "server.http.address: "},
		{name: "https address host name", mod: func(c *Config) { c.HTTPS.Address = "example.com:443" },
			wantErr: "server.https.address: "},
		{name: "http and https on one port", mod: func(c *Config) { c.HTTP.Address, c.HTTPS.Address = ":8000", ":8000" },
			wantErr: "server.https.address: "},
		{name: "sniff timeout", mod: func(c *Config) { c.Limits.SniffTimeout = 0 },
			wantErr: "server.limits.sniff_timeout: "},
		{name: "sniff max small", mod: func(c *Config) { c.Limits.SniffMax = 100 },
			wantErr: "server.limits.sniff_max: "},
		{name: "sniff max large", mod: func(c *Config) { c.Limits.SniffMax = 2 << 20 },
			wantErr: "server.limits.sniff_max: "},
		{name: "max sniffing", mod: func(c *Config) { c.Limits.MaxSniffing = 0 },
			wantErr: "server.limits.max_sniffing: "},
		{name: "no clients", mod: func(c *Config) { c.Clients = nil },
			wantErr: "server.clients: "},
		{name: "client name empty", mod: func(c *Config) { c.Clients[0].Name = "" },
			wantErr: "server.clients[0].name: "},
		{name: "client name bad character", mod: func(c *Config) { c.Clients[1].Name = "b c" },
			wantErr: "server.clients[1].name: "},
		{name: "client name too long", mod: func(c *Config) { c.Clients[0].Name = strings.Repeat("x", 65) },
			wantErr: "server.clients[0].name: "},
		{name: "client name duplicate", mod: func(c *Config) { c.Clients[1].Name = "a" },
			wantErr: "server.clients[1] (a).name: also the name of server.clients[0]"},
		{name: "token missing", mod: func(c *Config) { c.Clients[1].Token = "" },
			wantErr: "server.clients[1] (b).token: missing"},
		{name: "token file not resolved", mod: func(c *Config) { c.Clients[0].Token, c.Clients[0].TokenFile = "", "/t" },
			wantErr: "server.clients[0] (a): token_file or token_env was not read"},
		{name: "token env not resolved", mod: func(c *Config) { c.Clients[1].Token, c.Clients[1].TokenEnv = "", "T" },
			wantErr: "server.clients[1] (b): token_file or token_env was not read"},
		{name: "token short", mod: func(c *Config) { c.Clients[0].Token = "short" },
			wantErr: "server.clients[0] (a).token: "},
		{name: "token shared", mod: func(c *Config) { c.Clients[1].Token = cfgTestTokenA },
			wantErr: "server.clients[1] (b).token: same token as server.clients[0]"},
		{name: "visit without a service", mod: func(c *Config) { c.Clients[0].Visit = []string{"office"} },
			wantErr: `server.clients[0] (a).visit[0]: "office": want "client/service"`},
		{name: "visit bad pattern", mod: func(c *Config) { c.Clients[0].Visit = []string{"office/[db"} },
			wantErr: `server.clients[0] (a).visit[0]: "office/[db": syntax error in pattern`},
		{name: "port range zero", mod: func(c *Config) { c.Clients[0].Ports[1] = PortRange{0, 10} },
			wantErr: "server.clients[0] (a).ports[1]: "},
		{name: "port range too high", mod: func(c *Config) { c.Clients[0].Ports[0] = PortRange{65000, 70000} },
			wantErr: "server.clients[0] (a).ports[0]: "},
		{name: "port range backwards", mod: func(c *Config) { c.Clients[0].Ports[0] = PortRange{20, 10} },
			wantErr: "server.clients[0] (a).ports[0]: "},
		{name: "udp port range zero", mod: func(c *Config) { c.Clients[0].UDPPorts = []PortRange{{0, 10}} },
			wantErr: "server.clients[0] (a).udp_ports[0]: "},
		{name: "udp ports only", mod: func(c *Config) { c.Clients[0].Ports, c.Clients[0].UDPPorts = nil, []PortRange{{53, 53}} }},
		{name: "udp idle timeout", mod: func(c *Config) { c.UDP.IdleTimeout = 100 * time.Millisecond },
			wantErr: "server.udp.idle_timeout: "},
		{name: "udp max flows", mod: func(c *Config) { c.UDP.MaxFlows = 0 },
			wantErr: "server.udp.max_flows: "},
		{name: "udp max datagram", mod: func(c *Config) { c.UDP.MaxDatagram = 65508 },
			wantErr: "server.udp.max_datagram: 65508 is out of range 1-65507"},
		{name: "udp max session flows", mod: func(c *Config) { c.UDP.MaxSessionFlows = 0 },
			wantErr: "server.udp.max_session_flows: "},
		{name: "domain invalid", mod: func(c *Config) { c.Clients[1].Domains = []string{"ok.example.com", "a..b"} },
			wantErr: "server.clients[1] (b).domains[1]: "},
		{name: "domain bad wildcard", mod: func(c *Config) { c.Clients[1].Domains = []string{"a.*.example.com"} },
			wantErr: "server.clients[1] (b).domains[0]: "},
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
			for _, tok := range []string{cfgTestTokenA, cfgTestTokenB} {
				if strings.Contains(err.Error(), tok) {
					t.Errorf("error %q leaks a token", err)
				}
			}
		})
	}
}

func TestConfigValidateUnknownTransportWraps(t *testing.T) {
	cfg := cfgTestValid()
	cfg.Listen[0].Transport = "quic"
	if err := cfg.Validate(); !errors.Is(err, transport.ErrUnknownKind) {
		t.Fatalf("Validate() = %v, want it to wrap transport.ErrUnknownKind", err)
	}
}

func TestResolveTokens(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tok")
	if err := os.WriteFile(tokFile, []byte("file-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) {
		if k == "WARREN_TEST_TOKEN" {
			return "env-token-0123456789", true
		}
		return "", false
	}

	tests := []struct {
		name    string
		clients []Client
		lookup  func(string) (string, bool)
		want    []string // tokens after resolving
		wantErr string   // prefix
	}{
		{
			name:    "inline only is left alone",
			clients: []Client{{Name: "a", Token: "inline-token-0123"}},
			want:    []string{"inline-token-0123"},
		},
		{
			name: "file and env",
			clients: []Client{
				{Name: "a", Token: "inline-token-0123"},
				{Name: "f", TokenFile: tokFile},
				{Name: "e", TokenEnv: "WARREN_TEST_TOKEN"},
			},
			lookup: lookup,
			want:   []string{"inline-token-0123", "file-token-0123456789", "env-token-0123456789"},
		},
		{
			name:    "missing file",
			clients: []Client{{Name: "a", Token: "x"}, {Name: "f", TokenFile: filepath.Join(dir, "nope")}},
			wantErr: "server.clients[1] (f).token_file: ",
		},
		{
			name:    "empty file",
			clients: []Client{{Name: "f", TokenFile: emptyFile}},
			wantErr: "server.clients[0] (f).token_file: " + emptyFile + " is empty",
		},
		{
			name:    "env unset",
			clients: []Client{{Name: "e", TokenEnv: "WARREN_TEST_UNSET"}},
			lookup:  lookup,
			wantErr: "server.clients[0] (e).token_env: environment variable WARREN_TEST_UNSET is not set",
		},
		{
			name:    "env without lookup",
			clients: []Client{{Name: "e", TokenEnv: "WARREN_TEST_TOKEN"}},
			wantErr: "server.clients[0] (e).token_env: ",
		},
		{
			name:    "token and token_file",
			clients: []Client{{Name: "a", Token: "inline-token-0123", TokenFile: tokFile}},
			wantErr: "server.clients[0] (a).token, token_file, token_env: set only one",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Clients = tt.clients
			err := cfg.ResolveTokens(tt.lookup)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("ResolveTokens() = %v, want error starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveTokens() = %v", err)
			}
			for i, want := range tt.want {
				cl := cfg.Clients[i]
				if cl.Token != want {
					t.Errorf("clients[%d].Token = %q, want %q", i, cl.Token, want)
				}
				if cl.TokenFile != "" || cl.TokenEnv != "" {
					t.Errorf("clients[%d]: token_file %q / token_env %q not cleared", i, cl.TokenFile, cl.TokenEnv)
				}
			}
		})
	}
}

// A resolved config validates: the file/env sources no longer count.
func TestResolveTokensThenValidate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(p, []byte(cfgTestTokenA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := cfgTestValid()
	cfg.Clients[0].Token, cfg.Clients[0].TokenFile = "", p
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate() before ResolveTokens = nil, want an error")
	}
	if err := cfg.ResolveTokens(nil); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() after ResolveTokens = %v", err)
	}
}

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in      string
		want    PortRange
		wantErr string
	}{
		{in: "8080", want: PortRange{8080, 8080}},
		{in: "1", want: PortRange{1, 1}},
		{in: "65535", want: PortRange{65535, 65535}},
		{in: "2200-2299", want: PortRange{2200, 2299}},
		{in: " 2200 - 2299 ", want: PortRange{2200, 2299}},
		{in: "5-5", want: PortRange{5, 5}},
		{in: "0", wantErr: "want a port"},
		{in: "70000", wantErr: "want a port"},
		{in: "65536", wantErr: "want a port"},
		{in: "10-5", wantErr: "range runs backwards"},
		{in: "a", wantErr: "want a port"},
		{in: "", wantErr: "want a port"},
		{in: "-5", wantErr: "want a port"},
		{in: "5-", wantErr: "want a port"},
		{in: "1-2-3", wantErr: "want a port"},
		{in: "0-10", wantErr: "want a port"},
		{in: "1-70000", wantErr: "want a port"},
		{in: "80.5", wantErr: "want a port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePortRange(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParsePortRange(%q) = %v, nil; want error", tt.in, got)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePortRange(%q) error %q, want it to contain %q", tt.in, err, tt.wantErr)
				}
				if got != (PortRange{}) {
					t.Errorf("ParsePortRange(%q) = %v with an error, want zero", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePortRange(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParsePortRange(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestPortRangeUnmarshalTOML(t *testing.T) {
	tests := []struct {
		name    string
		in      any
		want    PortRange
		wantErr bool
	}{
		{name: "int64", in: int64(8080), want: PortRange{8080, 8080}},
		{name: "string port", in: "8080", want: PortRange{8080, 8080}},
		{name: "string range", in: "2200-2299", want: PortRange{2200, 2299}},
		{name: "int64 zero", in: int64(0), wantErr: true},
		{name: "int64 negative", in: int64(-5), wantErr: true},
		{name: "int64 too big", in: int64(70000), wantErr: true},
		{name: "string backwards", in: "10-5", wantErr: true},
		{name: "string junk", in: "a", wantErr: true},
		{name: "float64", in: float64(8080), wantErr: true},
		{name: "int", in: 8080, wantErr: true},
		{name: "bool", in: true, wantErr: true},
		{name: "nil", in: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r PortRange
			err := r.UnmarshalTOML(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("UnmarshalTOML(%#v) = nil (%v), want error", tt.in, r)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalTOML(%#v): %v", tt.in, err)
			}
			if r != tt.want {
				t.Fatalf("UnmarshalTOML(%#v) = %v, want %v", tt.in, r, tt.want)
			}
		})
	}
	// The type error names what it got.
	var r PortRange
	if err := r.UnmarshalTOML(float64(1)); err == nil || !strings.Contains(err.Error(), "float64") {
		t.Errorf("UnmarshalTOML(float64) = %v, want it to name float64", err)
	}
}

func TestPortRangeStringAndContains(t *testing.T) {
	r := PortRange{2200, 2299}
	for _, tt := range []struct {
		p    int
		want bool
	}{{2199, false}, {2200, true}, {2250, true}, {2299, true}, {2300, false}} {
		if got := r.Contains(tt.p); got != tt.want {
			t.Errorf("%v.Contains(%d) = %v, want %v", r, tt.p, got, tt.want)
		}
	}
	if got, _ := r.MarshalText(); string(got) != "2200-2299" {
		t.Errorf("MarshalText = %q", got)
	}
	if got, _ := (PortRange{8080, 8080}).MarshalText(); string(got) != "8080" {
		t.Errorf("MarshalText single = %q", got)
	}
	// String round-trips through ParsePortRange.
	for _, r := range []PortRange{{1, 1}, {2200, 2299}, {1, 65535}} {
		back, err := ParsePortRange(r.String())
		if err != nil || back != r {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", r.String(), back, err, r)
		}
	}
}

func TestPortList(t *testing.T) {
	tests := []struct {
		name string
		in   []PortRange
		want string
	}{
		{"nil", nil, ""},
		{"single", []PortRange{{8080, 8080}}, "8080"},
		{"range", []PortRange{{2200, 2299}}, "2200-2299"},
		{"mixed", []PortRange{{2200, 2299}, {8080, 8080}}, "2200-2299, 8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := portList(tt.in); got != tt.want {
				t.Fatalf("portList(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// cfgTestServer builds a Server (nothing bound) with one client "a" that
// may claim ports 2200-2299 and 8080 and domains app.example.com and
// *.apps.example.com, and a second client "nop" that may claim only
// domains.
func cfgTestServer(t *testing.T) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	cfg.Listen = []Listen{{Transport: transport.KindTCP, Address: "127.0.0.1:0"}}
	cfg.Clients = []Client{
		{
			Name:    "a",
			Token:   cfgTestTokenA,
			Ports:   []PortRange{{2200, 2299}, {8080, 8080}},
			Domains: []string{"App.Example.com", "*.apps.example.com"},
		},
		{
			Name:    "nop",
			Token:   cfgTestTokenB,
			Domains: []string{"only.example.org"},
		},
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if len(s.table.clients) != 2 {
		t.Fatalf("New made %d clients, want 2", len(s.table.clients))
	}
	return s
}

func TestCheckServices(t *testing.T) {
	s := cfgTestServer(t)
	tests := []struct {
		name     string
		client   int
		reqs     []session.Service
		wantCode string // "" means accepted
		wantMsg  string // substring of the reason
		// for accepted claims: the services as checked
		wantPorts   []int
		wantDomains [][]string
	}{
		{name: "no services", reqs: nil,
			wantCode: session.CodeBadRequest, wantMsg: "no services"},
		{name: "empty name", reqs: []session.Service{{Name: "", RemotePort: 8080}},
			wantCode: session.CodeBadRequest, wantMsg: "service name"},
		{name: "bad name", reqs: []session.Service{{Name: "we b", RemotePort: 8080}},
			wantCode: session.CodeBadRequest, wantMsg: `"we b"`},
		{name: "duplicate name", reqs: []session.Service{{Name: "web", RemotePort: 8080}, {Name: "web", RemotePort: 2200}},
			wantCode: session.CodeBadRequest, wantMsg: "claimed twice"},
		{name: "negative port", reqs: []session.Service{{Name: "web", RemotePort: -1}},
			wantCode: session.CodeBadRequest, wantMsg: "out of range"},
		{name: "port too big", reqs: []session.Service{{Name: "web", RemotePort: 65536}},
			wantCode: session.CodeBadRequest, wantMsg: "out of range"},
		{name: "port outside ranges", reqs: []session.Service{{Name: "web", RemotePort: 8081}},
			wantCode: session.CodePortNotAllowed, wantMsg: "(2200-2299, 8080)"},
		{name: "port just below range", reqs: []session.Service{{Name: "ssh", RemotePort: 2199}},
			wantCode: session.CodePortNotAllowed},
		{name: "port for domain-only client", client: 1, reqs: []session.Service{{Name: "web", RemotePort: 8080}},
			wantCode: session.CodePortNotAllowed},
		{name: "duplicate remote_port", reqs: []session.Service{{Name: "a", RemotePort: 2200}, {Name: "b", RemotePort: 2200}},
			wantCode: session.CodeBadRequest, wantMsg: "remote_port 2200 is claimed by two services"},
		{name: "disallowed port repeated", reqs: []session.Service{{Name: "a", RemotePort: 9999}, {Name: "b", RemotePort: 9999}},
			wantCode: session.CodePortNotAllowed},
		{name: "domain not covered", reqs: []session.Service{{Name: "web", Domains: []string{"other.example.com"}}},
			wantCode: session.CodeDomainNotAllowed, wantMsg: "other.example.com"},
		{name: "parent of wildcard not covered", reqs: []session.Service{{Name: "web", Domains: []string{"apps.example.com"}}},
			wantCode: session.CodeDomainNotAllowed},
		{name: "wildcard above allowed wildcard", reqs: []session.Service{{Name: "web", Domains: []string{"*.example.com"}}},
			wantCode: session.CodeDomainNotAllowed},
		{name: "wildcard under exact name not covered", reqs: []session.Service{{Name: "web", Domains: []string{"*.app.example.com"}}},
			wantCode: session.CodeDomainNotAllowed},
		{name: "invalid domain", reqs: []session.Service{{Name: "web", Domains: []string{"a..b"}}},
			wantCode: session.CodeBadRequest},
		{name: "domain claimed twice after normalizing", reqs: []session.Service{
			{Name: "a", Domains: []string{"app.example.com"}},
			{Name: "b", Domains: []string{"APP.example.com."}},
		}, wantCode: session.CodeBadRequest, wantMsg: "domain app.example.com is claimed twice"},
		{name: "any port for client without ports", client: 1, reqs: []session.Service{{Name: "web"}},
			wantCode: session.CodePortNotAllowed, wantMsg: "any free port"},

		{name: "one port", reqs: []session.Service{{Name: "web", RemotePort: 8080}},
			wantPorts: []int{8080}, wantDomains: [][]string{nil}},
		{name: "range edges", reqs: []session.Service{{Name: "lo", RemotePort: 2200}, {Name: "hi", RemotePort: 2299}},
			wantPorts: []int{2200, 2299}, wantDomains: [][]string{nil, nil}},
		{name: "any port", reqs: []session.Service{{Name: "web"}},
			wantPorts: []int{0}, wantDomains: [][]string{nil}},
		{name: "exact domain normalized", reqs: []session.Service{{Name: "web", Domains: []string{"APP.example.COM."}}},
			wantPorts: []int{0}, wantDomains: [][]string{{"app.example.com"}}},
		{name: "name under wildcard", reqs: []session.Service{{Name: "web", Domains: []string{"x.apps.example.com", "a.b.apps.example.com"}}},
			wantPorts: []int{0}, wantDomains: [][]string{{"x.apps.example.com", "a.b.apps.example.com"}}},
		{name: "same wildcard", reqs: []session.Service{{Name: "web", Domains: []string{"*.apps.example.com"}}},
			wantPorts: []int{0}, wantDomains: [][]string{{"*.apps.example.com"}}},
		{name: "wildcard under allowed wildcard", reqs: []session.Service{{Name: "web", Domains: []string{"*.team.apps.example.com"}}},
			wantPorts: []int{0}, wantDomains: [][]string{{"*.team.apps.example.com"}}},
		{name: "domain-only client with domain", client: 1, reqs: []session.Service{{Name: "web", Domains: []string{"only.example.org"}}},
			wantPorts: []int{0}, wantDomains: [][]string{{"only.example.org"}}},
		{name: "port and domain", reqs: []session.Service{{Name: "web", RemotePort: 8080, Domains: []string{"app.example.com"}}},
			wantPorts: []int{8080}, wantDomains: [][]string{{"app.example.com"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcs, rej := s.table.checkServices(s.table.clients[tt.client], tt.reqs, nil, false)
			if tt.wantCode != "" {
				if rej == nil {
					t.Fatalf("checkServices accepted %+v, want reject %s", tt.reqs, tt.wantCode)
				}
				if rej.Code != tt.wantCode {
					t.Fatalf("reject code %q (%s), want %q", rej.Code, rej.Reason, tt.wantCode)
				}
				if !strings.Contains(rej.Reason, tt.wantMsg) {
					t.Fatalf("reject reason %q, want it to contain %q", rej.Reason, tt.wantMsg)
				}
				if svcs != nil {
					t.Errorf("checkServices returned services with a reject")
				}
				return
			}
			if rej != nil {
				t.Fatalf("checkServices rejected: %s: %s", rej.Code, rej.Reason)
			}
			if len(svcs) != len(tt.reqs) {
				t.Fatalf("checkServices returned %d services, want %d", len(svcs), len(tt.reqs))
			}
			for i, svc := range svcs {
				if svc.name != tt.reqs[i].Name {
					t.Errorf("svcs[%d].name = %q, want %q", i, svc.name, tt.reqs[i].Name)
				}
				if svc.port != tt.wantPorts[i] {
					t.Errorf("svcs[%d].port = %d, want %d", i, svc.port, tt.wantPorts[i])
				}
				if strings.Join(svc.domains, ",") != strings.Join(tt.wantDomains[i], ",") {
					t.Errorf("svcs[%d].domains = %q, want %q", i, svc.domains, tt.wantDomains[i])
				}
			}
		})
	}
	// checkServices only checks: nothing is registered.
	if len(s.table.routes) != 0 || len(s.table.sessions) != 0 {
		t.Errorf("checkServices registered claims: routes %v", s.table.routes)
	}
}

func TestRejectCodesTemporary(t *testing.T) {
	// The codes checkServices uses must make a client give up, not retry.
	for _, code := range []string{session.CodeBadRequest, session.CodePortNotAllowed, session.CodeDomainNotAllowed} {
		if (&session.RejectError{Code: code}).Temporary() {
			t.Errorf("RejectError{%s}.Temporary() = true", code)
		}
	}
}
