// Package metrics holds warren's Prometheus metrics: a Registry with typed
// methods that the server and the client call as things happen, so that no
// caller builds metric names or label values by hand.
//
// Every metric is named warren_*; docs/metrics.md lists them all. A nil
// *Registry is valid and every method on it does nothing, so code that runs
// without metrics needs no nil checks.
//
// Label values are bounded: outcome, direction, reason and transport take
// values from fixed sets (anything else is counted as "other"), client and
// service names are capped at Config.MaxNames distinct values each (more
// are counted under "_overflow", which no valid name can be).
package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warren-tunnel/warren/internal/version"
	"github.com/warren-tunnel/warren/session"
)

// Roles: which side of the tunnel a Registry measures.
const (
	RoleServer = "server"
	RoleClient = "client"
)

// Outcome is how a public connection ended up, the outcome label of
// warren_public_connections_total.
type Outcome string

// Outcomes of a public connection. Each connection is counted once, when
// its outcome is known.
const (
	// OutcomeOK: a stream to the client was opened and relayed.
	OutcomeOK Outcome = "ok"
	// OutcomeNoSession: no client session served the port or domain (not
	// even after the reconnect grace).
	OutcomeNoSession Outcome = "no_session"
	// OutcomeBackendDialFailed: the client could not dial the service's
	// target (counted by the client, and by the server when the client
	// aborts the stream for that reason).
	OutcomeBackendDialFailed Outcome = "backend_dial_failed"
	// OutcomeRefusedLimit: refused at a limit (max_streams, max_waiting).
	OutcomeRefusedLimit Outcome = "refused_limit"
	// OutcomeAborted: the stream could not be opened or was aborted by
	// the peer before any data (session lost, protocol error, ...).
	OutcomeAborted Outcome = "aborted"
	// OutcomeShuttingDown: refused because the daemon is stopping.
	OutcomeShuttingDown Outcome = "shutting_down"
	// OutcomeOther is what an unknown outcome is counted as.
	OutcomeOther Outcome = "other"
)

var outcomes = []Outcome{OutcomeOK, OutcomeNoSession, OutcomeBackendDialFailed,
	OutcomeRefusedLimit, OutcomeAborted, OutcomeShuttingDown, OutcomeOther}

// Reasons of handshake failures besides the session package's rejection
// codes (session.Code*), which count under their own names.
// HandshakeFailed counts any other string as ReasonOther.
const (
	// ReasonTimeout: the handshake did not finish within its timeout.
	ReasonTimeout = "timeout"
	// ReasonTLS: the TLS handshake failed (bad certificate, not TLS, ...).
	ReasonTLS = "tls"
	// ReasonOther is what an unknown reason is counted as.
	ReasonOther = "other"
)

var reasons = []string{session.CodeUnknownToken, session.CodePortNotAllowed, session.CodePortInUse,
	session.CodeDomainNotAllowed, session.CodeDomainInUse, session.CodeBadRequest, session.CodeVersion,
	session.CodeProtocol, session.CodeShuttingDown, session.CodeLimit, session.CodeUnavailable, ReasonTimeout, ReasonTLS, ReasonOther}

// Reasons of warren_relays_aborted_total: why the daemon itself reset a
// relayed connection that was still open. RelayAborted counts any other
// string as AbortOther.
const (
	// AbortStall: nothing moved either way for stall_timeout while data
	// waited to be written.
	AbortStall = "stall"
	// AbortPressure: the session's unread data neared its receive window
	// and this connection held the most of it, for the longest.
	AbortPressure = "pressure"
	// AbortOther is what an unknown reason is counted as.
	AbortOther = "other"
)

var abortReasons = []string{AbortStall, AbortPressure, AbortOther}

// Reasons a UDP datagram was dropped, the reason label of
// warren_udp_drops_total. Others count as DropOther.
const (
	// DropTooLarge: longer than the service's max_datagram.
	DropTooLarge = "too_large"
	// DropQueueFull: its flow's queue was full (the stream was blocked).
	DropQueueFull = "queue_full"
	// DropNoSession: no session served the port (its reconnect grace).
	DropNoSession = "no_session"
	// DropSessionFlows: the session was at udp.max_session_flows.
	DropSessionFlows = "session_flows"
	// DropFlowEvicted: a flow ended for a new one beyond max_flows
	// (counted once per flow).
	DropFlowEvicted = "flow_evicted"
	// DropMaxFlows: a new source beyond max_flows while the flows evicted
	// for earlier ones were still closing.
	DropMaxFlows = "max_flows"
	// DropUnreachable: the target answered with ICMP unreachable and
	// the flow ended (counted by the client, once per flow).
	DropUnreachable = "unreachable"
	// DropOther is what an unknown reason counts as.
	DropOther = "other"
)

