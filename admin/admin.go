// Package admin is the admin HTTP listener of a warren server or client:
// a dashboard, Prometheus metrics, health and readiness probes, and a
// small JSON API to see the daemon's state, disconnect a client and
// reload the config.
//
//	GET  /                                  the dashboard, a static page (never needs a token)
//	GET  /assets/{file}                     its script and style sheet (never need a token)
//	GET  /metrics                           Prometheus metrics
//	GET  /healthz                           200 "ok" while the process runs (never needs a token)
//	GET  /readyz                            200 "ready" (and why it is degraded), or 503 and the reason
//	GET  /api/v1/status                     Status as JSON
//	GET  /api/v1/history                    History as JSON (?after=SEQ: newer samples only)
//	POST /api/v1/clients/{name}/disconnect  close a client's sessions (server)
//	POST /api/v1/reload                     reload the config file
//
// When Config.Token is set, every endpoint but the page and /healthz
// needs "Authorization: Bearer TOKEN"; it is required when the address is
// not loopback. The page asks for the token and sends it with its API
// calls. Requests a web page could send are refused (guard.go): a
// tokenless listener answers only a loopback Host, a foreign Origin is
// refused, and a POST must be JSON (or carry Authorization or X-Warren).
// docs/metrics.md documents the endpoints and the JSON.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/metrics"
)

// HTTP server limits. The API's answers are small and quick; a slow or
// idle peer is dropped instead of holding a connection.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	// shutdownTimeout bounds how long Run waits for requests in flight
	// (a reload, a scrape) before closing their connections.
	shutdownTimeout = 5 * time.Second
)

// Sentinel errors.
var (
	// ErrUnknownClient: Source.Disconnect was given a name that no
	// configured client has (the API answers 404).
	ErrUnknownClient = errors.New("unknown client")
	// ErrNotSupported: the Source cannot do that on its side, such as
	// Disconnect on a client (the API answers 501).
	ErrNotSupported = errors.New("not supported")
	// ErrClosed: Run was called after Close, or twice.
	ErrClosed = errors.New("admin server closed")
	// ErrNoSource: New was given a nil Source.
	ErrNoSource = errors.New("admin: nil Source")
)

// Server serves the admin API. Create it with New and run it with Run.
type Server struct {
	cfg       Config
	src       Source
	reg       *metrics.Registry
	log       *slog.Logger
	tokenHash [sha256.Size]byte // of cfg.Token, when set
	handler   http.Handler
	rec       *Recorder
	ready     chan struct{}

	mu      sync.Mutex
	addr    net.Addr
	running bool
	closed  bool
	stop    chan struct{} // closed by Close
}

// New checks cfg and prepares the server; Run binds it. reg nil serves no
// metrics (404 on /metrics); log nil discards logs. The token must be
// resolved (Config.ResolveToken).
func New(cfg Config, src Source, reg *metrics.Registry, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("admin.address: empty; the admin listener is off")
	}
	if cfg.Token == "" && (cfg.TokenFile != "" || cfg.TokenEnv != "") {
		return nil, errors.New("admin.token_file, admin.token_env: not resolved; call Config.ResolveToken first")
	}
	if src == nil {
		return nil, ErrNoSource
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:   cfg,
		src:   src,
		reg:   reg,
		log:   log,
		rec:   NewRecorder(),
		ready: make(chan struct{}),
		stop:  make(chan struct{}),
	}
	if cfg.Token != "" {
		s.tokenHash = sha256.Sum256([]byte(cfg.Token))
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the API's handler, authentication included, for tests
// and for mounting elsewhere.
func (s *Server) Handler() http.Handler { return s.handler }

// Recorder is where the daemon records the events and traffic that the
// dashboard and the status API show; Run samples it every second. It is
// nil for a nil Server, which records nothing.
func (s *Server) Recorder() *Recorder {
	if s == nil {
		return nil
	}
	return s.rec
}

// Ready is closed once Run has bound the listener.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the bound address, nil before Ready.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close makes Run shut down and return, as ending its context does. It is
// idempotent; after it, Run returns ErrClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	return nil
}

