// Command firmware-sim simulates devices for the Runnel gateway and hosts
// the dev-only helpers of `make demo`. All logic lives in package
// firmwaresim; this main only wires signals and the exit code.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal the run drains and reports; restoring the
		// default handling lets a second signal kill it at once.
		<-ctx.Done()
		stop()
	}()
	code := firmwaresim.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
