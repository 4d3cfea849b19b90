// Package impair degrades network paths for tests, because this project's
// test machines have no netem: a net.PacketConn wrapper that loses,
// reorders and blackholes datagrams, and a TCP proxy that can freeze.
package impair

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config says how a PacketConn degrades the datagrams it sends.
type Config struct {
	// Loss is the probability (0-1) that an outgoing datagram is dropped.
	Loss float64
	// Reorder is the probability (0-1) that an outgoing datagram is held
	// back and sent after the next one (or after ReorderDelay at most).
	Reorder float64
	// ReorderDelay bounds how long a held datagram waits; default 5 ms.
	ReorderDelay time.Duration
	// Seed makes the loss pattern repeatable; 0 picks a random one.
	Seed uint64
	// Delay holds every datagram sent for this long: a path's one-way
	// delay (no rate limit, no queue). Datagrams sent after Close are
	// lost.
	Delay time.Duration
}

// PacketConn wraps a net.PacketConn and applies Config to every datagram it
// writes. While blackholed it drops everything in both directions.
type PacketConn struct {
	net.PacketConn
	cfg Config

	mu   sync.Mutex
	rng  *rand.Rand
	held *heldPacket

	blackhole atomic.Bool
	sent      atomic.Int64
	dropped   atomic.Int64
}

type heldPacket struct {
	b     []byte
	addr  net.Addr
	timer *time.Timer
}

// Wrap returns pc degraded by cfg.
func Wrap(pc net.PacketConn, cfg Config) *PacketConn {
	if cfg.ReorderDelay == 0 {
		cfg.ReorderDelay = 5 * time.Millisecond
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &PacketConn{PacketConn: pc, cfg: cfg, rng: rand.New(rand.NewPCG(seed, seed>>1|1))}
}

// SetBlackhole starts or stops dropping every datagram, both ways.
func (p *PacketConn) SetBlackhole(on bool) { p.blackhole.Store(on) }

// Stats returns how many datagrams were sent and dropped so far.
func (p *PacketConn) Stats() (sent, dropped int64) { return p.sent.Load(), p.dropped.Load() }

// WriteTo sends b unless the loss or blackhole drops it; the caller sees
// success either way, as with a real lossy path.
func (p *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if p.blackhole.Load() {
		p.dropped.Add(1)
		return len(b), nil
	}
	p.mu.Lock()
	drop := p.rng.Float64() < p.cfg.Loss
	hold := !drop && p.held == nil && p.rng.Float64() < p.cfg.Reorder
	prev := p.held
	if prev != nil {
		p.held = nil
		prev.timer.Stop()
	}
	if hold {
		h := &heldPacket{b: append([]byte(nil), b...), addr: addr}
		h.timer = time.AfterFunc(p.cfg.ReorderDelay, func() { p.flushHeld(h) })
		p.held = h
	}
	p.mu.Unlock()

	var err error
	switch {
	case drop:
		p.dropped.Add(1)
	case !hold:
		p.sent.Add(1)
		err = p.send(b, addr)
	}
	if prev != nil { // sent after b: reordered
		p.sent.Add(1)
		p.send(prev.b, prev.addr)
	}
	return len(b), err
}

// send writes one datagram, with Write on a connected socket (WriteTo is
// refused there).
func (p *PacketConn) send(b []byte, addr net.Addr) error {
	if p.cfg.Delay > 0 {
		b = append([]byte(nil), b...)
		time.AfterFunc(p.cfg.Delay, func() { p.sendNow(b, addr) })
		return nil
	}
	return p.sendNow(b, addr)
}

func (p *PacketConn) sendNow(b []byte, addr net.Addr) error {
	if c, ok := p.PacketConn.(net.Conn); ok && c.RemoteAddr() != nil {
		_, err := c.Write(b)
		return err
	}
	_, err := p.PacketConn.WriteTo(b, addr)
	return err
}

func (p *PacketConn) flushHeld(h *heldPacket) {
	p.mu.Lock()
	if p.held != h {
		p.mu.Unlock()
		return
	}
	p.held = nil
	p.mu.Unlock()
	p.sent.Add(1)
	p.send(h.b, h.addr)
}

// ReadFrom returns the next datagram, discarding those that arrive while
// blackholed.
func (p *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := p.PacketConn.ReadFrom(b)
		if err != nil || !p.blackhole.Load() {
			return n, addr, err
		}
		p.dropped.Add(1)
	}
}

// Close stops a pending reordered datagram and closes the socket.
func (p *PacketConn) Close() error {
	p.mu.Lock()
	if p.held != nil {
		p.held.timer.Stop()
		p.held = nil
	}
	p.mu.Unlock()
	return p.PacketConn.Close()
}
