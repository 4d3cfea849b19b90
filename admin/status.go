package admin

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/warren-tunnel/warren/transport"
)

// Roles of Status.Role.
const (
	RoleServer = "server"
	RoleClient = "client"
)

// Status is what GET /api/v1/status returns and "warren status" prints:
// the state of one daemon, a server or a client. Fields marked "server"
// or "client" are empty on the other side. Byte counts say in for bytes
// from the public peer, out for bytes to it, as the metrics do.
type Status struct {
	// Role is RoleServer or RoleClient.
	Role string `json:"role"`
	// Version is the daemon's version (internal/version.Version).
	Version string `json:"version"`
	// Uptime is how long the daemon has been running.
	Uptime Duration `json:"uptime_seconds"`
	// Ready and NotReady are what Source.Ready said when the status was
	// taken: NotReady is why it is not ready, empty when ready.
	Ready    bool   `json:"ready"`
	NotReady string `json:"not_ready,omitempty"`

	// Server: the tunnel listeners bound, the certificate fingerprint
	// clients pin ("sha256:...", empty without TLS), and every configured
	// client, connected or not, sorted by name.
	Listeners   []Listener     `json:"listeners,omitempty"`
	Fingerprint string         `json:"fingerprint,omitempty"`
	Clients     []ClientStatus `json:"clients,omitempty"`
	// Server: the routes public connections arrive on (ports, then
	// domains), with the sessions serving them or their hold.
	Routes []RouteStatus `json:"routes,omitempty"`
	// Server in a cluster: its members and the routes each holds.
	Cluster *ClusterStatus `json:"cluster,omitempty"`

	// Client: the server it connects to and over what (with several,
	// the first), the current session (nil while disconnected), and why
	// the last session or attempt ended.
	Server    string         `json:"server,omitempty"`
	Transport string         `json:"transport,omitempty"`
	Session   *SessionStatus `json:"session,omitempty"`
	// Connections counts the client's sessions up, when it keeps more
	// than one (client connections = N, or several servers); Session is
	// the first of them.
	Connections int    `json:"connections,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	// Client: every server it knows, with its sessions up.
	Servers []ServerStatus `json:"servers,omitempty"`
	// Client: its visitors ([[client.visitors]]), as configured, with
	// their connections and bytes since the client started.
	Visitors []VisitorStatus `json:"visitors,omitempty"`

	// Events are the recent events, oldest first (the admin Server
	// fills them in from its Recorder).
	Events []Event `json:"events"`
}

// Listener is a bound tunnel endpoint of a server.
type Listener struct {
	// Transport as users see it: "kcp+tls", "tcp+tls", "kcp", "tcp".
	Transport string `json:"transport"`
	// Address is the bound host:port.
	Address string `json:"address"`
}

// ServerStatus is one server a client serves through.
type ServerStatus struct {
	// Server names it: an entry of the client's server list, or
	// "entry@address" for one of the servers at the addresses a name
	// resolves to (resolve = "all").
	Server string `json:"server"`
	// Address is the address the client dialled last.
	Address string `json:"address,omitempty"`
	// Transport as users see it: "kcp+tls", "tcp+tls", "kcp", "tcp".
	Transport string `json:"transport"`
	// State is one of the ServerState constants.
	State string `json:"state"`
	// Sessions are its sessions up now.
	Sessions []SessionStatus `json:"sessions"`
	// LastError is why its last session or attempt ended.
	LastError string `json:"last_error,omitempty"`
}

// States of a ServerStatus.
const (
	// ServerUp: a session is up and takes new connections.
	ServerUp = "up"
	// ServerDraining: the server said it drains: its sessions take no new
	// connections and end once their streams have.
	ServerDraining = "draining"
	// ServerConnecting: no session yet, none failed.
	ServerConnecting = "connecting"
	// ServerRetrying: the last attempt failed or the session ended (see
	// last_error); the client reconnects with backoff.
	ServerRetrying = "retrying"
	// ServerRefused: the server refused the client (see last_error); it
	// is retried with backoff while other servers serve.
	ServerRefused = "refused"
	// ServerStandby: known, but not held (max_servers).
	ServerStandby = "standby"
	// ServerUnresolved: its name did not resolve; tried again with backoff.
	ServerUnresolved = "unresolved"
)

// ClientStatus is one configured client on the server.
type ClientStatus struct {
	// Name is the client's name in [[server.clients]].
	Name string `json:"name"`
	// Sessions are its sessions up now: usually zero or one, two for a
	// moment while a reconnecting client replaces its old session.
	Sessions []SessionStatus `json:"sessions"`
}

// Connected reports whether the client has a session up.
func (c ClientStatus) Connected() bool { return len(c.Sessions) > 0 }

// SessionStatus is one authenticated session, seen from either side.
type SessionStatus struct {
	// Client is the name the server knows the client by.
	Client string `json:"client"`
	// ID identifies the session in both sides' logs ("session=...").
	ID string `json:"id"`
	// Transport as users see it: "kcp+tls", "tcp+tls", "kcp", "tcp".
	Transport string `json:"transport"`
	// Remote is the peer's address: on the server the client's, on the
	// client the server's.
	Remote string `json:"remote"`
	// Uptime is how long the session has been up.
	Uptime Duration `json:"uptime_seconds"`
	// RTT is the last heartbeat round trip, 0 before the first.
	RTT Duration `json:"rtt_seconds"`
	// Streams is the number of data streams open now.
	Streams int `json:"streams"`
	// Services are the services granted to the session, sorted by name.
	Services []ServiceStatus `json:"services"`
	// Pacing is how the session paces what this side sends, for KCP
	// sessions; nil for TCP.
	Pacing *PacingStatus `json:"pacing,omitempty"`
}

// PacingStatus is the rate controller's state of a KCP session's sending
// direction (docs/benchmarks.md, "What the controller does"). Rates are
// of the session's data, bits a second; resends, headers and FEC parity
// come on top. Fields after mode are 0 unless rate_mbit is "auto" (only
// pacing_rate_bps is set for a fixed rate).
type PacingStatus struct {
	// RateMbit is the setting: "auto", a number, or "0" (unpaced).
	RateMbit string `json:"rate_mbit"`
	// Mode is "startup", "drain", "probe_bw", "probe_rtt" ("auto"), or
	// "fixed" or "unpaced".
	Mode string `json:"mode"`
	// Bandwidth is the estimated bottleneck bandwidth.
	Bandwidth float64 `json:"bandwidth_bps"`
	// MinRTT is the smallest round trip seen lately, RTT the smallest of
	// the last round trip: RTT - MinRTT is the queue on the path.
	MinRTT Duration `json:"min_rtt_seconds"`
	RTT    Duration `json:"rtt_seconds"`
	// PacingRate is the rate new data may enter at now.
	PacingRate float64 `json:"pacing_rate_bps"`
	// InFlight is data sent and not yet acknowledged (each resent copy
	// of a segment counted again, up to 3); InFlightCap the
	// most the controller allows.
	InFlight    int64 `json:"inflight_bytes"`
	InFlightCap int64 `json:"inflight_cap_bytes"`
	// Delivered counts data bytes acknowledged, and Resent segments sent
	// again, since the session began.
	Delivered int64 `json:"delivered_bytes"`
	Resent    int64 `json:"resent_segments"`
	// QueueCuts counts the times a standing queue cut the estimate, and
	// ProbeUps the times a probe found more bandwidth.
	QueueCuts int64 `json:"queue_cuts"`
	ProbeUps  int64 `json:"probe_ups"`
}

// Bytes sums the byte counts of the session's services.
func (s SessionStatus) Bytes() (in, out int64) {
	for _, svc := range s.Services {
		in += svc.BytesIn
		out += svc.BytesOut
	}
	return in, out
}

// ServiceStatus is one service of a session.
type ServiceStatus struct {
	// Name is the service's name.
	Name string `json:"name"`
	// RemotePort is the public port on the server, 0 for a service
	// reached only by domain.
	RemotePort int `json:"remote_port,omitempty"`
	// Domains routed to the service.
	Domains []string `json:"domains,omitempty"`
	// Target is where the client sends the service's connections
	// (client only: the server does not know it).
	Target string `json:"target,omitempty"`
	// Protocol is "udp" for a UDP service, empty for TCP.
	Protocol string `json:"protocol,omitempty"`
	// Private: a private service, reached by visitors only (no port or
	// domain); its connections are visitor connections.
	Private bool `json:"private,omitempty"`
	// Connections is the number of public connections open now; for a
	// UDP service, its flows (public source addresses).
	Connections int `json:"connections"`
	// Flows is a UDP service's flows open now (Connections again).
	Flows int `json:"flows,omitempty"`
	// BytesIn and BytesOut count the bytes relayed during this session:
	// in from the public peers, out to them.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
}

// VisitorStatus is one visitor of a client: a local listener whose
// connections go through the server to another client's private service.
type VisitorStatus struct {
	// Name is the visitor's name; Service the private service it reaches,
	// "client/service".
	Name    string `json:"name"`
	Service string `json:"service"`
	// Bind is the address it listens on (as bound, once the client runs).
	Bind string `json:"bind"`
	// Protocol is "udp" for a UDP visitor, empty for a TCP one.
	Protocol string `json:"protocol,omitempty"`
	// Refused is why the server refused the visitor when the session came
	// up (it then refuses each connection too), empty when allowed or
	// without a session.
	Refused string `json:"refused,omitempty"`
	// Connections is the number open now (a UDP visitor's flows);
	// BytesIn counts bytes from the local peers towards the service,
	// BytesOut bytes back to them, since the client started (a UDP flow's
	// when it ends).
	Connections int   `json:"connections"`
	BytesIn     int64 `json:"bytes_in"`
	BytesOut    int64 `json:"bytes_out"`
}

// RouteStatus is one route of a server: a public port or a domain on an
// entry point, and what serves it.
type RouteStatus struct {
	// Port is a port route's public port; Domain and Entry ("http" or
	// "https") name a domain route.
	Port int `json:"port,omitempty"`
	// Protocol is "udp" for a UDP port, empty for TCP; Flows are a UDP
	// port's flows.
	Protocol string `json:"protocol,omitempty"`
	Flows    int    `json:"flows,omitempty"`
	Domain   string `json:"domain,omitempty"`
	Entry    string `json:"entry,omitempty"`
	// Shared: sessions of several clients may serve it.
	Shared bool `json:"shared,omitempty"`
	// Client is the client that holds a route that is not shared.
	Client string `json:"client,omitempty"`
	// Members are the sessions serving it, each as one of its services.
	// Empty while the route is held.
	Members []RouteMember `json:"members"`
	// Held is how much longer a route that lost its last session waits
	// for its client to come back (reconnect_grace); 0 when served.
	Held Duration `json:"held_seconds,omitempty"`
	// Waiting counts public connections waiting for a session.
	Waiting int `json:"waiting,omitempty"`
}

// RouteMember is a session serving a route.
type RouteMember struct {
	Client  string `json:"client"`
	Session string `json:"session"`
	Service string `json:"service"`
}

// Duration is a time.Duration that JSON writes as seconds, a number
// ("rtt_seconds": 0.0123), as Prometheus does.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes seconds, rounded to the microsecond.
func (d Duration) MarshalJSON() ([]byte, error) {
	s := math.Round(time.Duration(d).Seconds()*1e6) / 1e6
	return json.Marshal(s)
}

// UnmarshalJSON reads seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s float64
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want seconds, a number: %w", err)
	}
	if math.IsNaN(s) || math.Abs(s) > math.MaxInt64/1e9 {
		return fmt.Errorf("duration: %v seconds is out of range", s)
	}
	*d = Duration(math.Round(s * 1e9))
	return nil
}

// PacingOf describes a KCP session's pacing state.
func PacingOf(ps transport.PaceState) *PacingStatus {
	return &PacingStatus{
		RateMbit: ps.Rate, Mode: ps.Mode, Bandwidth: ps.Bandwidth, MinRTT: Duration(ps.MinRTT), RTT: Duration(ps.RTT),
		PacingRate: ps.PacingRate, InFlight: ps.InFlight, InFlightCap: ps.InFlightCap,
		Delivered: ps.Delivered, Resent: ps.Resent, QueueCuts: ps.QueueCuts, ProbeUps: ps.ProbeUps,
	}
}

// ClusterStatus is a cluster member's view of its cluster.
type ClusterStatus struct {
	// ID is this server's; PeerAddress where the others reach it.
	ID          string `json:"id"`
	PeerAddress string `json:"peer_address"`
	// Error says why the registry is not current (unreachable): the view
	// is the last one known.
	Error   string         `json:"error,omitempty"`
	Members []MemberStatus `json:"members"`
	// Routes are every holding in the cluster, by key, then server.
	Routes []ClusterRoute `json:"routes"`
}

// MemberStatus is one live member, and this server's link to it.
type MemberStatus struct {
	ID          string `json:"id"`
	PeerAddress string `json:"peer_address"`
	Self        bool   `json:"self,omitempty"`
	// Link: a peer link to it is up; Forwarding counts the connections
	// open over it.
	Link       bool `json:"link,omitempty"`
	Forwarding int  `json:"forwarding,omitempty"`
	// ForwardedOut and ForwardedIn count the connections forwarded to it
	// and from it; BytesSent and BytesReceived their payload, both ways.
	ForwardedOut  int64 `json:"forwarded_out,omitempty"`
	ForwardedIn   int64 `json:"forwarded_in,omitempty"`
	BytesSent     int64 `json:"bytes_sent,omitempty"`
	BytesReceived int64 `json:"bytes_received,omitempty"`
}

// ClusterRoute is one server's holding of a route for a client.
type ClusterRoute struct {
	Key    string `json:"key"`
	Client string `json:"client"`
	Server string `json:"server"`
	Shared bool   `json:"shared,omitempty"`
	// Local: this server holds it (a session here serves it).
	Local bool `json:"local,omitempty"`
}
