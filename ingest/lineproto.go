package ingest

import (
	"errors"
	"strconv"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/runnel-iot/runnel/wal"
)

// LineProtocol decodes InfluxDB line protocol
// (https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/),
// as carried by MQTT topics under lp/#, UDP datagrams and the body of
// POST /api/v2/write. The syntax is the one of
// github.com/influxdata/line-protocol/v2, which does the tokenising.
//
// Each field of a line is one reading of the line's series (measurement plus
// sorted tags, see series.go):
//
//   - float fields as they are; NaN and ±Inf cannot be written in line
//     protocol and are a syntax error;
//   - int (1i) and uint (1u) fields converted to float64; a magnitude above
//     2^53 is rounded and counted in Result.PrecisionLoss;
//   - bool fields 1 or 0;
//   - string fields are not readings: skipped, counted by field name;
//   - a field repeated within a line: the last value wins, as in InfluxDB.
//
// The timestamp is read in Options.Precision; a line without one gets
// Options.NowNs (not truncated to the precision).
//
// A line is taken whole or rejected whole: a syntax error anywhere in it, a
// value out of range, a duplicate tag key, a timestamp that overflows or lies
// beyond Options.MaxFutureSkew reject that line only (one Rejected count,
// one *Error with line and column), and decoding goes on with the next line.
//
// A LineProtocol holds an intern cache and scratch buffers reused across
// calls; it is not safe for concurrent use (one per connection or
// goroutine). The zero value is ready to use.
type LineProtocol struct {
	names   interner
	body    []byte
	buf     []byte      // measurement and tag bytes of the current line
	tagOffs []tagOffset // tag positions in buf
	tags    []tagRef
	key     []byte
	skips   []string       // string fields of the current line
	seen    map[string]int // field → index, for lines with many fields
	dedupN  int            // fields of the current line tracked in seen
	loss    int            // precision losses of the current line
	scratch Result         // used when Decode gets a nil *Result
}

type tagOffset struct{ ks, ke, vs, ve int }

// CodecLineProtocol names line protocol in the topic mapping; UDP and
// HTTP writes decode with it too.
const CodecLineProtocol = "line_protocol"

func init() {
	registerDecoder(CodecLineProtocol, func(DecoderConfig) (Decoder, error) { return new(lineProtocolDecoder), nil })
}

// lineProtocolDecoder is a LineProtocol as a Decoder: line protocol carries
// its series in the body, so the topic is not read.
type lineProtocolDecoder struct{ LineProtocol }

func (d *lineProtocolDecoder) Decode(dst []wal.Reading, _ string, body []byte, opt Options, res *Result) []wal.Reading {
	return d.LineProtocol.Decode(dst, body, opt, res)
}

// newLineDecoder returns the decoder of UDP datagrams and HTTP write
// bodies, found by name like every other.
func newLineDecoder() Decoder {
	d, err := NewDecoder(CodecLineProtocol, DecoderConfig{})
	if err != nil {
		panic("BUG: " + err.Error()) // registered in this file
	}
	return d
}

// NewLineProtocol returns a line protocol decoder.
func NewLineProtocol() *LineProtocol { return &LineProtocol{} }

// Decode decodes the line protocol in body, appends one reading per numeric
// or boolean field to dst and returns the extended slice. It resets res and
// reports there what it rejected (res may be nil). It keeps no reference to
// dst or body; the strings in the readings are interned copies.
func (d *LineProtocol) Decode(dst []wal.Reading, body []byte, opt Options, res *Result) []wal.Reading {
	if res == nil {
		res = &d.scratch
	}
	res.Reset()
	d.body = body
	n0 := len(dst)
	lp := lineprotocol.NewDecoderWithBytes(body)
	for lp.Next() {
		start := len(dst)
		var ok bool
		dst, ok = d.line(lp, dst, &opt, res)
		if !ok {
			clear(dst[start:])
			dst = dst[:start]
		}
	}
	d.body = nil
	res.Readings = len(dst) - n0
	return dst
}

// line decodes one entry: its series, then its fields, then its time.
// On false the caller drops what it appended.
func (d *LineProtocol) line(lp *lineprotocol.Decoder, dst []wal.Reading, opt *Options, res *Result) ([]wal.Reading, bool) {
	start := len(dst)
	series, lineOff, ok := d.series(lp, res)
	if !ok {
		return dst, false
	}
	if dst, ok = d.fields(lp, dst, series, res); !ok {
		return dst, false
	}
	ts, ok := d.timestamp(lp, opt, lineOff, res)
	if !ok {
		return dst, false
	}
	for i := start; i < len(dst); i++ {
		dst[i].TimeNs = ts
	}
	for _, f := range d.skips {
		res.skip(f)
	}
	if len(d.skips) > 0 {
		res.skippedAt(lineOff)
	}
	res.PrecisionLoss += d.loss
	return dst, true
}

