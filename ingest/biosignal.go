package ingest

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/runnel-iot/runnel/wal"
)

// Biosignal batch bounds.
const (
	// DefaultMaxSamples is the default BiosignalConfig.MaxSamples.
	DefaultMaxSamples = 10000
	// maxSamplesLimit bounds MaxSamples itself: it keeps i*1e9 exact in
	// int64 and one message's expansion within reason.
	maxSamplesLimit = 1_000_000
	// MaxRateHz is the highest accepted rate_hz; rate_hz must be in
	// (0, MaxRateHz].
	MaxRateHz = 100000
)

// BiosignalConfig bounds biosignal batches.
type BiosignalConfig struct {
	// MaxSamples is the largest number of samples one message may carry; a
	// message with more is rejected whole (ReasonOutOfRange).
	MaxSamples int `yaml:"max_samples"`
}

// DefaultBiosignalConfig returns the defaults: 10000 samples per message.
func DefaultBiosignalConfig() BiosignalConfig {
	return BiosignalConfig{MaxSamples: DefaultMaxSamples}
}

// Validate reports a MaxSamples outside [1, 1000000].
func (c BiosignalConfig) Validate() error {
	if c.MaxSamples < 1 || c.MaxSamples > maxSamplesLimit {
		return &ConfigError{Key: "max_samples", Msg: fmt.Sprintf("%d is out of range 1 to %d", c.MaxSamples, maxSamplesLimit)}
	}
	return nil
}

// Biosignal decodes biosignal batches: MQTT topic
// `<prefix>/<device>/<signal>` (biosignal/<device>/<signal> by default) with
//
//	{"ts":1700000000000,"rate_hz":250,"samples":[0.1,0.2,...],"tags":{...}}
//
// Each sample is one reading of series `<signal>,device=<device>` plus the
// tags (with the JSON decoder's tag rules), field "value", at event time
//
//	ts_ns + floor(i × 1e9 / rate_hz)
//
// computed per index (integer arithmetic when rate_hz is integral), so no
// error accumulates over a batch: at 250 Hz sample i is exactly i×4 ms
// after ts, at 360 Hz sample 360 is exactly 1 s after ts.
//
// Rules:
//
//   - "rate_hz" (a number in (0, 100000]) and "samples" (an array) are
//     required; a missing or bad one, or more than MaxSamples samples,
//     rejects the message (one Rejected count, one *Error).
//   - "ts" is milliseconds as in the JSON format. When absent, the batch is
//     taken to end at the receive time: the last sample gets Options.NowNs.
//     (Devices send a batch once it is complete; taking the receive time as
//     its start would place a long batch in the future.)
//   - A sample that is not a number (null, string, bool, ...) or is out of
//     float64 range is rejected alone, with its index; its slot still
//     counts for the timing of the following samples.
//   - Samples beyond Options.MaxFutureSkew (always a suffix, as time grows
//     with the index) are rejected: one *Error at the first of them, each
//     sample counted in Rejected.
//   - Other members are ignored.
//
// A Biosignal holds an intern cache and scratch buffers reused across calls;
// it is not safe for concurrent use (one per connection or goroutine).
type Biosignal struct {
	cfg     BiosignalConfig
	names   interner
	sc      scanner
	tags    tagSet
	samples []float64 // NaN marks a rejected sample
	bad     []badSample
	scratch Result
}

// badSample is a rejected sample, reported once the message is accepted.
type badSample struct {
	index, off int
	reason     Reason
	msg        string
}

// valueField is the field name of every biosignal reading.
const valueField = "value"

// CodecBiosignal names the biosignal batch format in the topic mapping.
const CodecBiosignal = "biosignal"

func init() {
	registerDecoder(CodecBiosignal, func(cfg DecoderConfig) (Decoder, error) { return NewBiosignal(cfg.Biosignal) })
}

// NewBiosignal returns a biosignal decoder, or an error if cfg is invalid.
func NewBiosignal(cfg BiosignalConfig) (*Biosignal, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("biosignal config: %w", err)
	}
	return &Biosignal{cfg: cfg}, nil
}

// Decode decodes one biosignal batch received on topic, appends one reading
// per accepted sample to dst and returns the extended slice. It resets res
// and reports there what it rejected (res may be nil). It keeps no reference
// to dst, topic or body.
func (d *Biosignal) Decode(dst []wal.Reading, topic string, body []byte, opt Options, res *Result) []wal.Reading {
	if res == nil {
		res = &d.scratch
	}
	res.Reset()
	n0 := len(dst)
	dst = d.decode(dst, topic, body, &opt, res)
	fillLineCol(res, body)
	d.sc.b = nil
	res.Readings = len(dst) - n0
	return dst
}

