package transport

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// congestionOf reads a TCP connection's congestion control.
func congestionOf(t *testing.T, c net.Conn) string {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var algo string
	var serr error
	rc.Control(func(fd uintptr) {
		algo, serr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	})
	if serr != nil {
		t.Fatal(serr)
	}
	return algo
}

// TestTCPCongestion: both ends of a tunnel connection use the congestion
// control asked for (reno: built into every Linux kernel), and one the
// kernel does not have fails the listener with the reason.
func TestTCPCongestion(t *testing.T) {
	c, s := tcpPair(t, &TCP{Congestion: "reno"})
	if got := congestionOf(t, c); got != "reno" {
		t.Errorf("dialed connection uses %q, want reno", got)
	}
	if got := congestionOf(t, s); got != "reno" {
		t.Errorf("accepted connection uses %q, want reno", got)
	}

	_, err := (&TCP{Congestion: "nosuchcc"}).Listen("127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), `tcp.congestion "nosuchcc"`) {
		t.Fatalf("listen with an unknown congestion control: %v", err)
	}
}

// tcpPair returns both ends, dialed and accepted, of a connection of tr,
// closed at the test's end.
func tcpPair(t *testing.T, tr *TCP) (dialed, accepted net.Conn) {
	t.Helper()
	l, err := tr.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	c, err := tr.Dial(t.Context(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := <-ch
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

func TestTCPConfigValidate(t *testing.T) {
	tests := []struct {
		name, algo string
		ok         bool
	}{
		{"default", "", true},
		{"bbr", "bbr", true},
		{"with digits and underscore", "tcp_x2", true},
		{"upper case", "BBR", false},
		{"injection", "bbr;rm", false},
		{"too long", "abcdefghijklmnop", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := TCPConfig{Congestion: tt.algo}.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate(%q) = %v, want ok %v", tt.algo, err, tt.ok)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "congestion: ") {
				t.Errorf("error %q does not name the key", err)
			}
		})
	}
}

// TestTCPCongestionAuto: "auto" is bbr where the kernel offers it, and the
// system's default otherwise, with one info line saying so; "" and names
// stay as they are.
func TestTCPCongestionAuto(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	def, bbrErr := probeCongestion("bbr")
	got := TCPConfig{Congestion: CongestionAuto}.resolve(log)
	switch {
	case bbrErr == nil && got != "bbr":
		t.Errorf("auto resolved to %q where bbr is available", got)
	case bbrErr != nil && got != "":
		t.Errorf("auto resolved to %q where bbr is not available (%v)", got, bbrErr)
	}
	lines := strings.Count(logged.String(), "\n")
	if bbrErr == nil && lines != 0 || bbrErr != nil && (lines != 1 || !strings.Contains(logged.String(), "level=INFO")) {
		t.Errorf("log after auto: %q", logged.String())
	}
	for _, name := range []string{"", "reno"} {
		if got := (TCPConfig{Congestion: name}).resolve(log); got != name {
			t.Errorf("%q resolved to %q", name, got)
		}
	}

	// The connections of an "auto" transport use what it resolved to.
	tr, err := New(KindTCP, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	l, err := tr.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := tr.Dial(t.Context(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := "bbr"
	if bbrErr != nil {
		want = def
	}
	if got := congestionOf(t, c); got != want {
		t.Errorf("an auto connection uses %q, want %q", got, want)
	}
}
