package main

import (
	"context"
	"log/slog"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/metrics"
)

// newRegistry returns a metrics registry for role when the admin listener
// is on, else nil (the daemon records nothing).
func newRegistry(cfg admin.Config, role string) (*metrics.Registry, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	return metrics.New(metrics.Config{Role: role, MaxNames: 1024})
}

// runWithAdmin runs the daemon (run) and, when cfg is enabled, the admin
// listener beside it on the same context. If the admin listener fails (it
// cannot bind), the daemon is stopped and that error returned. It returns
// once both have returned.
func runWithAdmin(ctx context.Context, cfg admin.Config, src admin.Source, reg *metrics.Registry, log *slog.Logger, run func(context.Context) error) error {
	if !cfg.Enabled() {
		return run(ctx)
	}
	adm, err := admin.New(cfg, src, reg, log)
	if err != nil {
		return usageError{err}
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
	err = run(ctx)
	cancel()
	if aerr := <-admDone; err == nil {
		err = aerr
	}
	return err
}
