package main

import (
	"crypto/tls"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/xtaci/smux"
)

// The "smux-chain" loopback path is the floor of a tunnel built on smux
// over TLS (issue 19): the tls-chain's two relays with one smux session
// between them, and nothing of warren's,
//
//	loadgen -> entry (TCP in, smux stream out) => one TLS connection => exit (smux stream in, TCP out) -> backend
//
// with warren's smux settings (version 2, 64 KiB frames, 4 MiB stream and
// 64 MiB session windows), the records of one smux frame written in one
// system call (as warren's transport does), and a stream's bytes framed
// in chunks with an end chunk, as warren frames them (smux v1.5.57 drops
// unread data after CloseWrite, so end-of-stream cannot be smux's FIN).
// What warren measures beyond this path is warren's own; what this path
// measures beyond tls-chain is smux's: its frames, goroutine hand-offs and
// window accounting.

// smuxChunk is the most a chunk carries: one chunk, with its 4-byte
// header, fills one smux frame.
const smuxChunk = 65535 - 4

func smuxChainConfig() *smux.Config {
	return &smux.Config{
		Version:           2,
		KeepAliveDisabled: true,
		MaxFrameSize:      65535,
		MaxReceiveBuffer:  64 << 20,
		MaxStreamBuffer:   4 << 20,
	}
}

// smuxRelayMain runs one relay of the chain. The entry (-entry) dials the
// exit over TLS once, listens on -listen for TCP and carries each
// connection on a stream of its one session; the exit listens for TLS
// and relays each stream of each session to -to. It prints "LISTEN addr"
// and exits with its stdin.
func smuxRelayMain(args []string) {
	fs := flag.NewFlagSet("_smuxrelay", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	to := fs.String("to", "", "address to relay to")
	entry := fs.Bool("entry", false, "be the entry: accept TCP, dial the exit")
	certF := fs.String("cert", "", "certificate (PEM), for the exit")
	keyF := fs.String("key", "", "key (PEM), for the exit")
	fs.Parse(args)
	die := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "smuxrelay: %s: %v\n", what, err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		die("listen", err)
	}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	if *entry {
		d, err := net.DialTimeout("tcp", *to, 5*time.Second)
		if err != nil {
			die("dial", err)
		}
		// A reference for CPU per byte, not for security: the
		// certificate is the bench's own, on loopback.
		w, err := smuxWireOf(tls.Client(&corkConn{Conn: d}, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}))
		if err != nil {
			die("handshake", err)
		}
		sess, err := smux.Client(w, smuxChainConfig())
		if err != nil {
			die("session", err)
		}
		fmt.Printf("LISTEN %s\n", ln.Addr())
		acceptEach(ln, func(c net.Conn) {
			st, err := sess.OpenStream()
			if err != nil {
				fmt.Fprintln(os.Stderr, "smuxrelay: open:", err)
				c.Close()
				return
			}
			chunkRelay(c.(*net.TCPConn), st)
		})
		return
	}
	cert, err := tls.LoadX509KeyPair(*certF, *keyF)
	if err != nil {
		die("certificate", err)
	}
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	acceptEach(ln, func(c net.Conn) {
		w, err := smuxWireOf(tls.Server(&corkConn{Conn: c}, srvCfg))
		if err != nil {
			fmt.Fprintln(os.Stderr, "smuxrelay: handshake:", err)
			return
		}
		sess, err := smux.Server(w, smuxChainConfig())
		if err != nil {
			c.Close()
			return
		}
		defer sess.Close()
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				b, err := net.DialTimeout("tcp", *to, 5*time.Second)
				if err != nil {
					fmt.Fprintln(os.Stderr, "smuxrelay: dial:", err)
					st.Close()
					return
				}
				chunkRelay(b.(*net.TCPConn), st)
			}()
		}
	})
}

// smuxWire is the TLS connection under smux: each frame smux writes
// (header and payload, WriteBuffers) leaves in one system call.
type smuxWire struct {
	*tls.Conn
	cork *corkConn
}

func smuxWireOf(tc *tls.Conn) (*smuxWire, error) {
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		tc.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return &smuxWire{Conn: tc, cork: tc.NetConn().(*corkConn)}, nil
}

// WriteBuffers is called by smux's one send loop only.
func (w *smuxWire) WriteBuffers(v [][]byte) (int, error) {
	w.cork.cork()
	var n int
	var err error
	for _, b := range v {
		var k int
		k, err = w.Conn.Write(b)
		n += k
		if err != nil {
			break
		}
	}
	if ferr := w.cork.flush(); err == nil {
		err = ferr
	}
	return n, err
}

// chunkRelay copies between a TCP connection and a stream until both
// directions have ended, then closes both.
func chunkRelay(c *net.TCPConn, st *smux.Stream) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // connection to stream, in chunks
		defer wg.Done()
		buf := make([]byte, 4+smuxChunk)
		for {
			n, err := c.Read(buf[4:])
			if n > 0 {
				binary.BigEndian.PutUint32(buf, uint32(n))
				if _, werr := st.Write(buf[:4+n]); werr != nil {
					c.Close()
					return
				}
			}
			if err != nil {
				if err == io.EOF {
					binary.BigEndian.PutUint32(buf, 0) // the end chunk
					st.Write(buf[:4])
				} else {
					st.Close()
				}
				return
			}
		}
	}()
	go func() { // stream to connection, until the end chunk
		defer wg.Done()
		buf := make([]byte, smuxChunk)
		var h [4]byte
		for {
			if _, err := io.ReadFull(st, h[:]); err != nil {
				c.Close()
				return
			}
			n := binary.BigEndian.Uint32(h[:])
			if n == 0 {
				c.CloseWrite()
				return
			}
			if n > smuxChunk {
				fmt.Fprintln(os.Stderr, "smuxrelay: chunk of", n, "bytes")
				c.Close()
				st.Close()
				return
			}
			if _, err := io.ReadFull(st, buf[:n]); err != nil {
				c.Close()
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				st.Close()
				return
			}
		}
	}()
	wg.Wait()
	c.Close()
	st.Close()
}

// startSmuxChain starts the chain's two relays in front of backend and
// returns them, exit first, and the entry's address.
func startSmuxChain(self, logDir, backend, cert, key string) (exit, entry *proc, addr string, err error) {
	return startRelayPair(self, logDir, "smux", []string{"_smuxrelay", "-cert", cert, "-key", key, "-to", backend},
		func(exitAddr string) []string { return []string{"_smuxrelay", "-entry", "-to", exitAddr} })
}
