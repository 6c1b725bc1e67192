package firmwaresim

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Scenario names what the simulated devices measure.
type Scenario string

// The scenarios.
const (
	// ScenarioEnv: temperature and humidity with a daily cycle, one JSON
	// message (or line) per tick, measurement "env".
	ScenarioEnv Scenario = "env"
	// ScenarioVibration: a 100 Hz accelerometer (x, y, z) in batches, with
	// the batch RMS as a field "rms" of measurement "vibration".
	ScenarioVibration Scenario = "vibration"
	// ScenarioBiosignal: ECG batches (synthetic 250 Hz or a replay of
	// MIT-BIH record 100 at 360 Hz) plus heart rate and SpO2 ("vitals").
	ScenarioBiosignal Scenario = "biosignal"
	// ScenarioMix: device i is env for i%10 in 0..4, vibration for 5..7,
	// biosignal for 8..9.
	ScenarioMix Scenario = "mix"
)

// Transport names how messages reach the gateway.
type Transport string

// The transports.
const (
	TransportMQTT Transport = "mqtt" // one paho (MQTT 3.1.1) client per device
	TransportUDP  Transport = "udp"  // line protocol datagrams, no acknowledgement
	TransportHTTP Transport = "http" // line protocol, POST /api/v2/write, 204 = acknowledged
)

// ECGSource picks the ECG of biosignal devices.
type ECGSource string

// The ECG sources.
const (
	ECGMix       ECGSource = "mix"       // even biosignal devices synthetic, odd ones replay
	ECGSynthetic ECGSource = "synthetic" // a PQRST-like 250 Hz waveform following the simulated heart rate
	ECGMITDB     ECGSource = "mitdb"     // MIT-BIH record 100, lead MLII, 360 Hz, looped
)

// Options configure a run. The zero value of a field means its default
// (see DefaultOptions), except where a field says otherwise.
type Options struct {
	Scenario Scenario
	// Devices is the number of simulated devices.
	Devices int
	// Rate is the ticks per second of each device. A tick sends one
	// message per stream of the device: env 1; vibration 1 as line
	// protocol, 4 as JSON (accel_x, accel_y, accel_z batches and the rms);
	// biosignal 2 (an ECG batch, skipped during a lead-off, and vitals).
	// Each tick covers 1/Rate seconds of event time, so batch sizes follow
	// the rate (250 Hz ECG at rate 1: 250 samples per batch).
	Rate float64
	// ReadingsPerMessage is the number of rows (JSON objects or lines) in
	// one env or vitals message, spread evenly over the tick's event span.
	// Batches (ECG, vibration) carry the samples of their span instead.
	ReadingsPerMessage int
	// Duration ends the run this long after the first tick (wall time);
	// 0: no limit.
	Duration time.Duration
	// Count ends a device after this many messages (it finishes the tick
	// that reaches it); 0: no limit. With neither Duration nor Count the
	// run lasts until ctx ends.
	Count int
	// QoS of MQTT publishes: 0, 1 or 2. Zero is a valid QoS, so the
	// default (1) is only applied by DefaultOptions and the CLI.
	QoS       byte
	Transport Transport
	// Format of MQTT payloads: "json" (JSON telemetry on
	// telemetry/<device>/<measurement> and biosignal batches on
	// biosignal/<device>/<signal>) or "lp" (line protocol on
	// lp/<device>/<measurement>). UDP and HTTP always carry line protocol.
	Format string
	// Broker is the MQTT broker, host:port or tcp://host:port.
	Broker string
	// UDPAddr is the gateway's UDP line protocol listener, host:port.
	UDPAddr string
	// HTTPURL is the base URL of the gateway's HTTP server; messages go to
	// <HTTPURL>/api/v2/write?precision=ns.
	HTTPURL string
	// HTTPToken, when set, is sent as `Authorization: Token <t>`.
	HTTPToken string
	// Username and Password authenticate MQTT clients.
	Username, Password string
	// ClientIDPrefix prefixes each device id to form its MQTT client id.
	ClientIDPrefix string
	// DevicePrefix prefixes each device id ("" : env-0001, ...), so
	// simulators feeding different gateways can have distinct devices.
	DevicePrefix string
	// Seed seeds every random stream (math/rand/v2 PCG): the same seed and
	// options give the same payloads per device.
	Seed uint64
	// Start is the event time of the run's tick 0; zero: the wall clock at
	// Run, truncated to the millisecond. Set it to make payloads (which
	// carry event times) byte-identical between runs.
	Start time.Time
	// Sites is the number of distinct site tags (site-1 ... site-N).
	Sites int
	// ECG picks the ECG of biosignal devices.
	ECG ECGSource
	// MaxInFlight bounds unacknowledged messages per device: 1 waits for
	// each acknowledgement before the next publish; more pipelines QoS 1/2
	// publishes and HTTP requests.
	MaxInFlight int
	// AckTimeout gives up waiting for one acknowledgement (counted as an
	// ack_timeout error).
	AckTimeout time.Duration
	// DrainTimeout bounds the wait for outstanding acknowledgements at the
	// end of a run (also after an interrupt).
	DrainTimeout time.Duration
	// ProgressInterval is the period of the progress line when progress is
	// not a terminal (a terminal is refreshed every second).
	ProgressInterval time.Duration
	Faults           Faults
}

