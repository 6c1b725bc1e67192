package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
)

// `firmware-sim bench` (make bench) measures the built binaries end to
// end, as an operator would run them: each phase starts the gateway as a
// child process with a fresh data dir on free loopback ports, drives it
// with a load of its own (bench_load.go), and reads the child's CPU time
// and peak RSS from /proc and its counters from /metrics. The MQTT phases
// repeat the same load against a bare mochi broker, also a child process,
// so the comparison is like for like; the ratio is what the issues' targets
// are about. bench/README.md explains every figure.
//
// Guarantees: every child is stopped (SIGTERM, then SIGKILL after 40 s)
// before RunBench returns, also on ctx's end; every goroutine it starts
// has ended; a child that dies fails the run rather than yielding
// figures. What it does not do: isolate the load generator from the
// measured process. They share the machine's CPUs, and the report says so.

// BenchOptions configure RunBench (`firmware-sim bench`, `make bench`).
// The zero value of a field means its default.
type BenchOptions struct {
	// Runnel is the gateway binary, started as a child process once per
	// phase (default bin/runnel).
	Runnel string
	// FirmwareSim is the binary run as `<FirmwareSim> bare-broker` for the
	// baseline (default: this executable). The baseline is a child process
	// like the gateway, so both are measured the same way from /proc.
	FirmwareSim string
	// Out is where the JSON results go ("" : not written).
	Out string
	// PhaseDuration is how long each phase sustains its load (default
	// 20s); a short warm-up before it is not measured.
	PhaseDuration time.Duration
	// Phases selects phases by name (see BenchPhases); empty: all.
	Phases []string
	// WorkDir holds a fresh data dir per phase and target; empty: a
	// temporary dir, removed at the end unless Keep.
	WorkDir string
	Keep    bool
	// The MQTT load: Publishers connections, each with at most MaxInFlight
	// unacknowledged QoS 1 messages, spreading Devices device ids over
	// their messages (defaults 4, 1000, 1000).
	Publishers, MaxInFlight, Devices int
	// MinProbes is the fewest samples each latency percentile is taken
	// over (default 1000): the probes go on past the span until there
	// are that many, at most a minute longer.
	MinProbes int
	// GatewayEnv are extra RUNNEL_* settings (KEY=VALUE) given to every
	// gateway child after the bench's own, for configuration experiments;
	// the published figures use none.
	GatewayEnv []string
	// Telegraf and Mosquitto are the binaries of the telegraf phase (the
	// peer the issue compares against); without both it is skipped.
	Telegraf, Mosquitto string
	// ProfileDir, when set, receives a CPU profile of each gateway over
	// each measured span and a heap profile at its end
	// (<phase>.cpu.pprof, <phase>.heap.pprof), the gateway's pprof
	// endpoints on for it. The profiler costs a little CPU: profiled
	// figures are for finding what limits one, not for the table.
	ProfileDir string
	// Log gets progress lines (nil: none).
	Log io.Writer
}

// BenchResult is the JSON document `make bench` writes.
type BenchResult struct {
	Machine BenchMachine   `json:"machine"`
	Date    string         `json:"date"` // RFC 3339, UTC, at the start
	Options map[string]any `json:"options"`
	Phases  []PhaseResult  `json:"phases"`
	Targets []TargetResult `json:"targets"`
	// Error is why the run stopped early (a phase failed); the phases
	// before it are complete.
	Error string `json:"error,omitempty"`
}

// BenchMachine describes where the figures were taken.
type BenchMachine struct {
	CPUs      int    `json:"cpus"`
	Model     string `json:"model"` // /proc/cpuinfo "model name"
	GoVersion string `json:"go_version"`
	Note      string `json:"note"`
}

// PhaseResult is one phase: the gateway's figures, the bare broker's for
// the same load where there is a baseline, and figure / baseline.
type PhaseResult struct {
	Name      string             `json:"name"`
	DurationS float64            `json:"duration_s"` // the measured span
	Figures   map[string]float64 `json:"figures"`
	Baseline  map[string]float64 `json:"baseline"`
	Ratio     map[string]float64 `json:"ratio"`
	Note      string             `json:"note,omitempty"`
	// Skipped says the phase did not run (the telegraf phase without
	// its binaries); Note says why.
	Skipped bool `json:"skipped,omitempty"`

	order []string // figure names in the order the table shows them
}

