package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
)

// The bulk-transfer byte stream: a fixed pseudo-random block of patLen
// bytes, repeated. patLen is prime, so it lines up with no buffer or frame
// size, and a stream that lost, repeated or reordered any run of bytes
// (other than an exact multiple of patLen) fails the check. Writers and
// checkers slice it without copying, so checking costs about a memcmp.
const patLen = 1048573 // largest prime below 1 MiB

// pattern holds the block twice, so that any window of up to patLen bytes
// starting anywhere in the block is contiguous.
var pattern = func() []byte {
	r := rand.New(rand.NewPCG(0x77a55e17, 0xbe4c4))
	b := make([]byte, 2*patLen)
	for i := 0; i < patLen; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < patLen; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	copy(b[patLen:], b[:patLen])
	return b
}()

// patternAt returns the n bytes (n <= patLen) of the stream at offset off.
func patternAt(off int64, n int) []byte {
	s := int(off % patLen)
	return pattern[s : s+n]
}

// checker verifies a received stream against the pattern.
type checker struct {
	off int64 // bytes verified so far
	bad bool
}

// check verifies the next bytes of the stream. Once a mismatch is seen it
// keeps failing, and Err says where.
func (c *checker) check(b []byte) bool {
	if c.bad {
		return false
	}
	for len(b) > 0 {
		n := min(len(b), patLen)
		if !bytes.Equal(b[:n], patternAt(c.off, n)) {
			for i := range n { // find the first bad byte for the report
				if b[i] != patternAt(c.off+int64(i), 1)[0] {
					c.off += int64(i)
					break
				}
			}
			c.bad = true
			return false
		}
		c.off += int64(n)
		b = b[n:]
	}
	return true
}

// Err describes the first mismatch, or returns nil.
func (c *checker) Err() error {
	if c.bad {
		return fmt.Errorf("data mismatch at byte %d", c.off)
	}
	return nil
}
