//go:build !unix

package relay

import "io"

// ReadWaiter is not available here: readers hold their buffer while idle.
func ReadWaiter(io.Reader) func() error { return nil }
