package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/transport"
)

// startDaemon runs d (run) with an admin listener on 127.0.0.1:0, as
// "warren server" and "warren client" do, and returns the listener's
// address once it is bound. The daemon stops at the end of the test.
func startDaemon(t *testing.T, role string, d adminDaemon, run func(context.Context) error) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	adm, err := newAdmin(admin.Config{Address: "127.0.0.1:0"}, role, d, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWithAdmin(ctx, adm, log, run) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", role, err)
		}
	})
	select {
	case <-adm.Ready():
	case err := <-done:
		t.Fatalf("%s stopped: %v", role, err)
	}
	return adm.Addr().String()
}

func httpGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// metricValue finds the sample of name whose labels include every one of
// labels ("k=\"v\""), in Prometheus text format; ok false when none.
func metricValue(body, name string, labels ...string) (v float64, ok bool) {
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(line, l)
		}
		if !all {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			return f, true
		}
	}
	return 0, false
}

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAdminWired runs a server and a client, each with its admin listener,
// moves a connection through a public port, and reads the result in the
// metrics, the status API, /readyz and "warren health".
func TestAdminWired(t *testing.T) {
	// A backend that echoes.
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	scfg := server.DefaultConfig()
	scfg.PublicAddress = "127.0.0.1"
	scfg.StateDir = t.TempDir()
	scfg.TLS.Disabled = true
	scfg.Listen = []server.Listen{{Transport: transport.KindTCP, Address: "127.0.0.1:0"}}
	scfg.HeartbeatInterval = 100 * time.Millisecond
	scfg.Clients = []server.Client{{Name: "office", Token: "office-token-0123456789abcdef", Ports: []server.PortRange{{Lo: 1024, Hi: 65535}}}}
	srv, err := server.New(scfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	srvAdmin := startDaemon(t, metrics.RoleServer, srv, srv.Run)
	<-srv.Ready()

	ccfg := client.DefaultConfig()
	ccfg.Server = srv.Addr(transport.KindTCP).String()
	ccfg.Transport = transport.KindTCP
	ccfg.Token = "office-token-0123456789abcdef"
	ccfg.TLS.Disabled = true
	ccfg.HeartbeatInterval = 100 * time.Millisecond
	ccfg.Services = []client.Service{{Name: "web", Target: backend.Addr().String()}}
	cl, err := client.New(ccfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cliAdmin := startDaemon(t, metrics.RoleClient, cl, cl.Run)
	waitUntil(t, "the client's session", func() bool { return cl.Status().Connected })
	port := cl.Status().Session.Services[0].RemotePort

	// One public connection: 5 bytes in, 5 out.
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	c.Close()

	// The server's metrics: counted when the connection ends.
	var body string
	waitUntil(t, "the server's connection metrics", func() bool {
		_, body = httpGet(t, srvAdmin, "/metrics")
		v, _ := metricValue(body, "warren_public_connections_total", `service="web"`, `outcome="ok"`)
		return v == 1
	})
	if v, _ := metricValue(body, "warren_service_bytes_total", `direction="in"`, `service="web"`); v != 5 {
		t.Errorf(`server warren_service_bytes_total{direction="in",service="web"} = %v, want 5`, v)
	}
	if v, _ := metricValue(body, "warren_service_bytes_total", `direction="out"`, `service="web"`); v != 5 {
		t.Errorf(`server warren_service_bytes_total{direction="out",service="web"} = %v, want 5`, v)
	}
	if v, _ := metricValue(body, "warren_sessions", `client="office"`, `transport="tcp"`); v != 1 {
		t.Errorf(`server warren_sessions{client="office",transport="tcp"} = %v, want 1`, v)
	}
	if v, _ := metricValue(body, "warren_stream_open_seconds_count"); v != 1 {
		t.Errorf("server warren_stream_open_seconds_count = %v, want 1", v)
	}
	if code, _ := httpGet(t, srvAdmin, "/readyz"); code != http.StatusOK {
		t.Errorf("server /readyz: %d, want 200", code)
	}

	// The server's status API.
	code, js := httpGet(t, srvAdmin, "/api/v1/status")
	var st admin.Status
	if err := json.Unmarshal([]byte(js), &st); code != http.StatusOK || err != nil {
		t.Fatalf("server status: %d, %v: %s", code, err, js)
	}
	if len(st.Clients) != 1 || len(st.Clients[0].Sessions) != 1 {
		t.Fatalf("server status: want client office with one session: %s", js)
	}
	ss := st.Clients[0].Sessions[0]
	if in, out := ss.Bytes(); ss.Transport != "tcp" || len(ss.Services) != 1 || ss.Services[0].RemotePort != port || in != 5 || out != 5 {
		t.Errorf("server status session: %+v", ss)
	}

	// The client's side.
	waitUntil(t, "the client's connection metrics", func() bool {
		_, body = httpGet(t, cliAdmin, "/metrics")
		v, _ := metricValue(body, "warren_service_bytes_total", `direction="in"`, `service="web"`)
		return v == 5
	})
	if v, _ := metricValue(body, "warren_session_up"); v != 1 {
		t.Errorf("client warren_session_up = %v, want 1", v)
	}
	if code, _ := httpGet(t, cliAdmin, "/readyz"); code != http.StatusOK {
		t.Errorf("client /readyz: %d, want 200", code)
	}

	// warren health.
	for _, addr := range []string{srvAdmin, cliAdmin} {
		var out, errOut strings.Builder
		if err := runHealth([]string{"--admin", addr}, &out, &errOut); err != nil {
			t.Errorf("warren health --admin %s: %v: %s", addr, err, errOut.String())
		}
		if code := run([]string{"health", "--admin", addr}, &out, &errOut); code != exitOK {
			t.Errorf("warren health --admin %s: exit %d: %s", addr, code, errOut.String())
		}
	}

	// Disconnect: the client reconnects.
	resp, err := http.Post("http://"+srvAdmin+"/api/v1/clients/office/disconnect", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("disconnect: %d, want 200", resp.StatusCode)
	}
	waitUntil(t, "the client's second session", func() bool { return cl.Status().Connected && cl.Status().Sessions >= 2 })
	resp, err = http.Post("http://"+srvAdmin+"/api/v1/clients/nobody/disconnect", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("disconnect of an unknown client: %d, want 404", resp.StatusCode)
	}
}