// series reads the measurement and tags and returns the interned series
// key and the line's offset in the body (-1: unknown).
func (d *LineProtocol) series(lp *lineprotocol.Decoder, res *Result) (series string, lineOff int, ok bool) {
	m, err := lp.Measurement()
	if err != nil {
		d.libErr(res, err)
		return "", -1, false
	}
	lineOff = offsetIn(d.body, m)
	d.buf = append(d.buf[:0], m...)
	mEnd := len(d.buf)
	d.tagOffs = d.tagOffs[:0]
	for {
		k, v, err := lp.NextTag()
		if err != nil {
			d.libErr(res, err)
			return "", lineOff, false
		}
		if k == nil {
			break
		}
		if lineOff < 0 {
			lineOff = offsetIn(d.body, v)
		}
		t := tagOffset{ks: len(d.buf)}
		d.buf = append(d.buf, k...)
		t.ke, t.vs = len(d.buf), len(d.buf)
		d.buf = append(d.buf, v...)
		t.ve = len(d.buf)
		d.tagOffs = append(d.tagOffs, t)
	}
	d.tags = d.tags[:0]
	for _, t := range d.tagOffs {
		d.tags = append(d.tags, tagRef{k: d.buf[t.ks:t.ke], v: d.buf[t.vs:t.ve]})
	}
	if dup := sortTags(d.tags); dup != nil {
		if res.wants() {
			res.add(ReasonBadTag, d.posErr(lineOff, "tags."+string(dup), "duplicate tag key"))
		} else {
			res.add(ReasonBadTag, nil)
		}
		return "", lineOff, false
	}
	d.key = appendKey(d.key[:0], d.buf[:mEnd], d.tags)
	return d.names.bytes(d.key), lineOff, true
}

// fields appends one reading of series per numeric or boolean field (a
// repeated field: the last value wins) and notes the string fields in
// d.skips and precision losses in d.loss.
func (d *LineProtocol) fields(lp *lineprotocol.Decoder, dst []wal.Reading, series string, res *Result) ([]wal.Reading, bool) {
	start := len(dst)
	d.skips = d.skips[:0]
	d.loss = 0
	d.dedupN = 0
	for {
		k, kind, v, err := lp.NextFieldBytes()
		if err != nil {
			d.libErr(res, err)
			return dst, false
		}
		if k == nil {
			return dst, true
		}
		if kind == lineprotocol.String {
			d.skips = append(d.skips, d.names.bytes(k))
			continue
		}
		val, err := lineprotocol.NewValueFromBytes(kind, v)
		if err != nil {
			d.valueErr(res, k, kind, v, err)
			return dst, false
		}
		f := d.value(val)
		field := d.names.bytes(k)
		if i := d.findField(dst, start, field); i >= 0 {
			dst[i].Value = f
			continue
		}
		dst = append(dst, wal.Reading{Series: series, Field: field, Value: f})
	}
}

// valueErr records a field value the library cannot convert.
func (d *LineProtocol) valueErr(res *Result, k []byte, kind lineprotocol.ValueKind, v []byte, err error) {
	reason := ReasonSyntax
	if errors.Is(err, lineprotocol.ErrValueOutOfRange) {
		reason = ReasonOutOfRange
	}
	if !res.wants() {
		res.add(reason, nil)
		return
	}
	msg := "invalid " + kind.String() + " value " + strconv.Quote(string(v))
	if reason == ReasonOutOfRange {
		msg = kind.String() + " value " + string(v) + " out of range"
	}
	e := d.posErr(offsetIn(d.body, v), string(k), msg)
	e.Err = err
	res.add(reason, e)
}

// timestamp reads the line's timestamp (opt.NowNs when it has none) and checks
// it against the future skew.
func (d *LineProtocol) timestamp(lp *lineprotocol.Decoder, opt *Options, lineOff int, res *Result) (int64, bool) {
	tb, err := lp.TimeBytes()
	if err != nil {
		d.libErr(res, err)
		return 0, false
	}
	ts := opt.NowNs
	if tb != nil {
		var msg string
		var reason Reason
		ts, reason, msg = parseLPTime(tb, opt.Precision)
		if msg != "" {
			if res.wants() {
				res.add(reason, d.posErr(offsetIn(d.body, tb), "", msg))
			} else {
				res.add(reason, nil)
			}
			return 0, false
		}
	}
	if msg := timeRangeMsg(ts); msg != "" {
		off := offsetIn(d.body, tb)
		if off < 0 {
			off = lineOff
		}
		res.add(ReasonOutOfRange, d.posErr(off, "", msg))
		return 0, false
	}
	if maxTs := opt.maxTimeNs(); ts > maxTs {
		if res.wants() {
			off := offsetIn(d.body, tb)
			if off < 0 {
				off = lineOff
			}
			res.add(ReasonFutureTimestamp, d.posErr(off, "", futureMsg(ts, opt.NowNs, maxTs)))
		} else {
			res.add(ReasonFutureTimestamp, nil)
		}
		return 0, false
	}
	return ts, true
}

