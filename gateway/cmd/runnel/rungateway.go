package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/runnel-iot/runnel/gateway"
)

// runGateway is `runnel run`: load, then run until the first SIGINT or
// SIGTERM, which starts a graceful shutdown.
func runGateway(ctx context.Context, args []string, stderr io.Writer) int {
	path, code, ok := parseFlags("run", args, stderr)
	if !ok {
		return code
	}
	cfg, err := gateway.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	logger := gateway.NewLogger(cfg.Log, stderr)
	g, err := gateway.New(cfg, logger)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { watchSignals(done, sigs, cancel, logger, os.Exit) })
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	wg.Go(func() { watchReload(ctx, done, hups, path, g, logger) })

	err = g.Run(ctx)
	close(done)
	wg.Wait()
	if err != nil {
		logger.Error("gateway failed", "err", err)
		return 1
	}
	return 0
}

// watchReload reloads the alert rules on SIGHUP: the config file (and its
// rules file) is loaded again, with the environment, exactly as at start;
// a valid rule set replaces the old one, keeping the state of unchanged
// rules; an invalid config is rejected with its precise errors and the
// old rules stay in force. Only the alerts section is reloaded; other
// changes need a restart (logged).
func watchReload(ctx context.Context, done <-chan struct{}, hups <-chan os.Signal, path string, g *gateway.Gateway, logger *slog.Logger) {
	for {
		select {
		case <-hups:
		case <-done:
			return
		}
		cfg, err := gateway.Load(path)
		if err != nil {
			logger.Error("reload rejected: config invalid; the old alert rules stay in force", "config", path, "err", err)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = g.ReloadAlerts(rctx, cfg.Alerts)
		cancel()
		if err != nil {
			logger.Error("reload rejected; the old alert rules stay in force", "err", err)
			continue
		}
		logger.Info("alert rules reloaded", "rules", len(cfg.Alerts.Rules), "note", "only the alerts section is reloaded; other changes need a restart")
	}
}

// watchSignals turns the first signal into a graceful shutdown (cancel) and
// a second one, arriving before the shutdown is done, into exit(1) at once:
// the operator's way out of a shutdown that hangs. It returns after exit,
// or when done is closed.
func watchSignals(done <-chan struct{}, sigs <-chan os.Signal, cancel func(), logger *slog.Logger, exit func(code int)) {
	select {
	case s := <-sigs:
		logger.Info("shutting down", "signal", s.String())
		cancel()
	case <-done:
		return
	}
	select {
	case s := <-sigs:
		logger.Error("second signal during shutdown, exiting now", "signal", s.String())
		exit(1)
	case <-done:
	}
}
