package token

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	const n = 200
	seen := make(map[string]bool, n)
	for range n {
		tok := New()
		if len(tok) != 43 {
			t.Fatalf("New() = %q: %d characters, want 43", tok, len(tok))
		}
		for _, r := range tok {
			ok := r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_'
			if !ok {
				t.Fatalf("New() = %q: %q is not a base64url character", tok, r)
			}
		}
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			t.Fatalf("New() = %q: not raw base64url: %v", tok, err)
		}
		if len(b) != 32 {
			t.Fatalf("New() = %q decodes to %d bytes, want 32", tok, len(b))
		}
		if err := Check(tok); err != nil {
			t.Fatalf("Check(New()) = %v", err)
		}
		if seen[tok] {
			t.Fatalf("New() returned %q twice", tok)
		}
		seen[tok] = true
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "  file-token-0123456789\n\n")
	empty := write("empty", " \n\t\n")
	missing := filepath.Join(dir, "missing")
	env := map[string]string{
		"TOK":   " env-token-0123456789\n",
		"EMPTY": "",
		"BLANK": "  \t",
	}
	lookup := func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}

	tests := []struct {
		name         string
		inline, file string
		env          string
		lookup       func(string) (string, bool)
		want         string
		wantErr      string // substring; "" means success
	}{
		{name: "inline", inline: "inline-token-0123", want: "inline-token-0123"},
		{name: "inline kept verbatim", inline: " spaced ", want: " spaced "},
		{name: "file trimmed", file: good, want: "file-token-0123456789"},
		{name: "env trimmed", env: "TOK", lookup: lookup, want: "env-token-0123456789"},
		{name: "none", wantErr: "token: missing"},
		{name: "inline and file", inline: "x", file: good, wantErr: "set only one"},
		{name: "inline and env", inline: "x", env: "TOK", lookup: lookup, wantErr: "set only one"},
		{name: "file and env", file: good, env: "TOK", lookup: lookup, wantErr: "set only one"},
		{name: "all three", inline: "x", file: good, env: "TOK", lookup: lookup, wantErr: "set only one"},
		{name: "file missing", file: missing, wantErr: "token_file: "},
		{name: "file empty", file: empty, wantErr: "token_file: " + empty + " is empty"},
		{name: "env unset", env: "NOPE", lookup: lookup, wantErr: "token_env: environment variable NOPE is not set"},
		{name: "env empty", env: "EMPTY", lookup: lookup, wantErr: "token_env: environment variable EMPTY is empty"},
		{name: "env blank", env: "BLANK", lookup: lookup, wantErr: "token_env: environment variable BLANK is empty"},
		{name: "env nil lookup", env: "TOK", wantErr: "token_env: TOK: environment not available"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve("token", tt.inline, tt.file, tt.env, tt.lookup)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Resolve = %q, nil; want error containing %q", got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Resolve error = %q; want it to contain %q", err, tt.wantErr)
				}
				if got != "" {
					t.Errorf("Resolve returned %q with an error", got)
				}
				// Errors never carry a token.
				for _, secret := range []string{"file-token-0123456789", "env-token-0123456789"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q leaks the token", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Resolve = %q, want %q", got, tt.want)
			}
		})
	}
}

// Errors name the caller's key and its _file and _env siblings (the
// cluster's peer_token used to read "peer_token, token_file, token_env").
func TestResolveNamesKey(t *testing.T) {
	tests := []struct {
		name, inline, file, env, want string
	}{
		{"both", "x", "f", "", "peer_token, peer_token_file, peer_token_env: set only one"},
		{"none", "", "", "", "peer_token: missing; set peer_token, peer_token_file or peer_token_env"},
		{"env unset", "", "", "NOPE", "peer_token_env: environment variable NOPE is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Resolve("peer_token", tt.inline, tt.file, tt.env, func(string) (string, bool) { return "", false })
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Resolve error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		tok  string
		ok   bool
	}{
		{"empty", "", false},
		{"one short", strings.Repeat("a", MinLen-1), false},
		{"exactly MinLen", strings.Repeat("a", MinLen), true},
		{"long", strings.Repeat("a", 100), true},
		{"exactly MaxLen", strings.Repeat("a", MaxLen), true},
		{"one too long", strings.Repeat("a", MaxLen+1), false},
		{"10 MB", strings.Repeat("a", 10<<20), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.tok)
			if tt.ok && err != nil {
				t.Fatalf("Check(%d chars) = %v, want nil", len(tt.tok), err)
			}
			if !tt.ok {
				if err == nil {
					t.Fatalf("Check(%d chars) = nil, want error", len(tt.tok))
				}
				if !strings.HasPrefix(err.Error(), "token: ") || len(err.Error()) > 200 {
					t.Errorf("Check error %.200q does not name the token key, or echoes the token", err)
				}
			}
		})
	}
	if MinLen != 16 || MaxLen != 1024 {
		t.Errorf("MinLen, MaxLen = %d, %d, want 16, 1024 (documented)", MinLen, MaxLen)
	}
}
