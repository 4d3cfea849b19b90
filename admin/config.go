package admin

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/internal/token"
)

// Config is the [server.admin] / [client.admin] table. Errors of Validate
// and ResolveToken name keys as "admin.KEY"; the config loader prefixes
// "server." or "client.".
type Config struct {
	// Address is host:port to serve the admin API on; empty turns the
	// admin listener off (the default). Port 0 picks a free port (tests).
	Address string `toml:"address"`
	// Token, TokenFile or TokenEnv: at most one. Required when Address is
	// not loopback (127.0.0.0/8, ::1, localhost). When set, every endpoint
	// but /healthz needs "Authorization: Bearer TOKEN". The config loader
	// reads the file or environment variable into Token (ResolveToken).
	Token     string `toml:"token"`
	TokenFile string `toml:"token_file"`
	TokenEnv  string `toml:"token_env"`
}

// DefaultConfig returns the admin listener off.
func DefaultConfig() Config { return Config{} }

// Enabled reports whether an admin listener is configured.
func (c Config) Enabled() bool { return c.Address != "" }

// ResolveToken reads token_file or token_env into Token. lookupEnv is
// os.LookupEnv in the daemon; packages never read the environment
// themselves. Without token_file and token_env it does nothing.
func (c *Config) ResolveToken(lookupEnv func(string) (string, bool)) error {
	if c.TokenFile == "" && c.TokenEnv == "" {
		return nil
	}
	tok, err := token.Resolve("token", c.Token, c.TokenFile, c.TokenEnv, lookupEnv)
	if err != nil {
		return fmt.Errorf("admin.%w", err)
	}
	c.Token, c.TokenFile, c.TokenEnv = tok, "", ""
	return nil
}

// Validate reports the first invalid setting, naming its key. A token
// given by token_file or token_env counts as set; New needs it resolved.
func (c Config) Validate() error {
	set := 0
	for _, s := range []string{c.Token, c.TokenFile, c.TokenEnv} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		return fmt.Errorf("admin.token, admin.token_file, admin.token_env: set only one")
	}
	if c.Token != "" {
		if err := token.Check(c.Token); err != nil {
			return fmt.Errorf("admin.%w", err)
		}
	}
	if !c.Enabled() {
		return nil
	}
	host, port, err := net.SplitHostPort(c.Address)
	if err != nil {
		return fmt.Errorf("admin.address: %s: want host:port, e.g. 127.0.0.1:7001", quote.Short(c.Address))
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("admin.address: %s: port %s is not a number from 0 to 65535", quote.Short(c.Address), quote.Short(port))
	}
	if set == 0 && !IsLoopback(host) {
		return fmt.Errorf("admin.token: required because admin.address %s is not loopback; set admin.token, admin.token_file or admin.token_env (or bind 127.0.0.1)", quote.Short(c.Address))
	}
	return nil
}

// IsLoopback reports whether host (of a host:port) reaches only this
// machine: "localhost", an address in 127.0.0.0/8 or ::1. An empty host,
// 0.0.0.0, :: and every other name bind or resolve beyond it.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if err != nil {
		return false
	}
	return a.Unmap().IsLoopback()
}
