package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// This file holds what the payload decoders (json.go, biosignal.go,
// lineproto.go) share: the per-call Options, the Result report and the
// Error type that carries a precise position and a Reason.
//
// Every decoder follows the same contract:
//
//   - Decode appends readings to a caller-provided []wal.Reading and returns
//     the extended slice, exactly like append: readings already in dst are
//     never touched, and the decoder keeps no reference to dst or to the
//     body after it returns. The strings in the readings are interned copies
//     (never aliases of the body), so the body may be reused at once.
//   - Bad input is data, not failure: Decode never returns an error. What it
//     rejected is reported in the *Result, counted by Reason, with the first
//     MaxErrors problems kept as *Error values carrying line, column, byte
//     offset, element index and field name where they apply.
//   - One bad reading never drops its good neighbours: a bad line protocol
//     line, a bad JSON field or object, a bad biosignal sample is rejected
//     alone, and decoding goes on with the next one. Only a syntax error that
//     makes the rest of a JSON document unreadable stops a decode early; what
//     was complete before it is kept.
//   - A decoder value holds an intern cache and scratch buffers that are
//     reused between calls. It is not safe for concurrent use: keep one per
//     connection or goroutine.
//
// Adding a format is a one-file change: a file with the decoder type (a
// Decoder), its codec name and an init function that calls
// registerDecoder. The MQTT topic mapping (mqtt.topics[].codec) and its
// validation find it by name, as UDP and HTTP writes find line protocol.

// Decoder is one payload format. Decode decodes body, received on topic
// (the MQTT topic; empty for UDP and HTTP, whose formats carry the series in
// the body), appends the readings to dst and returns the extended slice,
// following the contract above. It resets res and reports there what it
// rejected (res may be nil). A Decoder is not safe for concurrent use.
type Decoder interface {
	Decode(dst []wal.Reading, topic string, body []byte, opt Options, res *Result) []wal.Reading
}

// DecoderConfig is what a decoder factory may read. Every field is
// validated before a factory sees it.
type DecoderConfig struct {
	Biosignal BiosignalConfig
}

// decoders is the registry of payload formats by codec name (the `codec`
// of an MQTT topic mapping). A format registers itself from its own file
// with registerDecoder in an init function, so adding a format touches
// that one file: the topic mapping, its validation, and the listeners find
// it here by name.
var decoders = map[string]func(DecoderConfig) (Decoder, error){}

// registerDecoder adds a format; a duplicate name is a BUG.
func registerDecoder(name string, newDecoder func(DecoderConfig) (Decoder, error)) {
	if _, dup := decoders[name]; dup {
		panic("BUG: ingest: decoder " + strconv.Quote(name) + " registered twice")
	}
	decoders[name] = newDecoder
}

