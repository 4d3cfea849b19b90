package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/config"
)

const swarmUsage = `Usage:
  warren swarm -c FILE -n N [--first I] [--every 100ms]

Runs N clients in this one process, for load tests and benchmarks (the
bench suite's sessions scenario): thousands of client sessions do not fit
a machine as thousands of processes. Client i (I to I+N-1, I from
--first, 0 by default, so that several swarm processes can share one
server's clients) is the [client] table of FILE with its token suffixed
"-i", each service's remote_port raised by i (a port of 0 stays 0) and
its domains prefixed "ci." (web.test becomes c7.web.test for client 7);
the server's config must list those tokens and allow those ports and
domains. Each client keeps its own session, with the reconnect backoff
and jitter of a lone client.

Every --every, it prints one JSON line to stdout: the time since start,
how many clients are up, and the connect times (ms, from start or from
the session's loss) of the clients that came up since the line before.
Errors (a client giving up) go to stderr. It stops on SIGINT or SIGTERM.

Flags:
`

// swarmLine is what swarm prints at each tick.
type swarmLine struct {
	MS      int64   `json:"ms"`      // since start
	Up      int     `json:"up"`      // clients with a session up
	Connect []int64 `json:"connect"` // ms each, of the clients that came up since the last line
}

func runSwarm(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("swarm", swarmUsage, stdout, stderr)
	path := fs.configFlag("config file with a [client] table")
	n := fs.Int("n", 0, "how many clients")
	first := fs.Int("first", 0, "the index of the first client (its token suffix and port offset)")
	every := fs.Duration("every", 100*time.Millisecond, "how often to print a line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" || *n < 1 {
		return usagef("swarm needs -c FILE and -n N (at least 1)")
	}
	if *first < 0 {
		return usagef("--first: %d is negative", *first)
	}
	if *every <= 0 {
		return usagef("--every: %v is not positive", *every)
	}
	f, err := config.LoadTable(*path, config.TableClient, os.LookupEnv)
	if err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var (
		mu       sync.Mutex
		up       int
		connects []int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	for i := *first; i < *first+*n; i++ {
		cfg := f.Client.Config
		cfg.Token = cfg.Token + "-" + strconv.Itoa(i)
		cfg.Services = append([]client.Service(nil), cfg.Services...)
		for j := range cfg.Services {
			s := &cfg.Services[j]
			if s.RemotePort > 0 {
				s.RemotePort += i
			}
			ds := make([]string, len(s.Domains))
			for k, d := range s.Domains {
				ds[k] = "c" + strconv.Itoa(i) + "." + d
			}
			s.Domains = ds
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})).With("swarm", i)
		c, err := client.New(cfg, log)
		if err != nil {
			stop()
			wg.Wait()
			return fmt.Errorf("client %d: %w", i, err)
		}
		wg.Go(func() {
			if err := c.Run(ctx); err != nil {
				log.Error("client stopped", "err", err)
			}
		})
		wg.Go(func() { // notes each session's coming up and going
			down, since := true, start
			for {
				ch := c.Changed()
				st := c.Status()
				now := time.Now()
				mu.Lock()
				switch {
				case down && st.Up > 0:
					down = false
					up++
					connects = append(connects, now.Sub(since).Milliseconds())
				case !down && st.Up == 0:
					down, since = true, now
					up--
				}
				mu.Unlock()
				select {
				case <-ch:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	enc := json.NewEncoder(stdout)
	t := time.NewTicker(*every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case now := <-t.C:
			mu.Lock()
			line := swarmLine{MS: now.Sub(start).Milliseconds(), Up: up, Connect: connects}
			connects = nil
			mu.Unlock()
			if err := enc.Encode(line); err != nil {
				stop()
				wg.Wait()
				return err
			}
		}
	}
}
