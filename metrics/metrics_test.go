package metrics_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xtaci/kcp-go/v5"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// scrape fetches the registry's page over a real loopback HTTP server and
// returns its samples by series ("name{label="v",...}", labels sorted).
func scrape(t *testing.T, r *metrics.Registry) map[string]float64 {
	t.Helper()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s: %s", resp.Status, body)
	}
	return parse(t, resp.Body)
}

// parse reads the Prometheus text format.
func parse(t *testing.T, body io.Reader) map[string]float64 {
	t.Helper()
	out := make(map[string]float64)
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func newRegistry(t *testing.T, role string) *metrics.Registry {
	t.Helper()
	cfg := metrics.DefaultConfig()
	cfg.Role = role
	r, err := metrics.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// want checks series values; a negative want means "absent".
func want(t *testing.T, got map[string]float64, series map[string]float64) {
	t.Helper()
	for s, w := range series {
		v, ok := got[s]
		switch {
		case w < 0 && ok:
			t.Errorf("%s = %v, want absent", s, v)
		case w >= 0 && !ok:
			t.Errorf("%s missing", s)
		case w >= 0 && v != w:
			t.Errorf("%s = %v, want %v", s, v, w)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*metrics.Config)
		wantErr string
	}{
		{"default", func(*metrics.Config) {}, ""},
		{"client", func(c *metrics.Config) { c.Role = metrics.RoleClient }, ""},
		{"bad role", func(c *metrics.Config) { c.Role = "proxy" }, "metrics.role"},
		{"zero names", func(c *metrics.Config) { c.MaxNames = 0 }, "metrics.max_names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := metrics.DefaultConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr+":") {
				t.Fatalf("Validate() = %v, want an error starting %q", err, tt.wantErr)
			}
			if _, err := metrics.New(cfg); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

func TestNilRegistryIsANoOp(t *testing.T) {
	var r *metrics.Registry
	r.SessionUp("a", "tcp")
	r.SessionDown("a", "tcp")
	r.StreamUp("a")
	r.StreamDown("a")
	r.StreamOpened(time.Millisecond)
	r.PublicConn("web", metrics.OutcomeOK)
	r.AddBytes("web", 1, 2)
	r.HandshakeFailed(metrics.ReasonTLS)
	r.RelayAborted(metrics.AbortStall)
	r.SetRTT("a", time.Millisecond)
	r.ForgetClient("a")
	r.ForgetService("web")
	got := scrape(t, r)
	if len(got) != 0 {
		t.Fatalf("nil registry served %d samples, want none", len(got))
	}
}

func TestServerMetricsMove(t *testing.T) {
	leaktest.Check(t)
	r := newRegistry(t, metrics.RoleServer)

	got := scrape(t, r)
	want(t, got, map[string]float64{
		`warren_handshake_failures_total{reason="unknown_token"}`: 0,
		`warren_handshake_failures_total{reason="tls"}`:           0,
		`warren_stream_open_seconds_count`:                        0,
		`warren_relays_aborted_total{reason="stall"}`:             0,
		`warren_relays_aborted_total{reason="pressure"}`:          0,
		`warren_session_up`:                                       -1, // client only
	})
	if _, ok := got[`warren_kcp_retransmitted_segments_total`]; !ok {
		t.Error("warren_kcp_retransmitted_segments_total missing")
	}
	var info bool
	for s := range got {
		if strings.HasPrefix(s, "warren_build_info{") && strings.Contains(s, `role="server"`) {
			info = true
		}
	}
	if !info {
		t.Error(`warren_build_info{role="server"} missing`)
	}

	r.SessionUp("laptop", "kcp+tls")
	r.SessionUp("nas", "tcp+tls")
	r.SetRTT("laptop", 12*time.Millisecond)
	r.StreamUp("laptop")
	r.StreamUp("laptop")
	r.StreamOpened(300 * time.Microsecond)
	r.StreamOpened(2 * time.Second)
	r.PublicConn("web", metrics.OutcomeOK)
	r.PublicConn("web", metrics.OutcomeOK)
	r.PublicConn("web", metrics.OutcomeNoSession)
	r.PublicConn("ssh", "made_up")
	r.AddBytes("web", 100, 2000)
	r.AddBytes("web", 1, 0)
	r.HandshakeFailed(session.CodeUnknownToken)
	r.HandshakeFailed(metrics.ReasonTimeout)
	r.HandshakeFailed("gibberish")
	r.RelayAborted(metrics.AbortStall)
	r.RelayAborted(metrics.AbortPressure)
	r.RelayAborted(metrics.AbortPressure)
	r.RelayAborted("made_up")

	got = scrape(t, r)
	want(t, got, map[string]float64{
		`warren_sessions{client="laptop",transport="kcp+tls"}`:                1,
		`warren_sessions{client="nas",transport="tcp+tls"}`:                   1,
		`warren_heartbeat_rtt_seconds{client="laptop"}`:                       0.012,
		`warren_heartbeat_rtt_seconds{client="nas"}`:                          -1,
		`warren_streams_open{client="laptop"}`:                                2,
		`warren_stream_open_seconds_count`:                                    2,
		`warren_stream_open_seconds_bucket{le="0.0005"}`:                      1,
		`warren_stream_open_seconds_bucket{le="1"}`:                           1,
		`warren_stream_open_seconds_bucket{le="+Inf"}`:                        2,
		`warren_public_connections_total{outcome="ok",service="web"}`:         2,
		`warren_public_connections_total{outcome="no_session",service="web"}`: 1,
		`warren_public_connections_total{outcome="other",service="ssh"}`:      1,
		`warren_service_bytes_total{direction="in",service="web"}`:            101,
		`warren_service_bytes_total{direction="out",service="web"}`:           2000,
		`warren_handshake_failures_total{reason="unknown_token"}`:             1,
		`warren_handshake_failures_total{reason="timeout"}`:                   1,
		`warren_handshake_failures_total{reason="other"}`:                     1,
		`warren_handshake_failures_total{reason="gibberish"}`:                 -1,
		`warren_relays_aborted_total{reason="stall"}`:                         1,
		`warren_relays_aborted_total{reason="pressure"}`:                      2,
		`warren_relays_aborted_total{reason="other"}`:                         1,
	})

	r.StreamDown("laptop")
	r.SessionDown("laptop", "kcp+tls")
	r.SetRTT("laptop", time.Second) // late heartbeat of a dead session
	got = scrape(t, r)
	want(t, got, map[string]float64{
		`warren_sessions{client="laptop",transport="kcp+tls"}`: 0,
		`warren_streams_open{client="laptop"}`:                 1,
		`warren_heartbeat_rtt_seconds{client="laptop"}`:        -1,
	})

	r.ForgetClient("laptop")
	r.ForgetService("web")
	got = scrape(t, r)
	want(t, got, map[string]float64{
		`warren_sessions{client="laptop",transport="kcp+tls"}`:           -1,
		`warren_streams_open{client="laptop"}`:                           -1,
		`warren_sessions{client="nas",transport="tcp+tls"}`:              1,
		`warren_public_connections_total{outcome="ok",service="web"}`:    -1,
		`warren_public_connections_total{outcome="other",service="ssh"}`: 1,
	})
}

func TestClientMetrics(t *testing.T) {
	r := newRegistry(t, metrics.RoleClient)
	want(t, scrape(t, r), map[string]float64{
		`warren_session_up`:                -1, // no server yet
		`warren_stream_open_seconds_count`: -1, // server only
	})
	r.ServerSessions("a:7000", 0)
	r.SessionUp("laptop", "kcp+tls")
	r.ServerSessions("b:7000", 2)
	r.SetServerRTT("b:7000", "laptop", 5*time.Millisecond)
	r.SetServerRTT("a:7000", "laptop", 7*time.Millisecond) // no session to it: dropped
	r.SetRTT("laptop", time.Second)                        // server only
	r.PublicConn("ssh", metrics.OutcomeBackendDialFailed)
	got := scrape(t, r)
	want(t, got, map[string]float64{
		`warren_session_up{server="a:7000"}`:                                           0,
		`warren_session_up{server="b:7000"}`:                                           1,
		`warren_sessions{client="laptop",transport="kcp+tls"}`:                         -1,
		`warren_heartbeat_rtt_seconds{client="laptop",server="b:7000"}`:                0.005,
		`warren_heartbeat_rtt_seconds{client="laptop",server="a:7000"}`:                -1,
		`warren_public_connections_total{outcome="backend_dial_failed",service="ssh"}`: 1,
	})
	r.ServerSessions("b:7000", 0)
	r.SessionDown("laptop", "kcp+tls")
	want(t, scrape(t, r), map[string]float64{
		`warren_session_up{server="b:7000"}`:                            0,
		`warren_heartbeat_rtt_seconds{client="laptop",server="b:7000"}`: -1,
	})
	r.ForgetServer("a:7000")
	want(t, scrape(t, r), map[string]float64{
		`warren_session_up{server="a:7000"}`: -1,
		`warren_session_up{server="b:7000"}`: 0,
	})
}

func TestNamesAreCapped(t *testing.T) {
	cfg := metrics.DefaultConfig()
	cfg.MaxNames = 2
	r, err := metrics.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a", "b", "c", "d", "a"} {
		r.PublicConn(s, metrics.OutcomeOK)
	}
	want(t, scrape(t, r), map[string]float64{
		`warren_public_connections_total{outcome="ok",service="a"}`:         2,
		`warren_public_connections_total{outcome="ok",service="b"}`:         1,
		`warren_public_connections_total{outcome="ok",service="c"}`:         -1,
		`warren_public_connections_total{outcome="ok",service="_overflow"}`: 2,
	})
	r.ForgetService("b")
	r.PublicConn("e", metrics.OutcomeOK)
	want(t, scrape(t, r), map[string]float64{
		`warren_public_connections_total{outcome="ok",service="e"}`: 1,
	})
}

// The abort reasons are what session.KillReason says.
func TestAbortReasonsAreKillReasons(t *testing.T) {
	if got := session.KillReason(session.ErrStalled); got != metrics.AbortStall {
		t.Errorf("KillReason(ErrStalled) = %q, want %q", got, metrics.AbortStall)
	}
	if got := session.KillReason(fmt.Errorf("x: %w", session.ErrPressure)); got != metrics.AbortPressure {
		t.Errorf("KillReason(ErrPressure) = %q, want %q", got, metrics.AbortPressure)
	}
	if got := session.KillReason(session.ErrTruncated); got != "" {
		t.Errorf("KillReason(ErrTruncated) = %q, want none", got)
	}
}

// Every rejection code of the session package counts under its own name.
func TestReasonsAreSessionCodes(t *testing.T) {
	r := newRegistry(t, metrics.RoleServer)
	codes := []string{session.CodeUnknownToken, session.CodePortNotAllowed, session.CodePortInUse,
		session.CodeDomainNotAllowed, session.CodeDomainInUse, session.CodeBadRequest, session.CodeVersion,
		session.CodeProtocol, session.CodeShuttingDown, session.CodeLimit}
	wantCounts := map[string]float64{}
	for _, code := range codes {
		r.HandshakeFailed(code)
		wantCounts[`warren_handshake_failures_total{reason="`+code+`"}`] = 1
	}
	want(t, scrape(t, r), wantCounts)
}

func TestConcurrentUse(t *testing.T) {
	r := newRegistry(t, metrics.RoleServer)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			c := "c" + strconv.Itoa(i%3)
			for range 200 {
				r.SessionUp(c, "tcp")
				r.StreamUp(c)
				r.SetRTT(c, time.Millisecond)
				r.AddBytes("s", 1, 1)
				r.PublicConn("s", metrics.OutcomeOK)
				r.StreamDown(c)
				r.SessionDown(c, "tcp")
			}
		})
	}
	wg.Wait()
	want(t, scrape(t, r), map[string]float64{
		`warren_service_bytes_total{direction="in",service="s"}`:    1600,
		`warren_public_connections_total{outcome="ok",service="s"}`: 1600,
		`warren_sessions{client="c0",transport="tcp"}`:              0,
		`warren_streams_open{client="c1"}`:                          0,
	})
}

