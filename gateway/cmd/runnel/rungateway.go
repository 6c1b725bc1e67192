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

	err = g.Run(ctx)
	close(done)
	wg.Wait()
	if err != nil {
		logger.Error("gateway failed", "err", err)
		return 1
	}
	return 0
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
