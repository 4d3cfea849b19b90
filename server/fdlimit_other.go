//go:build !unix

package server

// fdLimit is unknown here.
func fdLimit() (soft, hard uint64) { return 0, 0 }