// Faults are injected deliberately; each is off at its zero value.
type Faults struct {
	// MalformedPct is the percentage (0-100) of messages whose payload is
	// corrupted so the gateway's decoder rejects it (truncated JSON, a
	// string timestamp, trailing garbage; a bad field value, a line without
	// fields, a bad timestamp in line protocol).
	MalformedPct float64
	// OutOfOrderPct is the percentage of ticks whose messages are held back
	// and sent after the next tick's, so the gateway sees event time go
	// backwards.
	OutOfOrderPct float64
	// LatePct is the percentage of messages stamped LateBy in the past.
	LatePct float64
	// LateBy is how far in the past a late message is stamped (default 1h).
	LateBy time.Duration
	// ReconnectEvery disconnects every MQTT client at once and reconnects
	// it, every so often (a reconnect storm); 0: never.
	ReconnectEvery time.Duration
	// BurstEvery starts a burst this often (first one after BurstEvery);
	// 0: no bursts. During a burst each device ticks BurstFactor times
	// faster for BurstFor.
	BurstEvery  time.Duration
	BurstFor    time.Duration
	BurstFactor float64
	// HighCardinality is the probability (0-1) that a message uses a fresh
	// device id never used before (topic and device tag), as a fleet of
	// short-lived or misconfigured devices would.
	HighCardinality float64
}

// DefaultOptions returns the defaults: mix scenario, 10 devices at 1 tick/s
// each, QoS 1 over MQTT to 127.0.0.1:1883 with JSON payloads, seed 1, 4
// sites, one message in flight per device, 30 s ack timeout, 5 s drain,
// progress every 5 s.
func DefaultOptions() Options {
	return Options{
		Scenario:           ScenarioMix,
		Devices:            10,
		Rate:               1,
		ReadingsPerMessage: 1,
		QoS:                1,
		Transport:          TransportMQTT,
		Format:             "json",
		Broker:             "127.0.0.1:1883",
		UDPAddr:            "127.0.0.1:8089",
		HTTPURL:            "http://127.0.0.1:8080",
		ClientIDPrefix:     "sim-",
		Seed:               1,
		Sites:              4,
		ECG:                ECGMix,
		MaxInFlight:        1,
		AckTimeout:         30 * time.Second,
		DrainTimeout:       5 * time.Second,
		ProgressInterval:   5 * time.Second,
		Faults:             Faults{LateBy: time.Hour, BurstFor: 5 * time.Second, BurstFactor: 10},
	}
}

// withDefaults fills zero fields (QoS and Seed excepted: zero is valid).
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	orDefault(&o.Scenario, d.Scenario)
	orDefault(&o.Devices, d.Devices)
	orDefault(&o.Rate, d.Rate)
	orDefault(&o.ReadingsPerMessage, d.ReadingsPerMessage)
	orDefault(&o.Transport, d.Transport)
	orDefault(&o.Format, d.Format)
	orDefault(&o.Broker, d.Broker)
	orDefault(&o.UDPAddr, d.UDPAddr)
	orDefault(&o.HTTPURL, d.HTTPURL)
	orDefault(&o.Sites, d.Sites)
	orDefault(&o.ECG, d.ECG)
	orDefault(&o.MaxInFlight, d.MaxInFlight)
	orDefault(&o.AckTimeout, d.AckTimeout)
	orDefault(&o.DrainTimeout, d.DrainTimeout)
	orDefault(&o.ProgressInterval, d.ProgressInterval)
	orDefault(&o.Faults.LateBy, d.Faults.LateBy)
	orDefault(&o.Faults.BurstFor, d.Faults.BurstFor)
	orDefault(&o.Faults.BurstFactor, d.Faults.BurstFactor)
	return o
}

// orDefault sets *p to def when it is the zero value.
func orDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// OptionError is one invalid option.
type OptionError struct {
	Option string // the CLI flag name
	Value  any
	Msg    string // what is allowed
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("-%s %v: %s", e.Option, e.Value, e.Msg)
}