var dropReasons = []string{DropTooLarge, DropQueueFull, DropNoSession, DropSessionFlows, DropFlowEvicted, DropMaxFlows, DropUnreachable, DropOther}

// Transports, the transport label of warren_sessions: the transport kind,
// with "+tls" unless the session is plaintext. Others count as "other".
var transports = []string{"tcp", "kcp", "tcp+tls", "kcp+tls", "other"}

// Overflow is the client or service label value that names beyond
// Config.MaxNames are counted under. Valid names start with a letter or
// digit, so it never clashes with one.
const Overflow = "_overflow"

// streamOpenBuckets are the upper bounds of warren_stream_open_seconds,
// 50µs to 1s: a loopback open takes well under a millisecond, a long link
// a few RTTs.
var streamOpenBuckets = []float64{
	50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1,
}

// Sentinel errors.
var (
	// ErrRole means Config.Role is neither RoleServer nor RoleClient.
	ErrRole = errors.New(`not "server" or "client"`)
)

// Config says what a Registry measures.
type Config struct {
	// Role is RoleServer or RoleClient. The server exports
	// warren_sessions{client,transport}, the client warren_session_up.
	Role string
	// MaxNames caps the distinct client names, and separately the
	// distinct service names, that get series of their own; further
	// names are counted under Overflow. It bounds memory and scrape size
	// against clients that claim ever new service names.
	MaxNames int
}

// DefaultConfig returns a server registry with room for 1024 client and
// 1024 service names.
func DefaultConfig() Config {
	return Config{Role: RoleServer, MaxNames: 1024}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	if c.Role != RoleServer && c.Role != RoleClient {
		return fmt.Errorf("metrics.role: %q: %w", c.Role, ErrRole)
	}
	if c.MaxNames < 1 {
		return fmt.Errorf("metrics.max_names: %d: must be at least 1", c.MaxNames)
	}
	return nil
}

// Registry is warren's metrics, in a prometheus.Registry of their own (not
// the global default one), with Go runtime and process metrics beside them.
// Its methods are safe for concurrent use; on a nil *Registry they do
// nothing.
type Registry struct {
	cfg Config
	reg *prometheus.Registry

	sessions          *prometheus.GaugeVec // client, transport (server)
	sessionUp         *prometheus.GaugeVec // server (client)
	streamsOpen       *prometheus.GaugeVec // client
	publicConns       *prometheus.CounterVec
	visitorConns      *prometheus.CounterVec
	dials             *prometheus.CounterVec
	serviceBytes      *prometheus.CounterVec
	handshakeFailures *prometheus.CounterVec
	relaysAborted     *prometheus.CounterVec
	streamOpen        prometheus.Histogram
	rtt               *prometheus.GaugeVec // client (server); client, server (client)
	udpFlows          *prometheus.GaugeVec // service
	udpDatagrams      *prometheus.CounterVec
	udpDrops          *prometheus.CounterVec
	forwarded         *prometheus.CounterVec // peer, direction (server in a cluster)
	forwardedBytes    *prometheus.CounterVec // peer, direction
	pacing            *pacingCollector
	cluster           clusterMetrics

	mu       sync.Mutex
	clients  names
	services names
	up       map[string]int  // sessions up per client label
	serverUp map[string]bool // the client's servers with a session up
}

