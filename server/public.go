package server

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/warren-tunnel/warren/session"
)

// servePublic accepts public connections on svc's port until its listener
// is closed, relaying each over a new stream of cs's session.
func (cs *clientSession) servePublic(svc *service) {
	for {
		c, err := svc.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			cs.log.Warn("accepting public connection failed", "service", svc.name, "err", err)
			select {
			case <-cs.sess.Done():
				return
			case <-time.After(acceptBackoff):
			}
			continue
		}
		cs.wg.Go(func() { cs.relay(svc, c) })
	}
}

// relay carries one public connection to the client and back.
func (cs *clientSession) relay(svc *service, c net.Conn) {
	start := time.Now()
	peer := c.RemoteAddr().String()
	st, err := cs.sess.Open(session.Header{Service: svc.name, Peer: peer})
	if err != nil {
		cs.log.Warn("public connection dropped: cannot open a stream", "service", svc.name, "peer", peer, "err", err)
		c.Close()
		return
	}
	res := session.Relay(c, st)
	level, reason := session.EndReason(res.Err, cs.sess)
	cs.log.Log(context.Background(), level, "public connection closed",
		"service", svc.name, "peer", peer,
		"bytes_from_public", res.Sent, "bytes_to_public", res.Received,
		"duration", time.Since(start).Round(time.Millisecond).String(),
		"reason", reason)
}