// Validate reports every invalid option at once (errors.Join of
// *OptionError). Defaults are applied first, as in Run.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	bad := func(opt string, v any, format string, args ...any) {
		errs = append(errs, &OptionError{Option: opt, Value: v, Msg: fmt.Sprintf(format, args...)})
	}
	// Bounds, one row per limit with its reason.
	switch o.Scenario {
	case ScenarioEnv, ScenarioVibration, ScenarioBiosignal, ScenarioMix:
	default:
		bad("scenario", o.Scenario, "want env, vibration, biosignal or mix")
	}
	if o.Devices < 1 || o.Devices > 100_000 {
		bad("devices", o.Devices, "out of range 1 to 100000 (each MQTT device is a client with its own connection)")
	}
	if !(o.Rate > 0 && o.Rate <= 100_000) {
		bad("rate", o.Rate, "out of range (0, 100000] ticks/s per device")
	}
	if o.ReadingsPerMessage < 1 || o.ReadingsPerMessage > 10_000 {
		bad("readings", o.ReadingsPerMessage, "out of range 1 to 10000 (the gateway bounds packet and body sizes)")
	}
	if o.Duration < 0 {
		bad("duration", o.Duration, "must not be negative")
	}
	if o.Count < 0 {
		bad("count", o.Count, "must not be negative")
	}
	if o.QoS > 2 {
		bad("qos", o.QoS, "want 0, 1 or 2")
	}
	switch o.Transport {
	case TransportMQTT:
		if _, err := brokerURL(o.Broker); err != nil {
			bad("broker", o.Broker, "%v", err)
		}
	case TransportUDP:
		if _, _, err := net.SplitHostPort(o.UDPAddr); err != nil {
			bad("udp", o.UDPAddr, "want host:port")
		}
	case TransportHTTP:
		if u, err := url.Parse(o.HTTPURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("http", o.HTTPURL, "want an http:// or https:// URL")
		}
	default:
		bad("transport", o.Transport, "want mqtt, udp or http")
	}
	if o.Format != "json" && o.Format != "lp" {
		bad("format", o.Format, "want json or lp")
	}
	if len(o.DevicePrefix) > 64 || strings.ContainsAny(o.DevicePrefix, "/+#,= \\\"") {
		bad("device-prefix", o.DevicePrefix, "at most 64 bytes, none of / + # , = space backslash or quote (it is an MQTT topic level and a tag value)")
	}
	if o.Sites < 1 || o.Sites > 100_000 {
		bad("sites", o.Sites, "out of range 1 to 100000")
	}
	switch o.ECG {
	case ECGMix, ECGSynthetic, ECGMITDB:
	default:
		bad("ecg", o.ECG, "want mix, synthetic or mitdb")
	}
	if o.MaxInFlight < 1 || o.MaxInFlight > 65535 {
		bad("max-inflight", o.MaxInFlight, "out of range 1 to 65535 (MQTT packet ids are 16 bits)")
	}
	if o.AckTimeout < 0 {
		bad("ack-timeout", o.AckTimeout, "must not be negative")
	}
	if o.DrainTimeout < 0 {
		bad("drain-timeout", o.DrainTimeout, "must not be negative")
	}
	if o.ProgressInterval < 100*time.Millisecond {
		bad("progress-interval", o.ProgressInterval, "must be at least 100ms")
	}
	f := o.Faults
	pct := func(name string, v float64) {
		if !(v >= 0 && v <= 100) {
			bad(name, v, "a percentage, 0 to 100")
		}
	}
	pct("malformed", f.MalformedPct)
	pct("out-of-order", f.OutOfOrderPct)
	pct("late", f.LatePct)
	if f.LateBy < 0 {
		bad("late-by", f.LateBy, "must not be negative")
	}
	if f.ReconnectEvery < 0 || (f.ReconnectEvery > 0 && f.ReconnectEvery < 100*time.Millisecond) {
		bad("reconnect-every", f.ReconnectEvery, "0 (off) or at least 100ms")
	}
	if f.ReconnectEvery > 0 && o.Transport != TransportMQTT {
		bad("reconnect-every", f.ReconnectEvery, "needs -transport mqtt (UDP and HTTP hold no session)")
	}
	if f.BurstEvery < 0 {
		bad("burst-every", f.BurstEvery, "must not be negative")
	}
	if f.BurstEvery > 0 && (f.BurstFor <= 0 || f.BurstFor >= f.BurstEvery) {
		bad("burst-for", f.BurstFor, "must be positive and shorter than -burst-every %v", f.BurstEvery)
	}
	if !(f.BurstFactor >= 1 && f.BurstFactor <= 1000) {
		bad("burst-factor", f.BurstFactor, "out of range 1 to 1000")
	}
	if !(f.HighCardinality >= 0 && f.HighCardinality <= 1) {
		bad("high-cardinality", f.HighCardinality, "a probability, 0 to 1")
	}
	return errors.Join(errs...)
}

// brokerURL turns host:port or tcp://host:port into paho's broker URL.
func brokerURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "tcp://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return "", fmt.Errorf("unsupported scheme %q (want tcp, ssl, ws or wss)", u.Scheme)
	}
	if u.Port() == "" {
		return "", errors.New("want host:port")
	}
	return u.String(), nil
}
