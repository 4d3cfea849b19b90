package admin

import "sync/atomic"

// ServiceCounters counts one service's public connections and bytes for
// the status API (ServiceStatus). It is safe for concurrent use; the zero
// value is ready.
type ServiceCounters struct {
	conns   atomic.Int64 // open now
	in, out atomic.Int64 // bytes from and to the public peers
}

// Opened counts a connection open.
func (c *ServiceCounters) Opened() { c.conns.Add(1) }

// Closed counts a connection closed.
func (c *ServiceCounters) Closed() { c.conns.Add(-1) }

// Add counts in bytes relayed from a public peer and out bytes to it, as
// they move (the relay's meter reports them about once a second), so that
// a long transfer shows before it ends.
func (c *ServiceCounters) Add(in, out int64) {
	c.in.Add(in)
	c.out.Add(out)
}

// ResetBytes starts the byte counts over.
func (c *ServiceCounters) ResetBytes() {
	c.in.Store(0)
	c.out.Store(0)
}

// Fill sets s's connection and byte counts.
func (c *ServiceCounters) Fill(s *ServiceStatus) {
	s.Connections = int(c.conns.Load())
	s.BytesIn, s.BytesOut = c.in.Load(), c.out.Load()
}
