package client

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/warren-tunnel/warren/session"
	"github.com/warren-tunnel/warren/transport/transporttest"
)

// testPool is a pool of n servers (one entry each, resolved at each dial)
// whose slots are not run: starting one records it.
func testPool(n, max, minServers, conns int) (*pool, []*remote, *[]string) {
	p := newPool(Config{MaxServers: max, MinServers: minServers, Connections: conns}, nil)
	started := new([]string)
	p.start = func(r *remote, slot int, _, _ <-chan struct{}) {
		*started = append(*started, fmt.Sprintf("%s/%d", r.label, slot))
	}
	var rs []*remote
	for i := range n {
		ep := &endpoint{entry: fmt.Sprintf("s%d:7000", i), t: &transporttest.Network{}}
		p.eps = append(p.eps, ep)
		r := &remote{ep: ep, label: ep.entry, t: ep.t}
		p.add(r)
		rs = append(rs, r)
	}
	return p, rs, started
}

// heldOf lists the servers held.
func heldOf(p *pool) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, r := range p.known {
		if r.held {
			out = append(out, r.label)
		}
	}
	return out
}

// stopSlots plays the slots of r stopping, as keep does once released.
func stopSlots(p *pool, r *remote) {
	for range p.conns {
		p.slotDone(r)
	}
}

var (
	errRefused = session.Rejectf(session.CodeUnknownToken, "unknown token")
	errDown    = errors.New("connection refused")
)

// TestPoolHoldsAll: without max_servers every server is held, each with
// its connections slots; nothing is replaced.
func TestPoolHoldsAll(t *testing.T) {
	p, rs, started := testPool(3, 0, 1, 2)
	p.fill()
	if got := strings.Join(*started, " "); got != "s0:7000/0 s0:7000/1 s1:7000/0 s1:7000/1 s2:7000/0 s2:7000/1" {
		t.Fatalf("started %s", got)
	}
	for range replaceAfter + 2 {
		if err := p.ended(rs[1], 0, false, errDown); err != nil {
			t.Fatal(err)
		}
	}
	if got := heldOf(p); len(got) != 3 {
		t.Fatalf("held %v, want all three", got)
	}
}

// TestPoolReplaces: with max_servers, a server that failed replaceAfter
// attempts, refused the client, or drains is released for one not held,
// which is started; a released server is held again only once its slots
// have stopped, and a benched one only when no other is free.
func TestPoolReplaces(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  func(p *pool, r *remote)
	}{
		{"unreachable", func(p *pool, r *remote) {
			for range replaceAfter {
				p.ended(r, 0, false, errDown)
			}
		}},
		{"refused", func(p *pool, r *remote) { p.ended(r, 0, false, errRefused) }},
		{"drains", func(p *pool, r *remote) {
			p.up(r, 0, &session.Session{}, nil)
			p.drains(r, 0, 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, rs, started := testPool(3, 2, 1, 1)
			p.fill()
			held := heldOf(p)
			if len(held) != 2 || len(*started) != 2 {
				t.Fatalf("held %v, started %v; want two", held, *started)
			}
			var bad *remote
			for _, r := range rs {
				if r.label == held[0] {
					bad = r
				}
			}
			tc.bad(p, bad)
			now := heldOf(p)
			if len(now) != 2 || now[0] == bad.label && now[1] == bad.label || len(*started) != 3 {
				t.Fatalf("after %s: held %v, started %v", tc.name, now, *started)
			}
			for _, l := range now {
				if l == bad.label {
					t.Fatalf("%s still held: %v", bad.label, now)
				}
			}
			// The one held in its place refuses too. The released one is the
			// only other, but its slot runs still: nothing to replace it by.
			var third *remote
			for _, r := range rs {
				if r != bad && r.label != held[1] {
					third = r
				}
			}
			p.ended(third, 0, false, errRefused)
			if got := heldOf(p); len(got) != 2 || !strings.Contains(strings.Join(got, " "), third.label) {
				t.Fatalf("held %v while the released one's slot runs", got)
			}
			// Once that slot has stopped, the next refusal replaces it by
			// the released one (benched, but the only one free).
			stopSlots(p, bad)
			p.ended(third, 0, false, errRefused)
			if got := strings.Join(heldOf(p), " "); !strings.Contains(got, bad.label) || strings.Contains(got, third.label) {
				t.Fatalf("held %v, want the released one back instead of %s", got, third.label)
			}
		})
	}
}

// TestPoolStops: the client stops when every known server's last answer
// is a refusal; a server that never answered, or accepted, keeps it
// running; with one server, its refusal as it is.
func TestPoolStops(t *testing.T) {
	p, rs, _ := testPool(1, 0, 1, 1)
	p.fill()
	if err := p.ended(rs[0], 0, false, errDown); err != nil {
		t.Fatalf("a server down stops the client: %v", err)
	}
	if err := p.ended(rs[0], 0, false, errRefused); err != errRefused {
		t.Fatalf("one server refusing: %v, want its refusal as it is", err)
	}

	p, rs, _ = testPool(3, 0, 1, 1)
	p.fill()
	for _, r := range rs[:2] {
		if err := p.ended(r, 0, false, errRefused); err != nil {
			t.Fatalf("stopped before every server refused: %v", err)
		}
	}
	p.up(rs[2], 0, &session.Session{}, nil)
	if err := p.ended(rs[2], 0, true, errDown); err != nil {
		t.Fatalf("stopped though the third accepted: %v", err)
	}
	err := p.ended(rs[2], 0, false, errRefused)
	var rej *session.RejectError
	if !errors.As(err, &rej) || !strings.HasPrefix(err.Error(), "every server refused: s0:7000: ") || !strings.Contains(err.Error(), "; s2:7000: ") {
		t.Fatalf("every server refusing: %v", err)
	}
}

// TestPoolReady: ready while min_servers servers have a session up and
// are not draining; otherwise it says which are not, and why.
func TestPoolReady(t *testing.T) {
	p, rs, _ := testPool(3, 0, 2, 1)
	p.fill()
	p.up(rs[0], 0, &session.Session{}, nil)
	p.ended(rs[1], 0, false, errRefused)
	ok, why := p.ready()
	if ok || why != "1 of min_servers = 2 servers serving: s1:7000: auth rejected: unknown token; s2:7000: connecting" {
		t.Fatalf("ready = %v, %q", ok, why)
	}
	p.up(rs[2], 0, &session.Session{}, nil)
	if ok, why := p.ready(); !ok {
		t.Fatalf("not ready with two up: %q", why)
	}
	p.drains(rs[2], 0, 0)
	if ok, why := p.ready(); ok || !strings.Contains(why, "s2:7000: draining") {
		t.Fatalf("ready = %v, %q with one of two draining", ok, why)
	}
}
