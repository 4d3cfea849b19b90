package transport

import (
	"encoding/binary"
	"errors"
	"iter"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// KCP's datagram format, as far as the rate controller reads it (kcp-go
// v5 without its own packet crypto, which warren never turns on; TLS
// encrypts inside the stream). A datagram is optionally an FEC header,
// then KCP segments back to back, each a 24-byte header and its data:
//
//	conv u32 | cmd u8 | frg u8 | wnd u16 | ts u32 | sn u32 | una u32 | len u32 | data
//
// all little-endian. With FEC, a data shard starts with seqid u32, flag
// u16 = 0xf1 and a size u16 before the segments; parity shards (0xf2)
// and out-of-band packets (0xf3) carry no segments to read. KCP's
// commands are 81-84 and fill the low byte of the u16 at offset 4, so
// the FEC flags never clash with a bare segment.
const (
	kcpHeaderLen  = 24
	kcpCmdPush    = 81
	kcpCmdAck     = 82
	fecHeaderLen  = 8 // seqid, flag, size
	fecTypeData   = 0xf1
	fecTypeParity = 0xf2
	fecTypeOOB    = 0xf3
)

// kcpSeg is a segment's header.
type kcpSeg struct {
	conv            uint32
	cmd             byte
	ts, sn, una, ln uint32
}

// kcpSegments yields the segments of datagram b, stopping at the first
// that does not fit (a datagram that is not KCP yields little or nothing,
// and what it yields fails the conversation check of the caller).
func kcpSegments(b []byte) iter.Seq[kcpSeg] {
	return func(yield func(kcpSeg) bool) {
		if len(b) >= 6 {
			switch binary.LittleEndian.Uint16(b[4:]) {
			case fecTypeData:
				if len(b) < fecHeaderLen {
					return
				}
				b = b[fecHeaderLen:]
			case fecTypeParity, fecTypeOOB:
				return
			}
		}
		for len(b) >= kcpHeaderLen {
			seg := kcpSeg{
				conv: binary.LittleEndian.Uint32(b),
				cmd:  b[4],
				ts:   binary.LittleEndian.Uint32(b[8:]),
				sn:   binary.LittleEndian.Uint32(b[12:]),
				una:  binary.LittleEndian.Uint32(b[16:]),
				ln:   binary.LittleEndian.Uint32(b[20:]),
			}
			b = b[kcpHeaderLen:]
			if uint64(seg.ln) > uint64(len(b)) {
				return
			}
			b = b[seg.ln:]
			if !yield(seg) {
				return
			}
		}
	}
}

// dialWatch is the UDP socket of a dialed KCP session as kcp-go sees it:
// every datagram through it is shown to the session's controller, once
// attached, and a datagram of ACKs alone goes out twice (rateCtl.sent).
//
// It hides the socket's SyscallConn, so kcp-go reads and writes through
// it one datagram at a time, and batches underneath itself (kcpbatch.go):
// strace of BenchmarkThroughputUp/kcp in docs/benchmarks.md.
type dialWatch struct {
	net.PacketConn
	conn net.Conn // the same socket when connected (WriteTo is refused there)
	ctl  atomic.Pointer[rateCtl]
	// refused is the port-unreachable error a write on the connected
	// socket took: the socket reports it once, to whichever call comes
	// first, and kcp-go's reader (where a session learns of it) does not
	// watch its writer's errors, so a dial to a dead server would wait out
	// its deadline. The reader is woken to return it.
	refused atomic.Pointer[error]

	// rd and wr batch the socket's reads and writes; nil where it cannot
	// be batched (not Linux, not a bare *net.UDPConn).
	rd    *batchReader
	wr    *batchWriter
	stats batchStats
}

func newDialWatch(pc net.PacketConn) *dialWatch {
	w := &dialWatch{PacketConn: pc}
	if c, ok := pc.(net.Conn); ok && c.RemoteAddr() != nil {
		w.conn = c
	}
	if bc := newBatchConn(pc); bc != nil {
		w.rd = newBatchReader(bc, &w.stats)
		// The socket is the session's alone: an error is the session's.
		w.wr = newBatchWriter(bc, &w.stats, func(err error) bool {
			w.noteRefused(err)
			return true
		})
	}
	return w
}

func (w *dialWatch) WriteTo(b []byte, addr net.Addr) (int, error) {
	twice := false
	if c := w.ctl.Load(); c != nil {
		twice = c.sent(b)
	}
	if w.wr != nil {
		if w.conn != nil {
			addr = nil // connected: the socket's own peer
		}
		return w.wr.writeOut(b, addr, twice)
	}
	if w.conn != nil {
		if twice {
			w.write(b)
		}
		return w.write(b)
	}
	if twice {
		w.PacketConn.WriteTo(b, addr)
	}
	return w.PacketConn.WriteTo(b, addr)
}

func (w *dialWatch) write(b []byte) (int, error) {
	n, err := w.conn.Write(b)
	w.noteRefused(err)
	return n, err
}

// noteRefused keeps a port-unreachable error for the reader and wakes it.
func (w *dialWatch) noteRefused(err error) {
	if w.conn != nil && errors.Is(err, syscall.ECONNREFUSED) && w.refused.CompareAndSwap(nil, &err) {
		w.conn.SetReadDeadline(time.Unix(1, 0)) // wake ReadFrom
	}
}

func (w *dialWatch) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := readVia(w.rd, w.PacketConn, b)
	if p := w.refused.Load(); p != nil {
		return 0, nil, *p
	}
	if err == nil {
		if c := w.ctl.Load(); c != nil {
			c.received(b[:n])
		}
	}
	return n, addr, err
}

