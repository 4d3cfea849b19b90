package server

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/internal/domain"
	"github.com/warren-tunnel/warren/internal/name"
	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/internal/token"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// Config is the [server] table.
type Config struct {
	// PublicAddress is the IP address the services' public ports bind to.
	PublicAddress string `toml:"public_address"`
	// StateDir keeps the self-signed certificate across restarts. Empty
	// (the default) leaves the choice to the daemon's command, which
	// applies one rule in quick and config mode (cmd/warren/statedir.go).
	StateDir string `toml:"state_dir"`
	// Listen are the tunnel endpoints clients connect to.
	Listen []Listen            `toml:"listen"`
	TLS    transport.ServerTLS `toml:"tls"`
	KCP    transport.KCPConfig `toml:"kcp"`
	TCP    transport.TCPConfig `toml:"tcp"`
	Mux    session.Mux         `toml:"mux"`
	// HeartbeatInterval and HeartbeatMisses: the server pings each client
	// every interval and drops it after that many unanswered pings.
	HeartbeatInterval time.Duration `toml:"heartbeat_interval"`
	HeartbeatMisses   int           `toml:"heartbeat_misses"`
	// ReconnectGrace is how long a client whose session dropped keeps its
	// ports and domains; new public connections wait for it meanwhile.
	// 0 releases them at once.
	ReconnectGrace time.Duration `toml:"reconnect_grace"`
	// ShutdownTimeout bounds how long a stopping server lets open public
	// connections finish.
	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`
	// HTTP and HTTPS are the entry points that route public connections
	// by domain: the Host of an HTTP/1.x request, the SNI of a TLS
	// ClientHello. Off while their address is empty.
	HTTP   Entry  `toml:"http"`
	HTTPS  Entry  `toml:"https"`
	Limits Limits `toml:"limits"`
	// UDP bounds the flows of UDP services: the defaults and caps that a
	// service's own keys may only lower.
	UDP UDP `toml:"udp"`
	// Clients are the tokens that may connect and what each may claim.
	Clients []Client `toml:"clients"`
	// Cluster joins this server to a cluster of servers sharing a route
	// registry in etcd (docs/cluster.md); off while its etcd list is empty.
	Cluster cluster.Config `toml:"cluster"`
}

// Listen is one [[server.listen]] entry.
type Listen struct {
	// Transport is "tcp" or "kcp".
	Transport string `toml:"transport"`
	// Address is host:port; port 0 picks a free port (for tests).
	Address string `toml:"address"`
}

// Entry is the [server.http] or [server.https] table.
type Entry struct {
	// Address is host:port to listen on, e.g. "0.0.0.0:80"; "" turns
	// the entry point off; port 0 picks a free port (for tests).
	Address string `toml:"address"`
}

// Limits is the [server.limits] table: bounds on what a peer may send
// before and after it authenticates.
type Limits struct {
	// HandshakeTimeout bounds a connection's whole unauthenticated phase.
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	// MaxControlFrame caps a control frame's payload in bytes.
	MaxControlFrame int `toml:"max_control_frame"`
	// MaxHandshakes caps connections still in their handshake, in all and
	// from one IP address; past a cap a new one takes the place of the
	// oldest silent one, or is closed at once (admission.go).
	MaxHandshakes      int `toml:"max_handshakes"`
	MaxHandshakesPerIP int `toml:"max_handshakes_per_ip"`
	// MaxStreams caps the public connections open through one session.
	MaxStreams int `toml:"max_streams"`
	// MaxStreamsPerService caps those of one service, so that one service
	// cannot take a session's every stream.
	MaxStreamsPerService int `toml:"max_streams_per_service"`
	// StallTimeout ends a relayed connection that moved nothing either way
	// for this long while data waited to be written (a peer that stopped
	// reading); 0 never does.
	StallTimeout time.Duration `toml:"stall_timeout"`
	// MaxServices caps the services one client may claim.
	MaxServices int `toml:"max_services"`
	// MaxWaiting caps the public connections waiting, on one port or
	// domain, for a client to come back within the reconnect grace.
	MaxWaiting int `toml:"max_waiting"`
	// SniffTimeout bounds how long a connection to an HTTP or HTTPS entry
	// point may take to send the Host header or TLS ClientHello.
	SniffTimeout time.Duration `toml:"sniff_timeout"`
	// SniffMax caps the bytes read from such a connection to find its
	// host name.
	SniffMax int `toml:"sniff_max"`
	// MaxSniffing caps the connections to the entry points that have not
	// named their host yet; more are closed at once.
	MaxSniffing int `toml:"max_sniffing"`
}

// UDP is the [server.udp] table. A flow is one public source address of
// a UDP service, carried on a stream of its own.
type UDP struct {
	// IdleTimeout ends a flow with no datagram either way for this long.
	IdleTimeout time.Duration `toml:"idle_timeout"`
	// MaxFlows caps the flows of one service; beyond it the oldest idle
	// flow (one that never had a reply, first) is dropped and counted.
	MaxFlows int `toml:"max_flows"`
	// MaxDatagram is the largest datagram relayed, in bytes; larger ones
	// are dropped and counted. It bounds the buffers a flow takes.
	MaxDatagram int `toml:"max_datagram"`
	// MaxSessionFlows caps the flows through one client session, apart
	// from limits.max_streams, so that a UDP flood cannot take the streams
	// of its TCP services.
	MaxSessionFlows int `toml:"max_session_flows"`
}

// MaxUDPDatagram is the largest UDP payload IPv4 carries, the default and
// the cap of max_datagram.
const MaxUDPDatagram = 65507

// lower returns the limits a UDP claim is granted: the server's, each
// lowered where the claim asks for less (0 asks for nothing).
func (u UDP) lower(want *session.UDPLimits) session.UDPLimits {
	l := session.UDPLimits{IdleMillis: u.IdleTimeout.Milliseconds(), MaxFlows: u.MaxFlows, MaxDatagram: u.MaxDatagram}
	if want == nil {
		return l
	}
	if want.IdleMillis > 0 {
		l.IdleMillis = min(l.IdleMillis, max(want.IdleMillis, minUDPIdle.Milliseconds()))
	}
	if want.MaxFlows > 0 {
		l.MaxFlows = min(l.MaxFlows, want.MaxFlows)
	}
	if want.MaxDatagram > 0 {
		l.MaxDatagram = min(l.MaxDatagram, want.MaxDatagram)
	}
	return l
}

// Client is one [[server.clients]] entry: a token and what it may claim.
type Client struct {
	// Name identifies the client in logs and errors; unique.
	Name string `toml:"name"`
	// Token, TokenFile or TokenEnv: exactly one. The config loader reads
	// the file or environment variable into Token (see ResolveTokens).
	Token     string `toml:"token"`
	TokenFile string `toml:"token_file"`
	TokenEnv  string `toml:"token_env"`
	// Ports the client may claim as public ports.
	Ports []PortRange `toml:"ports"`
	// UDPPorts the client may claim as public UDP ports (protocol = "udp").
	UDPPorts []PortRange `toml:"udp_ports"`
	// Domains the client may claim: names or "*.suffix" wildcards.
	Domains []string `toml:"domains"`
	// Dial lets code beside the server dial through this client
	// (Server.Dial); the client's own [client.dial] allow list decides
	// what. Off by default.
	Dial bool `toml:"dial"`
	// Visit lists the private services this client may reach as a
	// visitor: "client/service" patterns, where * matches any name
	// ("office/db", "office/*"). None by default.
	Visit []string `toml:"visit"`
}

// DefaultConfig returns the defaults documented in config.example.toml,
// with no clients.
func DefaultConfig() Config {
	sc := session.DefaultConfig()
	return Config{
		PublicAddress: "0.0.0.0",
		Listen: []Listen{
			{Transport: transport.KindKCP, Address: "0.0.0.0:7000"},
			{Transport: transport.KindTCP, Address: "0.0.0.0:7000"},
		},
		KCP:               transport.DefaultKCPConfig(),
		TCP:               transport.DefaultTCPConfig(),
		Mux:               sc.Mux,
		HeartbeatInterval: sc.HeartbeatInterval,
		HeartbeatMisses:   sc.HeartbeatMisses,
		ReconnectGrace:    10 * time.Second,
		ShutdownTimeout:   30 * time.Second,
		Limits: Limits{
			HandshakeTimeout:     sc.HandshakeTimeout,
			MaxControlFrame:      sc.MaxControlFrame,
			MaxHandshakes:        1024,
			MaxHandshakesPerIP:   32,
			MaxStreams:           16384,
			MaxStreamsPerService: 4096,
			StallTimeout:         sc.StallTimeout,
			MaxServices:          256,
			MaxWaiting:           256,
			SniffTimeout:         10 * time.Second,
			SniffMax:             16384,
			MaxSniffing:          4096,
		},
		UDP: UDP{
			IdleTimeout:     60 * time.Second,
			MaxFlows:        4096,
			MaxDatagram:     MaxUDPDatagram,
			MaxSessionFlows: 16384,
		},
		Cluster: cluster.DefaultConfig(),
	}
}

// ResolveTokens reads each client's token_file or token_env into Token.
// lookupEnv is os.LookupEnv in the daemon; packages never read the
// environment themselves.
func (c *Config) ResolveTokens(lookupEnv func(string) (string, bool)) error {
	for i := range c.Clients {
		cl := &c.Clients[i]
		if cl.TokenFile == "" && cl.TokenEnv == "" {
			continue
		}
		tok, err := token.Resolve("token", cl.Token, cl.TokenFile, cl.TokenEnv, lookupEnv)
		if err != nil {
			return fmt.Errorf("server.clients[%d] (%s).%w", i, cl.Name, err)
		}
		cl.Token, cl.TokenFile, cl.TokenEnv = tok, "", ""
	}
	if cc := &c.Cluster; cc.PeerTokenFile != "" || cc.PeerTokenEnv != "" {
		tok, err := token.Resolve("peer_token", cc.PeerToken, cc.PeerTokenFile, cc.PeerTokenEnv, lookupEnv)
		if err != nil {
			return fmt.Errorf("server.cluster.%w", err)
		}
		cc.PeerToken, cc.PeerTokenFile, cc.PeerTokenEnv = tok, "", ""
	}
	return nil
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	if _, err := netip.ParseAddr(c.PublicAddress); err != nil {
		return fmt.Errorf("server.public_address: %s is not an IP address", quote.Short(c.PublicAddress))
	}
	if len(c.Listen) == 0 {
		return errors.New("server.listen: no tunnel endpoint; add a [[server.listen]] entry")
	}
	seen := make(map[Listen]bool)
	for i, l := range c.Listen {
		if l.Transport != transport.KindTCP && l.Transport != transport.KindKCP {
			return fmt.Errorf("server.listen[%d].transport: %s: %w", i, quote.Short(l.Transport), transport.ErrUnknownKind)
		}
		if kind, addr, ok := strings.Cut(l.Address, "://"); ok { // as --listen takes it
			return fmt.Errorf("server.listen[%d].address: %s: the config file takes host:port here and the transport apart: address = %s and transport = %s",
				i, quote.Short(l.Address), quote.Short(addr), quote.Short(kind))
		}
		if err := checkListenAddr(l.Address); err != nil {
			return fmt.Errorf("server.listen[%d].address: %w", i, err)
		}
		if seen[l] {
			return fmt.Errorf("server.listen[%d]: %s %s is listed twice", i, l.Transport, l.Address)
		}
		seen[l] = true
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("server.%w", err)
	}
	if err := c.KCP.Validate(); err != nil {
		return fmt.Errorf("server.kcp.%w", err)
	}
	if err := c.TCP.Validate(); err != nil {
		return fmt.Errorf("server.tcp.%w", err)
	}
	if c.ReconnectGrace < 0 {
		return fmt.Errorf(`server.reconnect_grace: %v is negative`, c.ReconnectGrace)
	}
	if c.ShutdownTimeout < 0 {
		return fmt.Errorf(`server.shutdown_timeout: %v is negative`, c.ShutdownTimeout)
	}
	if err := c.validateEntries(); err != nil {
		return err
	}
	for _, l := range []struct {
		key string
		v   int
	}{
		{"max_handshakes", c.Limits.MaxHandshakes},
		{"max_handshakes_per_ip", c.Limits.MaxHandshakesPerIP},
		{"max_streams", c.Limits.MaxStreams},
		{"max_streams_per_service", c.Limits.MaxStreamsPerService},
		{"max_services", c.Limits.MaxServices},
		{"max_waiting", c.Limits.MaxWaiting},
		{"max_sniffing", c.Limits.MaxSniffing},
	} {
		if l.v < 1 {
			return fmt.Errorf("server.limits.%s: %d must be at least 1", l.key, l.v)
		}
	}
	if err := c.UDP.validate(); err != nil {
		return err
	}
	if err := c.session().Validate(); err != nil {
		var fe *session.FieldError
		if errors.As(err, &fe) {
			return fmt.Errorf("server.%s: %w", serverKey(fe.Key), fe.Err)
		}
		return fmt.Errorf("server: %w", err)
	}
	if err := c.Cluster.Validate(); err != nil {
		return err
	}
	return c.validateClients()
}

// minUDPIdle is the shortest idle_timeout: flows are swept a few times
// within it.
const minUDPIdle = time.Second

func (u UDP) validate() error {
	if u.IdleTimeout < minUDPIdle {
		return fmt.Errorf(`server.udp.idle_timeout: %v is under %v (durations are strings such as "60s")`, u.IdleTimeout, minUDPIdle)
	}
	if u.MaxFlows < 1 {
		return fmt.Errorf("server.udp.max_flows: %d must be at least 1", u.MaxFlows)
	}
	if u.MaxDatagram < 1 || u.MaxDatagram > MaxUDPDatagram {
		return fmt.Errorf("server.udp.max_datagram: %d is out of range 1-%d", u.MaxDatagram, MaxUDPDatagram)
	}
	if u.MaxSessionFlows < 1 {
		return fmt.Errorf("server.udp.max_session_flows: %d must be at least 1", u.MaxSessionFlows)
	}
	return nil
}

// Bounds of limits.sniff_max: a TLS ClientHello in one full record takes
// 16389 bytes; more than a few records is no ClientHello a browser sends.
const (
	minSniffMax = 1024
	maxSniffMax = 1 << 20
)

// validateEntries checks [server.http], [server.https] and their limits.
func (c Config) validateEntries() error {
	for _, e := range []struct {
		key  string
		addr string
	}{{"http", c.HTTP.Address}, {"https", c.HTTPS.Address}} {
		if e.addr == "" {
			continue
		}
		if err := checkListenAddr(e.addr); err != nil {
			return fmt.Errorf("server.%s.address: %w", e.key, err)
		}
	}
	if a := c.HTTP.Address; a != "" && a == c.HTTPS.Address && !strings.HasSuffix(a, ":0") {
		return fmt.Errorf("server.https.address: %s is also server.http.address; each entry point needs its own port", quote.Short(a))
	}
	if c.Limits.SniffTimeout <= 0 {
		return fmt.Errorf(`server.limits.sniff_timeout: %v must be positive (durations are strings such as "10s")`, c.Limits.SniffTimeout)
	}
	if c.Limits.SniffMax < minSniffMax || c.Limits.SniffMax > maxSniffMax {
		return fmt.Errorf("server.limits.sniff_max: %d is out of range %d-%d", c.Limits.SniffMax, minSniffMax, maxSniffMax)
	}
	return nil
}

// serverKey places a session setting in the [server] table's layout.
func serverKey(sessionKey string) string {
	switch sessionKey {
	case "handshake_timeout", "max_control_frame", "stall_timeout":
		return "limits." + sessionKey
	}
	return sessionKey
}

func (c Config) validateClients() error {
	if len(c.Clients) == 0 {
		return errors.New("server.clients: no client may connect; add a [[server.clients]] entry")
	}
	names := make(map[string]int)
	tokens := make(map[string]int)
	for i, cl := range c.Clients {
		key := fmt.Sprintf("server.clients[%d]", i)
		if !name.Valid(cl.Name) {
			return fmt.Errorf("%s.name: %s: want "+name.Rule, key, quote.Short(cl.Name))
		}
		key = fmt.Sprintf("%s (%s)", key, cl.Name)
		if j, dup := names[cl.Name]; dup {
			return fmt.Errorf("%s.name: also the name of server.clients[%d]", key, j)
		}
		names[cl.Name] = i
		if cl.Token == "" && (cl.TokenFile != "" || cl.TokenEnv != "") {
			return fmt.Errorf("%s: token_file or token_env was not read (Config.ResolveTokens)", key)
		}
		if cl.Token == "" {
			return fmt.Errorf("%s.token: missing; set token, token_file or token_env", key)
		}
		if err := token.Check(cl.Token); err != nil {
			return fmt.Errorf("%s.%w", key, err)
		}
		if j, dup := tokens[cl.Token]; dup {
			return fmt.Errorf("%s.token: same token as server.clients[%d]; each client needs its own", key, j)
		}
		tokens[cl.Token] = i
		for j, v := range cl.Visit {
			if err := checkVisitPattern(v); err != nil {
				return fmt.Errorf("%s.visit[%d]: %s: %w", key, j, quote.Short(v), err)
			}
		}
		for j, r := range cl.Ports {
			if r.Lo < 1 || r.Hi > 65535 || r.Lo > r.Hi {
				return fmt.Errorf("%s.ports[%d]: %d-%d is not a range of ports 1-65535", key, j, r.Lo, r.Hi)
			}
		}
		for j, r := range cl.UDPPorts {
			if r.Lo < 1 || r.Hi > 65535 || r.Lo > r.Hi {
				return fmt.Errorf("%s.udp_ports[%d]: %d-%d is not a range of ports 1-65535", key, j, r.Lo, r.Hi)
			}
		}
		for j, d := range cl.Domains {
			if _, err := domain.Normalize(d); err != nil {
				return fmt.Errorf("%s.domains[%d]: %w", key, j, err)
			}
		}
	}
	return nil
}

func checkListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: want host:port, e.g. \"0.0.0.0:7000\"", quote.Short(addr))
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%s: %s is not an IP address", quote.Short(addr), quote.Short(host))
		}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%s: port %s is out of range 0-65535", quote.Short(addr), quote.Short(port))
	}
	return nil
}

// session returns the session settings the server runs with.
func (c Config) session() session.Config {
	return session.Config{
		Mux:               c.Mux,
		HandshakeTimeout:  c.Limits.HandshakeTimeout,
		HeartbeatInterval: c.HeartbeatInterval,
		HeartbeatMisses:   c.HeartbeatMisses,
		MaxControlFrame:   c.Limits.MaxControlFrame,
		StallTimeout:      c.Limits.StallTimeout,
	}
}
