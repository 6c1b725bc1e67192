package firmwaresim

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Exit codes of Main.
const (
	ExitOK      = 0
	ExitFailure = 1 // the run could not start or a subcommand failed
	ExitUsage   = 2 // bad flags or subcommand
)

// Command is a subcommand of Main. The simulator's own (run, subscribe,
// kafka, bare-broker) are built in; packages that build on this one (the
// demo, the benchmark harness) hand theirs to Main, so that this package
// never imports them.
type Command struct {
	Name    string
	Summary string // one line in the top usage
	// Run runs the subcommand with its arguments and returns the exit code.
	Run func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// builtins are the simulator's own subcommands, in usage order.
var builtins = []Command{
	{"run", "simulate devices (default subcommand)", runCmd},
	{"subscribe", "print MQTT messages, e.g. alerts/#", subscribeCmd},
	{"kafka", "DEV-ONLY in-memory Kafka-protocol broker (kfake)", kafkaCmd},
	{"bare-broker", "bare mochi-mqtt broker, a benchmark baseline", bareBrokerCmd},
}

// topUsage lists cmds.
func topUsage(cmds []Command) string {
	var b strings.Builder
	b.WriteString("firmware-sim: device simulator and load generator for the Runnel gateway\n\nUsage:\n")
	for _, c := range cmds {
		name := c.Name
		if name == "run" {
			name = "[run]"
		}
		fmt.Fprintf(&b, "  %-34s%s\n", "firmware-sim "+name+" [flags]", c.Summary)
	}
	b.WriteString("  firmware-sim help\n\n\"firmware-sim <subcommand> -h\" lists the flags of a subcommand.\n")
	return b.String()
}

// Main runs the firmware-sim command line (args without the program
// name) with the built-in subcommands and more, and returns the exit code.
// Reports go to stdout; progress, logs and errors to stderr. When ctx ends
// (SIGINT, SIGTERM) a run stops cleanly and still prints its report.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, more ...Command) int {
	name := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	cmds := append(slices.Clip(builtins), more...)
	for _, c := range cmds {
		if c.Name == name {
			return c.Run(ctx, args, stdout, stderr)
		}
	}
	if name == "help" {
		fmt.Fprint(stdout, topUsage(cmds))
		return ExitOK
	}
	fmt.Fprintf(stderr, "firmware-sim: unknown subcommand %q\n\n%s", name, topUsage(cmds))
	return ExitUsage
}

// NewFlagSet returns the flag set of subcommand name, whose -h prints
// usage (desc, then every flag with its default) to stderr.
func NewFlagSet(name, desc string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("firmware-sim "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: firmware-sim %s [flags]\n\n%s\nFlags:\n", name, desc)
		fs.PrintDefaults()
	}
	return fs
}

// ParseFlags parses a subcommand's args (flags only) and maps the outcome
// to an exit code, or -1: go on.
func ParseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage // flag has printed the error and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (flags only)\n", fs.Name(), fs.Arg(0))
		return ExitUsage
	}
	return -1
}

