// Package token makes, reads and checks the shared secrets that clients
// prove to the server.
package token

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/warren-tunnel/warren/internal/quote"
)

// MinLen is the shortest token accepted. A token is an HMAC key; over a
// plaintext transport a captured handshake allows offline guessing, so it
// must not be guessable.
const MinLen = 16

// MaxLen is the longest token accepted. The server proves every
// configured token against each client's Auth (session.Request.Match), at
// a cost that grows with their length; the cap keeps a wrong proof cheap
// to check. A generated token is 43 characters.
const MaxLen = 1024

// New returns a random token: 32 bytes, base64url (43 characters).
func New() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Resolve returns the token given by exactly one of inline (the config key
// named key), file (key_file: read, surrounding whitespace trimmed) and env
// (key_env: looked up with lookup). Errors name the key that was wrong; they
// never contain the token.
func Resolve(key, inline, file, env string, lookup func(string) (string, bool)) (string, error) {
	set := 0
	for _, s := range []string{inline, file, env} {
		if s != "" {
			set++
		}
	}
	switch {
	case set == 0:
		return "", fmt.Errorf("%[1]s: missing; set %[1]s, %[1]s_file or %[1]s_env", key)
	case set > 1:
		return "", fmt.Errorf("%[1]s, %[1]s_file, %[1]s_env: set only one", key)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) { // without the path, which may be huge
				return "", fmt.Errorf("%s_file: %s: %w", key, quote.Bare(file), pe.Err)
			}
			return "", fmt.Errorf("%s_file: %w", key, err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("%s_file: %s is empty", key, quote.Bare(file))
		}
		return tok, nil
	case env != "":
		if lookup == nil {
			return "", fmt.Errorf("%s_env: %s: environment not available here", key, quote.Bare(env))
		}
		tok, ok := lookup(env)
		if !ok {
			return "", fmt.Errorf("%s_env: environment variable %s is not set", key, quote.Bare(env))
		}
		if tok = strings.TrimSpace(tok); tok == "" {
			return "", fmt.Errorf("%s_env: environment variable %s is empty", key, quote.Bare(env))
		}
		return tok, nil
	}
	return inline, nil
}

// LooseMode reports whether the file at path may be read by its group or
// others, and its permission bits. A file that cannot be read is not
// reported here: Resolve says why.
func LooseMode(path string) (fs.FileMode, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	return fi.Mode().Perm(), fi.Mode().Perm()&0o044 != 0
}

// Check rejects a token too short to be safe, or too long to check
// cheaply.
func Check(tok string) error {
	switch {
	case len(tok) < MinLen:
		return fmt.Errorf("token: %d characters is too short to resist guessing; use at least %d (warren token prints a good one)", len(tok), MinLen)
	case len(tok) > MaxLen:
		return fmt.Errorf("token: %d bytes is longer than the %d allowed (warren token prints a good one, of 43 characters)", len(tok), MaxLen)
	}
	return nil
}
