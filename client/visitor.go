package client

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/relay"
	"github.com/warren-tunnel/warren/session"
)

// Visitor is one [[client.visitors]] entry: a local listener whose
// connections go, through the server, to another client's private
// service.
type Visitor struct {
	// Name identifies the visitor; unique among the client's visitors.
	Name string `toml:"name"`
	// Service is the private service to reach: "client/service", the
	// serving client's name on the server and its service's name.
	Service string `toml:"service"`
	// Bind is the local address to listen on, host:port.
	Bind string `toml:"bind"`
	// Protocol is "tcp" (the default).
	Protocol string `toml:"protocol"`
}

// runVisitors listens on every visitor's bind address until ctx ends; the
// listeners stay up whatever the session does (a connection that finds no
// session up waits up to dial_timeout for one). It returns once the
// listeners are bound, with a function that waits for their goroutines.
func (c *Client) runVisitors(ctx context.Context) (wait func(), err error) {
	var ls []net.Listener
	for _, v := range c.cfg.Visitors {
		l, err := c.edges.listen("tcp", v.Bind)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, &VisitorError{Visitor: v.Name, Err: err}
		}
		ls = append(ls, l)
	}
	c.mu.Lock()
	c.visitorAddrs = make(map[string]net.Addr, len(ls))
	for i, l := range ls {
		c.visitorAddrs[c.cfg.Visitors[i].Name] = l.Addr()
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for i, l := range ls {
		v := c.cfg.Visitors[i]
		log := c.log.With("visitor", v.Name, "service", v.Service, "bind", l.Addr().String())
		log.Info("visitor listening")
		wg.Go(func() {
			<-ctx.Done()
			l.Close()
		})
		wg.Go(func() {
			var conns sync.WaitGroup
			defer conns.Wait()
			for {
				conn, err := l.Accept()
				if err != nil {
					if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
						return
					}
					log.Warn("visitor accept failed", "err", err)
					t := c.edges.clock.NewTimer(100 * time.Millisecond)
					select {
					case <-t.C():
					case <-ctx.Done():
					}
					t.Stop()
					continue
				}
				conns.Go(func() { c.visit(ctx, log, v, conn) })
			}
		})
	}
	return wg.Wait, nil
}

// VisitorAddr is where visitor name listens, nil before Run bound it.
func (c *Client) VisitorAddr(name string) net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.visitorAddrs[name]
}

// VisitorError is a visitor's listener that could not be opened.
type VisitorError struct {
	Visitor string
	Err     error
}

func (e *VisitorError) Error() string {
	return "client.visitors (" + e.Visitor + ").bind: " + e.Err.Error()
}

func (e *VisitorError) Unwrap() error { return e.Err }

// visitSession returns the live session with the fewest open streams on
// a server that knows visitors, waiting up to timeout for one.
func (c *Client) visitSession(ctx context.Context, timeout time.Duration) *session.Session {
	t := c.edges.clock.NewTimer(timeout)
	defer t.Stop()
	for {
		changed := c.Changed() // before the look, so no change is missed
		var best *session.Session
		for _, s := range c.pool.live() {
			if s.Err() == nil && s.Info().Private && (best == nil || s.NumStreams() < best.NumStreams()) {
				best = s
			}
		}
		if best != nil {
			return best
		}
		select {
		case <-changed:
		case <-t.C():
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// visit carries one local connection of visitor v to its private service.
func (c *Client) visit(ctx context.Context, log *slog.Logger, v Visitor, conn net.Conn) {
	peer := conn.RemoteAddr().String()
	log = log.With("peer", peer)
	sess := c.visitSession(ctx, c.cfg.DialTimeout)
	if sess == nil {
		log.Warn("visitor connection refused: not connected to the server")
		c.metrics.VisitorConn(v.Service, metrics.OutcomeNoSession)
		conn.Close()
		return
	}
	st, err := sess.Open(session.Header{Service: v.Service, Peer: peer, Local: conn.LocalAddr().String()})
	if err != nil {
		log.Warn("visitor connection refused: cannot open a stream", "err", err)
		c.metrics.VisitorConn(v.Service, metrics.OutcomeAborted)
		conn.Close()
		return
	}
	client := sess.Info().Client
	stats := c.visitorStats[v.Name]
	st.SetMeter(func(sent, received int64) { // sent is from the local peer
		c.metrics.AddBytes(v.Service, sent, received)
		stats.Add(sent, received)
	})
	stats.Opened()
	c.metrics.StreamUp(client)
	start := c.edges.clock.Now()
	res := relay.Relay(conn, st, c.poll)
	stats.Closed()
	c.metrics.StreamDown(client)
	if k := session.KillReason(res.Err); k != "" {
		c.metrics.RelayAborted(k)
	}
	outcome := metrics.OutcomeOK
	var ab *session.AbortError
	if errors.As(res.Err, &ab) && res.Received == 0 {
		outcome = metrics.OutcomeAborted // refused by the server or the serving client
	}
	c.metrics.VisitorConn(v.Service, outcome)
	level, reason := session.EndReason(res.Err, sess)
	if outcome != metrics.OutcomeOK {
		level = max(level, slog.LevelWarn)
	}
	log.Log(context.Background(), level, "visitor connection closed",
		"bytes_to_service", res.Sent, "bytes_from_service", res.Received,
		"duration", c.edges.clock.Now().Sub(start).Round(time.Millisecond).String(), "reason", reason)
}
