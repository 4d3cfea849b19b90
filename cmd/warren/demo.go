package main

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/config"
	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/internal/token"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/transport"
)

const demoUsage = `Usage: warren demo [--transport kcp|tcp] [--port 8080]

Starts, on loopback, a warren server, a warren client and a small web
server behind the client, joined over KCP+TLS (or TCP+TLS), and prints the
URL to open. The page is served through the tunnel. Ctrl-C stops it all.

Flags:
`

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", demoUsage, stdout, stderr)
	kind := fs.String("transport", transport.KindKCP, "kcp or tcp")
	port := fs.Int("port", 8080, "public port to try first (any free port if it is taken)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *kind != transport.KindKCP && *kind != transport.KindTCP {
		return usagef("--transport: %s: want kcp or tcp", quote.Short(*kind))
	}
	logCfg := config.Log{Level: *logLevel, Format: "text"}
	if err := logCfg.Validate(); err != nil {
		return usageError{err}
	}
	log := logCfg.Logger(stderr)

	stateDir, err := os.MkdirTemp("", "warren-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stateDir)

	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tok := token.New()
	scfg := server.DefaultConfig()
	scfg.PublicAddress = "127.0.0.1"
	scfg.StateDir = stateDir
	scfg.Listen = []server.Listen{{Transport: *kind, Address: "127.0.0.1:0"}}
	scfg.Clients = []server.Client{{Name: "demo", Token: tok, Ports: []server.PortRange{{Lo: 1024, Hi: 65535}}}}
	srv, err := server.New(scfg, log.With("side", "server"))
	if err != nil {
		return err
	}

	ctx, stop := signalContext(stderr)
	defer stop()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	var links demoLinks
	page := &http.Server{Handler: demoPage(srv.Fingerprint(), *kind, &links), ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() {
		if err := page.Serve(backend); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("demo web server: %w", err)
		}
	})
	defer func() {
		cancel()
		page.Close()
		wg.Wait()
	}()
	// The dashboards: each daemon's admin listener on a free loopback port.
	srvAdmin, err := startDemoAdmin(runCtx, &wg, errs, metrics.RoleServer, srv, log.With("side", "server"))
	if err != nil {
		return err
	}
	wg.Go(func() { errs <- srv.Run(runCtx) })
	select {
	case <-srv.Ready():
	case err := <-errs:
		return err
	}

	ccfg := client.DefaultConfig()
	ccfg.Server = srv.Addr(*kind).String()
	ccfg.Transport = *kind
	ccfg.Token = tok
	ccfg.TLS.Fingerprint = srv.Fingerprint()
	ccfg.Services = []client.Service{{Name: "web", Target: backend.Addr().String(), RemotePort: freePort(*port)}}
	cli, err := client.New(ccfg, log.With("side", "client"))
	if err != nil {
		return err
	}
	cliAdmin, err := startDemoAdmin(runCtx, &wg, errs, metrics.RoleClient, cli, log.With("side", "client"))
	if err != nil {
		return err
	}
	links.set(srvAdmin, cliAdmin)
	changed := cli.Changed()
	wg.Go(func() { errs <- cli.Run(runCtx) })
	for st := cli.Status(); !st.Connected || len(st.Session.Services) == 0; st = cli.Status() {
		select {
		case <-changed:
			changed = cli.Changed()
		case err := <-errs:
			return err
		case <-ctx.Done():
			return nil
		}
	}
	granted := cli.Status().Session.Services[0].RemotePort
	fmt.Fprintf(stdout, "\nwarren demo is up: open http://127.0.0.1:%d/\n", granted)
	fmt.Fprintf(stdout, "  (browser -> server :%d -> %s+tls tunnel -> client -> web server %s)\n", granted, *kind, backend.Addr())
	fmt.Fprintf(stdout, "Dashboards: server %s  client %s\n", srvAdmin, cliAdmin)
	fmt.Fprintf(stdout, "Press Ctrl-C to stop.\n\n")

	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		if err == nil && ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// startDemoAdmin runs d's admin listener (the dashboard, without a token:
// loopback only) on a free loopback port until ctx ends, and returns its
// URL once it is bound.
func startDemoAdmin(ctx context.Context, wg *sync.WaitGroup, errs chan error, role string, d adminDaemon, log *slog.Logger) (string, error) {
	adm, err := newAdmin(admin.Config{Address: "127.0.0.1:0"}, role, d, nil, log)
	if err != nil {
		return "", err
	}
	wg.Go(func() {
		if err := adm.Run(ctx); err != nil {
			errs <- err
		}
	})
	select {
	case <-adm.Ready():
		return "http://" + adm.Addr().String() + "/", nil
	case err := <-errs:
		return "", err
	}
}

