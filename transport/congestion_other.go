//go:build !linux

package transport

import (
	"errors"
	"syscall"
)

var errNoCongestion = errors.New("choosing the TCP congestion control needs Linux")

func setCongestion(syscall.RawConn, string) error { return errNoCongestion }

func probeCongestion(string) (string, error) { return "", errNoCongestion }
