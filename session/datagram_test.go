package session

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"testing/iotest"
	"time"

	"github.com/xtaci/smux"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/transport/transporttest"
)

// dgrams builds a datagram-stream direction: []byte is a datagram, "end"
// an end chunk, "abort:reason" an abort.
func dgrams(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case []byte:
			c := make([]byte, DatagramHeaderLen+len(p))
			copy(c[DatagramHeaderLen:], p)
			putChunkHeader(c, chunkDatagram, len(p))
			b = append(b, c...)
		default:
			b = append(b, chunks(p)...)
		}
	}
	return b
}

// readAllDatagrams decodes r to its end: the datagrams and the final error.
func readAllDatagrams(r io.Reader, max int) ([][]byte, error) {
	var out [][]byte
	var hdr [chunkHeaderLen]byte
	for {
		p, err := readDatagram(r, hdr[:], max, func(n int) []byte { return make([]byte, n) })
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
}

func TestDatagramDecoder(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 1500)
	tests := []struct {
		name string
		in   []byte
		max  int
		want [][]byte
		err  func(error) bool
	}{
		{"datagrams then end", dgrams([]byte("a"), []byte{}, big, "end"), 1500, [][]byte{[]byte("a"), {}, big}, isEOF},
		{"zero-byte datagrams", dgrams([]byte{}, []byte{}, "end"), 10, [][]byte{{}, {}}, isEOF},
		{"abort with reason", dgrams([]byte("x"), "abort:unreachable"), 10, [][]byte{[]byte("x")}, isAbort("unreachable")},
		{"abort without reason", dgrams("abort:"), 10, nil, isAbort("no reason given")},
		{"over max", dgrams(big), 1499, nil, isProtocol},
		{"data chunk", chunks([]byte("tcp bytes")), 100, nil, isProtocol},
		{"unknown kind", []byte{9, 0, 0, 0}, 100, nil, isProtocol},
		{"end with length", []byte{1, 0, 0, 1, 0}, 100, nil, isProtocol},
		{"abort reason too long", append([]byte{2, 0, 4, 1}, make([]byte, 1025)...), 100, nil, isProtocol},
		{"cut in header", []byte{3, 0}, 100, nil, isUnexpectedEOF},
		{"cut in datagram", []byte{3, 0, 0, 5, 'a'}, 100, nil, isUnexpectedEOF},
		{"cut between chunks", dgrams([]byte("a")), 100, [][]byte{[]byte("a")}, isUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{bytes.NewReader(tc.in), iotest.OneByteReader(bytes.NewReader(tc.in))} {
				got, err := readAllDatagrams(r, tc.max)
				if !tc.err(err) {
					t.Fatalf("err = %v", err)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("got %d datagrams, want %d", len(got), len(tc.want))
				}
				for i := range got {
					if !bytes.Equal(got[i], tc.want[i]) {
						t.Fatalf("datagram %d: %q, want %q", i, got[i], tc.want[i])
					}
				}
			}
		})
	}
}

func isEOF(err error) bool           { return err == io.EOF }
func isProtocol(err error) bool      { return errors.Is(err, ErrProtocol) }
func isUnexpectedEOF(err error) bool { return err == io.ErrUnexpectedEOF }
func isAbort(reason string) func(error) bool {
	return func(err error) bool {
		var ab *AbortError
		return errors.As(err, &ab) && ab.Reason == reason
	}
}

