//go:build unix

package server

import "syscall"

// fdLimit is the process's open files limit, soft and hard (RLIMIT_NOFILE),
// zero if unknown.
func fdLimit() (soft, hard uint64) {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) != nil {
		return 0, 0
	}
	return uint64(r.Cur), uint64(r.Max)
}
