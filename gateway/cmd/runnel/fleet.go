package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/runnel-iot/runnel/fleet"
)

// runFleet runs one fleet service instance until SIGINT or SIGTERM.
func runFleet(ctx context.Context, args []string, stderr io.Writer) int {
	path, code, ok := parseFlags("fleet", args, stderr)
	if !ok {
		return code
	}
	cfg, err := fleet.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	log.Info("fleet starting", "instance", cfg.Fleet.Instance, "brokers", cfg.Fleet.Brokers, "http", cfg.Fleet.HTTP)
	if err := fleet.New(cfg, log).Run(ctx); err != nil {
		log.Error("fleet stopped", "err", err)
		return 1
	}
	return 0
}

// isFleetConfig reports whether the file at path has a top-level fleet: key.
func isFleetConfig(path string) bool {
	data, err := os.ReadFile(path)
	return err == nil && fleet.IsConfig(data)
}

func checkFleet(path string, stdout, stderr io.Writer) int {
	cfg, err := fleet.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	fmt.Fprintf(stdout, "%s: ok (fleet)\nfleet.group: %s\n", path, cfg.Fleet.Group)
	return 0
}