// demoLinks are the dashboards' URLs, set once they are bound, read by
// the demo page.
type demoLinks struct {
	mu             sync.Mutex
	server, client string
}

func (l *demoLinks) set(server, client string) {
	l.mu.Lock()
	l.server, l.client = server, client
	l.mu.Unlock()
}

func (l *demoLinks) get() (server, client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.server, l.client
}

// freePort returns port if it can be bound on loopback now, else 0 (the
// server then picks a free one).
func freePort(port int) int {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return 0
	}
	l.Close()
	return port
}

// demoDownload is the size of the demo page's download: enough to see on
// the dashboard's traffic chart.
const demoDownload = 32 << 20

// demoPage is the web server behind the demo client: a page that says
// what happened and what to try next, and a download to watch on the
// dashboard.
func demoPage(fingerprint, kind string, links *demoLinks) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="warren-demo.bin"`)
		w.Header().Set("Content-Length", strconv.Itoa(demoDownload))
		buf := make([]byte, 64<<10)
		for i := range buf {
			buf[i] = byte(i * 131)
		}
		for n := 0; n < demoDownload; n += len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		srvDash, cliDash := links.get()
		local := r.Context().Value(http.LocalAddrContextKey).(net.Addr).String()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		e := html.EscapeString
		fmt.Fprintf(w, demoHTML, e(kind), e(fingerprint), e(local),
			e(r.Method), e(r.URL.Path), e(r.Host), time.Now().Format(time.RFC1123),
			e(srvDash), e(cliDash), demoDownload>>20, e(strings.TrimSuffix(strings.TrimPrefix(srvDash, "http://"), "/")))
	})
	return mux
}

// demoHTML is the demo page; its arguments are, in order: transport,
// fingerprint, the web server's address, the request's method, path and
// Host, the time, the two dashboards' URLs, the download's size in MiB
// and the server's dashboard again.
const demoHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>warren demo</title>
<style>
  :root { color-scheme: light dark; --accent: #2f6f4f; --muted: #5c665f; --card: #fff; --bg: #f6f7f5; --line: #d9ded9; }
  @media (prefers-color-scheme: dark) { :root { --accent: #6fcf97; --muted: #9aa69e; --card: #1e2320; --bg: #151816; --line: #333b36; } }
  body { margin: 0; font: 16px/1.55 system-ui, sans-serif; background: var(--bg); }
  main { max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
  h1 { font-size: 1.6rem; margin-bottom: .3rem; }
  .ok { color: var(--accent); }
  .path { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; padding: 0; list-style: none; }
  .path li { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .2rem .6rem; }
  .path li + li::before { content: "→ "; color: var(--muted); }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: .2rem 1.2rem .6rem; margin: 1rem 0; }
  code { font-size: .92em; overflow-wrap: anywhere; }
  a { color: var(--accent); }
  .muted { color: var(--muted); font-size: .92rem; }
</style>
</head>
<body>
<main>
<h1><span class="ok">✓</span> This page came through the warren tunnel</h1>
<ol class="path" aria-label="The way this page came">
  <li>your browser</li><li>warren server (public port)</li><li>%[1]s+tls tunnel</li><li>warren client</li><li>this web server</li>
</ol>
<section>
<h2>What happened</h2>
<p>Your browser connected to the warren server's public port. The server
carried the connection over a <b>%[1]s+tls</b> tunnel (TLS 1.3, the
server's certificate pinned by its fingerprint <code>%[2]s</code>) to the
warren client, which handed it to this web server on <code>%[3]s</code>.
Nothing on the client's side listens on a public port: the client dialed
out to the server.</p>
<p class="muted">Request: <code>%[4]s %[5]s</code>, Host <code>%[6]s</code>, at %[7]s.</p>
</section>
<section>
<h2>What to try next</h2>
<ul>
  <li>Open the <a href="%[8]s">server's dashboard</a>: the client's session, its route, the traffic of
  service <code>web</code> and the events. The <a href="%[9]s">client's dashboard</a> shows its side.</li>
  <li><a href="download">Download %[10]d MiB</a> through the tunnel and watch its chart on the dashboard.</li>
  <li>Press <b>Disconnect</b> on the server's dashboard: the client comes back by itself within a second or two.</li>
  <li>In a terminal: <code>go run ./cmd/warren status --admin %[11]s</code></li>
  <li>Run it for real: <code>warren token</code>, then <code>warren server</code> on a public host and
  <code>warren client</code> where your service runs (README.md, "Running it").</li>
</ul>
<p class="muted">Ctrl-C in the terminal stops the demo.</p>
</section>
</main>
</body>
</html>
`