// FuzzDatagrams checks the datagram decoder: any bytes give datagrams and
// one final error, never a panic or a buffer asked for beyond max; how the
// bytes are split does not change what is decoded; and the datagrams
// decoded encode back to bytes that decode the same.
func FuzzDatagrams(f *testing.F) {
	f.Add(dgrams([]byte("hello"), []byte{}, "end"), uint16(100))
	f.Add(dgrams([]byte("x"), "abort:gone"), uint16(1))
	f.Add(dgrams(bytes.Repeat([]byte{1}, 300)), uint16(299))
	f.Add([]byte{3, 0xff, 0xff, 0xff}, uint16(65535))
	f.Add([]byte{0, 0, 0, 1, 'a'}, uint16(10))
	f.Fuzz(func(t *testing.T, in []byte, max16 uint16) {
		max := int(max16)
		var hdr [chunkHeaderLen]byte
		var whole [][]byte
		var wholeErr error
		for r := bytes.NewReader(in); ; {
			p, err := readDatagram(r, hdr[:], max, func(n int) []byte {
				if n > max {
					t.Fatalf("asked for %d bytes, max %d", n, max)
				}
				return make([]byte, n)
			})
			if err != nil {
				wholeErr = err
				break
			}
			whole = append(whole, p)
		}
		split, splitErr := readAllDatagrams(iotest.OneByteReader(bytes.NewReader(in)), max)
		if fmt.Sprint(wholeErr) != fmt.Sprint(splitErr) || len(whole) != len(split) {
			t.Fatalf("whole: %d, %v; split: %d, %v", len(whole), wholeErr, len(split), splitErr)
		}
		var again []any
		for i := range whole {
			if !bytes.Equal(whole[i], split[i]) {
				t.Fatalf("datagram %d differs when split", i)
			}
			again = append(again, whole[i])
		}
		got, err := readAllDatagrams(bytes.NewReader(dgrams(append(again, "end")...)), max)
		if err != io.EOF || len(got) != len(whole) {
			t.Fatalf("re-encoded: %d datagrams, %v", len(got), err)
		}
		for i := range got {
			if !bytes.Equal(got[i], whole[i]) {
				t.Fatalf("re-encoded datagram %d differs", i)
			}
		}
	})
}

// TestDatagramStream sends datagrams of every size class both ways over a
// flow stream on every transport: each arrives whole, in order, 0-byte
// ones as 0-byte ones; the end chunk ends the direction.
func TestDatagramStream(t *testing.T) {
	leaktest.Check(t)
	sizes := []int{0, 1, 2, 100, 1200, 1500, 8192, 32764, 32765, 65535, 0}
	for name, trs := range transports(t) {
		t.Run(name, func(t *testing.T) {
			srv, _, _, _ := pair(t, trs, testConfig(), func(st *Stream) {
				defer st.Close()
				if st.Header().Kind != KindDatagram {
					t.Errorf("kind %q", st.Header().Kind)
				}
				for { // echo each datagram, reversed
					p, err := st.ReadDatagram(MaxDatagram, func(n int) []byte { return make([]byte, DatagramHeaderLen+n)[DatagramHeaderLen:] })
					if err != nil {
						if err != io.EOF {
							t.Errorf("client read: %v", err)
						}
						st.CloseWrite()
						return
					}
					b := make([]byte, DatagramHeaderLen+len(p))
					for i := range p {
						b[DatagramHeaderLen+i] = p[len(p)-1-i]
					}
					if err := st.WriteDatagram(b); err != nil {
						t.Errorf("client write: %v", err)
						return
					}
				}
			})
			st, err := srv.Open(Header{Service: "dns", Peer: "192.0.2.1:53", Kind: KindDatagram})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			var batch []byte // the second half goes in one write
			for i, n := range sizes {
				b := make([]byte, DatagramHeaderLen+n)
				for j := range n {
					b[DatagramHeaderLen+j] = byte(i + j)
				}
				if i >= len(sizes)/2 && n <= 8192 {
					batch = AppendDatagram(batch, b[DatagramHeaderLen:])
					continue
				}
				if len(batch) > 0 {
					if err := st.WriteDatagrams(batch); err != nil {
						t.Fatal(err)
					}
					batch = nil
				}
				if err := st.WriteDatagram(b); err != nil {
					t.Fatal(err)
				}
			}
			if len(batch) > 0 {
				if err := st.WriteDatagrams(batch); err != nil {
					t.Fatal(err)
				}
			}
			st.CloseWrite()
			for i, n := range sizes {
				p, err := st.ReadDatagram(MaxDatagram, func(n int) []byte { return make([]byte, n) })
				if err != nil {
					t.Fatalf("datagram %d: %v", i, err)
				}
				if len(p) != n {
					t.Fatalf("datagram %d: %d bytes, want %d", i, len(p), n)
				}
				for j := range n {
					if p[j] != byte(i+n-1-j) {
						t.Fatalf("datagram %d byte %d differs", i, j)
					}
				}
			}
			if _, err := st.ReadDatagram(MaxDatagram, nil); err != io.EOF {
				t.Fatalf("after the last datagram: %v, want io.EOF", err)
			}
		})
	}
}

