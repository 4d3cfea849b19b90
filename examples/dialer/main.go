// Command dialer shows the reverse dialer: code beside a warren server
// fetches a web page that only the client's side can reach, with
// net/http over server.Dialer. Everything runs in this one process, on
// loopback: a server, a client that allows dials to 127.0.0.1, and a web
// server on the client's side.
//
//	go run ./examples/dialer
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/server"
)

// DEMO ONLY: a fixed token; real deployments use `warren token`.
const token = "dialer-example-token-change-me"

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The page, on the client's side only.
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from behind the client")
	}))

	// The server: any free tunnel port, a self-signed certificate in a
	// temporary state directory, and client "office" that may be dialed.
	state, err := os.MkdirTemp("", "warren-dialer")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	scfg := server.DefaultConfig()
	scfg.StateDir = state
	scfg.PublicAddress = "127.0.0.1"
	scfg.Listen = []server.Listen{{Transport: "tcp", Address: "127.0.0.1:0"}}
	scfg.Clients = []server.Client{{Name: "office", Token: token, Dial: true}}
	srv, err := server.New(scfg, nil)
	if err != nil {
		return err
	}
	go srv.Run(ctx)
	<-srv.Ready()

	// The client: no services, only dials to 127.0.0.1, any port.
	ccfg := client.DefaultConfig()
	ccfg.Server = srv.Addr("tcp").String()
	ccfg.Transport = "tcp"
	ccfg.Token = token
	ccfg.TLS.Fingerprint = srv.Fingerprint()
	ccfg.Dial.Allow = []string{"127.0.0.1:*"}
	cli, err := client.New(ccfg, nil)
	if err != nil {
		return err
	}
	go cli.Run(ctx)

	// net/http, dialing through the client. The client needs a moment to
	// connect: retry while Dial says it is not connected.
	hc := &http.Client{Transport: &http.Transport{DialContext: srv.Dialer("office")}, Timeout: 10 * time.Second}
	url := "http://" + web.Addr().String() + "/"
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Get(url)
		if err != nil {
			if errors.Is(err, server.ErrNotConnected) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		fmt.Printf("GET %s through client office: %s %s", url, resp.Status, body)
		return nil
	}
}
