package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// The "tls-chain" loopback path is the reference the tcp path's CPU per
// byte is held to (issue 19): two plain Go TLS relays back to back, as a
// tunnel without a multiplexer would be,
//
//	loadgen -> entry (TCP in, TLS out) -> exit (TLS in, TCP out) -> backend
//
// each copying in 256 KiB buffers, with the TLS records of one buffer
// written in one system call (coalesced below crypto/tls, as warren's
// transport does). Both relays are processes of this binary (_tlsrelay),
// so the suite reads their CPU as it reads warren's server and client.

// chainBuf is each relay direction's buffer.
const chainBuf = 256 << 10

// tlsRelayMain runs one relay of the chain: it listens on -listen (TLS
// with -cert/-key when -tls-in) and relays each connection to -to (TLS
// when -tls-out). It prints "LISTEN addr" and exits with its stdin.
func tlsRelayMain(args []string) {
	fs := flag.NewFlagSet("_tlsrelay", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	to := fs.String("to", "", "address to relay to")
	tlsIn := fs.Bool("tls-in", false, "accept TLS")
	tlsOut := fs.Bool("tls-out", false, "dial TLS")
	certF := fs.String("cert", "", "certificate (PEM), with -tls-in")
	keyF := fs.String("key", "", "key (PEM), with -tls-in")
	fs.Parse(args)
	var srvCfg *tls.Config
	if *tlsIn {
		cert, err := tls.LoadX509KeyPair(*certF, *keyF)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tlsrelay:", err)
			os.Exit(1)
		}
		srvCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	}
	// A reference for CPU per byte, not for security: the certificate is
	// the bench's own, on loopback.
	cliCfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlsrelay:", err)
		os.Exit(1)
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	acceptEach(ln, func(c net.Conn) {
		var in net.Conn = c
		if srvCfg != nil {
			in = tls.Server(&corkConn{Conn: c}, srvCfg)
		}
		d, err := net.DialTimeout("tcp", *to, 5*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tlsrelay: dial:", err)
			c.Close()
			return
		}
		var out net.Conn = d
		if *tlsOut {
			out = tls.Client(&corkConn{Conn: d}, cliCfg)
		}
		// Handshakes first: records written corked must not include
		// a handshake message that waits for its answer.
		for _, c := range []net.Conn{in, out} {
			if tc, ok := c.(*tls.Conn); ok {
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					fmt.Fprintln(os.Stderr, "tlsrelay: handshake:", err)
					in.Close()
					out.Close()
					return
				}
				tc.SetDeadline(time.Time{})
			}
		}
		chainRelay(in, out)
	})
}

// chainRelay copies both ways until both ends are done, passing each
// half-close on.
func chainRelay(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); chainCopy(b, a) }()
	go func() { defer wg.Done(); chainCopy(a, b) }()
	wg.Wait()
	a.Close()
	b.Close()
}

func chainCopy(dst, src net.Conn) {
	buf := make([]byte, chainBuf)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := corkedWrite(dst, buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
					if tc, ok := dst.(*tls.Conn); ok { // close_notify alone leaves TCP open
						tc.NetConn().(*corkConn).Conn.(*net.TCPConn).CloseWrite()
					}
					return
				}
			}
			dst.Close()
			return
		}
	}
}

// corkedWrite writes b to c; when c is TLS, its records go out in one
// system call.
func corkedWrite(c net.Conn, b []byte) (int, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return c.Write(b)
	}
	cc := tc.NetConn().(*corkConn)
	cc.cork()
	n, err := tc.Write(b)
	if ferr := cc.flush(); err == nil {
		err = ferr
	}
	return n, err
}

// corkConn collects what crypto/tls writes between cork and flush (the
// records of one Write) and writes it at once; uncorked, it writes
// through (the handshake, alerts).
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

func (c *corkConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.corked {
		c.buf = append(c.buf, b...)
		c.mu.Unlock()
		return len(b), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *corkConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// startTLSChain starts the chain's two relays in front of backend and
// returns them, exit first, and the entry's address.
func startTLSChain(self, logDir, backend, cert, key string) (exit, entry *proc, addr string, err error) {
	return startRelayPair(self, logDir, "chain", []string{"_tlsrelay", "-tls-in", "-cert", cert, "-key", key, "-to", backend},
		func(exitAddr string) []string { return []string{"_tlsrelay", "-tls-out", "-to", exitAddr} })
}

// startRelayPair starts a chain's exit (exitArgs) and its entry
// (entryArgs of the exit's address), named prefix-exit and prefix-entry.
func startRelayPair(self, logDir, prefix string, exitArgs []string, entryArgs func(exitAddr string) []string) (exit, entry *proc, addr string, err error) {
	exit, exitAddr, err := startListener(self, logDir, prefix+"-exit", exitArgs...)
	if err != nil {
		return nil, nil, "", err
	}
	entry, addr, err = startListener(self, logDir, prefix+"-entry", entryArgs(exitAddr)...)
	if err != nil {
		exit.stop(time.Second)
		return nil, nil, "", err
	}
	return exit, entry, addr, nil
}

// acceptEach runs handle, in a goroutine of its own, on each connection
// ln accepts, until ln closes.
func acceptEach(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go handle(c)
	}
}