// TestDatagramReadAllocates: reading a datagram into the caller's buffer
// allocates nothing.
func TestDatagramReadAllocates(t *testing.T) {
	in := dgrams([]byte("0123456789"))
	r := bytes.NewReader(in)
	var hdr [chunkHeaderLen]byte
	buf := make([]byte, 64)
	get := func(int) []byte { return buf }
	allocs := testing.AllocsPerRun(1000, func() {
		r.Reset(in)
		if _, err := readDatagram(r, hdr[:], 64, get); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per datagram", allocs)
	}
}

// TestUDPClaimNeedsServerCapability: a client with a UDP service refuses
// to claim from a server that did not announce UDP (an older server would
// bind a TCP port for it), and says so.
func TestUDPClaimNeedsServerCapability(t *testing.T) {
	leaktest.Check(t)
	mem := &transporttest.Network{}
	l := listen(t, mem)
	cfg := testConfig()
	// An old server: its Challenge has no "udp".
	srvDone := olderChallenge(t, l, cfg, struct {
		Version int    `json:"version"`
		Nonce   []byte `json:"nonce"`
	}{1, make([]byte, nonceLen)})
	_, err := Connect(dial(t, mem, l), cfg, quiet, testToken, "i", []Service{{Name: "dns", RemotePort: 53, Protocol: ProtoUDP}})
	if !errors.Is(err, ErrNoUDP) {
		t.Fatalf("Connect: %v, want ErrNoUDP", err)
	}
	if err := <-srvDone; err == nil {
		t.Fatal("the old server received a frame after its challenge")
	}
}

// olderChallenge plays, on the next connection l accepts, a server that
// answers the hello with challenge; it sends on the channel the error
// that ends its wait for the next frame: a client that refuses to go on
// sends no Auth.
func olderChallenge(t *testing.T, l net.Listener, cfg Config, challenge any) <-chan error {
	srvDone := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		_, st := rawServer(t, c, cfg)
		if _, _, err := readFrame(st, cfg.MaxControlFrame); err != nil { // hello
			srvDone <- err
			return
		}
		writeFrame(st, typeChallenge, challenge)
		_, _, err = readFrame(st, cfg.MaxControlFrame) // no Auth may follow
		srvDone <- err
	}()
	return srvDone
}

// rawServer is rawClient's server side: a smux session over c and the
// control stream the client opens.
func rawServer(t *testing.T, c net.Conn, cfg Config) (*smux.Session, *smux.Stream) {
	mux, err := smux.Server(c, cfg.smux())
	if err != nil {
		t.Error(err)
		return nil, nil
	}
	t.Cleanup(func() { mux.Close() })
	ctrl, err := mux.AcceptStream()
	if err != nil {
		t.Error(err)
		return mux, nil
	}
	ctrl.SetDeadline(time.Now().Add(10 * time.Second))
	return mux, ctrl
}

// TestUDPUpdateNeedsServerCapability: an Update that adds a UDP service
// is refused on a session with a server that did not announce UDP, and
// nothing is sent.
func TestUDPUpdateNeedsServerCapability(t *testing.T) {
	leaktest.Check(t)
	mem := &transporttest.Network{}
	l := listen(t, mem)
	cfg := testConfig()
	got := make(chan byte, 4)
	go func() { // an old server: no "udp" in its Challenge
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, st := rawServer(t, c, cfg)
		if st == nil {
			return
		}
		readFrame(st, cfg.MaxControlFrame) // hello
		writeFrame(st, typeChallenge, Challenge{Version: 1, Nonce: make([]byte, nonceLen)})
		readFrame(st, cfg.MaxControlFrame) // auth
		writeFrame(st, typeWelcome, Welcome{Client: "old", Session: "s"})
		for {
			typ, _, err := readFrame(st, cfg.MaxControlFrame)
			if err != nil {
				close(got)
				return
			}
			got <- typ
		}
	}()
	cli, err := Connect(dial(t, mem, l), cfg, quiet, testToken, "i", []Service{{Name: "web", RemotePort: 8080}})
	if err != nil {
		t.Fatal(err)
	}
	if cli.Info().UDP {
		t.Fatal("the session says the old server serves UDP")
	}
	_, err = cli.Update([]Service{{Name: "web", RemotePort: 8080}, {Name: "dns", RemotePort: 53, Protocol: ProtoUDP}})
	if !errors.Is(err, ErrNoUDP) {
		t.Fatalf("Update: %v, want ErrNoUDP", err)
	}
	cli.Close(CodeClosed, "test over")
	for typ := range got {
		if typ == typeUpdate {
			t.Fatal("the update was sent")
		}
	}
}
