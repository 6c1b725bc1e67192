// Command runnel is the Runnel edge telemetry gateway.
//
//	runnel run [-config FILE]   run the gateway until SIGINT or SIGTERM
//	runnel check -config FILE   load and validate a config, as run would
//	runnel version              print the version
//	runnel init [-o FILE]       write a config with generated credentials
//
// Exit codes: 0 clean, 1 runtime error (or a second signal during
// shutdown), 2 usage or config error. All logic lives in package gateway;
// this command picks the subcommand, handles signals and maps errors to
// exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/runnel-iot/runnel/gateway"
)

const usage = `usage: runnel <command> [flags]

commands:
  run [-config FILE]   run the gateway; without -config it uses the built-in
                       defaults (see configs/gateway.yaml) and RUNNEL_* variables
  check -config FILE   load and validate FILE and the RUNNEL_* variables exactly
                       as run does; exit 2 if anything is invalid (a file with
                       a top-level fleet: key is checked as a fleet config)
  fleet -config FILE   run a fleet service instance (see configs/fleet.yaml)
  version              print version, commit, Go version and platform
  passwd               read a password on standard input and print its bcrypt
                       hash, for mqtt.users[].password_hash
  init [-o FILE] [-device NAME]
                       write a ready-to-use config (mode 0600, never over an
                       existing file) with a generated admin and device MQTT
                       account, an HTTP token and a write token; the secrets
                       are printed once

exit codes: 0 clean, 1 runtime error, 2 usage or config error
`

func main() {
	// Heap profiling samples an allocation per 512 KiB and keeps a 1.4 MiB
	// table of stacks from the first sample on; the gateway turns it back
	// on with http.pprof.
	runtime.MemProfileRate = 0
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one runnel command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runGateway(ctx, args[1:], stderr)
	case "check":
		return check(args[1:], stdout, stderr)
	case "fleet":
		return runFleet(ctx, args[1:], stderr)
	case "version":
		fmt.Fprintln(stdout, gateway.VersionString())
		return 0
	case "passwd":
		return passwd(os.Stdin, stdout, stderr)
	case "init":
		return initCmd(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "runnel: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// check loads the config through the same path as run and reports it.
func check(args []string, stdout, stderr io.Writer) int {
	path, code, ok := parseFlags("check", args, stderr)
	if !ok {
		return code
	}
	if path == "" {
		fmt.Fprint(stderr, "runnel check: -config FILE is required\n\n"+usage)
		return 2
	}
	if isFleetConfig(path) {
		return checkFleet(path, stdout, stderr)
	}
	cfg, err := gateway.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	fmt.Fprintf(stdout, "%s: ok\ngateway.id: %s\n", path, cfg.Gateway.ID)
	return 0
}

// parseFlags parses the flags of a subcommand. ok is false when the caller
// should exit with code: 0 after -h, 2 after a usage error.
func parseFlags(name string, args []string, stderr io.Writer) (config string, code int, ok bool) {
	fs := flag.NewFlagSet("runnel "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML); see configs/gateway.yaml")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", 0, false
		}
		return "", 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "runnel %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", 2, false
	}
	return *path, 0, true
}