// The KCP counters are read from kcp-go at scrape time: real KCP traffic
// on loopback moves them.
func TestKCPCountersMove(t *testing.T) {
	r := newRegistry(t, metrics.RoleServer)
	before := scrape(t, r)

	l, err := kcp.ListenWithOptions("127.0.0.1:0", nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan error, 1)
	received := make(chan struct{})
	go func() {
		s, err := l.AcceptKCP()
		if err != nil {
			accepted <- err
			return
		}
		defer s.Close()
		buf := make([]byte, 5)
		_, err = io.ReadFull(s, buf)
		if err == nil {
			_, err = s.Write(buf)
		}
		if err == nil {
			<-received // closing would drop the unsent echo
		}
		accepted <- err
	}()
	c, err := kcp.DialWithOptions(l.Addr().String(), nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	close(received)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	atomic.AddUint64(&kcp.DefaultSnmp.FECRecovered, 3)

	after := scrape(t, r)
	for _, s := range []string{
		"warren_kcp_sent_segments_total",
		"warren_kcp_received_segments_total",
		"warren_kcp_udp_sent_bytes_total",
		"warren_kcp_active_opens_total",
		"warren_kcp_passive_opens_total",
	} {
		if after[s] <= before[s] {
			t.Errorf("%s: %v before, %v after traffic; want it to grow", s, before[s], after[s])
		}
	}
	if d := after["warren_kcp_fec_recovered_packets_total"] - before["warren_kcp_fec_recovered_packets_total"]; d < 3 {
		t.Errorf("warren_kcp_fec_recovered_packets_total grew by %v, want >= 3", d)
	}
}

// TestPacing: the warren_kcp_pacing_* series list what the source returns
// at each scrape, one set per session, and go when the session does.
func TestPacing(t *testing.T) {
	r, err := metrics.New(metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if m := scrape(t, r); m[`warren_kcp_pacing_bandwidth_bits_per_second{addr="a:1",client="c"}`] != 0 {
		t.Fatal("pacing series without a source")
	}
	var sessions []metrics.Pacing
	r.SetPacingSource(func() []metrics.Pacing { return sessions })
	sessions = []metrics.Pacing{
		metrics.PacingOf("c", "10.0.0.1:5000", transport.PaceState{Mode: "probe_bw", Bandwidth: 95e6, PacingRate: 96e6,
			MinRTT: 50 * time.Millisecond, InFlight: 600e3, InFlightCap: 1.2e6}),
		{Client: "d", Addr: "10.0.0.2:5000", Mode: "fixed", PacingRate: 90e6},
	}
	m := scrape(t, r)
	want := map[string]float64{
		`warren_kcp_pacing_bandwidth_bits_per_second{addr="10.0.0.1:5000",client="c"}`: 95e6,
		`warren_kcp_pacing_rate_bits_per_second{addr="10.0.0.1:5000",client="c"}`:      96e6,
		`warren_kcp_pacing_min_rtt_seconds{addr="10.0.0.1:5000",client="c"}`:           0.05,
		`warren_kcp_pacing_inflight_bytes{addr="10.0.0.1:5000",client="c"}`:            600e3,
		`warren_kcp_pacing_inflight_cap_bytes{addr="10.0.0.1:5000",client="c"}`:        1.2e6,
		`warren_kcp_pacing_mode{addr="10.0.0.1:5000",client="c",mode="probe_bw"}`:      1,
		`warren_kcp_pacing_mode{addr="10.0.0.1:5000",client="c",mode="startup"}`:       0,
		`warren_kcp_pacing_rate_bits_per_second{addr="10.0.0.2:5000",client="d"}`:      90e6,
		`warren_kcp_pacing_mode{addr="10.0.0.2:5000",client="d",mode="fixed"}`:         1,
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	sessions = nil
	for k := range scrape(t, r) {
		if strings.HasPrefix(k, "warren_kcp_pacing_") {
			t.Errorf("%s after the sessions went", k)
		}
	}
}
