package session

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/relay"
	"github.com/warren-tunnel/warren/transport"
)

// tally is a stream meter that a test can wait on.
type tally struct {
	mu             sync.Mutex
	sent, received int64
	moved          chan struct{} // has a value after each call
}

func newTally() *tally { return &tally{moved: make(chan struct{}, 1)} }

func (c *tally) add(sent, received int64) {
	c.mu.Lock()
	c.sent += sent
	c.received += received
	c.mu.Unlock()
	select {
	case c.moved <- struct{}{}:
	default:
	}
}

func (c *tally) get() (sent, received int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent, c.received
}

// await waits until the meter has reported sent and received bytes.
func (c *tally) await(t *testing.T, what string, sent, received int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s, r := c.get()
		if s == sent && r == received {
			return
		}
		if s > sent || r > received {
			t.Fatalf("%s meter: %d sent, %d received; want %d, %d", what, s, r, sent, received)
		}
		select {
		case <-c.moved:
		case <-deadline:
			t.Fatalf("%s meter: %d sent, %d received while the relay runs; want %d, %d", what, s, r, sent, received)
		}
	}
}

// TestMeterWhileRelaying: a relay's bytes reach the stream's meter while
// its connection is still open (the dashboard charts a long transfer as it
// goes), on both sides and in both directions, and the meters' totals are
// the relays' results.
func TestMeterWhileRelaying(t *testing.T) {
	leaktest.Check(t)
	for name, trs := range transports(t) {
		t.Run(name, func(t *testing.T) { meterWhileRelaying(t, trs) })
	}
}

func meterWhileRelaying(t *testing.T, trs [2]transport.Transport) {
	backend, backendSide := tcpPair(t)
	cliMeter, srvMeter := newTally(), newTally()
	cliRes, srvRes := make(chan relay.Result, 1), make(chan relay.Result, 1)
	srv, _, _, _ := pair(t, trs, testConfig(), func(st *Stream) {
		st.SetMeter(cliMeter.add)
		cliRes <- runRelay(backendSide, st)
	})
	public, serverSide := tcpPair(t)
	st, err := srv.Open(Header{Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	st.SetMeter(srvMeter.add)
	go func() { srvRes <- runRelay(serverSide, st) }()

	up, down := bytes.Repeat([]byte("u"), 300<<10), bytes.Repeat([]byte("d"), 200<<10)
	public.SetDeadline(time.Now().Add(10 * time.Second))
	backend.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := public.Write(up); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(backend, make([]byte, len(up))); err != nil {
		t.Fatal(err)
	}
	srvMeter.await(t, "server", int64(len(up)), 0)
	cliMeter.await(t, "client", 0, int64(len(up)))
	if _, err := backend.Write(down); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(public, make([]byte, len(down))); err != nil {
		t.Fatal(err)
	}
	srvMeter.await(t, "server", int64(len(up)), int64(len(down)))
	cliMeter.await(t, "client", int64(len(down)), int64(len(up)))

	public.CloseWrite()
	backend.CloseWrite()
	for _, c := range []struct {
		res  chan relay.Result
		m    *tally
		what string
	}{{srvRes, srvMeter, "server"}, {cliRes, cliMeter, "client"}} {
		r := waitResult(t, c.res, c.what)
		if s, rcv := c.m.get(); s != r.Sent || rcv != r.Received || r.Err != nil {
			t.Errorf("%s: meter says %d sent, %d received; the relay %+v", c.what, s, rcv, r)
		}
	}
}

// TestMeterRelayingAStream: a relay whose connection is itself a stream
// (a Conn: a visitor's, as the server relays it into the serving client's
// stream) has no socket wait to tell it the connection drained; the bytes
// it moves one way still reach the meter while it runs, with nothing
// moving the other way to flush them.
func TestMeterRelayingAStream(t *testing.T) {
	leaktest.Check(t)
	for name, trs := range transports(t) {
		t.Run(name, func(t *testing.T) { meterRelayingAStream(t, trs) })
	}
}

func meterRelayingAStream(t *testing.T, trs [2]transport.Transport) {
	streams := make(chan *Stream, 2)
	srv, _, _, _ := pair(t, trs, testConfig(), func(st *Stream) {
		streams <- st
	})
	visitor, err := srv.Open(Header{Service: "visitor"})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := srv.Open(Header{Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	m := newTally()
	svc.SetMeter(m.add)
	res := make(chan relay.Result, 1)
	go func() { res <- runRelay(NewConn(visitor, nil, nil), svc) }()
	var visitorPeer, svcPeer *Stream
	for range 2 {
		st := <-streams
		if st.Header().Service == "visitor" {
			visitorPeer = st
		} else {
			svcPeer = st
		}
	}

	msg := bytes.Repeat([]byte("v"), 5000)
	for i := 1; i <= 2; i++ {
		if _, err := visitorPeer.Write(msg); err != nil {
			t.Fatal(err)
		}
		svcPeer.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(svcPeer, make([]byte, len(msg))); err != nil {
			t.Fatal(err)
		}
		m.await(t, "relay", int64(i*len(msg)), 0)
	}
	visitorPeer.CloseWrite()
	svcPeer.CloseWrite()
	r := waitResult(t, res, "relay")
	visitorPeer.Close()
	svcPeer.Close()
	if s, rcv := m.get(); s != r.Sent || rcv != r.Received || r.Err != nil {
		t.Errorf("meter says %d sent, %d received; the relay %+v", s, rcv, r)
	}
}
