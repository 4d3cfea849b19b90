package main

import (
	"context"
	"log/slog"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/metrics"
)

// adminDaemon is what a daemon with an admin listener needs: a source of
// status, a place for metrics and one for the dashboard's events and
// traffic.
type adminDaemon interface {
	SetMetrics(*metrics.Registry)
	SetRecorder(*admin.Recorder)
	AdminSource() admin.Source
}

// newAdmin prepares the admin listener of d when cfg is enabled: it gives
// d a metrics registry for role and the listener's recorder, and returns
// the listener, not yet bound. With cfg off it returns nil and d records
// nothing.
func newAdmin(cfg admin.Config, role string, d adminDaemon, log *slog.Logger) (*admin.Server, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	reg, err := metrics.New(metrics.Config{Role: role, MaxNames: 1024})
	if err != nil {
		return nil, err
	}
	d.SetMetrics(reg)
	adm, err := admin.New(cfg, d.AdminSource(), reg, log)
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
