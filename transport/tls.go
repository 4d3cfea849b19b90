package transport

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/internal/suggest"
)

// ALPN is the application protocol both sides announce in the TLS
// handshake. The client requires the server to choose it, so a client
// pointed at some other TLS service fails the handshake with a clear reason
// instead of talking past it.
const ALPN = "warren/1"

// bindingLabel is the RFC 5705 exporter label of warren's channel binding.
const bindingLabel = "EXPORTER-warren-auth"

// ServerTLS is the [server.tls] table. In a config file it is either a table
// or the boolean false ("tls = false"), which turns TLS off.
type ServerTLS struct {
	// Disabled turns TLS off (plaintext transport). Only "tls = false" sets it.
	Disabled bool `toml:"-"`
	// Cert and Key are PEM files. When both are empty the server uses a
	// self-signed certificate kept in its state directory.
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

// ClientTLS is the [client.tls] table, or "tls = false".
//
// The client verifies the server by a pinned certificate fingerprint, by a CA
// file, or (neither set) by the system's roots and the server's host name.
type ClientTLS struct {
	Disabled bool `toml:"-"`
	// Fingerprint pins the server certificate: "sha256:" and 64 hex digits,
	// as the server logs it at start.
	Fingerprint string `toml:"fingerprint"`
	// Fingerprints pins more certificates beside Fingerprint, any of which
	// matches: for a client of several servers, each with a self-signed
	// certificate of its own. A config file gives them as a list,
	// fingerprint = ["sha256:...", "sha256:..."].
	Fingerprints []string `toml:"-"`
	// CA is a PEM file of the certificate authorities to trust.
	CA string `toml:"ca"`
	// ServerName is the name to verify in the server's certificate; empty
	// means the host part of the server address.
	ServerName string `toml:"server_name"`
	// InsecureSkipVerify accepts any server certificate. It defeats TLS
	// against an active attacker and warns at every start.
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`
}

// Validate checks that the settings do not contradict each other.
func (c ServerTLS) Validate() error {
	if c.Disabled && (c.Cert != "" || c.Key != "") {
		return errors.New("tls = false leaves no room for cert and key")
	}
	if (c.Cert == "") != (c.Key == "") {
		return errors.New("tls.cert and tls.key: set both, or neither for a self-signed certificate")
	}
	return nil
}

// Config loads the certificate and returns the server TLS configuration with
// the certificate's fingerprint in the form clients pin. With no cert/key
// files it uses the self-signed certificate in stateDir, creating it on first
// use; created reports that it did so.
func (c ServerTLS) Config(stateDir string) (cfg *tls.Config, fingerprint string, created bool, err error) {
	if err := c.Validate(); err != nil {
		return nil, "", false, err
	}
	var cert tls.Certificate
	if c.Cert != "" {
		cert, err = tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, "", false, fmt.Errorf("tls.cert %s / tls.key %s: %w", c.Cert, c.Key, err)
		}
	} else {
		if stateDir == "" {
			return nil, "", false, errors.New("state_dir: needed for the self-signed certificate when tls.cert and tls.key are not set")
		}
		cert, created, err = selfSigned(stateDir)
		if err != nil {
			return nil, "", false, err
		}
	}
	cfg = &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
	}
	return cfg, Fingerprint(cert.Certificate[0]), created, nil
}

// Validate checks the fingerprint's form and that the settings agree.
func (c ClientTLS) Validate() error {
	pins := c.Pins()
	if c.Disabled && (len(pins) > 0 || c.CA != "" || c.ServerName != "" || c.InsecureSkipVerify) {
		return errors.New("tls = false leaves no room for other tls settings")
	}
	for i, p := range pins {
		if _, err := ParseFingerprint(p); err != nil {
			if len(c.Fingerprints) > 0 {
				return fmt.Errorf("tls.fingerprint[%d]: %w", i, err)
			}
			return fmt.Errorf("tls.fingerprint: %w", err)
		}
	}
	if c.InsecureSkipVerify && (len(pins) > 0 || c.CA != "") {
		return errors.New("tls.insecure_skip_verify contradicts tls.fingerprint and tls.ca: drop it to verify the server")
	}
	return nil
}

// Config returns the client TLS configuration. Without ServerName the host
// of the address dialled is verified (see Transport.Dial).
func (c ClientTLS) Config() (*tls.Config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		ServerName: c.ServerName,
	}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("tls.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca: %s holds no PEM certificate", c.CA)
		}
		cfg.RootCAs = pool
	}
	pins := c.Pins()
	switch {
	case c.InsecureSkipVerify:
		cfg.InsecureSkipVerify = true
	case len(pins) > 0:
		want := make([][32]byte, len(pins))
		for i, p := range pins {
			want[i], _ = ParseFingerprint(p)
		}
		pinned := pins[0]
		if len(pins) > 1 {
			pinned = "one of " + strings.Join(pins, ", ")
		}
		// Without a CA the pin is the whole verification; with one, both apply.
		cfg.InsecureSkipVerify = c.CA == ""
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrFingerprintMismatch
			}
			if got := sha256.Sum256(cs.PeerCertificates[0].Raw); !slices.Contains(want, got) {
				return fmt.Errorf("%w: server sent %s, pinned %s", ErrFingerprintMismatch, Fingerprint(cs.PeerCertificates[0].Raw), pinned)
			}
			return nil
		}
	}
	return cfg, nil
}

// Pins returns every pinned fingerprint: Fingerprint, then Fingerprints.
func (c ClientTLS) Pins() []string {
	var pins []string
	if c.Fingerprint != "" {
		pins = append(pins, c.Fingerprint)
	}
	return append(pins, c.Fingerprints...)
}

// Fingerprint returns the pinning form of a DER certificate:
// "sha256:" and 64 lowercase hex digits.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseFingerprint parses a certificate's SHA-256 fingerprint in the form
// Fingerprint returns ("sha256:" and 64 hex digits), or as OpenSSL prints
// it (openssl x509 -noout -fingerprint -sha256: "sha256
// Fingerprint=5A:AE:...", 32 colon-separated pairs), with or without the
// prefix; hex of either case.
func ParseFingerprint(s string) ([32]byte, error) {
	var sum [32]byte
	h := strings.TrimSpace(s)
	for _, p := range []string{"sha256:", "sha256 fingerprint="} {
		if len(h) >= len(p) && strings.EqualFold(h[:len(p)], p) {
			h = h[len(p):]
			break
		}
	}
	if len(h) == 3*len(sum)-1 { // AB:CD:...: a colon after every pair
		var b strings.Builder
		for i := 0; i < len(h); i += 3 {
			if i+2 < len(h) && h[i+2] != ':' {
				return sum, badFingerprint(s)
			}
			b.WriteString(h[i : i+2])
		}
		h = b.String()
	}
	if len(h) != 2*len(sum) {
		return sum, badFingerprint(s)
	}
	if _, err := hex.Decode(sum[:], []byte(h)); err != nil {
		return sum, badFingerprint(s)
	}
	return sum, nil
}

func badFingerprint(s string) error {
	return fmt.Errorf(`%s: want "sha256:" and 64 hex digits, as the server logs it (or the AB:CD:... form of openssl x509 -fingerprint -sha256)`, quote.Short(s))
}

// UnmarshalTOML accepts "tls = false" or a [tls] table with known keys.
func (c *ServerTLS) UnmarshalTOML(v any) error {
	return unmarshalTLS(v, &c.Disabled, map[string]any{
		"cert": &c.Cert,
		"key":  &c.Key,
	})
}

// UnmarshalTOML accepts "tls = false" or a [tls] table with known keys;
// fingerprint is a string or a list of them.
func (c *ClientTLS) UnmarshalTOML(v any) error {
	return unmarshalTLS(v, &c.Disabled, map[string]any{
		"fingerprint":          pins{&c.Fingerprint, &c.Fingerprints},
		"ca":                   &c.CA,
		"server_name":          &c.ServerName,
		"insecure_skip_verify": &c.InsecureSkipVerify,
	})
}

// pins is where unmarshalTLS puts a fingerprint: a string in one, a list
// in list.
type pins struct {
	one  *string
	list *[]string
}

// unmarshalTLS decodes a bool-or-table TOML value into the pointers of
// fields, which are *string, *bool or pins.
func unmarshalTLS(v any, disabled *bool, fields map[string]any) error {
	switch v := v.(type) {
	case bool:
		if v {
			return errors.New("tls = true is the default; use a [tls] table to configure it, or tls = false to turn it off")
		}
		*disabled = true
		return nil
	case map[string]any:
		for key, val := range v {
			dst, ok := fields[key]
			if !ok {
				names := slices.Sorted(maps.Keys(fields))
				if s := suggest.Nearest(key, names); s != "" {
					return fmt.Errorf("unknown key %s (did you mean %s?)", quote.Short(key), s)
				}
				return fmt.Errorf("unknown key %s (known: %s)", quote.Short(key), strings.Join(names, ", "))
			}
			switch dst := dst.(type) {
			case *string:
				s, ok := val.(string)
				if !ok {
					return fmt.Errorf("%s: want a string, got %T", key, val)
				}
				*dst = s
			case *bool:
				b, ok := val.(bool)
				if !ok {
					return fmt.Errorf("%s: want true or false, got %T", key, val)
				}
				*dst = b
			case pins:
				if err := dst.set(key, val); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return fmt.Errorf("want a table or false, got %T", v)
}

func (p pins) set(key string, val any) error {
	switch val := val.(type) {
	case string:
		*p.one = val
		return nil
	case []any:
		if len(val) == 0 {
			return fmt.Errorf("%s: an empty list pins nothing; give at least one fingerprint", key)
		}
		list := make([]string, len(val))
		for i, v := range val {
			s, ok := v.(string)
			if !ok {
				return fmt.Errorf("%s[%d]: want a string, got %T", key, i, v)
			}
			list[i] = s
		}
		*p.list = list
		return nil
	}
	return fmt.Errorf("%s: want a string or a list of strings, got %T", key, val)
}

// clientHandshake runs the client side of TLS over c within ctx. It closes c
// when the handshake fails. With cork, TLS runs over a corkConn.
func clientHandshake(ctx context.Context, c net.Conn, cfg *tls.Config, addr string, cork bool) (net.Conn, error) {
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			c.Close()
			return nil, err
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(c, cfg)
	if cork {
		tc = tlsClient(c, cfg)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w with %s: %w", ErrHandshake, addr, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != ALPN {
		c.Close()
		return nil, fmt.Errorf("%w with %s: the server does not speak %s (ALPN %q): is it a warren server?", ErrHandshake, addr, ALPN, p)
	}
	return tc, nil
}

// ExportBinding returns the channel binding of c: 32 bytes exported from
// its TLS session (RFC 5705), unique to this connection and known only to
// its two ends. It completes the handshake first if needed, within c's
// deadline. A plaintext connection has no binding: nil, nil.
func ExportBinding(c net.Conn) ([]byte, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil
	}
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	cs := tc.ConnectionState()
	return cs.ExportKeyingMaterial(bindingLabel, nil, 32)
}