const runDesc = `Simulates devices sending telemetry to a Runnel gateway and prints a JSON
report when done (on stdout; progress goes to stderr). Payloads are
deterministic: the same -seed and -start give the same messages.

Scenarios: env (temperature/humidity, daily cycle), vibration (100 Hz
accelerometer batches + rms), biosignal (ECG batches, synthetic 250 Hz or
MIT-BIH record 100 at 360 Hz, plus heart rate and SpO2 with episodes that
fire the example alert rules), mix (50 % env, 30 % vibration, 20 % biosignal).
`

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	d := DefaultOptions()
	o := d
	fs := NewFlagSet("run", runDesc, stderr)
	var (
		scenario, transport, ecg, start string
		qos                             int
	)
	fs.StringVar(&scenario, "scenario", string(d.Scenario), "env, vibration, biosignal or mix")
	fs.IntVar(&o.Devices, "devices", d.Devices, "number of simulated devices (1-100000)")
	fs.Float64Var(&o.Rate, "rate", d.Rate, "ticks per second per device; a tick sends one message per stream: env 1, vibration 1 (lp) or 4 (json), biosignal 2")
	fs.IntVar(&o.ReadingsPerMessage, "readings", d.ReadingsPerMessage, "rows per env or vitals message (batches carry the samples of their tick)")
	fs.DurationVar(&o.Duration, "duration", 0, "stop after this wall time, e.g. 30s, 5m (0: no limit)")
	fs.IntVar(&o.Count, "count", 0, "stop each device after this many messages (0: no limit; with neither -duration nor -count, run until SIGINT)")
	fs.IntVar(&qos, "qos", int(d.QoS), "MQTT QoS: 0, 1 or 2")
	fs.StringVar(&transport, "transport", string(d.Transport), "mqtt, udp (line protocol datagrams) or http (POST /api/v2/write)")
	fs.StringVar(&o.Format, "format", d.Format, "MQTT payloads: json (telemetry/ and biosignal/ topics) or lp (line protocol on lp/ topics)")
	fs.StringVar(&o.Broker, "broker", d.Broker, "MQTT broker, host:port or tcp://host:port")
	fs.StringVar(&o.UDPAddr, "udp", d.UDPAddr, "gateway UDP line protocol listener, host:port")
	fs.StringVar(&o.HTTPURL, "http", d.HTTPURL, "gateway HTTP base URL")
	fs.StringVar(&o.HTTPToken, "http-token", "", "API token for -transport http (Authorization: Token <t>)")
	fs.StringVar(&o.Username, "username", "", "MQTT username")
	fs.StringVar(&o.Password, "password", "", "MQTT password")
	fs.StringVar(&o.ClientIDPrefix, "client-id-prefix", d.ClientIDPrefix, "prefix of each device's MQTT client id")
	fs.StringVar(&o.DevicePrefix, "device-prefix", "", "prefix of each device id (distinct devices per simulator, e.g. per gateway)")
	fs.Uint64Var(&o.Seed, "seed", d.Seed, "seed of every random stream")
	fs.StringVar(&start, "start", "", "event time of the first tick, RFC 3339 (default: now)")
	fs.IntVar(&o.Sites, "sites", d.Sites, "number of distinct site tags")
	fs.StringVar(&ecg, "ecg", string(d.ECG), "ECG of biosignal devices: synthetic, mitdb (replay of MIT-BIH record 100) or mix")
	fs.IntVar(&o.MaxInFlight, "max-inflight", d.MaxInFlight, "unacknowledged messages per device (1: wait for each ack; more: pipeline QoS 1/2 and HTTP)")
	fs.DurationVar(&o.AckTimeout, "ack-timeout", d.AckTimeout, "give up waiting for one acknowledgement after this")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", d.DrainTimeout, "at the end, wait this long at most for outstanding acknowledgements")
	fs.DurationVar(&o.ProgressInterval, "progress-interval", d.ProgressInterval, "progress line period when stderr is not a terminal (a terminal is refreshed every second)")
	fs.Float64Var(&o.Faults.MalformedPct, "malformed", 0, "percent (0-100) of messages with a corrupted payload")
	fs.Float64Var(&o.Faults.OutOfOrderPct, "out-of-order", 0, "percent (0-100) of ticks held back and sent after the next one")
	fs.Float64Var(&o.Faults.LatePct, "late", 0, "percent (0-100) of messages stamped -late-by in the past")
	fs.DurationVar(&o.Faults.LateBy, "late-by", d.Faults.LateBy, "how far in the past late messages are stamped")
	fs.DurationVar(&o.Faults.ReconnectEvery, "reconnect-every", 0, "reconnect storm: every this often all MQTT devices disconnect and reconnect (0: off)")
	fs.DurationVar(&o.Faults.BurstEvery, "burst-every", 0, "start a burst this often (0: off)")
	fs.DurationVar(&o.Faults.BurstFor, "burst-for", d.Faults.BurstFor, "length of a burst")
	fs.Float64Var(&o.Faults.BurstFactor, "burst-factor", d.Faults.BurstFactor, "rate multiplier during a burst (1-1000)")
	fs.Float64Var(&o.Faults.HighCardinality, "high-cardinality", 0, "probability (0-1) that a message uses a fresh device id")
	if code := ParseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	o.Scenario, o.Transport, o.ECG = Scenario(scenario), Transport(transport), ECGSource(ecg)
	var errs []error
	if qos < 0 || qos > 2 {
		errs = append(errs, &OptionError{Option: "qos", Value: qos, Msg: "want 0, 1 or 2"})
	} else {
		o.QoS = byte(qos)
	}
	if start != "" {
		t, err := time.Parse(time.RFC3339Nano, start)
		if err != nil {
			errs = append(errs, &OptionError{Option: "start", Value: start, Msg: "want RFC 3339, e.g. 2024-05-01T12:00:00Z"})
		}
		o.Start = t
	}
	// Zero means "default" in Options; on the command line it is a value.
	zeroBad := func(name string, v float64) {
		if v == 0 {
			errs = append(errs, &OptionError{Option: name, Value: v, Msg: "must not be zero"})
		}
	}
	zeroBad("devices", float64(o.Devices))
	zeroBad("rate", o.Rate)
	zeroBad("readings", float64(o.ReadingsPerMessage))
	zeroBad("max-inflight", float64(o.MaxInFlight))
	if err := o.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		fmt.Fprintf(stderr, "firmware-sim run: invalid flags:\n%v\n(see firmware-sim run -h)\n", Indent(errors.Join(errs...)))
		return ExitUsage
	}
	rep, err := Run(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "firmware-sim run: %v\n", err)
		return ExitFailure
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintf(stderr, "firmware-sim run: writing the report: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

// Indent indents the lines of err under a heading.
func Indent(err error) string {
	return "  " + strings.ReplaceAll(err.Error(), "\n", "\n  ")
}

func subscribeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o SubscribeOptions
	var qos int
	fs := NewFlagSet("subscribe", "Prints each MQTT message on -topic as one line on stdout:\n  <topic> retained=<true|false> <payload>\n", stderr)
	fs.StringVar(&o.Broker, "broker", "127.0.0.1:1883", "MQTT broker, host:port or tcp://host:port")
	fs.StringVar(&o.Topic, "topic", "alerts/#", "topic filter")
	fs.IntVar(&qos, "qos", 1, "subscription QoS: 0, 1 or 2")
	fs.StringVar(&o.Username, "username", "", "MQTT username")
	fs.StringVar(&o.Password, "password", "", "MQTT password")
	fs.StringVar(&o.ClientID, "client-id", "", "MQTT client id (default: firmware-sim-sub-<random>)")
	fs.IntVar(&o.Count, "count", 0, "exit after this many messages (0: run until SIGINT)")
	if code := ParseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if qos < 0 || qos > 2 || o.Count < 0 {
		fmt.Fprintf(stderr, "firmware-sim subscribe: -qos must be 0, 1 or 2 and -count not negative\n")
		return ExitUsage
	}
	o.QoS = byte(qos)
	if err := Subscribe(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "firmware-sim subscribe: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

func kafkaCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o KafkaOptions
	var topics string
	fs := NewFlagSet("kafka", KafkaBanner+".\nA Kafka-protocol broker for `make demo` and local tests, printing the records\nreceived per topic every -interval. Never point a production gateway at it.\n", stderr)
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:9092", "listen address, 127.0.0.1:port (loopback only; port 0 picks one)")
	fs.StringVar(&topics, "topics", strings.Join(DefaultKafkaTopics, ","), "comma-separated topics to create (others are created on first use)")
	fs.IntVar(&o.Partitions, "partitions", 1, "partitions per topic")
	fs.DurationVar(&o.Interval, "interval", 5*time.Second, "period of the records-per-topic line")
	if code := ParseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	for _, t := range strings.Split(topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			o.Topics = append(o.Topics, t)
		}
	}
	if o.Partitions < 1 || o.Interval < 100*time.Millisecond {
		fmt.Fprintf(stderr, "firmware-sim kafka: -partitions must be at least 1 and -interval at least 100ms\n")
		return ExitUsage
	}
	fmt.Fprintln(stderr, "WARNING: "+KafkaBanner)
	if err := RunKafka(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "firmware-sim kafka: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

func bareBrokerCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var addr string
	fs := NewFlagSet("bare-broker", "A bare mochi-mqtt broker (allow-all auth, a no-op publish hook, nothing stored):\nthe baseline benchmarks compare the gateway with. Never expose it.\n", stderr)
	fs.StringVar(&addr, "addr", "127.0.0.1:1884", "listen address, host:port")
	if code := ParseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if err := RunBareBroker(ctx, addr, stdout); err != nil {
		fmt.Fprintf(stderr, "firmware-sim bare-broker: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}
