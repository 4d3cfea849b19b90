package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/clock/clocktest"
	"github.com/warren-tunnel/warren/transport"
)

// fakeConn is a connection from addr that records its Close.
type fakeConn struct {
	net.Conn
	addr   net.Addr
	closed atomic.Bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.addr }
func (c *fakeConn) Close() error         { c.closed.Store(true); return nil }

func conn(ip string) *fakeConn {
	return &fakeConn{addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
}

// TestAdmission runs the rules of admission.go step by step on a fake
// clock: each step acts on connection conns[i] and says what must follow.
func TestAdmission(t *testing.T) {
	type step struct {
		do      string // admit, hello, answered, proven, done, advance
		i       int    // the connection acted on
		ip      string // of a connection admitted
		d       time.Duration
		admit   bool // admit: want it admitted
		dropped int  // admit: the connection dropped for it, -1 none
	}
	a := func(i int, ip string, ok bool, dropped int) step {
		return step{do: "admit", i: i, ip: ip, admit: ok, dropped: dropped}
	}
	adv := func(d time.Duration) step { return step{do: "advance", d: d} }
	for _, tc := range []struct {
		name            string
		maxTotal, maxIP int
		steps           []step
	}{
		{"under the limits", 4, 2, []step{a(0, "10.0.0.1", true, -1), a(1, "10.0.0.1", true, -1), a(2, "10.0.0.2", true, -1)}},
		{"per IP, young: refused", 8, 2, []step{a(0, "10.0.0.1", true, -1), a(1, "10.0.0.1", true, -1), adv(2 * time.Second), a(2, "10.0.0.1", false, -1), a(3, "10.0.0.2", true, -1)}},
		{"per IP, silent for evictAfter: the oldest dropped", 8, 2, []step{a(0, "10.0.0.1", true, -1), adv(time.Second), a(1, "10.0.0.1", true, -1), adv(2 * time.Second), a(2, "10.0.0.1", true, 0), a(3, "10.0.0.1", false, -1)}},
		{"per IP, only another IP's silent one is old: refused", 8, 1, []step{a(0, "10.0.0.2", true, -1), a(1, "10.0.0.1", true, -1), adv(evictAfter), step{do: "hello", i: 1}, a(2, "10.0.0.1", false, -1)}},
		{"served by the server: never dropped", 8, 2, []step{a(0, "10.0.0.1", true, -1), a(1, "10.0.0.1", true, -1), step{do: "hello", i: 0}, step{do: "hello", i: 1}, adv(time.Minute), a(2, "10.0.0.1", false, -1)}},
		{"proven: never dropped", 8, 1, []step{a(0, "10.0.0.1", true, -1), step{do: "proven", i: 0}, adv(time.Minute), a(1, "10.0.0.1", false, -1)}},
		{"after its answer it waits on its peer again", 8, 2, []step{a(0, "10.0.0.1", true, -1), a(1, "10.0.0.1", true, -1), step{do: "hello", i: 0}, step{do: "hello", i: 1}, adv(time.Minute),
			step{do: "answered", i: 1}, adv(time.Second), step{do: "answered", i: 0}, adv(2 * time.Second), a(2, "10.0.0.1", true, 1), a(3, "10.0.0.1", false, -1)}},
		{"the longest silent dropped, not the first admitted", 8, 2, []step{a(0, "10.0.0.1", true, -1), a(1, "10.0.0.1", true, -1), step{do: "hello", i: 0}, adv(time.Second),
			step{do: "answered", i: 0}, adv(evictAfter), a(2, "10.0.0.1", true, 1), a(3, "10.0.0.1", true, 0), a(4, "10.0.0.1", false, -1)}},
		{"in all, silent for evictAfter: the oldest of any IP dropped", 2, 8, []step{a(0, "10.0.0.1", true, -1), a(1, "10.0.0.2", true, -1), a(2, "10.0.0.3", false, -1), adv(evictAfter), a(3, "10.0.0.3", true, 0)}},
		{"in all, skipping the served", 2, 8, []step{a(0, "10.0.0.1", true, -1), a(1, "10.0.0.2", true, -1), step{do: "hello", i: 0}, adv(evictAfter), a(2, "10.0.0.3", true, 1), a(3, "10.0.0.4", false, -1)}},
		{"done frees its place", 1, 1, []step{a(0, "10.0.0.1", true, -1), step{do: "done", i: 0}, a(1, "10.0.0.1", true, -1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktest.New()
			adm := newAdmission(tc.maxTotal, tc.maxIP, clk, slog.New(slog.DiscardHandler), new(signal))
			conns := map[int]*fakeConn{}
			answered := map[int]func(){}
			for n, st := range tc.steps {
				switch st.do {
				case "admit":
					c := conn(st.ip)
					conns[st.i] = c
					if got := adm.admit(c); got != st.admit {
						t.Fatalf("step %d: admit %d = %v, want %v", n, st.i, got, st.admit)
					}
					for i, o := range conns {
						if i != st.i && o.closed.Load() != (i == st.dropped) {
							t.Fatalf("step %d: connection %d closed = %v, want %v", n, i, o.closed.Load(), i == st.dropped)
						}
					}
					if st.dropped >= 0 {
						delete(conns, st.dropped)
					}
				case "hello":
					f, err := adm.hello(context.Background(), conns[st.i])
					if err != nil {
						t.Fatalf("step %d: hello %d: %v", n, st.i, err)
					}
					answered[st.i] = f
				case "answered":
					answered[st.i]()
				case "proven":
					adm.proven(conns[st.i])
				case "done":
					adm.done(conns[st.i])
					delete(conns, st.i)
				case "advance":
					clk.Advance(st.d)
				}
			}
		})
	}
}

// TestAdmissionSlots: TLS handshakes beyond the slots wait, in order,
// until a slot is given back or their deadline; a connection dropped
// meanwhile gives its slot back, and close drops them all.
func TestAdmissionSlots(t *testing.T) {
	adm := newAdmission(100, 100, clocktest.New(), slog.New(slog.DiscardHandler), new(signal))
	n := cap(adm.slots)
	var conns []*fakeConn
	var answers []func()
	for i := range n + 2 {
		c := conn("10.0.0.1")
		conns = append(conns, c)
		if !adm.admit(c) {
			t.Fatalf("connection %d refused", i)
		}
	}
	for i := range n {
		f, err := adm.hello(context.Background(), conns[i])
		if err != nil {
			t.Fatalf("hello %d: %v", i, err)
		}
		answers = append(answers, f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := adm.hello(ctx, conns[n]); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hello over the slots: %v, want it to wait until its deadline", err)
	}
	got := make(chan error, 1)
	go func() {
		f, err := adm.hello(context.Background(), conns[n+1])
		if err == nil {
			f()
		}
		got <- err
	}()
	answers[0]() // a slot back: the waiting one goes
	if err := <-got; err != nil {
		t.Fatalf("hello after a slot came back: %v", err)
	}
	adm.done(conns[1]) // dropped while computing: its slot comes back
	f, err := adm.hello(context.Background(), conns[n])
	if err != nil {
		t.Fatalf("hello after a dropped connection's slot came back: %v", err)
	}
	f()
	adm.close()
	for i, c := range conns {
		if i != 1 && !c.closed.Load() {
			t.Errorf("connection %d still open after close", i)
		}
	}
	if adm.admit(conn("10.0.0.2")) {
		t.Error("admitted after close")
	}
	if _, err := adm.hello(context.Background(), conn("10.0.0.3")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("hello of a connection not admitted: %v, want net.ErrClosed", err)
	}
}

// TestAdmissionGate: a real TLS handshake through the gated config
// takes a slot at its ClientHello and gives it back once the server's
// answer is out, from when its connection waits on its peer again: at
// the per-IP limit a newcomer is refused, not let drop it, though the
// connection was admitted longer than evictAfter ago.
func TestAdmissionGate(t *testing.T) {
	clk := clocktest.New()
	adm := newAdmission(10, 1, clk, slog.New(slog.DiscardHandler), new(signal))
	base, _, _, err := transport.ServerTLS{}.Config(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dialed := make(chan error, 1)
	go func() {
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: base.NextProtos})
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	raw, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if !adm.admit(raw) {
		t.Fatal("refused")
	}
	clk.Advance(time.Minute) // admitted long ago; the handshake starts now
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tls.Server(raw, adm.gate(base)).HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-dialed; err != nil {
		t.Fatal(err)
	}
	if n := len(adm.slots); n != 0 {
		t.Errorf("%d slots held after the handshake, want 0", n)
	}
	c := conn(sourceIP(raw))
	if adm.admit(c) {
		t.Fatal("a newcomer took the place of a handshake that answered its peer just now")
	}
	clk.Advance(evictAfter)
	if !adm.admit(c) {
		t.Fatal("a newcomer was refused the place of a handshake silent for evictAfter since its answer")
	}
}