// batch is what the members of one message said.
type batch struct {
	hasTS, hasRate, hasSamples bool
	tsNs                       int64
	rate                       float64
	n                          int // samples seen, even beyond MaxSamples
	reject                     bool
}

func (d *Biosignal) decode(dst []wal.Reading, topic string, body []byte, opt *Options, res *Result) []wal.Reading {
	device, signal, ok := splitTopic(topic)
	if !ok {
		res.add(ReasonBadTopic, badTopic(topic, "biosignal/<device>/<signal>"))
		return dst
	}
	sc := &d.sc
	sc.reset(body)
	c := objCtx{device: device, name: signal, index: -1, opt: opt, res: res}
	msgErr := func(reason Reason, off int, field, msg string) {
		res.add(reason, &Error{Offset: off, Index: -1, Field: field, Msg: msg})
	}
	if sc.ws() != '{' {
		off := sc.p
		if kind, ok := sc.skipValue(); ok {
			if sc.more() {
				sc.failChar("after top-level value")
			} else {
				msgErr(ReasonBadFieldType, off, "", "expected an object, got "+kind)
			}
		}
		return d.syntax(dst, res)
	}
	b := d.members(&c)
	if sc.errOff < 0 && sc.more() {
		sc.failChar("after top-level value")
	}
	if sc.errOff >= 0 {
		return d.syntax(dst, res)
	}
	switch {
	case b.reject:
		return dst
	case !b.hasRate:
		msgErr(ReasonMissingField, -1, "rate_hz", "required member missing")
		return dst
	case !b.hasSamples:
		msgErr(ReasonMissingField, -1, "samples", "required member missing")
		return dst
	case b.n > d.cfg.MaxSamples:
		msgErr(ReasonOutOfRange, -1, "samples", strconv.Itoa(b.n)+" samples exceed the maximum of "+
			strconv.Itoa(d.cfg.MaxSamples)+" per message")
		return dst
	}
	if b.n == 0 {
		return dst
	}
	offset := sampleOffsets(b.rate)
	last := offset(b.n - 1)
	start := b.tsNs
	if !b.hasTS {
		start = opt.NowNs - last
	}
	if start > maxInt64-last {
		msgErr(ReasonOutOfRange, -1, "ts", "last sample time overflows int64 nanoseconds")
		return dst
	}
	if msg := timeRangeMsg(start); msg != "" {
		msgErr(ReasonOutOfRange, -1, "ts", "first sample: "+msg)
		return dst
	}
	if msg := timeRangeMsg(start + last); msg != "" {
		msgErr(ReasonOutOfRange, -1, "ts", "last sample: "+msg)
		return dst
	}
	series := d.tags.series(&d.names, &c)
	maxTs := opt.maxTimeNs()
	cut := b.n
	for i := range b.n {
		ts := start + offset(i)
		if ts > maxTs {
			cut = i
			if res.wants() {
				res.Errors = append(res.Errors, &Error{Reason: ReasonFutureTimestamp, Offset: -1, Index: i,
					Field: "samples", Msg: futureMsg(ts, opt.NowNs, maxTs) + "; " +
						strconv.Itoa(b.n-i) + " samples from here rejected"})
			}
			res.Rejected[ReasonFutureTimestamp] += b.n - i
			break
		}
		v := d.samples[i]
		if math.IsNaN(v) {
			continue
		}
		dst = append(dst, wal.Reading{Series: series, Field: valueField, Value: v, TimeNs: ts})
	}
	// Rejected samples before the cut, in index order. Errors may now be
	// out of input order relative to a future error; keep them bounded.
	for _, bs := range d.bad {
		if bs.index >= cut {
			break
		}
		if res.wants() {
			res.add(bs.reason, &Error{Offset: bs.off, Index: bs.index, Field: "samples", Msg: bs.msg})
		} else {
			res.add(bs.reason, nil)
		}
	}
	return dst
}

// syntax records the scanner's syntax error, if any.
func (d *Biosignal) syntax(dst []wal.Reading, res *Result) []wal.Reading {
	if d.sc.errOff >= 0 {
		res.add(ReasonSyntax, &Error{Offset: d.sc.errOff, Index: -1, Msg: d.sc.errMsg})
	}
	return dst
}

// sampleOffsets returns the function i → floor(i×1e9/rate) in ns.
func sampleOffsets(rate float64) func(i int) int64 {
	if r := int64(rate); float64(r) == rate {
		return func(i int) int64 { return int64(i) * 1e9 / r }
	}
	return func(i int) int64 { return int64(math.Floor(float64(i) * 1e9 / rate)) }
}

