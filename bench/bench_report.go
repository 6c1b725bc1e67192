package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
)

// judgeTargets checks the figures against the issues' targets; a target
// whose phase did not run (or whose figure could not be computed) is left
// out.
func judgeTargets(phases []PhaseResult) []TargetResult {
	var out []TargetResult
	get := func(phase string, m func(*PhaseResult) map[string]float64, fig string) (float64, bool) {
		for i := range phases {
			if phases[i].Name == phase {
				v, ok := m(&phases[i])[fig]
				return v, ok
			}
		}
		return 0, false
	}
	fig := func(p *PhaseResult) map[string]float64 { return p.Figures }
	ratio := func(p *PhaseResult) map[string]float64 { return p.Ratio }
	for _, t := range []struct {
		name, target, phase string
		m                   func(*PhaseResult) map[string]float64
		fig                 string
		met                 func(float64) bool
	}{
		// The ingest issue asks 85 % of the bare broker; with the load
		// generator on the same two cores the ratio is capped by the client.
		{"MQTT QoS 1 acknowledged readings/s vs bare mochi (mqtt-qos1)", ">= 0.85x bare", "mqtt-qos1", ratio, "acked_per_s", func(v float64) bool { return v >= 0.85 }},
		{"gateway CPU per 100,000 acknowledged messages (mqtt-qos1)", "<= 1.3 s", "mqtt-qos1", fig, "cpu_s_per_100k_msgs", func(v float64) bool { return v <= 1.3 }},
		{"CPU per acknowledged message vs bare mochi (mixed)", "<= 1.15x bare", "mixed", ratio, "cpu_us_per_msg", func(v float64) bool { return v <= 1.15 }},
		{"gateway CPU per 100,000 acknowledged messages (mixed)", "<= 1.3 s", "mixed", fig, "cpu_s_per_100k_msgs", func(v float64) bool { return v <= 1.3 }},
		{"gateway peak RSS (mixed)", "<= 40 MiB", "mixed", fig, "peak_rss_mib", func(v float64) bool { return v <= 40 }},
		{"acknowledged readings missing from closed windows (mixed)", "= 0", "mixed", fig, "missing", func(v float64) bool { return v == 0 }},
		{"alert latency p99 under load (alert-latency)", "< 20 ms", "alert-latency", fig, "fire_p99_ms", func(v float64) bool { return v < 20 }},
		// Issue 17: fresh numbers.
		{"ingest -> queryable p99, saturating QoS 1 load (query-latency)", "<= 20 ms", "query-latency", fig, "p99_ms", func(v float64) bool { return v <= 20 }},
		{"ingest -> queryable p50, QoS 1 at half the saturating rate (query-latency-paced)", "<= 2 ms", "query-latency-paced", fig, "p50_ms", func(v float64) bool { return v <= 2 }},
		{"ingest -> queryable p99, QoS 1 at half the saturating rate (query-latency-paced)", "<= 5 ms", "query-latency-paced", fig, "p99_ms", func(v float64) bool { return v <= 5 }},
		{"reading -> alert p99, saturating QoS 1 load (alert-latency)", "<= 20 ms", "alert-latency", fig, "qos1load_fire_p99_ms", func(v float64) bool { return v <= 20 }},
		{"MQTT QoS 0 received msgs/s vs bare mochi (mqtt-qos0)", ">= 0.9x bare", "mqtt-qos0", ratio, "received_per_s", func(v float64) bool { return v >= 0.9 }},
		{"MQTT QoS 0 CPU per message vs bare mochi (mqtt-qos0)", "<= 1.3x bare", "mqtt-qos0", ratio, "cpu_us_per_msg", func(v float64) bool { return v <= 1.3 }},
		{"CPU per message vs bare mochi, issue 17 (mixed)", "<= 1.10x bare", "mixed", ratio, "cpu_us_per_msg", func(v float64) bool { return v <= 1.10 }},
		{"CPU per message vs bare mochi at the gateway's rate, issue 17 (mixed)", "<= 1.10x bare", "mixed", fig, "cpu_vs_bare_same_rate", func(v float64) bool { return v <= 1.10 }},
		{"CPU per message, broker included, vs Telegraf alone (mixed / telegraf)", "<= 0.5x", "mixed", fig, "cpu_vs_telegraf", func(v float64) bool { return v <= 0.5 }},
		{"gateway peak RSS (mqtt-qos1)", "<= 40 MiB", "mqtt-qos1", fig, "peak_rss_mib", func(v float64) bool { return v <= 40 }},
		{"gateway peak RSS (forward)", "<= 64 MiB", "forward", fig, "peak_rss_mib", func(v float64) bool { return v <= 64 }},
	} {
		if v, ok := get(t.phase, t.m, t.fig); ok {
			out = append(out, TargetResult{Name: t.name, Target: t.target, Value: v, Met: t.met(v), phase: t.phase, figure: t.fig})
		}
	}
	return out
}

