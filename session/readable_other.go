//go:build !unix

package session

import "io"

// readWaiter is not available here: readers hold their buffer while idle.
func readWaiter(io.Reader) func() error { return nil }
