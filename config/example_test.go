package config

import (
	"reflect"
	"testing"

	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/server"
	"github.com/warren-tunnel/warren/transport"
)

// TestExampleIsValidAndShowsDefaults keeps config.example.toml true to the
// code: it parses, and apart from the keys that have no default (clients,
// services, the server address, tokens, the pinned fingerprint) every value
// it shows is the default.
func TestExampleIsValidAndShowsDefaults(t *testing.T) {
	env := map[string]string{
		"WARREN_OFFICE_TOKEN": "office-token-0123456789",
		"WARREN_TOKEN":        "office-token-0123456789",
	}
	f, err := Load("../config.example.toml", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if f.Server == nil || f.Client == nil {
		t.Fatal("the example should show both tables")
	}

	s := f.Server.Config
	if len(s.Clients) == 0 {
		t.Fatal("the example should show a client entry")
	}
	s.Clients = nil
	if want := server.DefaultConfig(); !reflect.DeepEqual(s, want) {
		t.Errorf("[server] in the example differs from the defaults:\n got %+v\nwant %+v", s, want)
	}
	if f.Server.Log != DefaultLog() {
		t.Errorf("[server.log] = %+v, default %+v", f.Server.Log, DefaultLog())
	}

	c := f.Client.Config
	if len(c.Services) == 0 || c.Server == "" || c.Token == "" {
		t.Fatal("the example should show the client's server, token and services")
	}
	c.Services, c.Server, c.Token = nil, "", ""
	c.TLS = transport.ClientTLS{}
	if want := client.DefaultConfig(); !reflect.DeepEqual(c, want) {
		t.Errorf("[client] in the example differs from the defaults:\n got %+v\nwant %+v", c, want)
	}
	if f.Client.Log != DefaultLog() {
		t.Errorf("[client.log] = %+v, default %+v", f.Client.Log, DefaultLog())
	}
}