// New returns a Registry for cfg.
func New(cfg Config) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Registry{
		cfg:      cfg,
		reg:      prometheus.NewRegistry(),
		clients:  names{max: cfg.MaxNames, set: make(map[string]struct{})},
		services: names{max: cfg.MaxNames, set: make(map[string]struct{})},
		up:       make(map[string]int),
		serverUp: make(map[string]bool),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_sessions",
			Help: "Client sessions up, by client name and transport.",
		}, []string{"client", "transport"}),
		sessionUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_session_up",
			Help: "1 while the client has an authenticated session to the server, else 0; by server.",
		}, []string{"server"}),
		streamsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_streams_open",
			Help: "Data streams open, by client name.",
		}, []string{"client"}),
		publicConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_public_connections_total",
			Help: "Public connections, by service and outcome.",
		}, []string{"service", "outcome"}),
		visitorConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_visitor_connections_total",
			Help: "Visitor connections to private services, by service (client/service) and outcome.",
		}, []string{"service", "outcome"}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_dials_total",
			Help: "Dials through a client (server: Server.Dial; client: dial streams served), by client name and outcome (ok, refused, failed, unavailable).",
		}, []string{"client", "outcome"}),
		serviceBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_service_bytes_total",
			Help: "Bytes relayed, by service and direction (in: from the public peer; out: to it).",
		}, []string{"service", "direction"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_handshake_failures_total",
			Help: "Tunnel handshakes that failed, by reason (a rejection code, timeout or tls).",
		}, []string{"reason"}),
		relaysAborted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_relays_aborted_total",
			Help: "Relayed connections this daemon reset while they were open, by reason (stall or pressure).",
		}, []string{"reason"}),
		streamOpen: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "warren_stream_open_seconds",
			Help:    "Time from accepting a public connection to its stream being open to the client.",
			Buckets: streamOpenBuckets,
		}),
		udpFlows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_udp_flows",
			Help: "UDP flows open (public source addresses with a stream), by service.",
		}, []string{"service"}),
		udpDatagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_udp_datagrams_total",
			Help: "UDP datagrams relayed, by service and direction (in: from the public peer; out: to it).",
		}, []string{"service", "direction"}),
		udpDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_udp_drops_total",
			Help: "UDP datagrams dropped, and flows ended early, by service and reason.",
		}, []string{"service", "reason"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_cluster_forwarded_connections_total",
			Help: "Public connections forwarded over a peer link, by peer server and direction (out: to the peer; in: from it).",
		}, []string{"peer", "direction"}),
		forwardedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_cluster_forwarded_bytes_total",
			Help: "Bytes of the public connections this server forwarded, by peer server and direction (in: from the public peer; out: to it).",
		}, []string{"peer", "direction"}),
	}
	rttLabels, rttHelp := []string{"client"}, "Last heartbeat round trip, by client name."
	if cfg.Role == RoleClient {
		rttLabels, rttHelp = []string{"client", "server"}, "Last heartbeat round trip, by client name and server."
	}
	r.rtt = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "warren_heartbeat_rtt_seconds", Help: rttHelp}, rttLabels)
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "warren_build_info",
		Help:        "Always 1; the labels say which warren this is.",
		ConstLabels: prometheus.Labels{"version": version.Version, "goversion": runtime.Version(), "role": cfg.Role},
	})
	info.Set(1)
	r.pacing = &pacingCollector{r: r}
	cs := []prometheus.Collector{
		info, r.streamsOpen, r.publicConns, r.visitorConns, r.dials, r.serviceBytes,
		r.handshakeFailures, r.relaysAborted, r.rtt, kcpCollector{}, r.pacing,
		r.udpFlows, r.udpDatagrams, r.udpDrops,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	if cfg.Role == RoleServer {
		r.cluster = newClusterMetrics()
		cs = append(cs, r.sessions, r.streamOpen, r.forwarded, r.forwardedBytes)
		cs = append(cs, r.cluster.collectors()...)
	} else {
		cs = append(cs, r.sessionUp)
	}
	for _, c := range cs {
		if err := r.reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err) // a bug: names clash
		}
	}
	// Series with a fixed label set start at 0, so that rate() and
	// absence alerts work before the first event.
	for _, reason := range reasons {
		r.handshakeFailures.WithLabelValues(reason)
	}
	for _, reason := range abortReasons {
		r.relaysAborted.WithLabelValues(reason)
	}
	return r, nil
}

// Gatherer is what Handler serves, for tests and for embedding in another
// registry.
func (r *Registry) Gatherer() prometheus.Gatherer {
	if r == nil {
		return prometheus.NewRegistry()
	}
	return r.reg
}

// Handler serves the metrics in the Prometheus exposition formats. On a
// nil Registry it serves an empty page.
func (r *Registry) Handler() http.Handler {
	g := r.Gatherer()
	opts := promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}
	if r != nil {
		opts.Registry = r.reg // promhttp_metric_handler_errors_total
	}
	return promhttp.HandlerFor(g, opts)
}

// SessionUp records a session of client coming up over transport ("tcp",
// "kcp", "tcp+tls" or "kcp+tls"). On the client, client is the name the
// server knows it by. Every SessionUp needs one SessionDown with the same
// arguments.
func (r *Registry) SessionUp(client, transport string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.clients.label(client)
	r.up[c]++
	if r.cfg.Role == RoleServer {
		r.sessions.WithLabelValues(c, oneOf(transport, transports, "other")).Inc()
	}
}

// SessionDown records the end of a session that SessionUp recorded. When
// the client has no session left, its RTT series is removed: a stale RTT
// would look like a live one.
func (r *Registry) SessionDown(client, transport string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.clients.label(client)
	if r.up[c] > 0 {
		r.up[c]--
	}
	if r.cfg.Role == RoleServer {
		r.sessions.WithLabelValues(c, oneOf(transport, transports, "other")).Dec()
	}
	if r.up[c] == 0 {
		delete(r.up, c)
		r.rtt.DeletePartialMatch(prometheus.Labels{"client": c})
	}
}

