package client

import (
	"context"
	"errors"
	"io"
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
	// Protocol is "tcp" (the default) or "udp": a UDP socket at Bind,
	// each local source address a flow to a private UDP service
	// (visitudp.go).
	Protocol string `toml:"protocol"`
}

// IsUDP reports whether v is a UDP visitor.
func (v Visitor) IsUDP() bool { return v.Protocol == session.ProtoUDP }

// runVisitors listens on every visitor's bind address until ctx ends; the
// listeners stay up whatever the session does (a connection that finds no
// session up waits up to dial_timeout for one). It returns once the
// listeners are bound, with a function that waits for their goroutines.
func (c *Client) runVisitors(ctx context.Context) (wait func(), err error) {
	socks := make([]io.Closer, 0, len(c.cfg.Visitors))
	addrs := make(map[string]net.Addr, len(c.cfg.Visitors))
	for _, v := range c.cfg.Visitors {
		var sock io.Closer
		if v.IsUDP() {
			var pc net.PacketConn
			pc, err = c.edges.listenPacket("udp", v.Bind)
			if err == nil {
				sock, addrs[v.Name] = pc, pc.LocalAddr()
			}
		} else {
			var l net.Listener
			l, err = c.edges.listen("tcp", v.Bind)
			if err == nil {
				sock, addrs[v.Name] = l, l.Addr()
			}
		}
		if err != nil {
			for _, s := range socks {
				s.Close()
			}
			return nil, &VisitorError{Visitor: v.Name, Err: err}
		}
		socks = append(socks, sock)
	}
	c.mu.Lock()
	c.visitorAddrs = addrs
	c.mu.Unlock()
	var wg sync.WaitGroup
	for i, sock := range socks {
		v := c.cfg.Visitors[i]
		log := c.log.With("visitor", v.Name, "service", v.Service, "bind", addrs[v.Name].String())
		log.Info("visitor listening", "protocol", protoOf(v.IsUDP()))
		wg.Go(func() {
			<-ctx.Done()
			sock.Close()
		})
		if pc, ok := sock.(net.PacketConn); ok {
			u := &udpVisitor{c: c, v: v, pc: pc, log: log, stats: c.visitorStats[v.Name], flows: make(map[string]*visitorFlow)}
			wg.Go(func() { u.run(ctx) })
			continue
		}
		l := sock.(net.Listener)
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
					if !c.pause(ctx, acceptPause) {
						return
					}
					continue
				}
				conns.Go(func() { c.visit(ctx, log, v, conn) })
			}
		})
	}
	return wg.Wait, nil
}

// acceptPause is how long a visitor waits after a failed accept or read
// (out of file descriptors, say) before the next.
const acceptPause = 100 * time.Millisecond

// pause waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func (c *Client) pause(ctx context.Context, d time.Duration) bool {
	t := c.edges.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// protoOf names a protocol in logs.
func protoOf(udp bool) string {
	if udp {
		return session.ProtoUDP
	}
	return session.ProtoTCP
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
// a server that knows visitors (UDP ones when udp), waiting up to timeout
// for one.
func (c *Client) visitSession(ctx context.Context, timeout time.Duration, udp bool) *session.Session {
	t := c.edges.clock.NewTimer(timeout)
	defer t.Stop()
	for {
		changed := c.Changed() // before the look, so no change is missed
		var best *session.Session
		for _, s := range c.pool.live() {
			if s.Err() == nil && s.Info().Private && (!udp || s.Info().PrivateUDP) && (best == nil || s.NumStreams() < best.NumStreams()) {
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
	sess := c.visitSession(ctx, c.cfg.DialTimeout, false)
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