// TargetResult is one target of the issues, judged on this run.
type TargetResult struct {
	Name   string  `json:"name"`
	Target string  `json:"target"`
	Value  float64 `json:"value"`
	Met    bool    `json:"met"`

	phase, figure string // where the table shows it
}

// A benchPhase is run with a fresh gateway (and baseline) of its own.
type benchPhase struct {
	name, desc string
	run        func(b *bench, ctx context.Context, r *PhaseResult) error
}

// benchPhases in the order they run.
var benchPhases = []benchPhase{
	{"mqtt-qos1", "MQTT QoS 1: acknowledged readings/s, CPU and RSS; baseline: bare mochi", (*bench).phaseQoS1},
	{"mqtt-qos0", "MQTT QoS 0: readings/s stored; baseline: bare mochi", (*bench).phaseQoS0},
	{"udp", "UDP line protocol, 100 lines per datagram: points/s stored; baseline: a decode-only receiver", (*bench).phaseUDP},
	{"http", "HTTP POST /api/v2/write, 1000 lines per request: points/s; baseline: a decode-only handler", (*bench).phaseHTTP},
	{"query-latency", "ingest-to-queryable latency of a probe series under the QoS 1 load", (*bench).phaseQueryLatency},
	{"query-latency-paced", "ingest-to-queryable latency of a probe series under the QoS 1 load paced at half the saturating rate", (*bench).phaseQueryLatencyPaced},
	{"alert-latency", "publish-to-alert latency of a probe rule under the QoS 1 load", (*bench).phaseAlertLatency},
	{"forward", "summaries/s acknowledged by Kafka (kfake), 10000 series, 10s windows", (*bench).phaseForward},
	{"telegraf", "the mixed workload through mosquitto and Telegraf (with -telegraf and -mosquitto); CPU per message consumed", (*bench).phaseTelegraf},
	{"mixed", "the issue's workload: QoS 1, 10s windows, forwarding on; CPU, RSS, nothing missing; baseline: bare mochi", (*bench).phaseMixed},
}

// BenchPhases returns the phase names, in run order.
func BenchPhases() []string {
	names := make([]string, len(benchPhases))
	for i, p := range benchPhases {
		names[i] = p.name
	}
	return names
}

// orDefault sets *p to def when it holds the zero value.
func orDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

func (o BenchOptions) withDefaults() BenchOptions {
	orDefault(&o.Runnel, "bin/runnel")
	orDefault(&o.PhaseDuration, 20*time.Second)
	orDefault(&o.Publishers, 4)
	orDefault(&o.MaxInFlight, 1000)
	orDefault(&o.Devices, 1000)
	orDefault(&o.MinProbes, minProbes)
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}

// Validate reports every invalid option at once (errors.Join of
// *firmwaresim.OptionError, named after the CLI flags). Defaults are applied first.
func (o BenchOptions) Validate() error {
	o = o.withDefaults()
	var errs []error
	bad := func(opt string, v any, format string, args ...any) {
		errs = append(errs, &firmwaresim.OptionError{Option: opt, Value: v, Msg: fmt.Sprintf(format, args...)})
	}
	if o.PhaseDuration < 500*time.Millisecond || o.PhaseDuration > 10*time.Minute {
		bad("phase-duration", o.PhaseDuration, "out of range 500ms to 10m (make bench must end within 10 minutes)")
	}
	for _, p := range o.Phases {
		if !slices.Contains(BenchPhases(), p) {
			bad("phases", p, "unknown phase; want some of %s", strings.Join(BenchPhases(), ","))
		}
	}
	if o.Publishers < 1 || o.Publishers > 64 {
		bad("publishers", o.Publishers, "out of range 1 to 64 (each is an MQTT connection)")
	}
	if o.MaxInFlight < 1 || o.MaxInFlight > 1000 {
		bad("max-inflight", o.MaxInFlight, "out of range 1 to 1000 (the gateway's receive maximum is 1024)")
	}
	for _, kv := range o.GatewayEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || !strings.HasPrefix(k, "RUNNEL_") {
			bad("gateway-env", kv, "want RUNNEL_<KEY>=<value>")
		}
	}
	if o.Devices < o.Publishers || o.Devices > 100_000 {
		bad("devices", o.Devices, "out of range %d (one per publisher) to 100000", o.Publishers)
	}
	return errors.Join(errs...)
}