// readVia reads a datagram from rd's batches, or from pc where rd is nil.
func readVia(rd *batchReader, pc net.PacketConn, b []byte) (int, net.Addr, error) {
	if rd != nil {
		return rd.read(b)
	}
	return pc.ReadFrom(b)
}

// listenWatch is a KCP listener's UDP socket, shared by every session it
// accepted, as kcp-go sees it: each datagram is shown to the controller
// of the session of its peer address, and a datagram of ACKs alone goes
// out twice (rateCtl.sent).
//
// Like dialWatch, it batches underneath kcp-go (kcpbatch.go).
type listenWatch struct {
	net.PacketConn
	mu   sync.RWMutex
	ctls map[netip.AddrPort]*rateCtl

	rd    *batchReader // nil: unbatched, as dialWatch's
	wr    *batchWriter
	stats batchStats
}

func newListenWatch(pc net.PacketConn) *listenWatch {
	w := &listenWatch{PacketConn: pc, ctls: make(map[netip.AddrPort]*rateCtl)}
	if bc := newBatchConn(pc); bc != nil {
		w.rd = newBatchReader(bc, &w.stats)
		// The socket is every session's: a datagram one peer's address
		// refuses is dropped as lost (kcp-go resends it), not the end
		// of the others.
		w.wr = newBatchWriter(bc, &w.stats, func(error) bool { return false })
	}
	return w
}

func addrKey(a net.Addr) (netip.AddrPort, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		ap, err := netip.ParseAddrPort(a.String())
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), err == nil
	}
	ap := u.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// add routes the datagrams of peer to c until remove.
func (w *listenWatch) add(peer net.Addr, c *rateCtl) {
	if k, ok := addrKey(peer); ok {
		w.mu.Lock()
		w.ctls[k] = c
		w.mu.Unlock()
	}
}

// remove stops routing peer's datagrams to c (a newer session of the same
// address keeps its own).
func (w *listenWatch) remove(peer net.Addr, c *rateCtl) {
	if k, ok := addrKey(peer); ok {
		w.mu.Lock()
		if w.ctls[k] == c {
			delete(w.ctls, k)
		}
		w.mu.Unlock()
	}
}

func (w *listenWatch) lookup(a net.Addr) *rateCtl {
	k, ok := addrKey(a)
	if !ok {
		return nil
	}
	w.mu.RLock()
	c := w.ctls[k]
	w.mu.RUnlock()
	return c
}

func (w *listenWatch) WriteTo(b []byte, addr net.Addr) (int, error) {
	twice := false
	if c := w.lookup(addr); c != nil {
		twice = c.sent(b)
	}
	if w.wr != nil {
		return w.wr.writeOut(b, addr, twice)
	}
	if twice {
		w.PacketConn.WriteTo(b, addr)
	}
	return w.PacketConn.WriteTo(b, addr)
}

func (w *listenWatch) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := readVia(w.rd, w.PacketConn, b)
	if err == nil {
		if c := w.lookup(addr); c != nil {
			c.received(b[:n])
		}
	}
	return n, addr, err
}
