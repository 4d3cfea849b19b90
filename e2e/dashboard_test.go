package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/testutil/impair"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport"
)

// xss is a string a peer controls that must show as text: the dashboard
// runs no script from it and makes no element of it.
const xss = `<img src=x onerror=alert(1)>`

// adminToken is the admin token of the restarted server.
const adminToken = "dashboard-admin-token-0123456789"

// TestDashboard drives the admin dashboard in headless Chromium against
// the real binary, a server and a client with an echo service. It loads
// the server's page and sees the session; moves bytes and sees the
// counter and the chart move; has a refused claim whose service name is
// markup show as text, with no script run; reloads and disconnects with
// the buttons (the row goes, the client comes back); shows the client's
// page; shows "disconnected" while the server is down; and, once the
// server comes back with an admin token, asks for it, says so when it is
// wrong, and keeps it in the tab's session storage, never in the address.
//
// With WARREN_SCREENSHOTS=DIR it also saves the screenshots that
// docs/operations.md shows (after a few more transfers, for the charts):
//
//	WARREN_SCREENSHOTS=$PWD/docs/img go test -count=1 -run '^TestDashboard$' ./e2e/
func TestDashboard(t *testing.T) {
	ctx := browser(t)
	shots := os.Getenv("WARREN_SCREENSHOTS")

	// The page's own safety net is checked too: any dialog (alert) or
	// Content-Security-Policy violation fails the test.
	var mu sync.Mutex
	var dialogs []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			mu.Lock()
			dialogs = append(dialogs, d.Message)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(dialogs) > 0 {
			t.Errorf("the page opened JavaScript dialogs: %q", dialogs)
		}
	})

	dir := t.TempDir()
	tunnelPort, adminPort := freeTCPPort(t), freeTCPPort(t)
	appPort, docsPort := freeTCPPort(t), freeTCPPort(t)
	tunnel := hostPort("127.0.0.1", tunnelPort)
	srvURL := "http://" + hostPort("127.0.0.1", adminPort) + "/"
	srv, fp := dashboardServer(t, dir, tunnel, hostPort("127.0.0.1", adminPort), "")
	target, downloads := backend(t, echo), backend(t, source)
	cliCfg := writeFile(t, dir, "client.toml", fmt.Sprintf(`
[client]
server = %q
transport = "tcp"
token_env = "WARREN_TEST_TOKEN"
heartbeat_interval = "200ms"
[client.tls]
fingerprint = %q
[[client.services]]
name = "app"
target = %q
remote_port = %d
[[client.services]]
name = "docs"
target = %q
remote_port = %d
[client.admin]
address = "127.0.0.1:0"
[client.log]
format = "json"
`, tunnel, fp, target, appPort, downloads, docsPort))
	cli := startProc(t, []string{"WARREN_TEST_TOKEN=" + tokenOffice}, "client", "-c", cliCfg)
	cliURL := "http://" + cli.waitLog("admin API listening")["address"].(string) + "/"
	cli.waitLog("session up")

	// The server's page: the session row, the routes, the fingerprint.
	do(t, ctx, "loading the server's dashboard", chromedp.Navigate(srvURL))
	watchCSP(t, ctx)
	row := `#sessions tr[data-client="office"]:not([data-session=""])`
	do(t, ctx, "waiting for the session row", chromedp.WaitVisible(chromedp.CSS(row)))
	sessID := attr(t, ctx, row, "data-session")
	do(t, ctx, "waiting for the routes", chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#routes tr[data-route="port %d"]`, appPort))))
	if got := text(t, ctx, "#fp"); got != fp {
		t.Errorf("fingerprint shown %q, want %q", got, fp)
	}

	// Bytes through "app", on a connection that stays open meanwhile: the
	// session's counter and the service's chart move as the bytes do, not
	// when the connection ends.
	const size = 3 << 20
	live := echoOpen(t, hostPort("127.0.0.1", appPort), size)
	waitJS(t, ctx, "the session's byte counter", fmt.Sprintf(`Number(document.querySelector(%q)?.dataset.value) >= %d`, row+` td[data-field="bytes_in"]`, size))
	waitJS(t, ctx, "the chart of app", `Number(document.querySelector('#traffic [data-series="office/app"] svg')?.dataset.peak) > 0`)
	live.Close()

	// A peer-controlled string: a claim the server refuses, its service
	// name markup. The events list shows it as text.
	rejectedClaim(t, tunnel, fp)
	waitJS(t, ctx, "the rejection in the events", fmt.Sprintf(`[...document.querySelectorAll('#events tr[data-kind="rejected"]')].some((r) => r.textContent.includes(%q))`, xss))
	if n := eval[int](t, ctx, `document.querySelectorAll('img[src="x"], #events img').length`); n != 0 {
		t.Errorf("the page made %d img elements of a peer's string", n)
	}

	// Reload with its button and its confirmation.
	do(t, ctx, "reloading", chromedp.Click(chromedp.CSS("#reload")), chromedp.WaitVisible(chromedp.CSS("#confirm[open]")), chromedp.Click(chromedp.CSS("#confirm-ok")))
	waitJS(t, ctx, "the reload's answer", `document.getElementById('notice').textContent.includes('Configuration reloaded')`)
	waitJS(t, ctx, "the reload in the events", `document.querySelector('#events tr[data-kind="reload"]') !== null`)

	if shots != "" {
		moreTraffic(t, hostPort("127.0.0.1", appPort), hostPort("127.0.0.1", docsPort))
		screenshot(t, ctx, shots, "dashboard-server.png", 1280, 800)
		screenshot(t, ctx, shots, "dashboard-server-phone.png", 390, 844)
		do(t, ctx, "back to 1280x800", chromedp.EmulateViewport(1280, 800))
	}

	// Disconnect with the button: the row goes, and the client, told
	// nothing else, comes back as a new session.
	do(t, ctx, "disconnecting", chromedp.Click(chromedp.CSS(row+` button[data-action="disconnect"]`)),
		chromedp.WaitVisible(chromedp.CSS("#confirm[open]")), chromedp.Click(chromedp.CSS("#confirm-ok")))
	do(t, ctx, "waiting for the row to go", chromedp.WaitNotPresent(chromedp.CSS(fmt.Sprintf(`tr[data-session=%q]`, sessID))))
	waitJS(t, ctx, "the disconnect in the events", `[...document.querySelectorAll('#events tr[data-kind="session_down"]')].some((r) => r.textContent.includes("disconnected by the server's admin"))`)
	do(t, ctx, "waiting for the client's next session", chromedp.WaitVisible(chromedp.CSS(row)))
	checkCSP(t, ctx)

	// The client's page: its session, its services with their public
	// address and traffic.
	do(t, ctx, "loading the client's dashboard", chromedp.Navigate(cliURL),
		chromedp.WaitVisible(chromedp.CSS(`#services tr[data-service="app"]`)))
	watchCSP(t, ctx)
	if got, want := text(t, ctx, `#services tr[data-service="app"] td`), hostPort("127.0.0.1", appPort); got != want {
		t.Errorf("client page: app's public address %q, want %q", got, want)
	}
	serverRow := fmt.Sprintf(`#servers tr[data-server=%q]`, tunnel)
	if got := text(t, ctx, serverRow+` td[data-field="state"]`); got != "up" {
		t.Errorf("client page: the server's state is %q, want up", got)
	}
	waitJS(t, ctx, "the round trip chart", `(document.querySelector('#rtt-chart polyline')?.getAttribute('points') || '') !== '' && Number(document.getElementById('rtt-chart').dataset.peak) > 0`)
	if shots != "" {
		moreTraffic(t, hostPort("127.0.0.1", appPort), hostPort("127.0.0.1", docsPort))
		screenshot(t, ctx, shots, "dashboard-client.png", 1280, 800)
	}
	checkCSP(t, ctx)

	// The server goes: its page says so and keeps the last data.
	do(t, ctx, "loading the server's dashboard", chromedp.Navigate(srvURL), chromedp.WaitVisible(chromedp.CSS(row)))
	if code := srv.stop(syscall.SIGTERM); code != exitOK {
		t.Fatalf("server exited %d", code)
	}
	waitJS(t, ctx, "the disconnected state", `document.getElementById('conn').classList.contains('conn-down') && document.getElementById('main').classList.contains('stale')`)

	// It comes back beyond loopback, where its admin API needs a token;
	// the static page does not.
	srv, _ = dashboardServer(t, dir, tunnel, hostPort("0.0.0.0", adminPort), adminToken)
	waitJS(t, ctx, "the token prompt", `!document.getElementById('auth').hidden && document.getElementById('auth-msg').textContent.includes('needs its token')`)
	do(t, ctx, "reloading the page without a token", chromedp.Reload())
	waitJS(t, ctx, "the token prompt", `!document.getElementById('auth').hidden`)
	do(t, ctx, "a wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "not-the-admin-token-0123456789"), chromedp.Click(chromedp.CSS(`#auth-form button[type="submit"]`)))
	waitJS(t, ctx, "the wrong token's message", `!document.getElementById('auth').hidden && document.getElementById('auth-msg').textContent.includes('token was refused')`)
	if shots != "" {
		screenshot(t, ctx, shots, "dashboard-token.png", 1280, 800)
	}
	do(t, ctx, "the right token", chromedp.SendKeys(chromedp.CSS("#token"), adminToken), chromedp.Click(chromedp.CSS(`#auth-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#sessions tr[data-client="office"]`)))
	do(t, ctx, "reloading the page with the token kept", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#sessions tr[data-client="office"]`)))
	watchCSP(t, ctx)
	if got := eval[string](t, ctx, `sessionStorage.getItem('warren.admin.token')`); got != adminToken {
		t.Errorf("session storage holds %q, want the token", got)
	}
	if got := eval[string](t, ctx, `location.href`); got != srvURL {
		t.Errorf("the address is %q, want %q: the token must not be in it", got, srvURL)
	}
	do(t, ctx, "one more poll", chromedp.Sleep(1500*time.Millisecond))
	checkCSP(t, ctx)

	// With the server gone, the client's page says it is away, and why.
	srv.stop(syscall.SIGTERM)
	do(t, ctx, "loading the client's dashboard", chromedp.Navigate(cliURL))
	waitJS(t, ctx, "the server retried", fmt.Sprintf(`document.querySelector('%s')?.dataset.state === 'retrying' && document.querySelector('%s td:last-child').textContent !== ''`, serverRow, serverRow))
	cli.stop(syscall.SIGTERM)
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// dashboardServer starts the binary as a server with its admin listener on
// adminAddr (with adminTok when set) and waits until it listens; it
// returns it with its fingerprint.
func dashboardServer(t *testing.T, dir, tunnel, adminAddr, adminTok string) (*proc, string) {
	t.Helper()
	tokenLine := ""
	if adminTok != "" {
		tokenLine = fmt.Sprintf("token_file = %q", writeFile(t, dir, "admin-token", adminTok+"\n"))
	}
	cfg := writeFile(t, dir, "server.toml", fmt.Sprintf(`
[server]
public_address = "127.0.0.1"
state_dir = %q
heartbeat_interval = "200ms"
reconnect_grace = "5s"
[[server.listen]]
transport = "tcp"
address = %q
[[server.clients]]
name = "office"
token_file = %q
ports = ["1024-65535"]
[server.admin]
address = %q
%s
[server.log]
format = "json"
`, filepath.Join(dir, "state"), tunnel, writeFile(t, dir, "token", tokenOffice+"\n"), adminAddr, tokenLine))
	p := startProc(t, nil, "server", "-c", cfg)
	fp := p.waitRecord("with a fingerprint", func(r map[string]any) bool {
		_, ok := r["fingerprint"].(string)
		return ok
	})["fingerprint"].(string)
	p.waitLog("admin API listening")
	return p, fp
}

// rejectedClaim opens a session to the server that claims a service named
// xss, which the server refuses.
func rejectedClaim(t *testing.T, addr, fp string) {
	t.Helper()
	tlsCfg, err := transport.ClientTLS{Fingerprint: fp}.Config()
	if err != nil {
		t.Fatal(err)
	}
	tcfg := transport.DefaultConfig()
	tcfg.TLS = tlsCfg
	tr, err := transport.New(transport.KindTCP, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := tr.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := session.Connect(conn, session.DefaultConfig(), slog.New(slog.DiscardHandler), []byte(tokenOffice), session.NewID(), []session.Service{{Name: xss, RemotePort: 0}})
	var rej *session.RejectError
	if !errors.As(err, &rej) || rej.Code != session.CodeBadRequest {
		if sess != nil {
			sess.Close(session.CodeClosed, "test")
		}
		t.Fatalf("claiming a service named %q: %v; want a bad_request rejection", xss, err)
	}
}

// echoOpen sends size bytes through the echo service at addr and reads
// them back, and leaves the connection open.
func echoOpen(t *testing.T, addr string, size int64) net.Conn {
	t.Helper()
	c := dialPublic(t, addr)
	c.SetDeadline(time.Now().Add(2 * waitTimeout))
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, strings.NewReader(strings.Repeat("x", int(size))))
		sent <- err
	}()
	if n, err := io.CopyN(io.Discard, c, size); err != nil {
		t.Fatalf("echo via %s: %d of %d bytes back: %v", addr, n, size, err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	return c
}

// moreTraffic moves bytes of a few sizes over some seconds, through app
// (an echo) and docs (downloads), so that the screenshots' charts have
// something to show.
func moreTraffic(t *testing.T, app, docs string) {
	t.Helper()
	for i := range 16 {
		transfer(t, app, uint64(i), int64(1+i%4)<<19)
		if i%3 != 1 {
			download(t, docs, int64(2+i%5)<<20)
		}
		time.Sleep(time.Second) // spread over samples (one a second), for the picture only
	}
}

// download asks a source backend at addr for size bytes and reads them.
func download(t *testing.T, addr string, size int64) {
	t.Helper()
	c := dialPublic(t, addr)
	c.SetDeadline(time.Now().Add(waitTimeout))
	if err := binary.Write(c, binary.BigEndian, uint64(size)); err != nil {
		t.Fatal(err)
	}
	if n, err := io.CopyN(io.Discard, c, size); err != nil {
		t.Fatalf("download via %s: %d of %d bytes: %v", addr, n, size, err)
	}
	c.Close()
}

// screenshot saves the page at width×height as dir/name.
func screenshot(t *testing.T, ctx context.Context, dir, name string, width, height int64) {
	t.Helper()
	do(t, ctx, "resizing to "+name, chromedp.EmulateViewport(width, height))
	time.Sleep(1200 * time.Millisecond) // a poll or two at the new size, for the picture only
	tctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// attr returns an attribute of the first element sel matches.
func attr(t *testing.T, ctx context.Context, sel, name string) string {
	t.Helper()
	return eval[string](t, ctx, fmt.Sprintf(`document.querySelector(%q).getAttribute(%q)`, sel, name))
}

// text returns the text of the first element sel matches.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return eval[string](t, ctx, fmt.Sprintf(`document.querySelector(%q).textContent`, sel))
}

// watchCSP makes the page collect Content-Security-Policy violations,
// which checkCSP reports: the page must cause none (none of its own, and
// no injected markup for the policy to stop).
func watchCSP(t *testing.T, ctx context.Context) {
	t.Helper()
	eval[bool](t, ctx, `window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI)); true`)
}

func checkCSP(t *testing.T, ctx context.Context) {
	t.Helper()
	if v := eval[[]string](t, ctx, `window.__csp || []`); len(v) > 0 {
		t.Errorf("Content-Security-Policy violations: %q", v)
	}
}

// TestDashboardData: what the dashboard shows, from an in-process server
// and client. The server lists its routes (port and domain, who serves
// them, held while the client is away); both record the events (sessions
// up and down, a target out of reach, an unknown host, a connection
// refused once the grace is over) and the bytes of each service, per
// second.
func TestDashboardData(t *testing.T) {
	srvRec, cliRec := admin.NewRecorder(), admin.NewRecorder()
	cfg := serverConfig(t, "tcp")
	cfg.HTTP.Address = "127.0.0.1:0"
	cfg.ReconnectGrace = time.Second
	srv := startServerWith(t, cfg, func(s *server.Server) { s.SetRecorder(srvRec) })
	px, err := impair.NewTCPProxy(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	target := backend(t, echo)
	ccfg := clientConfig(srv, tokenOffice,
		client.Service{Name: "app", Target: target},
		client.Service{Name: "dead", Target: deadAddr(t)},
		client.Service{Name: "web", Target: target, Domains: []string{"www.office.example.com"}})
	ccfg.Server = px.Addr()
	ccfg.HandshakeTimeout = 2 * time.Second
	cli := startClientWith(t, ccfg, func(c *client.Client) { c.SetRecorder(cliRec) })
	info := cli.waitSession(t, 1).Session
	srv.waitSessions(t, 1) // the client may hear Welcome before the server has the session up
	appPort, deadPort := cli.port(t, "app"), cli.port(t, "dead")

	// Routes: ports by number, then the domain; each served by the session.
	member := func(svc string) []admin.RouteMember {
		return []admin.RouteMember{{Client: "office", Session: info.ID, Service: svc}}
	}
	want := []admin.RouteStatus{
		{Port: min(appPort, deadPort), Client: "office"},
		{Port: max(appPort, deadPort), Client: "office"},
		{Domain: "www.office.example.com", Entry: "http", Client: "office", Members: member("web")},
	}
	want[0].Members, want[1].Members = member("app"), member("dead")
	if appPort > deadPort {
		want[0].Members, want[1].Members = member("dead"), member("app")
	}
	if got := srv.AdminSource().Status().Routes; !reflect.DeepEqual(got, want) {
		t.Fatalf("routes:\n got %+v\nwant %+v", got, want)
	}

	// Bytes: the samples have the service's rate on both sides.
	transfer(t, cli.publicAddr(t, "app"), 7, 64<<10)
	for _, rec := range []*admin.Recorder{srvRec, cliRec} {
		waitTraffic(t, rec, "office", "app")
	}

	// A target out of reach (client), a host no client serves (server).
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(deadPort)), 5*time.Second)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		// The server's reset came before the dialer, slow under -race on
		// a busy machine, saw its connect complete.
	case err != nil:
		t.Fatal(err)
	default:
		io.Copy(io.Discard, c)
		c.Close()
	}
	waitEvent(t, cliRec, admin.EventTargetFailed, "dead")
	rawExchange(t, srv.entryAddr("http"), []byte("GET / HTTP/1.1\r\nHost: nobody.example.com\r\n\r\n"))
	if e := waitEvent(t, srvRec, admin.EventUnknownHost, "http entry point"); !strings.Contains(e.Reason, `"nobody.example.com"`) {
		t.Errorf("unknown host event %+v: want the host in the reason", e)
	}

	// The client's link goes and it cannot come back: its routes are
	// held, then released; a connection made meanwhile is refused.
	px.Freeze(true)
	px.Cut()
	srv.waitSessions(t, 0)
	for _, r := range srv.AdminSource().Status().Routes {
		if len(r.Members) != 0 || r.Held <= 0 || r.Client != "office" {
			t.Fatalf("route %+v of a client away: want no members, held for its grace", r)
		}
	}
	if e := waitEvent(t, srvRec, admin.EventSessionDown, ""); e.Client != "office" || !strings.Contains(e.Reason, "routes are held for 1s") {
		t.Errorf("session down event %+v: want office, its routes held", e)
	}
	waitEvent(t, cliRec, admin.EventSessionDown, "")
	c = dialPublic(t, cli.publicAddr(t, "app"))
	io.Copy(io.Discard, c) // closed once the grace is over
	if e := waitEvent(t, srvRec, admin.EventConnRefused, fmt.Sprintf("port %d", appPort)); e.Client != "office" || e.Reason == "" {
		t.Errorf("refused connection event %+v: want office and why", e)
	}
	var kinds []string
	for _, e := range srvRec.Events() {
		kinds = append(kinds, e.Kind)
	}
	if kinds[0] != admin.EventSessionUp {
		t.Errorf("server events %q: want the session up first", kinds)
	}
}

// waitTraffic waits until a sample of rec has a client's service moving
// bytes both ways.
func waitTraffic(t *testing.T, rec *admin.Recorder, client, service string) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for seq := uint64(0); ; {
		ch := rec.Changed()
		rec.Sample(time.Now(), nil)
		for _, s := range rec.History(seq).Samples {
			seq = s.Seq
			for _, r := range s.Traffic {
				if r.Client != client || r.Service != service {
					t.Fatalf("traffic %+v: want only %s/%s", s.Traffic, client, service)
				}
				if r.In > 0 && r.Out > 0 {
					return
				}
			}
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no sample has %s/%s moving both ways", client, service)
		}
	}
}

// waitEvent waits until rec has an event of kind on route ("" any) and
// returns the newest such.
func waitEvent(t *testing.T, rec *admin.Recorder, kind, route string) admin.Event {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		ch := rec.Changed()
		evs := rec.Events()
		for i := len(evs) - 1; i >= 0; i-- {
			if evs[i].Kind == kind && (route == "" || evs[i].Route == route) {
				return evs[i]
			}
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %s event on %q in %+v", kind, route, evs)
		}
	}
}
