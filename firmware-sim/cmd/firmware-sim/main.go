// Command firmware-sim simulates devices for the Runnel gateway and hosts
// the dev-only helpers of `make demo`. All logic lives in package
// firmwaresim and the packages built on it (demo, bench); this main only wires
// their subcommands, signals and the exit code.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/runnel-iot/runnel/bench"
	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
	"github.com/runnel-iot/runnel/firmware-sim/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal the run drains and reports; restoring the
		// default handling lets a second signal kill it at once.
		<-ctx.Done()
		stop()
	}()
	code := firmwaresim.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, demo.Command, demo.FleetCommand, bench.Command, bench.BareDecoderCommand, bench.ProbeCommand)
	stop()
	os.Exit(code)
}