// RunBench runs the selected phases one after the other, each against a
// fresh gateway started from o.Runnel (and, for the MQTT phases, a fresh
// bare broker), prints the table to out and writes the JSON results to
// o.Out. It blocks for about (PhaseDuration + a few seconds) per phase and
// target. When ctx ends, the running phase stops its children and RunBench
// returns ctx's error with the phases finished so far. A phase that fails
// (a child that does not start or dies) fails the run: figures of a
// broken gateway are not figures.
func RunBench(ctx context.Context, o BenchOptions, out io.Writer) (BenchResult, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return BenchResult{}, err
	}
	b, err := newBench(o)
	if err != nil {
		return BenchResult{}, err
	}
	var runErr error
	defer func() { b.close(runErr != nil) }()
	res := BenchResult{Machine: machineInfo(), Date: time.Now().UTC().Format(time.RFC3339), Options: b.optionsJSON()}
	if onTmpfs(b.dir) {
		res.Machine.Note += "; the data dirs were on tmpfs (fsync is free there: the acknowledged paths look faster than on a disk)"
		b.logf("warning: work dir %s is on tmpfs; fsync costs nothing there (set -work-dir to a disk)", b.dir)
	}
	for _, p := range benchPhases {
		if len(o.Phases) > 0 && !slices.Contains(o.Phases, p.name) {
			continue
		}
		b.logf("phase %s: %s", p.name, p.desc)
		r := PhaseResult{Name: p.name, Figures: map[string]float64{}, Baseline: map[string]float64{}, Ratio: map[string]float64{}}
		start := time.Now()
		if err := p.run(b, ctx, &r); err != nil {
			runErr = fmt.Errorf("phase %s: %w", p.name, err)
			res.Error = runErr.Error()
			break
		}
		r.computeRatios()
		res.Phases = append(res.Phases, r)
		b.logf("phase %s done in %.1fs", p.name, time.Since(start).Seconds())
	}
	// What finished is printed and written even after a failure.
	res.Targets = judgeTargets(res.Phases)
	printTable(out, &res)
	if o.Out != "" {
		if err := writeResults(o.Out, &res); err != nil {
			return res, errors.Join(runErr, err)
		}
		fmt.Fprintf(out, "\nresults: %s\n", o.Out)
	}
	return res, runErr
}

func (b *bench) optionsJSON() map[string]any {
	return map[string]any{
		"phase_duration_s": b.o.PhaseDuration.Seconds(),
		"publishers":       b.o.Publishers,
		"max_inflight":     b.o.MaxInFlight,
		"gateway_env":      b.o.GatewayEnv,
		"profile_dir":      b.o.ProfileDir,
		"devices":          b.o.Devices,
		"work_dir":         b.dir,
	}
}

// set records a figure of the gateway; setBase one of the baseline. A
// figure that could not be computed (NaN: nothing was acknowledged) is
// left out, as JSON has no NaN; the table shows "-".
func (r *PhaseResult) set(name string, v float64) { r.put(r.Figures, name, v) }

func (r *PhaseResult) setBase(name string, v float64) { r.put(r.Baseline, name, v) }

func (r *PhaseResult) put(m map[string]float64, name string, v float64) {
	if !slices.Contains(r.order, name) {
		r.order = append(r.order, name)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		delete(m, name)
		return
	}
	m[name] = v
}

// computeRatios divides each figure that has a baseline by it.
func (r *PhaseResult) computeRatios() {
	for k, v := range r.Figures {
		if bv, ok := r.Baseline[k]; ok && bv != 0 {
			r.Ratio[k] = v / bv
		}
	}
}

// writeResults writes the JSON atomically (temp file, rename), so a
// reader never sees half a document.
func writeResults(path string, res *BenchResult) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write results %s: %w", path, err)
	}
	return nil
}

// machineInfo reads the CPU model from /proc/cpuinfo (best effort).
func machineInfo() BenchMachine {
	m := BenchMachine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Model: "unknown",
		Note: "the load generator, kfake and the measured process share these CPUs; figures from a shared VM are noisy"}
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			m.Model = strings.TrimSpace(v)
			break
		}
	}
	return m
}
