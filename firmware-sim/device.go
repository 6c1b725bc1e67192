package firmwaresim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// Fault marks what was done to a message on purpose.
type Fault uint8

// The faults, a bit set.
const (
	FaultMalformed       Fault = 1 << iota // payload corrupted (the decoder reports a problem)
	FaultLate                              // timestamps moved Faults.LateBy into the past
	FaultOutOfOrder                        // held back and sent after the next tick's messages
	FaultHighCardinality                   // a fresh device id
	FaultBurst                             // sent during a burst
)

// Message is one payload ready for a transport.
type Message struct {
	// Device is the device id in the topic and payload: the simulated
	// device's own, or a fresh one under FaultHighCardinality.
	Device string
	// Topic is the MQTT topic (telemetry/, biosignal/ or lp/...).
	Topic   string
	Payload []byte
	Format  Format
	// Readings is the number of readings the payload carries before any
	// corruption.
	Readings int
	// TimeNs is the event time of its first reading (after FaultLate).
	TimeNs int64
	Faults Fault
}

// streamID names an independent random stream of a device, so that a
// model's draws do not shift when another model or a fault is turned on.
type streamID uint64

const (
	streamContent streamID = iota + 1
	streamFaults
	streamECG
	streamTachycardia
	streamDesaturation
	streamLeadOff
	streamMachineFault
)

// splitmix64 spreads (seed, device, stream) over PCG's state space.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Device generates the messages of one simulated device, tick by tick, in
// event time. It is deterministic: the same Options (Seed and Start
// included) and index give the same messages. It is not safe for
// concurrent use.
type Device struct {
	// ID is the device id, <kind>-<n> with n from 1 (env-0001, vib-0006,
	// bio-0009).
	ID    string
	Index int
	// Kind is the scenario of this device (never ScenarioMix).
	Kind Scenario
	// ECG is the ECG source of a biosignal device ("" otherwise).
	ECG ECGSource

	opt      Options
	enc      encoder
	startNs  int64 // event time of schedule offset 0
	baseStep int64 // ns per tick outside bursts
	t        int64 // schedule offset of the next tick's span
	faults   *rand.Rand

	env  *envModel
	vib  *vibModel
	vit  *vitalsModel
	ecg  *synthECG
	rep  *mitdb
	hc   int64
	held []Message
}

// NewDevice returns device index (0-based) of a run with opt. Set
// opt.Start for payloads that repeat between runs; a zero Start means now.
func NewDevice(opt Options, index int) (*Device, error) {
	opt = opt.withDefaults()
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	if index < 0 || index >= opt.Devices {
		return nil, fmt.Errorf("device index %d out of range 0 to %d", index, opt.Devices-1)
	}
	if opt.Start.IsZero() {
		opt.Start = time.Now().Truncate(time.Millisecond)
	}
	d := &Device{Index: index, opt: opt, startNs: opt.Start.UnixNano()}
	d.Kind = opt.Scenario
	if d.Kind == ScenarioMix {
		switch i := index % 10; {
		case i < 5:
			d.Kind = ScenarioEnv
		case i < 8:
			d.Kind = ScenarioVibration
		default:
			d.Kind = ScenarioBiosignal
		}
	}
	prefix := map[Scenario]string{ScenarioEnv: "env", ScenarioVibration: "vib", ScenarioBiosignal: "bio"}[d.Kind]
	d.ID = fmt.Sprintf("%s%s-%04d", opt.DevicePrefix, prefix, index+1)
	d.enc = encoder{site: "site-" + strconv.Itoa(index%opt.Sites+1)}
	if opt.Format == "lp" || opt.Transport != TransportMQTT {
		d.enc.format = FormatLineProtocol
	}
	d.baseStep = max(int64(math.Round(1e9/opt.Rate)), 1)
	// Devices start spread over one tick so they do not send in lockstep.
	d.t = d.baseStep * int64(index) / int64(opt.Devices)
	d.faults = d.stream(streamFaults)
	content := d.stream(streamContent)
	switch d.Kind {
	case ScenarioEnv:
		d.env = newEnvModel(content)
	case ScenarioVibration:
		d.vib = newVibModel(content, d.stream)
	case ScenarioBiosignal:
		d.vit = newVitalsModel(content, d.stream)
		d.ECG = opt.ECG
		if d.ECG == ECGMix {
			d.ECG = ECGSynthetic
			if index%2 == 1 {
				d.ECG = ECGMITDB
			}
		}
		if d.ECG == ECGSynthetic {
			d.ecg = newSynthECG(d.stream(streamECG), d.vit)
		} else {
			rep, err := loadMITDB()
			if err != nil {
				return nil, err
			}
			d.rep = rep
		}
	}
	return d, nil
}

