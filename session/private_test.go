package session

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"
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