// value converts a numeric or boolean line protocol value to float64.
func (d *LineProtocol) value(v lineprotocol.Value) float64 {
	switch v.Kind() {
	case lineprotocol.Int:
		i := v.IntV()
		if i > 1<<53 || i < -(1<<53) {
			d.loss++
		}
		return float64(i)
	case lineprotocol.Uint:
		u := v.UintV()
		if u > 1<<53 {
			d.loss++
		}
		return float64(u)
	case lineprotocol.Bool:
		if v.BoolV() {
			return 1
		}
		return 0
	}
	return v.FloatV()
}

// findField returns the index in dst[start:] of the reading of field, or
// -1. Interned names make the comparisons cheap; lines with many fields
// switch to a map so that a hostile line cannot make this quadratic.
func (d *LineProtocol) findField(dst []wal.Reading, start int, field string) int {
	n := len(dst) - start
	if n <= 16 {
		for i := start; i < len(dst); i++ {
			if dst[i].Field == field {
				return i
			}
		}
		return -1
	}
	if d.dedupN == 0 {
		if d.seen == nil {
			d.seen = make(map[string]int)
		}
		clear(d.seen)
	}
	for ; d.dedupN < n; d.dedupN++ {
		d.seen[dst[start+d.dedupN].Field] = start + d.dedupN
	}
	if i, ok := d.seen[field]; ok {
		return i
	}
	return -1
}

// parseLPTime converts a line protocol timestamp in precision p to
// nanoseconds; on failure msg is set.
func parseLPTime(tb []byte, p Precision) (ns int64, reason Reason, msg string) {
	n, err := strconv.ParseInt(string(tb), 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, ReasonOutOfRange, "timestamp " + string(tb) + " out of range"
		}
		return 0, ReasonSyntax, "invalid timestamp " + strconv.Quote(string(tb))
	}
	m := p.multiplier()
	ns = n * m
	if m != 1 && ns/m != n {
		return 0, ReasonOutOfRange, "timestamp " + string(tb) + " " + p.String() + " out of range"
	}
	return ns, 0, ""
}

// libErr records an error of the line protocol library, keeping its line and
// column.
func (d *LineProtocol) libErr(res *Result, err error) {
	if !res.wants() {
		res.add(ReasonSyntax, nil)
		return
	}
	e := &Error{Offset: -1, Index: -1, Msg: err.Error(), Err: err}
	var de *lineprotocol.DecodeError
	if errors.As(err, &de) {
		e.Line, e.Column = int(de.Line), de.Column
		e.Msg = de.Err.Error()
		e.Offset = lineOffset(d.body, e.Line) + e.Column - 1
		if e.Offset > len(d.body) {
			e.Offset = len(d.body)
		}
	}
	res.add(ReasonSyntax, e)
}

// posErr builds an error at byte offset off of the body (-1: unknown).
func (d *LineProtocol) posErr(off int, field, msg string) *Error {
	e := &Error{Offset: off, Index: -1, Field: field, Msg: msg}
	if off >= 0 {
		e.Line, e.Column = lineCol(d.body, off)
	}
	return e
}

// offsetIn returns the offset of sub within body when sub is a subslice of
// it (the library returns unescaped tokens as subslices of the input), and
// -1 otherwise (an unescaped copy in the library's buffer).
func offsetIn(body, sub []byte) int {
	if len(sub) == 0 || cap(sub) > cap(body) {
		return -1
	}
	off := cap(body) - cap(sub)
	if off >= len(body) || &body[off] != &sub[0] {
		return -1
	}
	return off
}

// lineOffset returns the offset of the first byte of 1-based line n.
func lineOffset(body []byte, n int) int {
	line := 1
	for i := 0; i < len(body) && line < n; i++ {
		if body[i] == '\n' {
			line++
			if line == n {
				return i + 1
			}
		}
	}
	if n <= 1 {
		return 0
	}
	return len(body)
}
