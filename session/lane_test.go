package session

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
)

// readerConn is a net.Conn that reads from r; nothing else is called.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// smuxFrame is a smux v2 frame as it is on the wire.
func smuxFrame(cmd byte, sid uint32, payload []byte) []byte {
	b := make([]byte, smuxHeaderLen, smuxHeaderLen+len(payload))
	b[0], b[1] = 2, cmd
	binary.LittleEndian.PutUint16(b[2:], uint16(len(payload)))
	binary.LittleEndian.PutUint32(b[4:], sid)
	return append(b, payload...)
}

func laneBytes(t testing.TB, typ byte, msg any) []byte {
	b, err := encodeFrame(typ, msg, 1)
	if err != nil {
		t.Fatal(err)
	}
	b[0] = laneMarker
	return b
}

// takeLane returns the lane frames read so far, re-encoded, and forgets them.
func takeLane(l *laneConn) []byte {
	l.in.mu.Lock()
	defer l.in.mu.Unlock()
	var out []byte
	for _, f := range l.in.frames {
		out = append(out, laneMarker, frameLayout, f.typ, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(out[len(out)-4:], uint32(len(f.payload)))
		out = append(out, f.payload...)
	}
	l.in.frames, l.in.bytes = nil, 0
	return out
}

// FuzzLane: whatever bytes arrive, the lane reader hands smux exactly the
// bytes that are not lane frames and keeps the lane frames, in order, each
// within the size cap; what it read is what came, in order, up to the
// first error. It keeps the ledger's account of the streams on the way.
func FuzzLane(f *testing.F) {
	f.Add(append(append(smuxFrame(smuxSYN, 3, nil), laneBytes(f, typePing, Ping{Seq: 1})...),
		smuxFrame(smuxPSH, 3, []byte("hello"))...))
	f.Add(laneBytes(f, typeGoodbye, Goodbye{Code: CodeClosed, Reason: "bye"}))
	f.Add([]byte{laneMarker, 1, typePing, 0, 0, 0, 0, 0})       // empty payload
	f.Add([]byte{laneMarker, 1, typePing, 0xff, 0xff, 0, 0, 0}) // too long
	f.Add(smuxFrame(4, 1, make([]byte, 8)))                     // UPD
	f.Fuzz(func(t *testing.T, in []byte) {
		cfg := testConfig()
		cfg.MaxControlFrame = 1024
		r := bytes.NewReader(in)
		l := newLaneConn(readerConn{r: r}, cfg)
		l.accept.Store(true)
		l.track.Store(true)
		var got []byte
		buf := make([]byte, 7) // short reads, to cross every boundary
		for {
			n, err := l.Read(buf)
			got = append(got, takeLane(l)...)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		got = append(got, takeLane(l)...)
		consumed := in[:len(in)-r.Len()]
		if !bytes.HasPrefix(consumed, got) {
			t.Fatalf("read %x, which is not what came first: %x", got, consumed)
		}
		if l.led.unread < 0 {
			t.Fatalf("the ledger counts %d bytes unread", l.led.unread)
		}
	})
}

// TestLaneRead: smux frames pass through whole around lane frames, which
// are kept in order; a lane frame this side did not offer is a protocol
// error.
func TestLaneRead(t *testing.T) {
	var wire []byte
	wire = append(wire, smuxFrame(smuxPSH, 1, []byte("abc"))...)
	wire = append(wire, laneBytes(t, typePing, Ping{Seq: 7})...)
	wire = append(wire, laneBytes(t, typeDrain, Drain{})...)
	wire = append(wire, smuxFrame(smuxPSH, 1, []byte("defg"))...)
	l := newLaneConn(readerConn{r: bytes.NewReader(wire)}, testConfig())
	l.accept.Store(true)
	got, err := io.ReadAll(l)
	if err != nil {
		t.Fatal(err)
	}
	want := append(smuxFrame(smuxPSH, 1, []byte("abc")), smuxFrame(smuxPSH, 1, []byte("defg"))...)
	if !bytes.Equal(got, want) {
		t.Fatalf("smux got %x, want %x", got, want)
	}
	for _, typ := range []byte{typePing, typeDrain} {
		got, _, err := l.in.next()
		if err != nil || got != typ {
			t.Fatalf("lane frame %s: got %s, %v", typeName(typ), typeName(got), err)
		}
	}
	if _, _, err := l.in.next(); err != io.EOF {
		t.Fatalf("after the frames: %v, want EOF", err)
	}

	l = newLaneConn(readerConn{r: bytes.NewReader(laneBytes(t, typePing, Ping{Seq: 1}))}, testConfig())
	if _, err := l.Read(make([]byte, 64)); err == nil || !bytes.Contains([]byte(err.Error()), []byte("did not offer")) {
		t.Fatalf("a lane frame not offered: %v, want a protocol error", err)
	}
}
