package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/relay"
	"github.com/warren-tunnel/warren/session"
)

// serveDial answers a dial stream: the server asks this client to dial
// an address. The policy ([client.dial] allow, policy.go) is checked here,
// before anything is dialed, and the client dials exactly the addresses
// it checked.
func (c *Client) serveDial(log *slog.Logger, sess *session.Session, st *session.Stream) {
	h := st.Header()
	log = log.With("dial", h.Target, "network", h.Network())
	client := sess.Info().Client
	refuse := func(status byte, outcome, msg string) {
		log.Warn("dial for the server refused", "reason", msg)
		c.rec.Event(admin.Event{Kind: admin.EventTargetFailed, Client: client, Route: "dial " + h.Target, Reason: msg})
		c.metrics.Dial(client, outcome)
		st.ReplyDial(status, msg)
	}
	ctx, cancel := context.WithTimeout(sess.Context(), c.cfg.DialTimeout)
	defer cancel()
	addrs, err := c.policy.Load().resolve(ctx, c.edges.resolver.LookupNetIP, h.Target)
	switch {
	case errors.Is(err, errPolicy):
		refuse(session.DialRefused, metrics.DialRefused, err.Error())
		return
	case err != nil:
		refuse(session.DialFailed, metrics.DialFailed, "resolving "+h.Target+": "+err.Error())
		return
	}
	var conn net.Conn
	if h.Network() == "udp" {
		// The first address the policy allowed: a UDP dial sends
		// nothing, so there is nothing to fall back on.
		conn, err = c.edges.dialPacket(ctx, "udp", addrs[0].String())
	} else {
		conn, err = c.dialEach(ctx, addrs)
	}
	if err != nil {
		refuse(session.DialFailed, metrics.DialFailed, err.Error())
		return
	}
	cancel()
	if err := st.ReplyDial(session.DialOK, conn.RemoteAddr().String()); err != nil {
		conn.Close()
		st.Close()
		return
	}
	c.metrics.Dial(client, metrics.DialOK)
	c.metrics.StreamUp(client)
	defer c.metrics.StreamDown(client)
	start := c.edges.clock.Now()
	if h.Network() == "udp" {
		c.relayDialFlow(log, sess, st, conn, start)
		return
	}
	res := relay.Relay(conn, st, c.poll)
	if k := session.KillReason(res.Err); k != "" {
		c.metrics.RelayAborted(k)
	}
	level, reason := session.EndReason(res.Err, sess)
	log.Log(context.Background(), level, "dialed connection closed", "address", conn.RemoteAddr().String(),
		"bytes_from_server", res.Received, "bytes_to_server", res.Sent,
		"duration", c.edges.clock.Now().Sub(start).Round(time.Millisecond).String(), "reason", reason)
}

// relayDialFlow carries a UDP dial's datagrams between its stream and the
// socket conn, as a UDP service's flow (udp.go) whose datagrams count in
// no service: the dial's own metric counts it.
func (c *Client) relayDialFlow(log *slog.Logger, sess *session.Session, st *session.Stream, conn net.Conn, start time.Time) {
	f := &clientFlow{st: st, conn: conn, max: session.MaxUDPPayload}
	downErr, upErr := f.run()
	reason := "closed"
	switch {
	case f.unreachable:
		reason = downErr.Error()
	case upErr != nil && upErr != io.EOF:
		_, reason = session.EndReason(upErr, sess)
	}
	log.Debug("dialed udp flow closed", "address", conn.RemoteAddr().String(),
		"datagrams_from_server", f.count.inTotal, "datagrams_to_server", f.count.outTotal,
		"bytes_from_server", f.bytesIn, "bytes_to_server", f.bytesOut,
		"duration", c.edges.clock.Now().Sub(start).Round(time.Millisecond).String(), "reason", reason)
}
