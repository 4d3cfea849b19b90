package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/admin"
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

// The visitors in force are c.visitors; each runs as a visitorRun, its
// socket bound at start and closed at stop, so that a reload can stop one
// and bind its address again at once. Run starts them all (and fails if
// one cannot bind); Reload stops the removed and changed ones and starts
// the new and changed ones, putting the old ones back if one cannot
// bind. A stopped visitor's TCP connections carry on until they end; its
// UDP flows end with its socket.

// visitorRun is a running visitor.
type visitorRun struct {
	v    Visitor
	sock io.Closer
	stop context.CancelFunc
}

// setVisitors makes vs the visitors in force, keeping the counters of
// those kept by name.
func (c *Client) setVisitors(vs []Visitor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stats := make(map[string]*admin.ServiceCounters, len(vs))
	for _, v := range vs {
		if stats[v.Name] = c.visitorStats[v.Name]; stats[v.Name] == nil {
			stats[v.Name] = new(admin.ServiceCounters)
		}
	}
	c.visitors, c.visitorStats = slices.Clone(vs), stats
}

// visitorList returns the visitors in force.
func (c *Client) visitorList() []Visitor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.visitors
}

// runVisitors starts every visitor, to run until ctx ends (the listeners
// stay up whatever the session does: a connection that finds no session
// up waits up to dial_timeout for one). It returns once they are bound,
// with a function that waits for every visitor's goroutines, those a
// reload started included, once ctx has ended.
func (c *Client) runVisitors(ctx context.Context) (wait func(), err error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	wait = func() {
		c.reloadMu.Lock()
		c.visitorCtx = nil // no reload starts one from now on
		c.reloadMu.Unlock()
		c.visitorWG.Wait()
	}
	c.visitorCtx, c.visitorRuns = ctx, make(map[string]*visitorRun)
	for _, v := range c.visitorList() {
		if err := c.startVisitorLocked(v); err != nil {
			c.stopVisitorsLocked(slices.Collect(maps.Keys(c.visitorRuns)))
			c.visitorCtx = nil
			return nil, err
		}
	}
	return wait, nil
}

// startVisitorLocked binds v's socket and starts serving it; reloadMu is
// held.
func (c *Client) startVisitorLocked(v Visitor) error {
	var sock io.Closer
	var addr net.Addr
	var err error
	if v.IsUDP() {
		var pc net.PacketConn
		if pc, err = c.edges.listenPacket("udp", v.Bind); err == nil {
			sock, addr = pc, pc.LocalAddr()
		}
	} else {
		var l net.Listener
		if l, err = c.edges.listen("tcp", v.Bind); err == nil {
			sock, addr = l, l.Addr()
		}
	}
	if err != nil {
		return &VisitorError{Visitor: v.Name, Err: err}
	}
	ctx, stop := context.WithCancel(c.visitorCtx)
	c.visitorRuns[v.Name] = &visitorRun{v: v, sock: sock, stop: stop}
	c.mu.Lock()
	if c.visitorAddrs == nil {
		c.visitorAddrs = make(map[string]net.Addr)
	}
	c.visitorAddrs[v.Name] = addr
	stats := c.visitorStats[v.Name]
	c.mu.Unlock()
	log := c.log.With("visitor", v.Name, "service", v.Service, "bind", addr.String())
	log.Info("visitor listening", "protocol", protoOf(v.IsUDP()))
	c.visitorWG.Go(func() {
		<-ctx.Done()
		sock.Close()
	})
	if pc, ok := sock.(net.PacketConn); ok {
		u := &udpVisitor{c: c, v: v, pc: pc, log: log, stats: stats, flows: make(map[string]*visitorFlow)}
		c.visitorWG.Go(func() { u.run(ctx) })
		return nil
	}
	l := sock.(net.Listener)
	c.visitorWG.Go(func() {
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
			conns.Go(func() { c.visit(ctx, log, v, stats, conn) })
		}
	})
	return nil
}

// stopVisitorsLocked stops the named visitors: their sockets are closed
// when it returns; reloadMu is held.
func (c *Client) stopVisitorsLocked(names []string) {
	for _, name := range names {
		r := c.visitorRuns[name]
		if r == nil {
			continue
		}
		r.stop()
		r.sock.Close()
		delete(c.visitorRuns, name)
		c.mu.Lock()
		delete(c.visitorAddrs, name)
		c.mu.Unlock()
		c.log.Info("visitor stopped", "visitor", name, "service", r.v.Service)
	}
}

// reloadVisitorsLocked makes vs the visitors in force: the running ones
// that are gone or changed stop, the new and changed ones start. If one
// cannot bind, the ones it started stop, the ones it stopped start again,
// and the error names the visitor; reloadMu is held.
func (c *Client) reloadVisitorsLocked(vs []Visitor) error {
	old := c.visitorList()
	if slices.Equal(old, vs) {
		return nil
	}
	if c.visitorCtx == nil || c.visitorCtx.Err() != nil { // not running: Run starts them
		c.setVisitors(vs)
		return nil
	}
	next := make(map[string]Visitor, len(vs))
	for _, v := range vs {
		next[v.Name] = v
	}
	var stopped []Visitor
	for _, v := range old {
		if n, ok := next[v.Name]; !ok || n != v {
			stopped = append(stopped, v)
		}
	}
	var started []string
	for _, v := range stopped {
		c.stopVisitorsLocked([]string{v.Name})
	}
	c.setVisitors(vs)
	for i, v := range vs {
		if c.visitorRuns[v.Name] != nil {
			continue
		}
		if err := c.startVisitorLocked(v); err != nil {
			c.stopVisitorsLocked(started)
			c.setVisitors(old)
			for _, o := range stopped {
				if rerr := c.startVisitorLocked(o); rerr != nil {
					c.log.Error("a visitor stopped by a failed reload could not start again", "visitor", o.Name, "err", rerr)
				}
			}
			return fmt.Errorf("client.visitors[%d] (%s).bind: %w; the visitors stay as they were", i, v.Name, errors.Unwrap(err))
		}
		started = append(started, v.Name)
	}
	return nil
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
func (c *Client) visit(ctx context.Context, log *slog.Logger, v Visitor, stats *admin.ServiceCounters, conn net.Conn) {
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