// Run binds cfg.Address and serves until ctx is done or Close is called,
// then shuts the HTTP server down (letting requests in flight finish for
// up to 5 s) and returns once every goroutine it started has returned.
// It returns nil after a shutdown, an error when it cannot bind or the
// HTTP server fails. A Server runs once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running || s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.running = true
	s.mu.Unlock()

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("admin.address: %w", err)
	}
	s.mu.Lock()
	s.addr = ln.Addr()
	s.mu.Unlock()
	if s.cfg.Token == "" {
		s.log.Info("admin API listening", "address", ln.Addr().String(), "auth", "none (loopback)")
	} else {
		s.log.Info("admin API listening", "address", ln.Addr().String(), "auth", "bearer token")
	}

	reqCtx, cancelReqs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelReqs()
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	sampling, stopSampling := context.WithCancel(context.Background())
	var sampler sync.WaitGroup
	sampler.Go(func() { s.rec.sampleEvery(sampling, sampleInterval, s.src) })
	defer func() {
		stopSampling()
		sampler.Wait()
	}()
	close(s.ready)

	var serveErr error
	select {
	case <-ctx.Done():
	case <-s.stop:
	case serveErr = <-served:
		served = nil
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		s.log.Warn("admin API: requests still running at shutdown; closing them", "error", err)
		cancelReqs()
		srv.Close()
	}
	if served != nil {
		serveErr = <-served
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, net.ErrClosed) {
		return fmt.Errorf("admin: %w", serveErr)
	}
	return nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", serveDashboard)
	mux.HandleFunc("GET /assets/{file}", serveAsset)
	if s.reg != nil {
		mux.Handle("GET /metrics", s.reg.Handler())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /api/v1/status", s.status)
	mux.HandleFunc("GET /api/v1/history", s.history)
	mux.HandleFunc("POST /api/v1/clients/{name}/disconnect", s.disconnect)
	mux.HandleFunc("POST /api/v1/reload", s.reload)
	return s.guard(s.authenticate(mux))
}

// authenticate checks the bearer token, when one is set, on every path but
// /healthz and the dashboard's static files (public: they hold no data).
func (s *Server) authenticate(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || isStatic(r) || s.authorized(r) {
			next.ServeHTTP(w, r)
			return
		}
		s.log.Debug("admin API: unauthorized request", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
		w.Header().Set("WWW-Authenticate", `Bearer realm="warren"`)
		text(w, http.StatusUnauthorized, "unauthorized: send Authorization: Bearer <admin token>")
	})
}

// authorized compares the request's bearer token with the configured one
// in constant time (of equal-length hashes, so neither content nor
// length leaks).
func (s *Server) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(h[:], s.tokenHash[:]) == 1
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ok, reason := s.src.Ready()
	if !ok {
		if reason == "" {
			reason = "not ready"
		}
		text(w, http.StatusServiceUnavailable, reason)
		return
	}
	if reason != "" { // ready, but degraded: say why
		text(w, http.StatusOK, "ready; "+reason)
		return
	}
	text(w, http.StatusOK, "ready")
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st := s.src.Status()
	st.Ready, st.NotReady = s.src.Ready()
	if st.Ready {
		st.NotReady = ""
	}
	st.Events = s.rec.Events()
	writeJSON(w, http.StatusOK, withEmptyLists(st))
}

// history answers the samples after ?after=SEQ (default 0: all).
func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	var after uint64
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, result{Error: "after: " + quote.Short(v) + " is not a sample number (0 or more)"})
			return
		}
		after = n
	}
	writeJSON(w, http.StatusOK, s.rec.History(after))
}

// withEmptyLists returns st with nil sessions and services lists made
// empty, so that they are [] in JSON and never null. It copies what it
// changes: the Source's slices are not written to.
func withEmptyLists(st Status) Status {
	st.Clients = slices.Clone(st.Clients)
	for i := range st.Clients {
		c := &st.Clients[i]
		if c.Sessions == nil {
			c.Sessions = []SessionStatus{}
		}
		c.Sessions = slices.Clone(c.Sessions)
		for j := range c.Sessions {
			if c.Sessions[j].Services == nil {
				c.Sessions[j].Services = []ServiceStatus{}
			}
		}
	}
	st.Routes = slices.Clone(st.Routes)
	for i := range st.Routes {
		if st.Routes[i].Members == nil {
			st.Routes[i].Members = []RouteMember{}
		}
	}
	if st.Events == nil {
		st.Events = []Event{}
	}
	if st.Session != nil {
		s := *st.Session
		if s.Services == nil {
			s.Services = []ServiceStatus{}
		}
		st.Session = &s
	}
	return st
}

func (s *Server) disconnect(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := s.src.Disconnect(name)
	switch {
	case err == nil:
		s.log.Info("admin API: client disconnected", "client", name, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, result{OK: true})
	case errors.Is(err, ErrUnknownClient):
		writeJSON(w, http.StatusNotFound, result{Error: err.Error()})
	case errors.Is(err, ErrNotSupported):
		writeJSON(w, http.StatusNotImplemented, result{Error: err.Error()})
	default:
		writeJSON(w, http.StatusInternalServerError, result{Error: err.Error()})
	}
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	if err := s.src.Reload(); err != nil {
		s.log.Warn("admin API: reload rejected", "error", err, "remote", r.RemoteAddr)
		status := http.StatusBadRequest
		if errors.Is(err, ErrNotSupported) {
			status = http.StatusNotImplemented
		}
		writeJSON(w, status, result{Error: err.Error()})
		return
	}
	s.log.Info("admin API: config reloaded", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, result{OK: true})
}

// result is the body of the API's POST answers and of its errors.
type result struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		text(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func text(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}
