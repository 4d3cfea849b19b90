package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/config"
)

// reloader is what a daemon reloads its configuration into.
type reloader interface {
	SetReloader(func() error)
}

// watchReload makes SIGHUP, and the admin API's reload, read the table of
// the config file at path again and apply it. A failed reload is logged with its
// reason and the running configuration stays. Without a config file (path
// "") SIGHUP is ignored with a warning rather than ending the daemon. It
// returns a function that stops watching. Each reload is an event in rec
// (nil: none), for the dashboard.
func watchReload(d reloader, log *slog.Logger, rec *admin.Recorder, path, table string, apply func(*config.File) error) (stop func()) {
	var load func() error
	if path != "" {
		load = func() error {
			f, err := config.LoadTable(path, table, os.LookupEnv)
			if err != nil {
				return err
			}
			logWarnings(log, f)
			if err := apply(f); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			return nil
		}
	}
	reload := func() error {
		err := load()
		if err != nil {
			log.Error("reload rejected; the running configuration stays", "file", path, "err", err)
			rec.Event(admin.Event{Kind: admin.EventReload, Code: "failed", Reason: err.Error() + "; the running configuration stays"})
		} else {
			rec.Event(admin.Event{Kind: admin.EventReload, Code: "ok", Reason: "configuration reloaded from " + path})
		}
		return err
	}
	if load != nil {
		d.SetReloader(reload)
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			if load == nil {
				log.Warn("SIGHUP ignored: no config file to reload (quick mode)")
				continue
			}
			log.Info("SIGHUP: reloading", "file", path)
			reload()
		}
	}()
	return func() {
		signal.Stop(ch)
		cancel()
		<-done
	}
}

// logWarnings logs what the config loader found worth a warning.
func logWarnings(log *slog.Logger, f *config.File) {
	for _, w := range f.Warnings {
		log.Warn(w)
	}
}

// restartOnly refuses a reload that changes the admin or log table, which
// the daemon reads only at start.
func restartOnly(table string, adm, newAdm admin.Config, log, newLog config.Log) error {
	if adm != newAdm {
		return fmt.Errorf("%s.admin changed: it takes effect only at a restart; nothing was reloaded", table)
	}
	if log != newLog {
		return fmt.Errorf("%s.log changed: it takes effect only at a restart; nothing was reloaded", table)
	}
	return nil
}
