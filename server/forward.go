package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/cluster"
	"github.com/warren-tunnel/warren/metrics"
)

// A server in a cluster (WithRegistry) is a member: it claims its routes
// in the registry (cluster.go), listens on every port and serves every
// domain another server holds, and forwards a public connection that no
// session here can take, one hop over a peer link (cluster.Peers), to a
// server that holds its route. A connection forwarded to this server is
// served by a session here as if it had arrived here, from the original
// public peer; one whose route no session here serves is refused, never
// forwarded again.

// forwardTimeout bounds opening a forwarded connection: the link's dial
// and handshake when there is no link yet, and the other server's reply.
const forwardTimeout = 10 * time.Second

// node is the server's part of the cluster.
type node struct {
	reg   cluster.Registry
	peers *cluster.Peers
	id    string
	addr  string // peer listener: peer_listen, else peer_address
}

// newNode prepares the cluster membership of s, once s.tls is loaded.
func (s *Server) newNode() error {
	cc := &s.cfg.Cluster
	if !cc.Enabled() {
		return errors.New("server: WithRegistry needs [server.cluster] (id, etcd, peer_address, peer_token, ca or peer_fingerprints)")
	}
	var own []tls.Certificate
	if s.tls != nil {
		own = s.tls.Certificates
	}
	tc, err := cc.PeerTLS(own)
	if err != nil {
		return err
	}
	addr := cc.PeerListen
	if addr == "" {
		addr = cc.PeerAddress
	}
	n := &node{reg: s.edges.registry, id: cc.ID, addr: addr}
	n.peers = cluster.NewPeers(cluster.PeerConfig{
		ID: cc.ID, Token: []byte(cc.PeerToken), TLS: tc,
		Log: s.log.With("part", "cluster"),
	}, s.serveForwarded)
	s.node = n
	s.table.reg, s.table.self = n.reg, n.id
	return nil
}

// runNode serves the peer listener l, follows the registry's view and
// makes the table's releases until stop is closed and the peer links are
// closed (shutdown).
func (s *Server) runNode(l net.Listener, stop <-chan struct{}) {
	n := s.node
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := n.peers.Serve(l); err != nil {
			s.log.Error("cluster: peer listener failed; other servers cannot forward connections here", "address", n.addr, "err", err)
		}
	})
	wg.Go(func() { s.table.releaser(stop) })
	wg.Go(func() { s.follow(stop) })
	wg.Wait()
}

// follow keeps the table and the peer links in step with the registry's
// view until stop is closed.
func (s *Server) follow(stop <-chan struct{}) {
	n := s.node
	members := map[string]bool{}
	for {
		ch, resync := n.reg.Changed(), s.table.resync.Wait()
		s.table.syncRemote(n.reg.Routes())
		now := map[string]bool{}
		for _, m := range n.reg.Members() {
			now[m.ID] = true
		}
		for id := range members {
			if !now[id] {
				s.log.Info("cluster: member left; closing its peer links", "member", id)
				n.peers.Drop(id)
			}
		}
		members = now
		s.changed.Notify()
		select {
		case <-stop:
			return
		case <-ch:
		case <-resync:
		}
	}
}

// member returns the live member id.
func (n *node) member(id string) (cluster.Member, bool) {
	i := slices.IndexFunc(n.reg.Members(), func(m cluster.Member) bool { return m.ID == id })
	if i < 0 {
		return cluster.Member{}, false
	}
	return n.reg.Members()[i], true
}

