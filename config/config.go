// Package config reads warren's TOML file: a [server] table, a [client]
// table, or both. Unknown keys are errors, defaults fill what the file
// leaves out, ${NAME} in string values is replaced from the environment,
// tokens are read from token_file / token_env, and every error names the
// file and the key.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"

	"github.com/BurntSushi/toml"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/client"
	"github.com/warren-tunnel/warren/internal/quote"
	"github.com/warren-tunnel/warren/internal/token"
	"github.com/warren-tunnel/warren/server"
)

// File is a parsed config file. Server or Client is nil when the file has
// no such table, or it was not asked for (LoadTable).
type File struct {
	Path   string
	Server *Server
	Client *Client
	// Warnings are what the daemon should log once it has a logger: a
	// token_file that others may read, say. They name the file and key.
	Warnings []string
}

// Tables of a config file.
const (
	TableServer = "server"
	TableClient = "client"
)

// Server is the [server] table with its [server.log] and [server.admin]
// sub-tables.
type Server struct {
	server.Config
	Log   Log          `toml:"log"`
	Admin admin.Config `toml:"admin"`
}

// Client is the [client] table with its [client.log] and [client.admin]
// sub-tables.
type Client struct {
	client.Config
	Log   Log          `toml:"log"`
	Admin admin.Config `toml:"admin"`
}

// Log is the [server.log] / [client.log] table.
type Log struct {
	// Level is "debug", "info", "warn" or "error".
	Level string `toml:"level"`
	// Format is "text" or "json".
	Format string `toml:"format"`
}

// DefaultLog logs at info, as text.
func DefaultLog() Log { return Log{Level: "info", Format: "text"} }

// Sentinel errors.
var (
	// ErrNoSection means the file lacks the table the command needs.
	ErrNoSection = errors.New("section missing")
)

// Load reads and checks the file at path, every table it has. lookupEnv
// (os.LookupEnv in the daemon) resolves token_env and ${NAME} references in
// string values (see expand.go and docs/deploy.md).
func Load(path string, lookupEnv func(string) (string, bool)) (*File, error) {
	return LoadTable(path, "", lookupEnv)
}

// LoadTable is Load for the one table a daemon runs, "server" or "client"
// ("" for every table): the other table is not decoded, expanded,
// resolved or validated, so a file holding both tables runs either side
// with only that side's secrets at hand.
func LoadTable(path, table string, lookupEnv func(string) (string, bool)) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseTable(path, data, table, lookupEnv)
}

// Parse is Load for data already read; path names it in errors.
func Parse(path string, data []byte, lookupEnv func(string) (string, bool)) (*File, error) {
	return ParseTable(path, data, "", lookupEnv)
}

