package config

import (
	"reflect"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
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
	c.Visitors = nil // an example entry
	if len(c.Dial.Allow) == 0 {
		c.Dial.Allow = nil // shown as []
	}
	c.TLS = transport.ClientTLS{}
	if c.Resolve == client.ResolveFirst { // what the default, "", means with server
		c.Resolve = ""
	}
	if want := client.DefaultConfig(); !reflect.DeepEqual(c, want) {
		t.Errorf("[client] in the example differs from the defaults:\n got %+v\nwant %+v", c, want)
	}
	if f.Client.Log != DefaultLog() {
		t.Errorf("[client.log] = %+v, default %+v", f.Client.Log, DefaultLog())
	}
}

// TestExampleShowsEveryKey: every key the code reads appears in
// config.example.toml, so a new setting cannot land undocumented. Keys that
// are alternatives to one shown (token_file beside token_env) are exempt.
func TestExampleShowsEveryKey(t *testing.T) {
	var doc map[string]any
	if _, err := toml.DecodeFile("../config.example.toml", &doc); err != nil {
		t.Fatal(err)
	}
	exempt := map[string]bool{
		"server.tls":                true, // the table is shown; `tls = false` is the alternative
		"server.clients.token":      true,
		"server.clients.token_file": true,
		"client.tls":                true,
		"client.token":              true,
		"client.token_file":         true,
		"client.servers":            true, // shown commented out: server is the alternative shown
	}
	var walk func(prefix string, typ reflect.Type, m map[string]any)
	walk = func(prefix string, typ reflect.Type, m map[string]any) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			key := f.Tag.Get("toml")
			if f.Anonymous && key == "" {
				walk(prefix, f.Type, m)
				continue
			}
			if key == "" || key == "-" {
				continue
			}
			path := prefix + "." + key
			v, ok := m[key]
			if !ok {
				if !exempt[path] {
					t.Errorf("config.example.toml does not show %s", path)
				}
				continue
			}
			switch {
			case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)):
				if sub, ok := v.(map[string]any); ok {
					walk(path, f.Type, sub)
				}
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				if list, ok := v.([]map[string]any); ok && len(list) > 0 {
					walk(path, f.Type.Elem(), list[0])
				}
			}
		}
	}
	walk("server", reflect.TypeOf(Server{}), doc["server"].(map[string]any))
	walk("client", reflect.TypeOf(Client{}), doc["client"].(map[string]any))
}