// forward carries public connection c on r (prefix read from it already)
// to the server of h. It returns false, with c untouched past prefix,
// when that server could not take it.
func (s *Server) forward(r *route, c net.Conn, prefix []byte, h cluster.Holding) bool {
	n := s.node
	peer := c.RemoteAddr().String()
	m, ok := n.member(h.Server)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	go func() { // shutdown gives up the wait
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	fc, err := n.peers.Open(ctx, m, cluster.Header{Key: r.key, Peer: addrPort(c.RemoteAddr()), Local: addrPort(c.LocalAddr())})
	cancel()
	if err != nil {
		s.log.Info("cannot forward a public connection; trying another server", "route", r.key, "peer", peer, "server", h.Server, "err", err)
		return false
	}
	if len(prefix) > 0 {
		if _, err := fc.Write(prefix); err != nil {
			fc.Close()
			return false
		}
	}
	s.metrics.Forwarded(h.Server, "out")
	start := s.edges.clock.Now()
	sent, received, err := pipe(c, fc)
	sent += int64(len(prefix))
	s.metrics.AddForwardedBytes(h.Server, sent, received)
	reason := "closed"
	if err != nil {
		reason = err.Error()
	}
	service, _ := s.table.owner(r)
	s.metrics.PublicConn(service, metrics.OutcomeOK)
	s.log.Info("public connection closed", "route", r.key, "peer", peer, "forwarded_to", h.Server,
		"bytes_from_public", sent, "bytes_to_public", received,
		"duration", s.edges.clock.Now().Sub(start).Round(time.Millisecond).String(), "reason", reason)
	return true
}

// addrPort is a's "ip:port", or "" when it has none (memory).
func addrPort(a net.Addr) string {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.String()
	}
	return ""
}

// pipe relays c and fc both ways until both ended, then closes both. A
// clean end travels as a half-close; a failure on either side resets the
// other (the peer link's death included: it cuts fc).
func pipe(c net.Conn, fc *cluster.Conn) (sent, received int64, err error) {
	fc.OnCut(func() { resetConn(c) })
	up := make(chan error, 1)
	go func() {
		n, err := io.Copy(fc, c)
		sent = n
		if err == nil {
			err = fc.CloseWrite()
		}
		if err != nil {
			fc.Close()
			resetConn(c)
		}
		up <- err
	}()
	received, err = io.Copy(c, fc)
	if err == nil {
		if hc, ok := c.(interface{ CloseWrite() error }); ok {
			err = hc.CloseWrite()
		}
	}
	if err != nil {
		resetConn(c)
		fc.Close()
	}
	if uerr := <-up; err == nil {
		err = uerr
	}
	c.Close()
	fc.Close()
	return sent, received, err
}

// resetConn closes c with a reset when it is TCP.
func resetConn(c net.Conn) {
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// serveForwarded serves a connection another server forwarded here: by a
// session of its route here, else refused (no second hop).
func (s *Server) serveForwarded(c *cluster.Conn) {
	if c.Header().Kind == cluster.KindDatagram {
		s.serveForwardedFlow(c)
		return
	}
	key := c.Header().Key
	r := s.table.servedHere(key)
	if r == nil || s.isStopping() {
		c.Refuse(fmt.Sprintf("no session serves %s on server %s", key, s.node.id))
		return
	}
	if err := c.Accept(); err != nil {
		c.Close()
		return
	}
	s.metrics.Forwarded(c.Peer(), "in")
	s.serveConnFrom(r, c, nil, true)
}

// ClusterStatus is the server's view of its cluster, for warren status.
func (s *Server) clusterStatus() *admin.ClusterStatus {
	n := s.node
	if n == nil {
		return nil
	}
	st := &admin.ClusterStatus{ID: n.id, PeerAddress: s.cfg.Cluster.PeerAddress, Members: []admin.MemberStatus{}, Routes: []admin.ClusterRoute{}}
	if err := n.reg.Err(); err != nil {
		st.Error = err.Error()
	}
	links := map[string]cluster.LinkInfo{}
	for _, l := range n.peers.Links() {
		links[l.ID] = l
	}
	for _, m := range n.reg.Members() {
		ms := admin.MemberStatus{ID: m.ID, PeerAddress: m.PeerAddress, Self: m.ID == n.id}
		if l, ok := links[m.ID]; ok {
			ms.Link, ms.Forwarding = true, l.Streams
		}
		ps := n.peers.Stats(m.ID)
		ms.ForwardedOut, ms.ForwardedIn = ps.Out.Load(), ps.In.Load()
		ms.BytesSent, ms.BytesReceived = ps.Sent.Load(), ps.Received.Load()
		st.Members = append(st.Members, ms)
	}
	for _, h := range n.reg.Routes() {
		st.Routes = append(st.Routes, admin.ClusterRoute{Key: h.Key, Client: h.Client, Server: h.Server, Shared: h.Shared, Local: h.Server == n.id})
	}
	return st
}