// ServerSessions records how many sessions the client has up to server
// (as the client names it): warren_session_up{server} is 1 while there
// is one. When there is none, the server's RTT series is removed.
// Client only.
func (r *Registry) ServerSessions(server string, n int) {
	if r == nil || r.cfg.Role != RoleClient {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n > 0 {
		r.serverUp[server] = true
		r.sessionUp.WithLabelValues(server).Set(1)
		return
	}
	delete(r.serverUp, server)
	r.sessionUp.WithLabelValues(server).Set(0)
	r.rtt.DeletePartialMatch(prometheus.Labels{"server": server})
}

// ForgetServer removes the series of server: for a server the client no
// longer knows (its name does not resolve to its address any more).
func (r *Registry) ForgetServer(server string) {
	if r == nil || r.cfg.Role != RoleClient {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.serverUp, server)
	l := prometheus.Labels{"server": server}
	r.sessionUp.DeletePartialMatch(l)
	r.rtt.DeletePartialMatch(l)
}

// StreamUp records a data stream of client opening; StreamDown its end.
func (r *Registry) StreamUp(client string) {
	if r == nil {
		return
	}
	r.streamsOpen.WithLabelValues(r.clientLabel(client)).Inc()
}

// StreamDown records the end of a stream that StreamUp recorded.
func (r *Registry) StreamDown(client string) {
	if r == nil {
		return
	}
	r.streamsOpen.WithLabelValues(r.clientLabel(client)).Dec()
}

// StreamOpened records how long a public connection waited, from its
// accept to its stream being open (server only; the client has no such
// wait).
func (r *Registry) StreamOpened(d time.Duration) {
	if r == nil {
		return
	}
	r.streamOpen.Observe(d.Seconds())
}

// PublicConn counts one public connection of service with outcome o.
func (r *Registry) PublicConn(service string, o Outcome) {
	if r == nil {
		return
	}
	o = oneOf(o, outcomes, OutcomeOther)
	r.publicConns.WithLabelValues(r.serviceLabel(service), string(o)).Inc()
}

// VisitorConn counts one visitor connection to the private service full
// ("client/service") with outcome o (the server's count; the serving
// client counts it as a public connection of its service, and the bytes
// as the service's).
func (r *Registry) VisitorConn(full string, o Outcome) {
	if r == nil {
		return
	}
	o = oneOf(o, outcomes, OutcomeOther)
	r.visitorConns.WithLabelValues(r.serviceLabel(full), string(o)).Inc()
}

// Dial outcomes.
const (
	DialOK          = "ok"
	DialRefused     = "refused"
	DialFailed      = "failed"
	DialUnavailable = "unavailable"
)

// Dial counts one dial through client with outcome (DialOK...).
func (r *Registry) Dial(client, outcome string) {
	if r == nil {
		return
	}
	r.dials.WithLabelValues(r.clientLabel(client), outcome).Inc()
}

// AddBytes counts bytes relayed for service: in came from the public peer,
// out went to it. Call it as data moves, or once when a connection ends
// (then the counter moves in steps). Negative values are ignored.
func (r *Registry) AddBytes(service string, in, out int64) {
	if r == nil || in <= 0 && out <= 0 {
		return
	}
	s := r.serviceLabel(service)
	if in > 0 {
		r.serviceBytes.WithLabelValues(s, "in").Add(float64(in))
	}
	if out > 0 {
		r.serviceBytes.WithLabelValues(s, "out").Add(float64(out))
	}
}

// Forwarded counts a public connection forwarded to peer (direction
// "out") or from it ("in"). Peers are the cluster's servers: few.
func (r *Registry) Forwarded(peer, direction string) {
	if r == nil {
		return
	}
	r.forwarded.WithLabelValues(peer, direction).Inc()
}

// AddForwardedBytes counts the bytes of a connection this server forwarded
// to peer: in from the public peer, out to it.
func (r *Registry) AddForwardedBytes(peer string, in, out int64) {
	if r == nil {
		return
	}
	if in > 0 {
		r.forwardedBytes.WithLabelValues(peer, "in").Add(float64(in))
	}
	if out > 0 {
		r.forwardedBytes.WithLabelValues(peer, "out").Add(float64(out))
	}
}

// UDPFlows moves the count of service's UDP flows open by delta.
func (r *Registry) UDPFlows(service string, delta int) {
	if r == nil || delta == 0 {
		return
	}
	r.udpFlows.WithLabelValues(r.serviceLabel(service)).Add(float64(delta))
}

// AddDatagrams counts UDP datagrams relayed for service: in from the
// public peers, out to them. Callers batch: it is not for every datagram.
func (r *Registry) AddDatagrams(service string, in, out int64) {
	if r == nil || in <= 0 && out <= 0 {
		return
	}
	s := r.serviceLabel(service)
	if in > 0 {
		r.udpDatagrams.WithLabelValues(s, "in").Add(float64(in))
	}
	if out > 0 {
		r.udpDatagrams.WithLabelValues(s, "out").Add(float64(out))
	}
}

// UDPDropped counts n datagrams (or flows, for DropFlowEvicted and
// DropUnreachable) of service dropped for reason, one of the Drop*
// values; others count as DropOther.
func (r *Registry) UDPDropped(service, reason string, n int64) {
	if r == nil || n <= 0 {
		return
	}
	r.udpDrops.WithLabelValues(r.serviceLabel(service), oneOf(reason, dropReasons, DropOther)).Add(float64(n))
}

// HandshakeFailed counts a tunnel handshake that failed for reason: a
// rejection code (session.Code*), ReasonTimeout or ReasonTLS. Other
// strings count as ReasonOther.
func (r *Registry) HandshakeFailed(reason string) {
	if r == nil {
		return
	}
	r.handshakeFailures.WithLabelValues(oneOf(reason, reasons, ReasonOther)).Inc()
}

// RelayAborted counts a relayed connection this daemon reset for reason
// (AbortStall, AbortPressure); other strings count as AbortOther.
func (r *Registry) RelayAborted(reason string) {
	if r == nil {
		return
	}
	r.relaysAborted.WithLabelValues(oneOf(reason, abortReasons, AbortOther)).Inc()
}

// SetServerRTT records the last heartbeat round trip of the client's
// session to server, client being the name the server knows it by.
// Client only.
func (r *Registry) SetServerRTT(server, client string, d time.Duration) {
	if r == nil || r.cfg.Role != RoleClient {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.serverUp[server] {
		return // its sessions are gone: do not resurrect the series
	}
	r.rtt.WithLabelValues(r.clients.label(client), server).Set(d.Seconds())
}

// SetRTT records the last heartbeat round trip of client's session.
// Server only (the client calls SetServerRTT).
func (r *Registry) SetRTT(client string, d time.Duration) {
	if r == nil || r.cfg.Role != RoleServer {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.clients.label(client)
	if r.up[c] == 0 {
		return // its session is gone: do not resurrect the series
	}
	r.rtt.WithLabelValues(c).Set(d.Seconds())
}

// ForgetClient removes every series of client and frees its place under
// MaxNames: for a client removed from the configuration. Its sessions must
// be down.
func (r *Registry) ForgetClient(client string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.clients.set[client]; !ok {
		return
	}
	delete(r.clients.set, client)
	delete(r.up, client)
	l := prometheus.Labels{"client": client}
	r.sessions.DeletePartialMatch(l)
	r.streamsOpen.DeletePartialMatch(l)
	r.rtt.DeletePartialMatch(l)
	r.dials.DeletePartialMatch(l)
}

// ForgetService removes every series of service and frees its place under
// MaxNames: for a service no client claims any more.
func (r *Registry) ForgetService(service string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.services.set[service]; !ok {
		return
	}
	delete(r.services.set, service)
	l := prometheus.Labels{"service": service}
	r.publicConns.DeletePartialMatch(l)
	r.visitorConns.DeletePartialMatch(l)
	r.serviceBytes.DeletePartialMatch(l)
	r.udpFlows.DeletePartialMatch(l)
	r.udpDatagrams.DeletePartialMatch(l)
	r.udpDrops.DeletePartialMatch(l)
}

func (r *Registry) clientLabel(client string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clients.label(client)
}

func (r *Registry) serviceLabel(service string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.services.label(service)
}

// names is a bounded set of label values. Callers hold Registry.mu.
type names struct {
	max int
	set map[string]struct{}
}

// label returns name if it has, or can get, a place in the set, else
// Overflow.
func (n *names) label(name string) string {
	if _, ok := n.set[name]; ok {
		return name
	}
	if len(n.set) >= n.max {
		return Overflow
	}
	n.set[name] = struct{}{}
	return name
}

// oneOf returns v if it is in set, else other.
func oneOf[T comparable](v T, set []T, other T) T {
	for _, s := range set {
		if s == v {
			return v
		}
	}
	return other
}
