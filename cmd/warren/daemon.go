package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/config"
	"github.com/warren-tunnel/warren/metrics"
)

// daemonFlags are the flags "warren server" and "warren client" share: the
// config file, which excludes the quick-mode flags; --admin, quick mode's
// admin listener; and the log settings, which override the file's [log].
type daemonFlags struct {
	fs        *flags
	path      *string
	adminAddr *string
	logLevel  *string
	logFormat *string
}

func addDaemonFlags(fs *flags) *daemonFlags {
	return &daemonFlags{
		fs:        fs,
		path:      fs.configFlag("config file"),
		adminAddr: fs.String("admin", "", "serve the admin API (metrics, status, health) on host:port; beyond loopback it needs $WARREN_ADMIN_TOKEN"),
		logLevel:  fs.String("log-level", "info", "debug, info, warn or error"),
		logFormat: fs.String("log-format", "text", "text or json"),
	}
}

// load reads the role's table ("server" or "client") of the config file
// that -c names, and returns its settings; without -c, file is nil and
// the caller builds the config from the quick-mode flags (with quickAdmin
// for the admin listener).
func (d *daemonFlags) load(role string) (file *config.File, t daemonTable, err error) {
	path := *d.path
	if path == "" {
		return nil, daemonTable{}, nil
	}
	if quick := setFlags(d.fs.FlagSet, "c", "config", "log-level", "log-format"); len(quick) > 0 {
		return nil, t, usagef("-c %s and --%s: use either a config file or the quick-mode flags", path, quick[0])
	}
	f, err := config.LoadTable(path, role, os.LookupEnv)
	if err != nil {
		return nil, t, usageError{err}
	}
	t, ok := tableOf(f, role)
	if !ok {
		return nil, t, usagef("%s: no [%s] table", path, role)
	}
	return f, t, nil
}

// daemonTable is what a config file's [server] or [client] table says
// beyond the daemon's own config: its admin listener and its log.
type daemonTable struct {
	admin admin.Config
	log   config.Log
}

// tableOf returns the role's table of f, and whether f has it.
func tableOf(f *config.File, role string) (daemonTable, bool) {
	switch {
	case role == config.TableServer && f.Server != nil:
		return daemonTable{f.Server.Admin, f.Server.Log}, true
	case role == config.TableClient && f.Client != nil:
		return daemonTable{f.Client.Admin, f.Client.Log}, true
	}
	return daemonTable{}, false
}

// logger makes the daemon's logger: the file's [log] (t.log, zero in
// quick mode) under --log-level and --log-format, and logs what loading
// the file warned of.
func (d *daemonFlags) logger(stderr io.Writer, t daemonTable, file *config.File) (*slog.Logger, error) {
	logCfg := config.Log{Level: *d.logLevel, Format: *d.logFormat}
	if file != nil {
		logCfg = overrideLog(d.fs.FlagSet, t.log, *d.logLevel, *d.logFormat)
	}
	if err := logCfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	log := logCfg.Logger(stderr)
	if file != nil {
		logWarnings(log, file)
	}
	return log, nil
}

// adminDaemon is what a daemon with an admin listener needs: a source of
// status, a place for metrics and one for the dashboard's events and
// traffic.
type adminDaemon interface {
	SetMetrics(*metrics.Registry)
	SetRecorder(*admin.Recorder)
	AdminSource() admin.Daemon
}

// serve runs a daemon as its command does: with its admin listener (when
// t.admin is on), reloading the config file on SIGHUP and from the admin
// API through apply (which gets the role's table, checked present and
// with its admin and log unchanged), until SIGINT or SIGTERM. run is the
// daemon's Run.
func (d *daemonFlags) serve(stderr io.Writer, role string, t daemonTable, log *slog.Logger, target adminDaemon, run func(context.Context) error, apply func(*config.File) error) error {
	var rec *admin.Recorder // the admin listener's, once it exists (nil: none)
	reload := reloadFunc(log, *d.path, role, func(e admin.Event) { rec.Event(e) }, func(f *config.File) error {
		nt, ok := tableOf(f, role)
		if !ok {
			return fmt.Errorf("no [%s] table", role)
		}
		if err := restartOnly(role, t, nt); err != nil {
			return err
		}
		return apply(f)
	})
	metricsRole := metrics.RoleServer
	if role == config.TableClient {
		metricsRole = metrics.RoleClient
	}
	adm, err := newAdmin(t.admin, metricsRole, target, reload, log)
	if err != nil {
		return err
	}
	rec = adm.Recorder()
	defer watchSIGHUP(log, *d.path, reload)()
	ctx, stop := signalContext(stderr)
	defer stop()
	return runWithAdmin(ctx, adm, log, run)
}

// restartOnly refuses a reload that changes the admin or log table, which
// the daemon reads only at start.
func restartOnly(role string, old, nu daemonTable) error {
	if old.admin != nu.admin {
		return fmt.Errorf("%s.admin changed: it takes effect only at a restart; nothing was reloaded", role)
	}
	if old.log != nu.log {
		return fmt.Errorf("%s.log changed: it takes effect only at a restart; nothing was reloaded", role)
	}
	return nil
}

// newAdmin prepares the admin listener of d when cfg is enabled: it gives
// d a metrics registry for role and the listener's recorder, and returns
// the listener, not yet bound, whose reload calls reload (nil: none).
// With cfg off it returns nil and d records nothing.
func newAdmin(cfg admin.Config, role string, d adminDaemon, reload func() error, log *slog.Logger) (*admin.Server, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	reg, err := metrics.New(metrics.Config{Role: role, MaxNames: 1024})
	if err != nil {
		return nil, err
	}
	d.SetMetrics(reg)
	adm, err := admin.New(cfg, admin.WithReload(d.AdminSource(), reload), reg, log)
	if err != nil {
		return nil, usageError{err}
	}
	d.SetRecorder(adm.Recorder())
	return adm, nil
}

// runWithAdmin runs the daemon (run) and, unless adm is nil, the admin
// listener beside it on the same context. If the admin listener fails (it
// cannot bind), the daemon is stopped and that error returned. It returns
// once both have returned.
func runWithAdmin(ctx context.Context, adm *admin.Server, log *slog.Logger, run func(context.Context) error) error {
	if adm == nil {
		return run(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	admDone := make(chan error, 1)
	go func() {
		err := adm.Run(ctx)
		if err != nil {
			log.Error("admin listener failed; stopping", "err", err)
			cancel()
		}
		admDone <- err
	}()
	err := run(ctx)
	cancel()
	if aerr := <-admDone; err == nil {
		err = aerr
	}
	return err
}