func (d *Device) stream(id streamID) *rand.Rand {
	return rand.New(rand.NewPCG(d.opt.Seed, splitmix64(d.opt.Seed^(uint64(d.Index)<<16|uint64(id)))))
}

// step returns the length of the tick starting at schedule offset t:
// 1/Rate, or 1/(Rate × BurstFactor) during a burst.
func (d *Device) step(t int64) (int64, bool) {
	f := d.opt.Faults
	if every := int64(f.BurstEvery); every > 0 && t >= every && t%every < int64(f.BurstFor) {
		return max(int64(float64(d.baseStep)/f.BurstFactor), 1), true
	}
	return d.baseStep, false
}

// Next generates the next tick. at is when to send its messages, as an
// offset from the run's start: the end of the event-time span they cover
// (a device sends what it measured once the span is over). msgs may be
// empty (a batch span with no sample, a tick held back as out of order).
func (d *Device) Next() (at time.Duration, msgs []Message) {
	t0 := d.t
	step, burst := d.step(t0)
	t1 := t0 + step
	d.t = t1
	recs := d.records(t0, t1)
	msgs = make([]Message, 0, len(recs)+len(d.held))
	for i := range recs {
		msgs = append(msgs, d.message(&recs[i], burst))
	}
	u := d.faults.Float64()
	switch {
	case d.held != nil:
		msgs = append(msgs, d.held...)
		d.held = nil
	case u*100 < d.opt.Faults.OutOfOrderPct && len(msgs) > 0:
		for i := range msgs {
			msgs[i].Faults |= FaultOutOfOrder
		}
		d.held, msgs = msgs, nil
	}
	return time.Duration(t1), msgs
}

// Flush returns the messages held back by an out-of-order tick, if any.
func (d *Device) Flush() []Message {
	m := d.held
	d.held = nil
	return m
}

// message encodes a record, applying the per-message faults. It always
// makes the same draws, so one fault's rate does not shift another's.
func (d *Device) message(r *record, burst bool) Message {
	f := &d.opt.Faults
	uHC, uLate, uBad := d.faults.Float64(), d.faults.Float64(), d.faults.Float64()
	m := Message{Device: d.ID, Readings: r.readings()}
	if burst {
		m.Faults |= FaultBurst
	}
	if uHC < f.HighCardinality {
		d.hc++
		m.Device = d.ID + "-h" + strconv.FormatInt(d.hc, 10)
		m.Faults |= FaultHighCardinality
	}
	var shift int64
	if uLate*100 < f.LatePct {
		shift = -int64(f.LateBy)
		m.Faults |= FaultLate
	}
	m.Topic, m.Payload, m.Format = d.enc.encode(r, m.Device, shift)
	if r.batch {
		m.TimeNs = r.t0 + shift
	} else if len(r.times) > 0 {
		m.TimeNs = r.times[0] + shift
	}
	if uBad*100 < f.MalformedPct {
		m.Payload = corrupt(m.Payload, m.Format, d.faults)
		m.Faults |= FaultMalformed
	}
	return m
}

// sampleRange returns the indexes [n0, n1) of the samples at hz whose
// times floor(n×1e9/hz) fall in the schedule span [t0, t1).
func sampleRange(t0, t1, hz int64) (n0, n1 int64) {
	return firstSampleAt(t0, hz), firstSampleAt(t1, hz)
}

// firstSampleAt is the least n with floor(n×1e9/hz) >= t, computed
// without overflow for any t.
func firstSampleAt(t, hz int64) int64 {
	q, r := t/1e9, t%1e9
	return q*hz + (r*hz+1e9-1)/1e9
}

// sampleTime is floor(n×1e9/hz) without overflow.
func sampleTime(n, hz int64) int64 {
	return n/hz*1e9 + (n%hz)*1e9/hz
}

var (
	envFields    = []string{"temp", "hum"}
	envPrec      = []int{2, 1}
	vitalsFields = []string{"hr", "spo2"}
	vitalsPrec   = []int{1, 1}
	accelFields  = []string{"x", "y", "z"}
	accelPrec    = []int{4, 4, 4}
	rmsFields    = []string{"rms"}
	rmsPrec      = []int{4}
)

// rows builds a record of n rows over (t0, t1]: row j at t0+(j+1)×span/n,
// so the last row is stamped when the message is sent.
func (d *Device) rows(meas string, fields []string, prec []int, t0, t1 int64, n int, f func(t int64, vals []float64)) record {
	r := record{meas: meas, fields: fields, prec: prec, times: make([]int64, n), values: make([]float64, n*len(fields))}
	for j := range n {
		t := t0 + (t1-t0)*int64(j+1)/int64(n)
		r.times[j] = d.startNs + t
		f(t, r.values[j*len(fields):(j+1)*len(fields)])
	}
	return r
}

func secs(t int64) float64 { return float64(t) / 1e9 }

