package main

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/config"
	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/internal/token"
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
	errs := make(chan error, 3)
	page := &http.Server{Handler: demoPage(srv.Fingerprint(), *kind), ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() {
		if err := page.Serve(backend); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("demo web server: %w", err)
		}
	})
	wg.Go(func() { errs <- srv.Run(runCtx) })
	defer func() {
		cancel()
		page.Close()
		wg.Wait()
	}()
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
	changed := cli.Changed()
	wg.Go(func() { errs <- cli.Run(runCtx) })
	for !cli.Status().Connected {
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

// demoPage is the web server behind the demo client.
func demoPage(fingerprint, kind string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html>
<title>warren demo</title>
<h1>This page came through the warren tunnel</h1>
<p>Your browser reached the warren server's public port. The server carried
the connection over a <b>%s+tls</b> tunnel (TLS 1.3, server certificate
pinned by fingerprint <code>%s</code>) to the warren client, which handed it
to this web server on %s.</p>
<p>Request: <code>%s %s</code>, Host <code>%s</code>, at %s.</p>
`, html.EscapeString(kind), html.EscapeString(fingerprint), html.EscapeString(r.Context().Value(http.LocalAddrContextKey).(net.Addr).String()),
			html.EscapeString(r.Method), html.EscapeString(r.URL.Path), html.EscapeString(r.Host), time.Now().Format(time.RFC1123))
	})
}