// Codecs returns the registered codec names, sorted.
func Codecs() []string {
	names := make([]string, 0, len(decoders))
	for name := range decoders {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// NewDecoder returns a new decoder of the named codec, or an error naming
// the registered ones.
func NewDecoder(codec string, cfg DecoderConfig) (Decoder, error) {
	newDecoder, ok := decoders[codec]
	if !ok {
		return nil, fmt.Errorf("new decoder: codec %q is not one of %s", codec, strings.Join(Codecs(), ", "))
	}
	d, err := newDecoder(cfg)
	if err != nil {
		return nil, fmt.Errorf("new %s decoder: %w", codec, err)
	}
	return d, nil
}

// DefaultMaxFutureSkew is how far ahead of the receive time a reading's
// event time may be before it is rejected (Options.MaxFutureSkew zero).
const DefaultMaxFutureSkew = time.Minute

// MaxErrors bounds Result.Errors: only the first MaxErrors problems of a
// call are kept as values; every problem is still counted in Result.Rejected.
const MaxErrors = 10

// MaxSkippedFields bounds Result.Skipped: string fields are counted by name
// for the first MaxSkippedFields distinct names of a call, and the rest only
// in Result.SkippedTotal.
const MaxSkippedFields = 16

// Options are the per-call inputs of a decode.
type Options struct {
	// NowNs is the receive time in nanoseconds since the Unix epoch
	// (required). It stands in for a missing event time and is the reference
	// for MaxFutureSkew. It is passed in, never read from the clock here, so
	// a decode is a pure function of its inputs.
	NowNs int64
	// MaxFutureSkew rejects readings whose event time is more than this far
	// after NowNs, so that a device with a broken clock cannot push the
	// watermark. Zero means DefaultMaxFutureSkew; a negative value disables
	// the check.
	MaxFutureSkew time.Duration
	// Precision is the unit of line protocol timestamps (the `precision`
	// parameter of the InfluxDB write API). The zero value is nanoseconds.
	// The JSON formats always use milliseconds.
	Precision Precision
	// Memo, when not nil, lets the JSON decoder skip building the series
	// key of an object whose "tags" are sent exactly as last time (or are
	// absent both times): a device sends the same tags message after
	// message, and building and interning the key was half of a decode.
	// Decode reads and updates it. It belongs to one topic: the caller
	// keeps one per topic and passes only that topic's. Other decoders
	// ignore it.
	Memo *SeriesMemo
}

// SeriesMemo remembers the series key of the last object decoded on a
// topic: Tags is the text of its "tags" member as sent ("" when it had
// none), Series the key it gave. Tags is only remembered when they were
// accepted without a complaint, so reusing the key skips no error, and
// only up to 256 bytes of it (the broker keeps a memo per topic). The zero
// value remembers nothing.
type SeriesMemo struct {
	Tags, Series string
}

// maxTimeNs is the latest event time accepted, or math.MaxInt64 when the
// future check is off.
func (o *Options) maxTimeNs() int64 {
	skew := o.MaxFutureSkew
	if skew == 0 {
		skew = DefaultMaxFutureSkew
	}
	if skew < 0 || o.NowNs > maxInt64-int64(skew) {
		return maxInt64
	}
	return o.NowNs + int64(skew)
}

const maxInt64 = 1<<63 - 1

// MinTimeNs and MaxTimeNs bound the event times ingest accepts: ±2^62 ns
// since the epoch (1823 to 2116). The windows engine aligns windows on
// event times and applies nothing beyond these bounds, so a reading
// outside them is rejected here (ReasonOutOfRange, with a precise error)
// rather than acknowledged, stored and then dropped.
const (
	MaxTimeNs int64 = 1 << 62
	MinTimeNs       = -MaxTimeNs
)

// timeRangeMsg returns "" when ts is within [MinTimeNs, MaxTimeNs], else
// the error message.
func timeRangeMsg(ts int64) string {
	if ts >= MinTimeNs && ts <= MaxTimeNs {
		return ""
	}
	return "event time " + strconv.FormatInt(ts, 10) + " ns is outside the representable range ±2^62 ns (" +
		time.Unix(0, MinTimeNs).UTC().Format(time.RFC3339) + " to " + time.Unix(0, MaxTimeNs).UTC().Format(time.RFC3339) + ")"
}

// Precision is the unit of a line protocol timestamp.
type Precision uint8

// Timestamp precisions, as named by the InfluxDB write API.
const (
	Nanosecond Precision = iota
	Microsecond
	Millisecond
	Second
)

// ParsePrecision parses the InfluxDB `precision` parameter: "ns", "us"
// (or "µs"), "ms" or "s". The empty string means nanoseconds.
func ParsePrecision(s string) (Precision, error) {
	switch s {
	case "", "ns", "n":
		return Nanosecond, nil
	case "us", "µs", "u":
		return Microsecond, nil
	case "ms":
		return Millisecond, nil
	case "s":
		return Second, nil
	}
	return 0, fmt.Errorf("invalid precision %q: want ns, us, ms or s", s)
}

// String returns the parameter spelling of p ("ns", "us", "ms", "s").
func (p Precision) String() string {
	switch p {
	case Nanosecond:
		return "ns"
	case Microsecond:
		return "us"
	case Millisecond:
		return "ms"
	case Second:
		return "s"
	}
	return "Precision(" + strconv.Itoa(int(p)) + ")"
}

// multiplier returns the number of nanoseconds in one unit of p.
func (p Precision) multiplier() int64 {
	switch p {
	case Microsecond:
		return 1e3
	case Millisecond:
		return 1e6
	case Second:
		return 1e9
	}
	return 1
}

// Reason classifies a rejected piece of input. Its String form is a stable
// snake_case word meant for a Prometheus label
// (runnel_ingest_rejected_total{reason="syntax"}).
type Reason uint8

// The reasons. The set is small on purpose: it is a label's cardinality.
const (
	// ReasonSyntax: the input does not parse (malformed line protocol or
	// JSON, an unparsable number or timestamp).
	ReasonSyntax Reason = iota
	// ReasonBadTopic: the MQTT topic is not <prefix>/<device>/<name>.
	ReasonBadTopic
	// ReasonBadFieldType: well-formed input of the wrong type: a JSON null,
	// object or array where a number is expected, an array element that is
	// not an object, an empty field name.
	ReasonBadFieldType
	// ReasonBadTag: a tag that cannot be part of a series key: not a string,
	// an empty key, a control character or invalid UTF-8, a duplicate key,
	// or a payload "device" tag that contradicts the topic.
	ReasonBadTag
	// ReasonMissingField: a required field is absent (biosignal rate_hz or
	// samples).
	ReasonMissingField
	// ReasonOutOfRange: a number outside what can be represented or is
	// allowed: a timestamp overflowing int64 nanoseconds, a float beyond
	// float64, an integer beyond 64 bits, a rate_hz or sample count out of
	// bounds.
	ReasonOutOfRange
	// ReasonFutureTimestamp: an event time more than Options.MaxFutureSkew
	// after the receive time.
	ReasonFutureTimestamp
	// ReasonNoReadings: a message that decoded cleanly to no reading at
	// all (see Result.requireReadings, the one definition every listener
	// applies): `{}`, `[]`, an object or lines of string fields only, an
	// empty payload.
	ReasonNoReadings

	numReasons
)

// NumReasons is the number of Reason values, 0 to NumReasons-1; handy to
// pre-register one metric series per reason.
const NumReasons = int(numReasons)

var reasonNames = [numReasons]string{
	ReasonSyntax:          "syntax",
	ReasonBadTopic:        "bad_topic",
	ReasonBadFieldType:    "bad_field_type",
	ReasonBadTag:          "bad_tag",
	ReasonMissingField:    "missing_field",
	ReasonOutOfRange:      "out_of_range",
	ReasonFutureTimestamp: "future_timestamp",
	ReasonNoReadings:      "no_readings",
}

// String returns the label value of r.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// Error is one rejected piece of input with its position. Fields that do
// not apply are zero (Line, Column) or -1 (Offset, Index), and Field is
// empty when the problem is not about one field.
type Error struct {
	Reason Reason
	// Line and Column are 1-based; Column counts bytes.
	Line, Column int
	// Offset is the 0-based byte offset of the problem in the body, or -1.
	Offset int
	// Index is the element index: the position of the object in a JSON
	// array, or of the sample in a biosignal batch; -1 otherwise.
	Index int
	// Field names the field (or tag, as "tags.<key>") at fault.
	Field string
	// Msg says what is wrong, without the position.
	Msg string
	// Err is the underlying error, for example the
	// *lineprotocol.DecodeError of a line protocol syntax error.
	Err error
}

// Error formats the position first, for example
// `line 3, column 14: field "temp": invalid float value syntax`.
func (e *Error) Error() string {
	var b strings.Builder
	sep := func() {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
	}
	if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(", column ")
			b.WriteString(strconv.Itoa(e.Column))
		}
	} else if e.Offset >= 0 {
		b.WriteString("offset ")
		b.WriteString(strconv.Itoa(e.Offset))
	}
	if e.Index >= 0 {
		sep()
		b.WriteString("element ")
		b.WriteString(strconv.Itoa(e.Index))
	}
	if e.Field != "" {
		sep()
		b.WriteString("field ")
		b.WriteString(strconv.Quote(e.Field))
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying error, if any.
func (e *Error) Unwrap() error { return e.Err }

// FieldCount is a field name with a count.
type FieldCount struct {
	Field string
	Count int
}

// Result reports one Decode call. A caller that reuses one Result across
// calls (Decode resets it) decodes without allocating for the report on the
// happy path.
type Result struct {
	// Readings is the number of readings appended to dst.
	Readings int
	// Rejected counts rejected units by Reason: a line (line protocol), an
	// object, a single field or a tag (JSON), a whole message or a single
	// sample (biosignal).
	Rejected [numReasons]int
	// Errors holds the first MaxErrors problems, in input order. The *Error
	// values are new for each call and may be kept; the slice is reused by
	// the next Decode into the same Result.
	Errors []*Error
	// Skipped counts string fields, which are not readings, by field name,
	// for the first MaxSkippedFields distinct names.
	Skipped []FieldCount
	// SkippedTotal counts all skipped string fields.
	SkippedTotal int
	// PrecisionLoss counts integer field values (line protocol int and
	// uint) whose magnitude exceeds 2^53, so that the float64 reading is
	// rounded.
	PrecisionLoss int
	// skipAt is 1 + the byte offset of the line (or object) holding the
	// first skipped string field; 0: none. requireReadings names it.
	skipAt int
}

// Reset clears r, keeping its capacity.
func (r *Result) Reset() {
	clear(r.Errors)
	errs, skipped := r.Errors[:0], r.Skipped[:0]
	*r = Result{Errors: errs, Skipped: skipped}
}

// copyFrom makes r a copy of src that shares no memory with it, keeping r's
// capacity: the caller may hand src back to a pool at once. It allocates
// only when src kept errors or skipped fields.
func (r *Result) copyFrom(src *Result) {
	errs, skipped := r.Errors, r.Skipped
	*r = *src
	r.Errors = append(errs[:0], src.Errors...)
	r.Skipped = append(skipped[:0], src.Skipped...)
}

// Problems returns the number of rejected units over all reasons.
func (r *Result) Problems() int {
	n := 0
	for _, c := range r.Rejected {
		n += c
	}
	return n
}

// Err returns nil when nothing was rejected, and otherwise an error joining
// the kept Errors (errors.As finds each *Error), noting how many more
// problems were counted but not kept.
func (r *Result) Err() error {
	n := r.Problems()
	if n == 0 {
		return nil
	}
	errs := make([]error, 0, len(r.Errors)+1)
	for _, e := range r.Errors {
		errs = append(errs, e)
	}
	if more := n - len(r.Errors); more > 0 {
		errs = append(errs, fmt.Errorf("and %d more rejected", more))
	}
	return errors.Join(errs...)
}

// wants reports whether a new problem would be kept in Errors, so the
// caller can skip building its message.
func (r *Result) wants() bool { return len(r.Errors) < MaxErrors }

// add counts one problem of reason and keeps e when there is room. e may be
// nil when the caller skipped building it because !r.wants().
func (r *Result) add(reason Reason, e *Error) {
	r.Rejected[reason]++
	if e != nil && len(r.Errors) < MaxErrors {
		e.Reason = reason
		r.Errors = append(r.Errors, e)
	}
}

// skippedAt notes where the first skipped string field is (off: the byte
// offset of its line or object), for requireReadings.
func (r *Result) skippedAt(off int) {
	if r.skipAt == 0 && off >= 0 {
		r.skipAt = off + 1
	}
}

// requireReadings is the one definition of a message with no usable
// reading, applied by every listener to each message after decoding it
// (an MQTT payload, a UDP datagram, an HTTP write body): a message that
// yielded no reading and had nothing else rejected is rejected whole, as
// ReasonNoReadings, with an error naming the line of its first string field
// when it has one. A message with readings, or whose problems are already
// reported (a syntax error, say), is left as it is. It reports whether it
// added the rejection (the caller counts it when it counted the decode
// before). body is the message, for the line number.
func (r *Result) requireReadings(body []byte) bool {
	if r.Readings > 0 || r.Problems() > 0 {
		return false
	}
	e := &Error{Offset: -1, Index: -1, Msg: "no usable reading: no numeric or boolean field"}
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		e.Msg = "no usable reading: empty payload"
	case r.SkippedTotal > 0:
		e.Msg = "no usable reading: string fields are not readings ("
		for i, f := range r.Skipped {
			if i > 0 {
				e.Msg += ", "
			}
			e.Msg += strconv.Quote(f.Field)
		}
		e.Msg += ")"
	}
	if r.skipAt > 0 {
		e.Offset = r.skipAt - 1
		e.Line, _ = lineCol(body, e.Offset)
	}
	r.add(ReasonNoReadings, e)
	return true
}

// skip counts one skipped string field.
func (r *Result) skip(field string) {
	r.SkippedTotal++
	for i := range r.Skipped {
		if r.Skipped[i].Field == field {
			r.Skipped[i].Count++
			return
		}
	}
	if len(r.Skipped) < MaxSkippedFields {
		r.Skipped = append(r.Skipped, FieldCount{Field: field, Count: 1})
	}
}

// lineCol converts a byte offset in body to a 1-based line and byte column.
func lineCol(body []byte, off int) (line, col int) {
	line = 1
	start := 0
	for i := 0; i < off && i < len(body); i++ {
		if body[i] == '\n' {
			line++
			start = i + 1
		}
	}
	return line, off - start + 1
}

// futureMsg describes an event time beyond the allowed skew.
func futureMsg(ts, now, maxTs int64) string {
	return "event time " + time.Unix(0, ts).UTC().Format(time.RFC3339Nano) +
		" is " + time.Duration(ts-now).String() + " after the receive time (max skew " +
		time.Duration(maxTs-now).String() + ")"
}
