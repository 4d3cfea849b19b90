package admin

import "fmt"

// Daemon is what a daemon (server.Server, client.Client) shows the admin
// API and lets it do by itself. Its methods are called concurrently, from
// request goroutines, and must not block for long: a request waits for
// them.
type Daemon interface {
	// Ready reports whether the daemon is ready (server: its tunnel
	// listeners are bound; client: its session is authenticated), and
	// if not, why, in a few words for /readyz. A ready daemon may give a
	// reason too: it is degraded (a server whose cluster registry is
	// unreachable), and /readyz says so with its 200.
	Ready() (ready bool, reason string)
	// Status returns a snapshot of the daemon's state. The admin server
	// sends it as is, only setting Ready and NotReady from Ready.
	Status() Status
	// Disconnect closes every session of the configured client named
	// name; the client will reconnect unless told otherwise. It returns
	// ErrUnknownClient (wrapped or not) when no client has that name,
	// and ErrNotSupported on a client daemon.
	Disconnect(name string) error
}

// Source is the daemon as the admin API sees it: its Daemon side, and the
// reload of its configuration, which only the command that read the config
// file can do (WithReload composes the two).
type Source interface {
	Daemon
	// Reload re-reads the config file and applies it. An invalid file is
	// rejected with an error saying why, and the running config stays.
	Reload() error
}

// WithReload returns d as a Source whose Reload calls reload; nil reload
// (a daemon started without a config file) answers ErrNotSupported.
func WithReload(d Daemon, reload func() error) Source {
	return withReload{d, reload}
}

type withReload struct {
	Daemon
	reload func() error
}

func (w withReload) Reload() error {
	if w.reload == nil {
		return fmt.Errorf("%w: no config file to reload", ErrNotSupported)
	}
	return w.reload()
}
