package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/internal/testutil/memnet"
)

// killable is a Stream twin whose session kills it: it carries nothing,
// and its WriteTo waits until the kill.
type killable struct {
	mu      sync.Mutex
	cut     func()
	err     error
	owned   chan struct{} // closed by Own
	dead    chan struct{}
	aborted chan string
}

func newKillable() *killable {
	return &killable{owned: make(chan struct{}), dead: make(chan struct{}), aborted: make(chan string, 1)}
}

func (k *killable) WriteTo(io.Writer) (int64, error) {
	<-k.dead
	return 0, k.Killed()
}

func (k *killable) ReadBurst(r io.Reader) (int64, bool, error) {
	var b [512]byte
	n, err := r.Read(b[:])
	return int64(n), err == io.EOF, err
}

func (k *killable) CloseWrite() error { return nil }
func (k *killable) AwaitClose() error { <-k.dead; return k.Killed() }
func (k *killable) Abort(reason string) error {
	select {
	case k.aborted <- reason:
	default:
	}
	return nil
}
func (k *killable) Close() error          { return nil }
func (k *killable) Idle()                 {}
func (k *killable) Abrupt(err error) bool { return true }
func (k *killable) Own(cut func(), _ func() bool) {
	k.mu.Lock()
	k.cut = cut
	k.mu.Unlock()
	close(k.owned)
}

func (k *killable) Killed() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// kill is what the session does to a stream it kills.
func (k *killable) kill(err error) {
	k.mu.Lock()
	k.err = err
	cut := k.cut
	k.mu.Unlock()
	cut()
	close(k.dead)
}

// TestKillResetsMemnetConn: when the session kills the stream, the relay
// resets its connection through SetLinger(0), which the in-memory
// connections see too: the public peer reads ECONNRESET, not a clean EOF.
func TestKillResetsMemnetConn(t *testing.T) {
	leaktest.Check(t)
	var n memnet.Network
	l, err := n.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	peer, err := n.Dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	st := newKillable()
	done := make(chan Result, 1)
	go func() { done <- Relay(c, st, nil) }()

	killErr := errors.New("stalled")
	<-st.owned // Relay installs its cut before anything else
	st.kill(killErr)
	var res Result
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay did not end after the kill")
	}
	if !errors.Is(res.Err, killErr) {
		t.Errorf("relay ended with %v, want the kill's reason", res.Err)
	}
	if got := <-st.aborted; got != killErr.Error() {
		t.Errorf("abort reason %q, want %q", got, killErr.Error())
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("public peer read %v, want ECONNRESET", err)
	}
}

var _ net.Conn = (*memnet.Conn)(nil)
