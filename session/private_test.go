package session

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil/leaktest"
	"github.com/warren-tunnel/warren/transport/transporttest"
)

// TestOlderServerIgnoresPrivate plays a server from before private
// services: it reads Auth with the fields it knows and welcomes the client
// without Welcome.Private. The private service must not be among the
// claims such a server reads (it would make it public), and the client
// must refuse the session.
func TestOlderServerIgnoresPrivate(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := DefaultConfig()
	cfg.HandshakeTimeout = 5 * time.Second
	log := slog.New(slog.DiscardHandler)
	type oldAuth struct { // the fields an older server decodes
		Instance string    `json:"instance"`
		Services []Service `json:"services"`
	}
	seen := make(chan []Service, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		p, err := Accept(c, cfg, log)
		if err != nil {
			seen <- nil
			return
		}
		raw, _ := json.Marshal(p.Request.Auth)
		var old oldAuth
		json.Unmarshal(raw, &old)
		seen <- old.Services
		sess, err := p.Welcome(Welcome{Client: "office", Session: "s", Services: old.Services})
		if err == nil {
			sess.Run(t.Context(), Handlers{})
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, err = ConnectWith(time.Time{}, c, cfg, log, []byte("token-0123456789abcdef"), "i", "", Claims{
		Services: []Service{{Name: "web", RemotePort: 8080}},
		Private:  []Service{{Name: "db"}},
		Visitors: []Visitor{{Name: "v", Service: "home/nas"}},
	})
	if !errors.Is(err, ErrNoPrivate) {
		t.Fatalf("client against an older server: %v, want ErrNoPrivate", err)
	}
	got := <-seen
	for _, s := range got {
		if s.Name != "web" {
			t.Fatalf("an older server would read claim %+v: the private service made public", s)
		}
	}
	if len(got) != 1 {
		t.Fatalf("an older server read claims %+v, want only web", got)
	}
}

// TestPrivateUDPNeedsServerCapability plays a server that knows UDP and
// private services but not private UDP ones (no private_udp in its
// Challenge): a client with a private UDP service, or a UDP visitor,
// sends it no Auth at all (such a server would read the private UDP
// service as a TCP one) and fails with ErrNoPrivateUDP.
func TestPrivateUDPNeedsServerCapability(t *testing.T) {
	for _, tc := range []struct {
		name   string
		claims Claims
	}{
		{"private udp service", Claims{Private: []Service{{Name: "dns", Protocol: ProtoUDP}}}},
		{"udp visitor", Claims{Visitors: []Visitor{{Name: "v", Service: "office/dns", Protocol: ProtoUDP}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaktest.Check(t)
			mem := &transporttest.Network{}
			l := listen(t, mem)
			cfg := testConfig()
			srvDone := olderChallenge(t, l, cfg, Challenge{Version: 1, Nonce: make([]byte, nonceLen), UDP: true})
			_, err := ConnectWith(time.Time{}, dial(t, mem, l), cfg, quiet, testToken, "i", "", tc.claims)
			if !errors.Is(err, ErrNoPrivateUDP) {
				t.Fatalf("ConnectWith: %v, want ErrNoPrivateUDP", err)
			}
			if err := <-srvDone; err == nil {
				t.Fatal("the older server received a frame after its challenge")
			}
		})
	}
}