// ParseTable is LoadTable for data already read.
func ParseTable(path string, data []byte, table string, lookupEnv func(string) (string, bool)) (*File, error) {
	if table != "" && table != TableServer && table != TableClient {
		return nil, fmt.Errorf("config: table %s: want %q or %q", quote.Short(table), TableServer, TableClient)
	}
	raw := struct {
		Server Server `toml:"server"`
		Client Client `toml:"client"`
	}{
		Server: Server{Config: server.DefaultConfig(), Log: DefaultLog(), Admin: admin.DefaultConfig()},
		Client: Client{Config: client.DefaultConfig(), Log: DefaultLog(), Admin: admin.DefaultConfig()},
	}
	// The decoder fills slices in place: a default list would be merged
	// with the file's entry by entry. Lists start empty and get their
	// default only when the file has none.
	defaultListen := raw.Server.Listen
	raw.Server.Listen = nil

	// Each table is decoded in two steps: as a generic tree whose strings
	// are expanded in place (expand.go), then into its struct, so ${NAME}
	// works in any string value (durations and port ranges too) without
	// ever putting a variable's value through the TOML parser, and errors
	// keep their line numbers. The Primitive holds the parser's own maps
	// and slices, and decoding it into an empty interface hands out those
	// same maps and slices, so the edits reach the second decode.
	var tables struct {
		Server toml.Primitive `toml:"server"`
		Client toml.Primitive `toml:"client"`
	}
	md, err := toml.Decode(string(data), &tables)
	if err != nil {
		return nil, decodeError(path, err)
	}
	// run reports whether the table name is defined and asked for.
	run := func(name string) bool { return md.IsDefined(name) && (table == "" || table == name) }
	var expandErrs []pathError
	for _, t := range []struct {
		name string
		prim toml.Primitive
	}{{TableServer, tables.Server}, {TableClient, tables.Client}} {
		if !run(t.name) {
			continue
		}
		var tree any
		if err := md.PrimitiveDecode(t.prim, &tree); err != nil {
			return nil, decodeError(path, err)
		}
		expandErrs = append(expandErrs, expandTree(tree, t.name, lookupEnv)...)
	}
	if len(expandErrs) > 0 {
		return nil, formatExpandErrors(path, data, expandErrs)
	}
	if run(TableServer) {
		if err := md.PrimitiveDecode(tables.Server, &raw.Server); err != nil {
			return nil, decodeError(path, err)
		}
	}
	if run(TableClient) {
		if err := md.PrimitiveDecode(tables.Client, &raw.Client); err != nil {
			return nil, decodeError(path, err)
		}
	}
	if err := unknownKeys(path, md.Undecoded(), table); err != nil {
		return nil, err
	}
	f := &File{Path: path}
	if run(TableServer) {
		if !md.IsDefined("server", "listen") {
			raw.Server.Listen = defaultListen
		}
		for i, c := range raw.Server.Clients {
			f.warnTokenFile(fmt.Sprintf("server.clients[%d] (%s).token_file", i, quote.Bare(c.Name)), c.TokenFile)
		}
		f.warnTokenFile("server.admin.token_file", raw.Server.Admin.TokenFile)
		if err := raw.Server.ResolveTokens(lookupEnv); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if err := raw.Server.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if err := raw.Server.Log.Validate(); err != nil {
			return nil, fmt.Errorf("%s: server.%w", path, err)
		}
		if err := raw.Server.Admin.ResolveToken(lookupEnv); err != nil {
			return nil, fmt.Errorf("%s: server.%w", path, err)
		}
		if err := raw.Server.Admin.Validate(); err != nil {
			return nil, fmt.Errorf("%s: server.%w", path, err)
		}
		f.Server = &raw.Server
	}
	if run(TableClient) {
		f.warnTokenFile("client.token_file", raw.Client.TokenFile)
		f.warnTokenFile("client.admin.token_file", raw.Client.Admin.TokenFile)
		if err := raw.Client.ResolveToken(lookupEnv); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if err := raw.Client.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if err := raw.Client.Log.Validate(); err != nil {
			return nil, fmt.Errorf("%s: client.%w", path, err)
		}
		if err := raw.Client.Admin.ResolveToken(lookupEnv); err != nil {
			return nil, fmt.Errorf("%s: client.%w", path, err)
		}
		if err := raw.Client.Admin.Validate(); err != nil {
			return nil, fmt.Errorf("%s: client.%w", path, err)
		}
		f.Client = &raw.Client
	}
	if !md.IsDefined(TableServer) && !md.IsDefined(TableClient) {
		return nil, fmt.Errorf("%s: neither a [server] nor a [client] table: %w", path, ErrNoSection)
	}
	return f, nil
}

// warnTokenFile adds a warning when the token file at path (of key) may be
// read by others than its owner, as ssh does for keys.
func (f *File) warnTokenFile(key, path string) {
	if path == "" {
		return
	}
	if mode, loose := token.LooseMode(path); loose {
		f.Warnings = append(f.Warnings, fmt.Sprintf("%s: %s: %s is readable by its group or others (mode %04o); chmod 600 it (or 400)",
			f.Path, key, quote.Bare(path), mode))
	}
}

// decodeError names the file, and the line and key when the decoder knows
// them. The decoder quotes what it found instead of a value, which may be
// an unquoted token: that is left out, since errors end up in logs.
func decodeError(path string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := foundText.ReplaceAllString(pe.Message, `found "…"`)
		msg = quotedText.ReplaceAllStringFunc(msg, shortQuoted)
		if pe.LastKey != "" {
			return fmt.Errorf("%s:%d: %s: %s", path, pe.Position.Line, quote.Bare(pe.LastKey), msg)
		}
		return fmt.Errorf("%s:%d: %s", path, pe.Position.Line, msg)
	}
	return fmt.Errorf("%s: %w", path, err)
}

// foundText is what the TOML decoder quotes as found instead of a value.
var foundText = regexp.MustCompile(`found "[^"\n]*"`)

// quotedText is a value the TOML decoder quotes in its message (an
// invalid duration, say), which may be of any length.
var quotedText = regexp.MustCompile(`"(?:[^"\\\n]|\\.)*"`)

// shortQuoted requotes a quoted value with quote.Short.
func shortQuoted(q string) string {
	if len(q) <= quote.Max {
		return q
	}
	s, err := strconv.Unquote(q)
	if err != nil {
		s = q[1 : len(q)-1]
	}
	return quote.Short(s)
}

var levels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// Validate checks level and format.
func (l Log) Validate() error {
	if _, ok := levels[l.Level]; !ok {
		return fmt.Errorf(`log.level: %s is not one of "debug", "info", "warn", "error"`, quote.Short(l.Level))
	}
	if l.Format != "text" && l.Format != "json" {
		return fmt.Errorf(`log.format: %s is not "text" or "json"`, quote.Short(l.Format))
	}
	return nil
}

// Logger returns a logger writing to w as l says.
func (l Log) Logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: levels[l.Level]}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
