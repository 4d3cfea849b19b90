package client

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/internal/domain"
	"github.com/warren-tunnel/warren/internal/name"
	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/internal/token"
	"github.com/warren-tunnel/warren/proxyproto"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// Config is the [client] table.
type Config struct {
	// Server is the server's tunnel address, host:port. Set it or
	// Servers, not both.
	Server string `toml:"server"`
	// Servers are several servers the client serves through at once
	// (high availability, docs/operations.md): each "host:port", or
	// "kcp://host:port" or "tcp://host:port" to choose the transport of
	// that one. The client keeps Connections sessions to every one of
	// them, each claiming every service.
	Servers []string `toml:"servers"`
	// Resolve says what a server's host name stands for: "first", the
	// first address it resolves to, or "all", a server at each of its
	// addresses. "" (the default) is "first" for Server and "all" for
	// Servers. Names are resolved again at every reconnection.
	Resolve string `toml:"resolve"`
	// MaxServers, when above 0, limits the client to that many of the
	// servers, chosen at random; one that stays unreachable, refuses the
	// client, or drains is replaced by another. 0 (the default) holds
	// them all.
	MaxServers int `toml:"max_servers"`
	// MinServers is how many servers must have a session up for the
	// client to be ready (/readyz); default 1.
	MinServers int `toml:"min_servers"`
	// Transport is "kcp" or "tcp"; the server must listen on it.
	Transport string `toml:"transport"`
	// Connections is how many sessions the client keeps to each server in
	// parallel (1-16), each its own transport connection serving every
	// service; the server spreads public connections among them. More
	// than one spreads TLS and the relays over more cores and keeps a
	// loss on one connection from stalling the streams of the others.
	Connections int `toml:"connections"`
	// Token, TokenFile or TokenEnv: exactly one. The config loader reads
	// the file or environment variable into Token (see ResolveToken).
	Token     string              `toml:"token"`
	TokenFile string              `toml:"token_file"`
	TokenEnv  string              `toml:"token_env"`
	TLS       transport.ClientTLS `toml:"tls"`
	KCP       transport.KCPConfig `toml:"kcp"`
	TCP       transport.TCPConfig `toml:"tcp"`
	Mux       session.Mux         `toml:"mux"`
	// HeartbeatInterval and HeartbeatMisses: the client pings the server
	// every interval and reconnects after that many unanswered pings.
	HeartbeatInterval time.Duration `toml:"heartbeat_interval"`
	HeartbeatMisses   int           `toml:"heartbeat_misses"`
	// HandshakeTimeout bounds connecting to the server: dial, TLS and auth.
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	// DialTimeout bounds each dial of a service's target.
	DialTimeout time.Duration `toml:"dial_timeout"`
	// ShutdownTimeout bounds how long a stopping client lets its open
	// connections finish.
	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`
	// StallTimeout ends a relayed connection that moved nothing either way
	// for this long while data waited to be written (a backend that
	// stopped reading); 0 never does.
	StallTimeout time.Duration `toml:"stall_timeout"`
	// Services are what the client serves through the server.
	Services []Service `toml:"services"`
	// Visitors reach other clients' private services through the server.
	Visitors []Visitor `toml:"visitors"`
	// Dial is what the server may have this client dial (nothing by
	// default).
	Dial DialConfig `toml:"dial"`
}

// Service is one [[client.services]] entry.
type Service struct {
	// Name identifies the service; unique within the client.
	Name string `toml:"name"`
	// Target is host:port on the client's side, where connections go.
	Target string `toml:"target"`
	// RemotePort is the public port on the server. 0 without domains asks
	// the server for any free port the token allows.
	RemotePort int `toml:"remote_port"`
	// Domains claimed for the service: exact names or "*.suffix"
	// wildcards, served on the server's [server.http] or [server.https]
	// entry point.
	Domains []string `toml:"domains"`
	// Entry is the entry point the domains are served on: "http" (the
	// default, routed by the Host header) or "https" (routed by the TLS
	// server name; TLS passes through to the target). Only with domains.
	Entry string `toml:"entry"`
	// Shared lets sessions of other clients (whose tokens allow it) serve
	// the same port or domains, each getting some of the connections;
	// every service on them must set it.
	Shared bool `toml:"shared"`
	// ProxyProtocol, "v1" or "v2", makes the client write a PROXY protocol
	// header of that version to the target before any byte of a public
	// connection, naming the public peer and the public address it
	// connected to. "" (the default) writes none.
	ProxyProtocol string `toml:"proxy_protocol"`
	// Private makes the service reachable only by visitors the server
	// allows ([[server.clients]] visit): no public port, no domain.
	Private bool `toml:"private"`
	// AccessLog logs the end of each of the service's connections (public
	// peer, target, bytes each way, duration, why it ended) at info
	// level; otherwise a clean end is logged at debug.
	AccessLog bool `toml:"access_log"`
	// Protocol is "tcp" (the default) or "udp": a public UDP port whose
	// datagrams go to a UDP target, each public source address a flow
	// with a socket of its own on the client. UDP services have no
	// domains, entry or proxy_protocol.
	Protocol string `toml:"protocol"`
	// IdleTimeout, MaxFlows and MaxDatagram lower the server's [server.udp]
	// limits for this UDP service (0: the server's).
	IdleTimeout time.Duration `toml:"idle_timeout"`
	MaxFlows    int           `toml:"max_flows"`
	MaxDatagram int           `toml:"max_datagram"`
}

// IsUDP reports whether s is a UDP service.
func (s Service) IsUDP() bool { return s.Protocol == session.ProtoUDP }

// DefaultConfig returns the defaults documented in config.example.toml,
// with no server, token or services.
func DefaultConfig() Config {
	sc := session.DefaultConfig()
	return Config{
		Transport:         transport.KindKCP,
		KCP:               transport.DefaultKCPConfig(),
		TCP:               transport.DefaultTCPConfig(),
		Mux:               sc.Mux,
		HeartbeatInterval: sc.HeartbeatInterval,
		HeartbeatMisses:   sc.HeartbeatMisses,
		HandshakeTimeout:  sc.HandshakeTimeout,
		DialTimeout:       5 * time.Second,
		ShutdownTimeout:   30 * time.Second,
		StallTimeout:      sc.StallTimeout,
		Connections:       1,
		MinServers:        1,
	}
}

// ResolveToken reads token_file or token_env into Token. lookupEnv is
// os.LookupEnv in the daemon; packages never read the environment
// themselves.
func (c *Config) ResolveToken(lookupEnv func(string) (string, bool)) error {
	if c.TokenFile == "" && c.TokenEnv == "" {
		return nil
	}
	tok, err := token.Resolve("token", c.Token, c.TokenFile, c.TokenEnv, lookupEnv)
	if err != nil {
		return fmt.Errorf("client.%w", err)
	}
	c.Token, c.TokenFile, c.TokenEnv = tok, "", ""
	return nil
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	if c.Transport != transport.KindTCP && c.Transport != transport.KindKCP {
		return fmt.Errorf("client.transport: %s: %w", quote.Short(c.Transport), transport.ErrUnknownKind)
	}
	eps, err := c.endpoints()
	if err != nil {
		return err
	}
	if c.Connections < 1 || c.Connections > session.MaxConnections {
		return fmt.Errorf("client.connections: %d is out of range 1-%d", c.Connections, session.MaxConnections)
	}
	switch {
	case c.Token == "" && (c.TokenFile != "" || c.TokenEnv != ""):
		return errors.New("client: token_file or token_env was not read (Config.ResolveToken)")
	case c.Token == "":
		return errors.New("client.token: missing; set token, token_file or token_env")
	}
	if err := token.Check(c.Token); err != nil {
		return fmt.Errorf("client.%w", err)
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("client.%w", err)
	}
	if err := c.KCP.Validate(); err != nil {
		return fmt.Errorf("client.kcp.%w", err)
	}
	if err := c.TCP.Validate(); err != nil {
		return fmt.Errorf("client.tcp.%w", err)
	}
	if err := c.session().Validate(); err != nil {
		var fe *session.FieldError
		if errors.As(err, &fe) {
			return fmt.Errorf("client.%s: %w", fe.Key, fe.Err)
		}
		return fmt.Errorf("client: %w", err)
	}
	if c.ShutdownTimeout < 0 {
		return fmt.Errorf("client.shutdown_timeout: %v is negative", c.ShutdownTimeout)
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf(`client.dial_timeout: %v must be positive (durations are strings such as "5s")`, c.DialTimeout)
	}
	return c.validateServices(severalServers(eps))
}

// validateServices checks the services, visitors and dial policy;
// several says the client may serve them through more than one server.
func (c Config) validateServices(several bool) error {
	if len(c.Services) == 0 && len(c.Visitors) == 0 && len(c.Dial.Allow) == 0 {
		return errors.New("client.services: nothing to serve; add a [[client.services]] entry (or a [[client.visitors]] entry, or client.dial.allow)")
	}
	if _, err := parseDialPolicy(c.Dial.Allow); err != nil {
		return err
	}
	vnames := make(map[string]int)
	binds := make(map[string]int)
	for i, v := range c.Visitors {
		key := fmt.Sprintf("client.visitors[%d]", i)
		if !name.Valid(v.Name) {
			return fmt.Errorf("%s.name: %s: want "+name.Rule, key, quote.Short(v.Name))
		}
		key = fmt.Sprintf("%s (%s)", key, v.Name)
		if j, dup := vnames[v.Name]; dup {
			return fmt.Errorf("%s.name: also the name of client.visitors[%d]", key, j)
		}
		vnames[v.Name] = i
		owner, svc, ok := strings.Cut(v.Service, "/")
		if !ok || !name.Valid(owner) || !name.Valid(svc) {
			return fmt.Errorf("%s.service: %s: want \"client/service\": the serving client's name on the server, and its private service", key, quote.Short(v.Service))
		}
		if err := checkHostPort(v.Bind); err != nil {
			if _, p, e := net.SplitHostPort(v.Bind); e != nil || p != "0" {
				return fmt.Errorf("%s.bind: %w", key, err)
			}
		}
		switch v.Protocol {
		case "", session.ProtoTCP, session.ProtoUDP:
		default:
			return fmt.Errorf("%s.protocol: %s: want \"tcp\" or \"udp\"", key, quote.Short(v.Protocol))
		}
		bk := fmt.Sprint(v.IsUDP(), " ", v.Bind) // a TCP and a UDP visitor may share an address
		if j, dup := binds[bk]; dup && !strings.HasSuffix(v.Bind, ":0") {
			return fmt.Errorf("%s.bind: also the bind address of client.visitors[%d]", key, j)
		}
		binds[bk] = i
	}
	names := make(map[string]int)
	ports := make(map[[2]int]int) // by protocol (0 tcp, 1 udp) and port
	for i, s := range c.Services {
		key := fmt.Sprintf("client.services[%d]", i)
		if !name.Valid(s.Name) {
			return fmt.Errorf("%s.name: %s: want "+name.Rule, key, quote.Short(s.Name))
		}
		key = fmt.Sprintf("%s (%s)", key, s.Name)
		if j, dup := names[s.Name]; dup {
			return fmt.Errorf("%s.name: also the name of client.services[%d]", key, j)
		}
		names[s.Name] = i
		if err := checkHostPort(s.Target); err != nil {
			return fmt.Errorf("%s.target: %w", key, err)
		}
		if s.RemotePort < 0 || s.RemotePort > 65535 {
			return fmt.Errorf("%s.remote_port: %d is out of range 1-65535 (or 0 for any free port)", key, s.RemotePort)
		}
		pk := [2]int{0, s.RemotePort}
		if s.IsUDP() {
			pk[0] = 1
		}
		if j, dup := ports[pk]; dup && s.RemotePort > 0 {
			return fmt.Errorf("%s.remote_port: %d is also claimed by client.services[%d]", key, s.RemotePort, j)
		}
		if several && s.RemotePort == 0 && len(s.Domains) == 0 && !s.Private {
			return fmt.Errorf("%s.remote_port: 0 (any free port) with several servers: each server would pick a port of its own, "+
				"so the service would have no one public address to put behind DNS or a balancer; set a fixed remote_port (or domains)", key)
		}
		ports[pk] = i
		if err := s.validateUDP(key); err != nil {
			return err
		}
		for j, d := range s.Domains {
			if _, err := domain.Normalize(d); err != nil {
				return fmt.Errorf("%s.domains[%d]: %w", key, j, err)
			}
		}
		switch {
		case s.Entry != "" && s.Entry != session.EntryHTTP && s.Entry != session.EntryHTTPS:
			return fmt.Errorf("%s.entry: %s: want \"http\" or \"https\"", key, quote.Short(s.Entry))
		case s.Entry != "" && len(s.Domains) == 0:
			return fmt.Errorf("%s.entry: %s without domains: an entry point routes by domain", key, quote.Short(s.Entry))
		}
		if s.Private && (s.RemotePort != 0 || len(s.Domains) > 0 || s.Entry != "" || s.Shared) {
			return fmt.Errorf("%s.private: a private service has no remote_port, domains, entry or shared: only visitors reach it", key)
		}
		if _, err := proxyproto.ParseVersion(s.ProxyProtocol); err != nil {
			return fmt.Errorf("%s.proxy_protocol: %s is not one of v1, v2 (or \"\" for none)", key, quote.Short(s.ProxyProtocol))
		}
	}
	return nil
}

// validateUDP checks protocol and the keys that go with it.
func (s Service) validateUDP(key string) error {
	switch s.Protocol {
	case "", session.ProtoTCP:
		switch {
		case s.IdleTimeout != 0:
			return fmt.Errorf("%s.idle_timeout: only for protocol = \"udp\"", key)
		case s.MaxFlows != 0:
			return fmt.Errorf("%s.max_flows: only for protocol = \"udp\"", key)
		case s.MaxDatagram != 0:
			return fmt.Errorf("%s.max_datagram: only for protocol = \"udp\"", key)
		}
		return nil
	case session.ProtoUDP:
	default:
		return fmt.Errorf("%s.protocol: %s: want \"tcp\" or \"udp\"", key, quote.Short(s.Protocol))
	}
	switch {
	case len(s.Domains) > 0:
		return fmt.Errorf("%s.domains: a UDP service has no domains (the entry points route TCP by Host or TLS server name); claim a remote_port", key)
	case s.Entry != "":
		return fmt.Errorf("%s.entry: a UDP service has no entry point", key)
	case s.ProxyProtocol != "":
		return fmt.Errorf("%s.proxy_protocol: not available for UDP services: the target sees the client's socket as the source", key)
	case s.IdleTimeout < 0 || s.IdleTimeout > 0 && s.IdleTimeout < time.Second:
		return fmt.Errorf(`%s.idle_timeout: %v: want at least "1s" (or 0 for the server's)`, key, s.IdleTimeout)
	case s.MaxFlows < 0:
		return fmt.Errorf("%s.max_flows: %d is negative", key, s.MaxFlows)
	case s.MaxDatagram < 0 || s.MaxDatagram > 65507:
		return fmt.Errorf("%s.max_datagram: %d is out of range 1-65507 (or 0 for the server's)", key, s.MaxDatagram)
	}
	return nil
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("%s: want host:port", quote.Short(addr))
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%s: port %s is out of range 1-65535", quote.Short(addr), quote.Short(port))
	}
	return nil
}

// session returns the session settings the client runs with.
func (c Config) session() session.Config {
	sc := session.DefaultConfig()
	sc.Mux = c.Mux
	sc.HandshakeTimeout = c.HandshakeTimeout
	sc.HeartbeatInterval = c.HeartbeatInterval
	sc.HeartbeatMisses = c.HeartbeatMisses
	sc.StallTimeout = c.StallTimeout
	return sc
}