// MaxBatchSamples is the most samples one batch message carries; a longer
// tick (a low rate) is split. It keeps a line protocol batch within one
// UDP datagram (about 70 bytes a line) and far below the gateway's
// biosignal limit (10000 samples).
const MaxBatchSamples = 500

// split cuts a batch record, or the rows of a per-sample record, into
// records of at most MaxBatchSamples; extra stays on the last row.
func split(r record) []record {
	if r.batch {
		if len(r.samples) <= MaxBatchSamples {
			return []record{r}
		}
		var out []record
		for i := 0; i < len(r.samples); i += MaxBatchSamples {
			c := r
			c.samples = r.samples[i:min(i+MaxBatchSamples, len(r.samples))]
			c.n0 = r.n0 + int64(i)
			c.t0 = r.t0 - sampleTime(r.n0, r.hz) + sampleTime(c.n0, r.hz)
			out = append(out, c)
		}
		return out
	}
	if len(r.times) <= MaxBatchSamples {
		return []record{r}
	}
	var out []record
	nf := len(r.fields)
	for i := 0; i < len(r.times); i += MaxBatchSamples {
		j := min(i+MaxBatchSamples, len(r.times))
		c := r
		c.times, c.values = r.times[i:j], r.values[i*nf:j*nf]
		if j < len(r.times) {
			c.extra = ""
		}
		out = append(out, c)
	}
	return out
}

// records generates the data of the span [t0, t1) (schedule offsets).
func (d *Device) records(t0, t1 int64) []record {
	rpm := d.opt.ReadingsPerMessage
	switch d.Kind {
	case ScenarioEnv:
		return []record{d.rows("env", envFields, envPrec, t0, t1, rpm, func(t int64, v []float64) {
			v[0], v[1] = d.env.at(d.startNs + t)
		})}
	case ScenarioVibration:
		return d.vibration(t0, t1)
	default:
		var out []record
		if !d.vit.leadOff.overlaps(secs(t0), secs(t1)) {
			if r, ok := d.ecgBatch(t0, t1); ok {
				out = append(out, split(r)...)
			}
		}
		out = append(out, d.rows("vitals", vitalsFields, vitalsPrec, t0, t1, rpm, func(t int64, v []float64) {
			if d.rep != nil {
				v[0] = d.rep.hrAt(firstSampleAt(t, MITDBRateHz))
			} else {
				v[0] = d.vit.hr(secs(t)) + 0.5*d.vit.noise.NormFloat64()
			}
			v[1] = d.vit.spo2(secs(t))
		}))
		return out
	}
}

func (d *Device) ecgBatch(t0, t1 int64) (record, bool) {
	hz := int64(ECGRateHz)
	if d.rep != nil {
		hz = MITDBRateHz
	}
	n0, n1 := sampleRange(t0, t1, hz)
	if n1 <= n0 {
		return record{}, false
	}
	r := record{meas: "ecg", batch: true, t0: d.startNs + sampleTime(n0, hz), n0: n0, hz: hz,
		samples: make([]float64, n1-n0), sprec: 3}
	for i := range r.samples {
		n := n0 + int64(i)
		if d.rep != nil {
			r.samples[i] = float64(d.rep.mlii[n%int64(len(d.rep.mlii))])
		} else {
			r.samples[i] = d.ecg.sample(secs(sampleTime(n, hz)))
		}
	}
	return r, true
}

func (d *Device) vibration(t0, t1 int64) []record {
	const hz = VibrationRateHz
	n0, n1 := sampleRange(t0, t1, hz)
	if n1 <= n0 {
		return nil
	}
	n := int(n1 - n0)
	xyz := make([]float64, 3*n)
	times := make([]int64, n)
	var sum float64
	for i := range n {
		tn := sampleTime(n0+int64(i), hz)
		times[i] = d.startNs + tn
		x, y, z := d.vib.sample(secs(tn))
		xyz[3*i], xyz[3*i+1], xyz[3*i+2] = x, y, z
		sum += x*x + y*y + (z-1)*(z-1)
	}
	rms := math.Sqrt(sum / float64(n))
	if d.enc.format == FormatLineProtocol {
		return split(record{meas: "vibration", fields: accelFields, prec: accelPrec, times: times, values: xyz,
			extra: "rms", extraVal: rms, extraPrec: 4})
	}
	out := make([]record, 0, 4)
	for axis, name := range []string{"accel_x", "accel_y", "accel_z"} {
		s := make([]float64, n)
		for i := range s {
			s[i] = xyz[3*i+axis]
		}
		out = append(out, split(record{meas: name, batch: true, t0: times[0], n0: n0, hz: hz, samples: s, sprec: 4})...)
	}
	return append(out, record{meas: "vibration", fields: rmsFields, prec: rmsPrec,
		times: []int64{times[n-1]}, values: []float64{rms}})
}
