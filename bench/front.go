package main

// The HA scenario's public side: a round-robin TCP front before the three
// servers' public ports, as an L4 balancer (HAProxy in mode tcp) would
// be, and the steady load of short requests sent through it.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// front sends each connection, a request, to the next backend in turn. It
// reads the request whole (until the client half-closes, at most 1 MiB),
// skips a backend that refuses the connection, and sends the request
// again to the next when the backend's connection ends (reset or closed)
// before any response byte: HAProxy's "retries" with "retry-on
// conn-failure empty-response". Once a response byte is back, the rest is
// copied as it comes, and a response cut short reaches the client as a
// reset.
type front struct {
	l                net.Listener
	backends         []string
	next             atomic.Uint64
	skipped, retried atomic.Int64
	wg               sync.WaitGroup
}

func startFront(backends []string) (*front, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &front{l: l, backends: backends}
	f.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() { f.serve(c) })
		}
	})
	return f, nil
}

func (f *front) addr() string { return f.l.Addr().String() }

func (f *front) close() {
	f.l.Close()
	f.wg.Wait()
}

func (f *front) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req, err := io.ReadAll(io.LimitReader(c, 1<<20))
	if err != nil {
		return
	}
	for range 4 * len(f.backends) {
		b := f.backends[f.next.Add(1)%uint64(len(f.backends))]
		u, err := net.DialTimeout("tcp", b, 5*time.Second)
		if err != nil {
			f.skipped.Add(1)
			continue
		}
		u.SetDeadline(time.Now().Add(30 * time.Second))
		u.Write(req)
		u.(*net.TCPConn).CloseWrite()
		buf := make([]byte, 32<<10)
		n, err := u.Read(buf)
		if n == 0 {
			u.Close()
			f.retried.Add(1)
			continue
		}
		c.Write(buf[:n])
		if err == nil {
			_, err = io.Copy(c, u)
		}
		u.Close()
		if err != nil && err != io.EOF {
			c.(*net.TCPConn).SetLinger(0)
		}
		return
	}
	c.(*net.TCPConn).SetLinger(0)
}

// haLoad sends short echo requests at a steady rate and keeps every
// outcome with its times.
type haLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	done   []outcome
}

// outcome is one request: when it started and ended, and its error (nil:
// the echo came back whole).
type outcome struct {
	start, end time.Time
	err        error
}

// errCorrupt: bytes came back that were not the bytes sent.
var errCorrupt = errors.New("corrupt bytes")

func startHALoad(addr string, perSecond int) *haLoad {
	ctx, cancel := context.WithCancel(context.Background())
	ld := &haLoad{cancel: cancel}
	ld.wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for n := uint64(0); ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ld.wg.Go(func() {
				start := time.Now()
				err := haRequest(addr, n)
				ld.mu.Lock()
				ld.done = append(ld.done, outcome{start, time.Now(), err})
				ld.mu.Unlock()
			})
		}
	})
	return ld
}

// since returns the outcomes of the requests started at or after t.
func (ld *haLoad) since(t time.Time) []outcome {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	var out []outcome
	for _, o := range ld.done {
		if !o.start.Before(t) {
			out = append(out, o)
		}
	}
	return out
}

// stop stops sending and waits for the requests under way.
func (ld *haLoad) stop() {
	ld.cancel()
	ld.wg.Wait()
}

// haRequest sends request n (the backend's echo mode byte and 64 to 4096
// random bytes, then a half-close) and checks the echo.
func haRequest(addr string, n uint64) error {
	r := rand.New(rand.NewPCG(n, 7))
	msg := make([]byte, 64+r.IntN(4096-64))
	for i := range msg {
		msg[i] = byte(r.Uint32())
	}
	msg[0] = modeEcho
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	switch {
	case len(got) > len(msg) || !bytes.Equal(got, msg[:len(got)]):
		return errCorrupt
	case err != nil:
		return fmt.Errorf("%d of %d bytes back: %w", len(got), len(msg), err)
	case len(got) < len(msg):
		return fmt.Errorf("%d of %d bytes back", len(got), len(msg))
	}
	return nil
}