// printTable writes the human summary: one row per figure, with the
// baseline and the ratio where there is one, then the targets.
func printTable(out io.Writer, res *BenchResult) {
	m := res.Machine
	fmt.Fprintf(out, "\nrunnel bench, %s: %d CPUs (%s), %s\n", res.Date, m.CPUs, m.Model, m.GoVersion)
	fmt.Fprintf(out, "note: %s; compare ratios more than absolute figures\n\n", m.Note)
	const row = "%-20s %-28s %12s %12s %6s  %s\n"
	fmt.Fprintf(out, row, "phase", "figure", "runnel", "bare", "ratio", "target")
	for _, p := range res.Phases {
		for i, name := range p.order {
			ph := ""
			if i == 0 {
				ph = fmt.Sprintf("%s (%.0fs)", p.Name, p.DurationS)
			}
			fmt.Fprintf(out, row, ph, name, cell(p.Figures, name), cell(p.Baseline, name), ratioCell(p.Ratio, name),
				targetCell(res.Targets, p.Name, name))
		}
	}
	for _, p := range res.Phases {
		if p.Note != "" {
			fmt.Fprintf(out, "  %s: %s\n", p.Name, p.Note)
		}
	}
	if len(res.Targets) == 0 {
		return
	}
	fmt.Fprintln(out, "\ntargets (from the issues)")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, t := range res.Targets {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Target, fmtFig(t.Value), metWord(t.Met))
	}
	tw.Flush()
}

// targetCell is the target judged on this figure, if any.
func targetCell(ts []TargetResult, phase, figure string) string {
	for _, t := range ts {
		if t.phase == phase && t.figure == figure {
			return fmt.Sprintf("%s: %s", t.Target, metWord(t.Met))
		}
	}
	return ""
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "NOT MET"
}

func cell(m map[string]float64, k string) string {
	if v, ok := m[k]; ok {
		return fmtFig(v)
	}
	return "-"
}

func ratioCell(m map[string]float64, k string) string {
	if v, ok := m[k]; ok {
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return ""
}

// fmtFig prints large figures with thousands separators and small ones
// with three significant digits.
func fmtFig(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 10000:
		s := strconv.FormatInt(int64(math.Round(a)), 10)
		var b strings.Builder
		if v < 0 {
			b.WriteByte('-')
		}
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	case a >= 100 || v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// Command is `firmware-sim bench` (make bench), for firmwaresim.Main.
var Command = firmwaresim.Command{
	Name:    "bench",
	Summary: "end-to-end load test of the built gateway (make bench)",
	Run:     benchCmd,
}

const benchDesc = `The end-to-end load test of the built binaries (make bench): each phase
starts a fresh gateway (-runnel, a child process on free loopback ports with
a fresh data dir), sustains its load for -phase-duration after a short
warm-up, and reads the gateway's CPU time and peak RSS from /proc. The MQTT
phases run the same load against a bare mochi-mqtt broker (this binary's
bare-broker subcommand, also a child) and report ratios. Prints a table on
stdout, progress on stderr, and writes the JSON results to -out.

Phases, in run order: `

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o BenchOptions
	var phases string
	fs := firmwaresim.NewFlagSet("bench", benchDesc+strings.Join(BenchPhases(), ", ")+"\n", stderr)
	fs.StringVar(&o.Runnel, "runnel", "bin/runnel", "the runnel binary")
	fs.StringVar(&o.FirmwareSim, "firmware-sim", "", "binary run as `<it> bare-broker` (and bare-decoder) for the baselines and as `<it> bench-probe` for the latency probes (default: this one)")
	fs.StringVar(&o.Out, "out", "", "write the JSON results here (e.g. bench/results/latest.json)")
	fs.DurationVar(&o.PhaseDuration, "phase-duration", 20*time.Second, "measured load per phase and target (after a warm-up of a fifth of it, at most 2s)")
	fs.StringVar(&phases, "phases", "", "comma-separated phases to run (default: all)")
	fs.StringVar(&o.WorkDir, "work-dir", "", "data dirs and logs of the children (default: a temp dir, removed unless -keep)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work dir (gateway logs, WALs)")
	fs.IntVar(&o.Publishers, "publishers", 4, "MQTT publisher connections")
	fs.IntVar(&o.MaxInFlight, "max-inflight", 1000, "unacknowledged QoS 1 messages per publisher")
	fs.IntVar(&o.Devices, "devices", 1000, "device ids spread over the MQTT, UDP and HTTP loads")
	fs.IntVar(&o.MinProbes, "min-probes", minProbes, "fewest samples per latency percentile: probes go on past the phase (at most 1m) until there are that many")
	fs.StringVar(&o.Telegraf, "telegraf", "", "Telegraf binary for the telegraf phase (make telegraf builds bin/telegraf)")
	fs.StringVar(&o.Mosquitto, "mosquitto", "", "mosquitto binary for the telegraf phase")
	fs.StringVar(&o.ProfileDir, "profile-dir", "", "write a CPU profile of each gateway's measured span and a heap profile at its end here (`dir`; figures of a profiled run carry the profiler's cost)")
	fs.Func("gateway-env", "a `RUNNEL_KEY=value` setting for every gateway child, for experiments (repeatable; the published figures use none)", func(kv string) error {
		o.GatewayEnv = append(o.GatewayEnv, kv)
		return nil
	})
	if code := firmwaresim.ParseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	for _, p := range strings.Split(phases, ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.Phases = append(o.Phases, p)
		}
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintf(stderr, "firmware-sim bench: invalid flags:\n%v\n(see firmware-sim bench -h)\n", firmwaresim.Indent(err))
		return firmwaresim.ExitUsage
	}
	o.Log = stderr
	if _, err := RunBench(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "firmware-sim bench: %v\n", err)
		return firmwaresim.ExitFailure
	}
	return firmwaresim.ExitOK
}
