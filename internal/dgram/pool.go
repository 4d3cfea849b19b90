// Package dgram pools the buffers that UDP flows carry datagrams in, so
// that relaying a datagram allocates nothing once the pools are warm, and
// an idle flow holds no buffer.
package dgram

import "sync"

// Head is the room every buffer has in front of its datagram, for the
// chunk header of session.Stream.WriteDatagram (session.DatagramHeaderLen).
const Head = 4

// Size classes, Head included: most datagrams (DNS, games, VoIP,
// WireGuard and QUIC at 1200 to 1500 bytes) fit the first.
var classes = [...]int{2 << 10, 16 << 10, Head + 1<<16}

var pools [len(classes)]sync.Pool

func init() {
	for i, size := range classes {
		pools[i].New = func() any {
			b := make([]byte, size)
			return &b
		}
	}
}

// Get returns a buffer with room for Head bytes and then n more; n is at
// most 65536.
func Get(n int) *[]byte {
	for i, size := range classes {
		if Head+n <= size {
			return pools[i].Get().(*[]byte)
		}
	}
	panic("dgram: datagram too long")
}

// Put returns b, from Get, to its pool. b must not be used afterwards.
func Put(b *[]byte) {
	for i, size := range classes {
		if cap(*b) == size {
			*b = (*b)[:size]
			pools[i].Put(b)
			return
		}
	}
}
