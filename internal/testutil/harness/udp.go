package harness

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/session"
)

// UDPService is a client's UDP service name, relaying to target.
func UDPService(name, target string) client.Service {
	return client.Service{Name: name, Target: target, Protocol: session.ProtoUDP}
}

// UDPBackend starts a UDP server on the private network: handle runs for
// each datagram, in the server's one goroutine, with the socket to answer
// on. It returns the address, a target for a UDP service.
func (w *World) UDPBackend(handle func(pc PacketConn, from netip.AddrPort, b []byte)) string {
	w.t.Helper()
	pc, err := w.Private.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	var wg sync.WaitGroup
	w.t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	wg.Go(func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue // an ICMP error for an earlier answer
			}
			handle(pc, from, buf[:n])
		}
	})
	return pc.LocalAddr().String()
}

// UDPEcho starts a UDP backend that sends every datagram back to its
// source, and returns its address.
func (w *World) UDPEcho() string {
	return w.UDPBackend(func(pc PacketConn, from netip.AddrPort, b []byte) { pc.WriteToUDPAddrPort(b, from) })
}

// UDPDeadAddr is a UDP address on the private network where nothing is
// bound: datagrams to it come back as ICMP port unreachable.
func (w *World) UDPDeadAddr() string {
	w.t.Helper()
	pc, err := w.Private.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// DialUDP opens a public peer's UDP socket connected to addr, closed when
// the test ends.
func (w *World) DialUDP(addr string) net.Conn {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := w.Public.DialPacket(ctx, "udp", addr)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { c.Close() })
	return c
}

// Exchange sends b on c and waits up to wait for a datagram back,
// resending after each wait, at most tries times; it returns the answer
// and how many resends it took.
func Exchange(c net.Conn, b []byte, wait time.Duration, tries int) ([]byte, int, error) {
	buf := make([]byte, 1<<16)
	var err error
	for i := range tries {
		if _, err = c.Write(b); err != nil {
			return nil, i, err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		var n int
		n, err = c.Read(buf)
		if err == nil {
			return buf[:n], i, nil
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return nil, i, err
		}
	}
	return nil, tries, err
}

// ExchangeEcho is Exchange with an echo service: it waits for b itself to
// come back, dropping the late answers to earlier datagrams that a
// resend can bring.
func ExchangeEcho(c net.Conn, b []byte, wait time.Duration, tries int) (resends int, err error) {
	buf := make([]byte, 1<<16)
	for i := range tries {
		if _, err = c.Write(b); err != nil {
			return i, err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		for {
			var n int
			n, err = c.Read(buf)
			if err != nil {
				break
			}
			if bytes.Equal(buf[:n], b) {
				return i, nil
			}
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return i, err
		}
	}
	return tries, err
}

// UDPPublicAddr is where the named UDP service is reachable.
func (c *Client) UDPPublicAddr(name string) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port(name)))
}

// WaitFlows waits until the server's route key has n flows.
func (s *Server) WaitFlows(key string, n int) {
	s.w.t.Helper()
	s.WaitFor("flows of "+key, func() (bool, string) {
		for _, r := range s.Routes() {
			if r.Key == key {
				return r.Flows == n, strconv.Itoa(r.Flows) + " flows, want " + strconv.Itoa(n)
			}
		}
		return n == 0, "no route " + key
	})
}
