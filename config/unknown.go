package config

import (
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"

	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/internal/suggest"
)

// unknownKeys reports the keys of the file that no setting has, each with
// the nearest known key when one is close: a typo of a key at the same
// place, or the same key in another table of the same side ("fingerprint"
// under [client] is client.tls.fingerprint). With table set, only keys of
// that table (and unknown top-level keys) count: the other is not read.
func unknownKeys(path string, undecoded []toml.Key, table string) error {
	var msgs []string
	for _, k := range undecoded {
		if table != "" && len(k) > 0 && (k[0] == TableServer || k[0] == TableClient) && k[0] != table {
			continue
		}
		msg := "unknown key " + quote.Bare(k.String())
		if s := suggestKey(k); s != "" {
			msg += " (did you mean " + s + "?)"
		}
		msgs = append(msgs, msg)
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s", path, strings.Join(msgs, "; "))
}

// suggestKey returns the known key k was probably meant to be, or "".
func suggestKey(k toml.Key) string {
	known := knownKeys()
	parent := strings.Join(k[:len(k)-1], ".")
	last := k[len(k)-1]
	var siblings []string
	for _, key := range known {
		if p, name, _ := cutLast(key); p == parent {
			siblings = append(siblings, name)
		}
	}
	if s := suggest.Nearest(last, siblings); s != "" {
		return joinKey(parent, s)
	}
	// The right key in the wrong table of the same side.
	for _, key := range known {
		if _, name, _ := cutLast(key); name == last && strings.HasPrefix(key, k[0]+".") {
			return key
		}
	}
	return ""
}

func cutLast(key string) (parent, name string, ok bool) {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return "", key, false
	}
	return key[:i], key[i+1:], true
}

func joinKey(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

var known struct {
	once sync.Once
	keys []string
}

// knownKeys lists every key a file may have, dotted, without array
// indices ("server.clients.name"), in the order of the structs.
func knownKeys() []string {
	known.once.Do(func() {
		var raw struct {
			Server Server `toml:"server"`
			Client Client `toml:"client"`
		}
		known.keys = collectKeys(reflect.TypeOf(raw), "", nil)
	})
	return known.keys
}

func collectKeys(t reflect.Type, prefix string, keys []string) []string {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			keys = collectKeys(ft, prefix, keys) // embedded: its keys are the table's
			continue
		}
		if name == "" {
			name = f.Name
		}
		key := joinKey(prefix, name)
		keys = append(keys, key)
		if ft.Kind() == reflect.Struct && hasTOMLTags(ft) {
			keys = collectKeys(ft, key, keys)
		}
	}
	return keys
}

// hasTOMLTags reports whether a struct is a table of keys (tls, kcp, ...)
// rather than a value decoded whole (a port range, a duration).
func hasTOMLTags(t reflect.Type) bool {
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("toml") != "" {
			return true
		}
	}
	return false
}
