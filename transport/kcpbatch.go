package transport

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
)

// Batched datagram I/O for the watched KCP sockets (kcpwire.go).
//
// kcp-go v5.6.72 sends and receives with sendmmsg/recvmmsg only on a
// socket that has SyscallConn and ReadMsgUDP: it then drives the file
// descriptor itself (x/net's ipv4.PacketConn), past any wrapper, so the
// rate controller could not see the datagrams. A watched socket therefore
// lacks both methods, kcp-go calls its ReadFrom and WriteTo once per
// datagram, and the watch batches underneath: ReadFrom hands out one
// datagram at a time from a recvmmsg batch, and WriteTo queues its
// datagram for a flusher that sends all that queued meanwhile with one
// sendmmsg. The controller still sees each datagram where kcp-go hands it
// over or takes it, as on the unbatched path.
//
// batchConn is what x/net's ipv4.PacketConn and ipv6.PacketConn offer
// (newBatchConn, per platform); nil where batching is not available.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

const (
	// datagramMax is the largest datagram read or queued without a new
	// buffer: kcp-go's mtuLimit, the size of its own read buffer.
	datagramMax = 1500
	// readBatch is how many datagrams one recvmmsg may return: up to
	// 96 KiB of buffers per socket, grown from minReadBatch while reads
	// come back full, so that an idle session's socket holds 6 KiB
	// (kcp-go's own batched reader holds 256 for every session).
	readBatch    = 64
	minReadBatch = 4
	// writeQueue is how many datagrams may wait for the flusher before
	// WriteTo waits for it: a few of kcp-go's batches (64 datagrams).
	// Its buffers are allocated as the queue first grows that long.
	writeQueue = 256
)

// batchStats counts the batch system calls of a watched socket and the
// datagrams they carried (tests read them).
type batchStats struct {
	reads, readMsgs, writes, writeMsgs atomic.Uint64
}

// batchReader hands out the datagrams of a socket one at a time, reading
// them in batches. Its read is safe for concurrent use (kcp-go has one
// reader per socket).
type batchReader struct {
	bc    batchConn
	stats *batchStats

	mu         sync.Mutex
	msgs       []ipv4.Message
	next, have int // msgs[next:have] are still to hand out
}

func newBatchReader(bc batchConn, st *batchStats) *batchReader {
	return &batchReader{bc: bc, stats: st}
}

// read copies the next datagram into b (cut to len(b), as a read of a
// datagram socket does) and returns its length and source.
func (r *batchReader) read(b []byte) (int, net.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next == r.have {
		if r.have == len(r.msgs) && len(r.msgs) < readBatch {
			// The last read filled every buffer (or none exist yet).
			r.grow()
		}
		n, err := r.bc.ReadBatch(r.msgs, 0)
		if err != nil {
			return 0, nil, err
		}
		r.next, r.have = 0, n
		r.stats.reads.Add(1)
		r.stats.readMsgs.Add(uint64(n))
	}
	m := &r.msgs[r.next]
	r.next++
	return copy(b, m.Buffers[0][:m.N]), m.Addr, nil
}

// grow doubles the batch, up to readBatch.
func (r *batchReader) grow() {
	n := min(max(2*len(r.msgs), minReadBatch), readBatch)
	for len(r.msgs) < n {
		r.msgs = append(r.msgs, ipv4.Message{Buffers: [][]byte{make([]byte, datagramMax)}})
	}
}

// batchWriter sends the datagrams queued by write in batches: the first
// datagram into an idle writer starts a flusher goroutine, which sends
// it at once and, with it or after it, whatever else was queued
// meanwhile, and ends when the queue is empty. Datagrams go out in the
// order they were queued. Its methods are safe for concurrent use.
type batchWriter struct {
	bc    batchConn
	stats *batchStats
	// failed is told of a send that failed (but for a closed socket); it
	// returns whether the error is the socket's for good, to be returned
	// by every later write (a connected socket), or belongs to that
	// datagram alone, which is dropped as a lost one (a listener's peer).
	failed func(error) (sticky bool)

	mu       sync.Mutex
	space    sync.Cond      // signalled when the flusher takes the queue
	queue    []ipv4.Message // waiting for the flusher; buffers reused
	spare    []ipv4.Message // the flusher's, while it sends
	flushing bool
	err      error // sticky: every later write fails with it
}

func newBatchWriter(bc batchConn, st *batchStats, failed func(error) bool) *batchWriter {
	w := &batchWriter{bc: bc, stats: st, failed: failed}
	w.space.L = &w.mu
	return w
}

// write queues a copy of datagram b for addr (nil on a connected
// socket). It waits while writeQueue datagrams wait already, until the
// flusher takes them (it always ends: it sends, or its socket fails).
func (w *batchWriter) write(b []byte, addr net.Addr) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.queue) >= writeQueue && w.err == nil {
		w.space.Wait()
	}
	if w.err != nil {
		return w.err
	}
	if len(w.queue) < cap(w.queue) {
		w.queue = w.queue[:len(w.queue)+1] // a message, and its buffer, used before
	} else {
		w.queue = append(w.queue, ipv4.Message{})
	}
	m := &w.queue[len(w.queue)-1]
	if m.Buffers == nil {
		m.Buffers = [][]byte{make([]byte, 0, max(len(b), datagramMax))}
	}
	m.Buffers[0] = append(m.Buffers[0][:0], b...)
	m.Addr = addr
	if !w.flushing {
		w.flushing = true
		go w.flush()
	}
	return nil
}

// writeOut queues b for addr, twice when twice (a datagram of ACKs alone
// goes out twice, rateCtl.sent), and reports it written whole.
func (w *batchWriter) writeOut(b []byte, addr net.Addr, twice bool) (int, error) {
	if twice {
		w.write(b, addr)
	}
	if err := w.write(b, addr); err != nil {
		return 0, err
	}
	return len(b), nil
}

// flush sends the queue until it is empty.
func (w *batchWriter) flush() {
	w.mu.Lock()
	for len(w.queue) > 0 && w.err == nil {
		w.queue, w.spare = w.spare[:0], w.queue
		w.space.Broadcast()
		w.mu.Unlock()
		err := w.send(w.spare)
		w.mu.Lock()
		if err != nil {
			w.err = err
		}
	}
	if w.err != nil {
		w.queue = w.queue[:0]
		w.space.Broadcast()
	}
	w.flushing = false
	w.mu.Unlock()
}

// send sends ms, dropping those that fail but for a sticky error, which
// it returns.
func (w *batchWriter) send(ms []ipv4.Message) error {
	for len(ms) > 0 {
		n, err := w.bc.WriteBatch(ms, 0)
		n = max(n, 0) // x/net passes on sendmmsg's -1 with its error
		if n > 0 {
			w.stats.writes.Add(1)
			w.stats.writeMsgs.Add(uint64(n))
		}
		ms = ms[n:]
		if err == nil {
			continue
		}
		if errors.Is(err, net.ErrClosed) || w.failed(err) {
			return err
		}
		if len(ms) > 0 {
			ms = ms[1:] // the datagram that failed
		}
	}
	return nil
}
