package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/dgram"
	"github.com/warren-tunnel/warren/metrics"
	"github.com/warren-tunnel/warren/relay"
	"github.com/warren-tunnel/warren/session"
)

// A UDP flow on the client: one public source address of a UDP service,
// on a stream the server opened (header kind "udp"), and a socket of its
// own connected to the target, so that the target's replies come back to
// that source alone.
//
//	stream --(up)--> socket --> target
//	stream <-(down)- socket <-- target
//
// The flow ends when the server ends its stream (idle timeout, the route
// gone, its session lost), or when the target is unreachable: an ICMP
// error on the connected socket (ECONNREFUSED on Linux) aborts the stream
// with the reason, and is counted. Neither direction holds a buffer while
// the flow is idle: up reads a datagram's chunk header before it takes
// one, down waits for the socket to be readable.

// serveFlow carries one UDP flow of svc until it ends.
func (c *Client) serveFlow(log *slog.Logger, sess *session.Session, st *session.Stream, svc Service, stats *admin.ServiceCounters) {
	h := st.Header()
	maxDg := grantedMaxDatagram(sess, h.Service)
	client := sess.Info().Client
	conn, err := c.dialFlow(sess.Context(), svc.Target)
	if err != nil {
		log.Warn("target socket not opened", "target", svc.Target, "err", err)
		c.rec.Event(admin.Event{Kind: admin.EventTargetFailed, Client: client, Route: h.Service, Reason: err.Error()})
		st.Abort(fmt.Sprintf("client %s could not open a UDP socket to target %s: %v", client, svc.Target, err))
		c.metrics.PublicConn(h.Service, metrics.OutcomeBackendDialFailed)
		return
	}
	start := c.edges.clock.Now()
	stats.Opened()
	c.metrics.UDPFlows(h.Service, 1)
	f := &clientFlow{st: st, conn: conn, max: maxDg, count: flowCounts{reg: c.metrics, svc: h.Service}}
	downErr, upErr := f.run()
	stats.Add(f.bytesIn, f.bytesOut) // a flow's bytes show when it ends
	stats.Closed()
	c.metrics.UDPFlows(h.Service, -1)
	c.rec.AddBytes(client, h.Service, f.bytesIn, f.bytesOut)

	reason, level := "closed", slog.LevelDebug
	switch {
	case f.unreachable:
		reason, level = downErr.Error(), slog.LevelInfo
	case upErr != nil && upErr != io.EOF:
		_, reason = session.EndReason(upErr, sess)
	}
	if svc.AccessLog {
		level = max(level, slog.LevelInfo)
	}
	log.Log(context.Background(), level, "udp flow closed",
		"target", svc.Target, "datagrams_from_public", f.count.inTotal, "datagrams_to_public", f.count.outTotal,
		"bytes_from_public", f.bytesIn, "bytes_to_public", f.bytesOut,
		"duration", c.edges.clock.Now().Sub(start).Round(time.Millisecond).String(), "reason", reason)
}

// clientFlow is one flow's state; up and down each own their fields.
type clientFlow struct {
	st   *session.Stream
	conn net.Conn
	max  int

	count       flowCounts
	bytesIn     int64 // up's
	bytesOut    int64 // down's
	unreachable bool  // down's: the flow ended on an ICMP error
}

// run carries the flow both ways until it ends, closes the socket and the
// stream, and returns why each direction stopped.
func (f *clientFlow) run() (downErr, upErr error) {
	upDone := make(chan error, 1)
	go func() { upDone <- f.up() }()
	downErr = f.down()
	f.conn.Close() // up's writes fail from now on
	if downErr != nil {
		f.st.Abort(downErr.Error())
	}
	upErr = <-upDone
	f.st.Close()
	f.count.flush()
	return downErr, upErr
}

// up sends the server's datagrams to the target until the stream ends,
// and returns why (io.EOF for the server's end).
func (f *clientFlow) up() error {
	var rb *[]byte
	get := func(n int) []byte {
		rb = dgram.Get(n)
		return (*rb)[dgram.Head:]
	}
	for {
		p, err := f.st.ReadDatagram(f.max, get)
		if err != nil {
			f.conn.Close() // down stops
			return err
		}
		_, werr := f.conn.Write(p)
		dgram.Put(rb)
		if werr != nil {
			// An ICMP error down will also see, or the socket closed:
			// down says why; this direction stops reading.
			return nil
		}
		f.bytesIn += int64(len(p))
		f.count.in()
	}
}

// burstBytes bounds a burst of the target's datagrams sent in one write
// (as the server's flows do: half a default smux frame).
const burstBytes = 16 << 10