// members reads the members of the message object at sc.p.
func (d *Biosignal) members(c *objCtx) batch {
	sc := &d.sc
	var b batch
	d.tags.reset()
	sc.p++ // '{'
	if sc.ws() == '}' {
		sc.p++
		return b
	}
	for {
		if sc.ws() != '"' {
			sc.failChar("looking for beginning of object key string")
			return b
		}
		k, _, ok := sc.str()
		if !ok || !sc.expect(':', "after object key") {
			return b
		}
		valOff := sc.p
		switch string(k) {
		case "ts":
			b.hasTS = false
			if lit, ok := d.number(c, "ts", &b); ok {
				if b.tsNs, ok = msToNs(lit.lit, lit.isInt); !ok {
					c.fieldErr(ReasonOutOfRange, valOff, k, "timestamp "+string(lit.lit)+" ms out of range")
					b.reject = true
				} else {
					b.hasTS = true
				}
			}
		case "rate_hz":
			b.hasRate = false
			if lit, ok := d.number(c, "rate_hz", &b); ok {
				r, err := strconv.ParseFloat(string(lit.lit), 64)
				if err != nil || !(r > 0 && r <= MaxRateHz) {
					c.fieldErr(ReasonOutOfRange, valOff, k, "rate "+string(lit.lit)+" Hz out of range (0, "+strconv.Itoa(MaxRateHz)+"]")
					b.reject = true
				} else {
					b.rate, b.hasRate = r, true
				}
			}
		case "samples":
			if sc.ws() != '[' {
				if kind, ok := sc.skipValue(); ok {
					c.fieldErr(ReasonBadFieldType, valOff, k, "samples must be an array of numbers, got "+kind)
					b.reject = true
				}
				break
			}
			b.n = d.sampleArray()
			b.hasSamples = true
		case "tags":
			if sc.ws() != '{' {
				if kind, ok := sc.skipValue(); ok {
					c.fieldErr(ReasonBadTag, valOff, k, "tags must be an object of strings, got "+kind)
					b.reject = true
				}
				break
			}
			if !d.tags.parse(sc, c) {
				b.reject = true
			}
		default:
			sc.skipValue()
		}
		if sc.errOff >= 0 {
			return b
		}
		if sc.ws() == ',' {
			sc.p++
			continue
		}
		if sc.ws() == '}' {
			sc.p++
			return b
		}
		sc.failChar("after object key:value pair")
		return b
	}
}

type numLit struct {
	lit   []byte
	isInt bool
}

// number reads a member that must be a number; a value of another type
// rejects the message.
func (d *Biosignal) number(c *objCtx, name string, b *batch) (numLit, bool) {
	sc := &d.sc
	off := sc.p
	if ch := sc.ws(); ch == '-' || (ch >= '0' && ch <= '9') {
		lit, isInt, ok := sc.number()
		return numLit{lit, isInt}, ok
	}
	if kind, ok := sc.skipValue(); ok {
		c.fieldErr(ReasonBadFieldType, off, []byte(name), name+" must be a number, got "+kind)
		b.reject = true
	}
	return numLit{}, false
}

// sampleArray reads the samples array at sc.p into d.samples (at most
// MaxSamples of them; the rest are only validated and counted) and returns
// how many there were.
func (d *Biosignal) sampleArray() int {
	sc := &d.sc
	d.samples, d.bad = d.samples[:0], d.bad[:0]
	sc.p++ // '['
	if sc.ws() == ']' {
		sc.p++
		return 0
	}
	n := 0
	for ; ; n++ {
		off := sc.p
		v := math.NaN()
		if ch := sc.ws(); ch == '-' || (ch >= '0' && ch <= '9') {
			lit, _, ok := sc.number()
			if !ok {
				return n
			}
			f, err := strconv.ParseFloat(string(lit), 64)
			switch {
			case errors.Is(err, strconv.ErrRange):
				d.badSample(n, off, ReasonOutOfRange, "number "+string(lit)+" out of float64 range")
			case err != nil:
				d.badSample(n, off, ReasonSyntax, "invalid number "+string(lit))
			default:
				v = f
			}
		} else {
			kind, ok := sc.skipValue()
			if !ok {
				return n
			}
			d.badSample(n, off, ReasonBadFieldType, kind+" is not a number")
		}
		if n < d.cfg.MaxSamples {
			d.samples = append(d.samples, v)
		}
		if sc.ws() == ',' {
			sc.p++
			continue
		}
		if sc.ws() == ']' {
			sc.p++
			return n + 1
		}
		sc.failChar("after array element")
		return n + 1
	}
}

func (d *Biosignal) badSample(i, off int, reason Reason, msg string) {
	if i >= d.cfg.MaxSamples {
		return
	}
	if len(d.bad) >= MaxErrors {
		msg = "" // counted, never shown: Result keeps MaxErrors
	}
	d.bad = append(d.bad, badSample{index: i, off: off, reason: reason, msg: msg})
}
