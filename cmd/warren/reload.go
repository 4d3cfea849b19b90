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

// reloadFunc returns the daemon's reload, which SIGHUP and the admin API
// call: read the role's table of the config file at path again and apply
// it. A failed reload is logged with its reason and the running
// configuration stays. Each reload is an event for the dashboard
// (record). Without a config file (path "", quick mode) it returns nil:
// there is nothing to reload.
func reloadFunc(log *slog.Logger, path, role string, record func(admin.Event), apply func(*config.File) error) func() error {
	if path == "" {
		return nil
	}
	return func() error {
		err := func() error {
			f, err := config.LoadTable(path, role, os.LookupEnv)
			if err != nil {
				return err
			}
			logWarnings(log, f)
			if err := apply(f); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			return nil
		}()
		if err != nil {
			log.Error("reload rejected; the running configuration stays", "file", path, "err", err)
			record(admin.Event{Kind: admin.EventReload, Code: "failed", Reason: err.Error() + "; the running configuration stays"})
		} else {
			record(admin.Event{Kind: admin.EventReload, Code: "ok", Reason: "configuration reloaded from " + path})
		}
		return err
	}
}

// watchSIGHUP calls reload at every SIGHUP; with reload nil (no config
// file) SIGHUP is ignored with a warning rather than ending the daemon. It
// returns a function that stops watching.
func watchSIGHUP(log *slog.Logger, path string, reload func() error) (stop func()) {
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
			if reload == nil {
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