// down sends the target's datagrams to the server until the socket is
// closed (nil) or fails: an error to abort the stream with. When more
// datagrams are waiting after the first, it sends them together, in one
// write, as long as they fit burstBytes.
func (f *clientFlow) down() error {
	wait := relay.ReadWaiter(f.conn)
	poll := pollRead(f.conn)
	for {
		if wait != nil {
			if err := wait(); err != nil {
				return f.downErr(err)
			}
		}
		b := dgram.Get(f.max + 1)
		n, err := f.conn.Read((*b)[dgram.Head : dgram.Head+f.max+1])
		if err != nil {
			dgram.Put(b)
			return f.downErr(err)
		}
		if n > f.max {
			dgram.Put(b)
			f.count.drop(metrics.DropTooLarge)
			continue
		}
		if poll == nil || n > burstBytes/2 {
			if err := f.st.WriteDatagram((*b)[:dgram.Head+n]); err != nil {
				return nil // the stream is gone: up says why
			}
			dgram.Put(b)
			f.sent(n)
			continue
		}
		if err := f.burst(b, n, poll); err != nil {
			return err
		}
	}
}

// burst sends the datagram in b (n bytes) and those waiting behind it in
// writes of up to burstBytes; it returns an error when reading the socket
// failed meanwhile (nil on success or when the stream is gone: up says
// why).
func (f *clientFlow) burst(b *[]byte, n int, poll func([]byte) (int, error)) error {
	bb := dgram.Get(burstBytes - dgram.Head)
	out := session.AppendDatagram((*bb)[:0], (*b)[dgram.Head:dgram.Head+n])
	f.sent(n)
	var rerr error
	for {
		m, err := poll((*b)[dgram.Head : dgram.Head+f.max+1])
		if err != nil {
			if err != errNoDatagram {
				rerr = f.downErr(err)
			}
			break
		}
		if m > f.max {
			f.count.drop(metrics.DropTooLarge)
			continue
		}
		if len(out)+session.DatagramHeaderLen+m > cap(out) {
			if err := f.st.WriteDatagrams(out); err != nil {
				return nil // bb may still be in smux: not reused
			}
			out = out[:0]
		}
		if session.DatagramHeaderLen+m > cap(out) {
			if err := f.st.WriteDatagram((*b)[:dgram.Head+m]); err != nil {
				return nil
			}
			f.sent(m)
			continue
		}
		out = session.AppendDatagram(out, (*b)[dgram.Head:dgram.Head+m])
		f.sent(m)
	}
	dgram.Put(b)
	if len(out) > 0 {
		if err := f.st.WriteDatagrams(out); err != nil {
			return nil
		}
	}
	dgram.Put(bb)
	return rerr
}

// sent counts a datagram of n bytes sent to the server.
func (f *clientFlow) sent(n int) {
	f.bytesOut += int64(n)
	f.count.out()
}

// downErr turns what ended reading the target's socket into the reason
// the stream is aborted with, or nil when the flow was closed.
func (f *clientFlow) downErr(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		f.unreachable = true
		f.count.drop(metrics.DropUnreachable)
		return fmt.Errorf("target %s unreachable (ICMP): %v", f.conn.RemoteAddr(), err)
	}
	return fmt.Errorf("target socket failed: %v", err)
}

// flowCounts batches a flow's datagram counts into the metrics: every
// flushEvery datagrams, and at its end.
type flowCounts struct {
	reg               *metrics.Registry
	svc               string
	inTotal, outTotal int64 // up's and down's
}

const flushEvery = 64

// in and out are called by up and down respectively, each counting its
// own direction.
func (fc *flowCounts) in() {
	fc.inTotal++
	if fc.inTotal%flushEvery == 0 {
		fc.reg.AddDatagrams(fc.svc, flushEvery, 0)
	}
}

func (fc *flowCounts) out() {
	fc.outTotal++
	if fc.outTotal%flushEvery == 0 {
		fc.reg.AddDatagrams(fc.svc, 0, flushEvery)
	}
}

func (fc *flowCounts) drop(reason string) { fc.reg.UDPDropped(fc.svc, reason, 1) }

// flush counts what in and out have not, once both have stopped.
func (fc *flowCounts) flush() {
	fc.reg.AddDatagrams(fc.svc, fc.inTotal%flushEvery, fc.outTotal%flushEvery)
}

// dialFlow opens a UDP socket connected to target: its host resolved
// with the client's resolver, the first address taken (a UDP dial sends
// nothing, so there is nothing to fall back on).
func (c *Client) dialFlow(ctx context.Context, target string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		rctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		addrs, lerr := c.edges.resolver.LookupNetIP(rctx, "ip", host)
		cancel()
		if lerr != nil {
			return nil, lerr
		}
		if len(addrs) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
		ip = addrs[0]
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	return c.edges.dialPacket(dctx, "udp", net.JoinHostPort(ip.Unmap().String(), port))
}

// grantedMaxDatagram is the max_datagram the server granted service.
func grantedMaxDatagram(sess *session.Session, service string) int {
	info := sess.Info()
	for _, g := range append(info.Services[:len(info.Services):len(info.Services)], info.PrivateServices...) {
		if g.Name == service && g.UDP != nil && g.UDP.MaxDatagram > 0 {
			return min(g.UDP.MaxDatagram, session.MaxDatagram)
		}
	}
	return 65507
}
