package ingest

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/runnel-iot/runnel/wal"
)

// JSON decodes telemetry messages: MQTT topic `<prefix>/<device>/<measurement>`
// (telemetry/<device>/<measurement> by default) with a body that is one
// object or an array of objects:
//
//	{"ts":1700000000000,"temp":21.5,"hum":40.1,"tags":{"site":"plant1"}}
//
// Rules:
//
//   - Series: `<measurement>,device=<device>` plus the string members of
//     "tags", sorted and escaped (series.go). The topic's device always
//     wins: a payload tag "device" equal to it is redundant and ignored; a
//     different one is dropped and reported (ReasonBadTag) while the readings
//     are kept, because the topic is what the broker authenticated. Tags
//     with an empty value are omitted (line protocol has no empty tag
//     values). A tag that is not a string, has an empty key, a control
//     character or invalid UTF-8 rejects its object (ReasonBadTag): a wrong
//     series is worse than none.
//   - "ts": milliseconds since the epoch, integer (exact) or with a fraction
//     or exponent; absent: Options.NowNs. A ts that is not a number or
//     overflows rejects its object; so does one beyond MaxFutureSkew.
//   - Every other member is a field: a number is one reading, true/false are
//     1/0, a string is skipped and counted by name (Result.Skipped), and
//     null, an object or an array is an error for that field alone
//     (ReasonBadFieldType, with element index, field name and offset); the
//     rest of the object is still decoded. A number beyond float64 is
//     ReasonOutOfRange; an empty or non-UTF-8 field name ReasonBadFieldType.
//   - A member repeated within an object: the last one wins, as with
//     encoding/json.
//   - An array element that is not an object is an error for that element.
//   - Invalid JSON is ReasonSyntax with the byte offset, line and column
//     (encoding/json's wording). Objects completed before it are kept;
//     the object it interrupts and everything after are not.
//
// A JSON holds an intern cache and scratch buffers reused across calls; it is
// not safe for concurrent use (one per connection or goroutine). The zero
// value is ready to use.
type JSON struct {
	names   interner
	fields  recentNames
	sc      scanner
	tags    tagSet
	skips   []string
	scratch Result
}

// CodecJSON names the JSON telemetry format in the topic mapping.
const CodecJSON = "json"

func init() {
	registerDecoder(CodecJSON, func(DecoderConfig) (Decoder, error) { return NewJSON(), nil })
}

// NewJSON returns a JSON telemetry decoder.
func NewJSON() *JSON { return &JSON{} }

// Decode decodes body, received on topic, and appends one reading per
// numeric or boolean field to dst and returns the extended slice. It resets
// res and reports there what it rejected (res may be nil). It keeps no
// reference to dst, topic or body; the strings in the readings are interned
// copies.
func (d *JSON) Decode(dst []wal.Reading, topic string, body []byte, opt Options, res *Result) []wal.Reading {
	if res == nil {
		res = &d.scratch
	}
	res.Reset()
	n0 := len(dst)
	device, meas, ok := splitTopic(topic)
	if !ok {
		res.add(ReasonBadTopic, badTopic(topic, "telemetry/<device>/<measurement>"))
		return dst
	}
	sc := &d.sc
	sc.reset(body)
	ctx := objCtx{device: device, name: meas, opt: &opt, res: res, memo: opt.Memo}
	switch sc.ws() {
	case '{':
		ctx.index = -1
		dst = d.object(dst, &ctx)
	case '[':
		sc.p++
		if sc.ws() == ']' {
			sc.p++
			break
		}
		for i := 0; ; i++ {
			ctx.index = i
			if sc.ws() == '{' {
				dst = d.object(dst, &ctx)
			} else {
				off := sc.p
				if kind, ok := sc.skipValue(); ok {
					res.add(ReasonBadFieldType, &Error{Offset: off, Index: i, Msg: "expected an object, got " + kind})
				}
			}
			if sc.errOff >= 0 {
				break
			}
			if sc.ws() == ',' {
				sc.p++
				continue
			}
			if sc.ws() == ']' {
				sc.p++
				break
			}
			sc.failChar("after array element")
			break
		}
	default:
		off := sc.p
		if kind, ok := sc.skipValue(); ok {
			res.add(ReasonBadFieldType, &Error{Offset: off, Index: -1, Msg: "expected an object or an array of objects, got " + kind})
		}
	}
	if sc.errOff < 0 && sc.more() {
		sc.failChar("after top-level value")
	}
	if sc.errOff >= 0 {
		res.add(ReasonSyntax, &Error{Offset: sc.errOff, Index: -1, Msg: sc.errMsg})
	}
	fillLineCol(res, body)
	sc.b = nil
	res.Readings = len(dst) - n0
	return dst
}

// objCtx is what an object decode needs besides the scanner.
type objCtx struct {
	device, name string
	index        int // element index, -1 for a bare object
	opt          *Options
	res          *Result
	memo         *SeriesMemo // nil: none
}

// fieldErr records a problem with one field of the current object.
func (c *objCtx) fieldErr(reason Reason, off int, field []byte, msg string) {
	if !c.res.wants() {
		c.res.add(reason, nil)
		return
	}
	c.res.add(reason, &Error{Offset: off, Index: c.index, Field: string(field), Msg: msg})
}

// object decodes the object at sc.p. On a syntax error it drops what the
// object appended.
func (d *JSON) object(dst []wal.Reading, c *objCtx) []wal.Reading {
	sc := &d.sc
	start := len(dst)
	objOff := sc.p
	sc.p++ // '{'
	d.tags.reset()
	d.skips = d.skips[:0]
	hasTS, reject := false, false
	// The last "tags" member: seen, taken from the memo, and its text
	// when it parsed without a complaint (nil otherwise).
	sawTags, memoHit := false, false
	var tagsText []byte
	var tsNs int64
	tsOff := -1
	if sc.ws() == '}' {
		sc.p++
	} else {
		for {
			if sc.ws() != '"' {
				sc.failChar("looking for beginning of object key string")
				break
			}
			keyOff := sc.p
			k, nonASCII, ok := sc.str()
			if !ok || !sc.expect(':', "after object key") {
				break
			}
			sc.ws()
			valOff := sc.p
			switch string(k) {
			case "ts":
				hasTS, tsOff = false, valOff
				if v := sc.ws(); v == '-' || (v >= '0' && v <= '9') {
					lit, isInt, ok := sc.number()
					if !ok {
						break
					}
					if tsNs, ok = msToNs(lit, isInt); !ok {
						c.fieldErr(ReasonOutOfRange, valOff, k, "timestamp "+string(lit)+" ms out of range")
						reject = true
						break
					}
					hasTS = true
				} else if kind, ok := sc.skipValue(); ok {
					c.fieldErr(ReasonBadFieldType, valOff, k, "ts must be a number of milliseconds, got "+kind)
					reject = true
				}
			case "tags":
				sawTags, memoHit, tagsText = true, false, nil
				if sc.ws() != '{' {
					if kind, ok := sc.skipValue(); ok {
						c.fieldErr(ReasonBadTag, valOff, k, "tags must be an object of strings, got "+kind)
						reject = true
					}
					break
				}
				// An object is self-delimiting: a body that starts with the
				// memo's accepted tags text holds exactly those tags here.
				if m := c.memo; m != nil && m.Tags != "" && len(sc.b)-sc.p >= len(m.Tags) &&
					string(sc.b[sc.p:sc.p+len(m.Tags)]) == m.Tags {
					sc.p += len(m.Tags)
					d.tags.reset()
					memoHit = true
					break
				}
				bad := c.res.Rejected[ReasonBadTag]
				if !d.tags.parse(sc, c) {
					reject = true
				} else if sc.errOff < 0 && c.res.Rejected[ReasonBadTag] == bad {
					tagsText = sc.b[valOff:sc.p]
				}
			default:
				dst = d.field(dst, start, k, nonASCII, keyOff, valOff, c)
			}
			if sc.errOff >= 0 {
				break
			}
			if sc.ws() == ',' {
				sc.p++
				continue
			}
			if sc.ws() == '}' {
				sc.p++
				break
			}
			sc.failChar("after object key:value pair")
			break
		}
	}
	if sc.errOff >= 0 || reject {
		clear(dst[start:])
		return dst[:start]
	}
	series := d.series(c, sawTags, memoHit, tagsText)
	if !hasTS {
		tsNs = c.opt.NowNs
	}
	if msg := timeRangeMsg(tsNs); msg != "" {
		c.res.add(ReasonOutOfRange, &Error{Offset: tsOff, Index: c.index, Field: "ts", Msg: msg})
		clear(dst[start:])
		return dst[:start]
	}
	if maxTs := c.opt.maxTimeNs(); tsNs > maxTs {
		if c.res.wants() {
			c.res.add(ReasonFutureTimestamp, &Error{Offset: tsOff, Index: c.index, Field: "ts", Msg: futureMsg(tsNs, c.opt.NowNs, maxTs)})
		} else {
			c.res.add(ReasonFutureTimestamp, nil)
		}
		clear(dst[start:])
		return dst[:start]
	}
	for i := start; i < len(dst); i++ {
		dst[i].Series, dst[i].TimeNs = series, tsNs
	}
	for _, f := range d.skips {
		c.res.skip(f)
	}
	if len(d.skips) > 0 {
		c.res.skippedAt(objOff)
	}
	return dst
}

// field decodes the value of member k at sc.p as a reading.
func (d *JSON) field(dst []wal.Reading, start int, k []byte, nonASCII bool, keyOff, valOff int, c *objCtx) []wal.Reading {
	sc := &d.sc
	if len(k) == 0 || (nonASCII && !utf8.Valid(k)) {
		if _, ok := sc.skipValue(); ok {
			c.fieldErr(ReasonBadFieldType, keyOff, k, "field name must be non-empty UTF-8")
		}
		return dst
	}
	name := d.fields.bytes(k, &d.names)
	// The last member of a name wins: forget an earlier reading of it.
	for i := start; i < len(dst); i++ {
		if dst[i].Field == name {
			copy(dst[i:], dst[i+1:])
			dst[len(dst)-1] = wal.Reading{}
			dst = dst[:len(dst)-1]
			break
		}
	}
	for i, f := range d.skips {
		if f == name {
			d.skips = append(d.skips[:i], d.skips[i+1:]...)
			break
		}
	}
	var v float64
	switch ch := sc.ws(); {
	case ch == '-' || (ch >= '0' && ch <= '9'):
		lit, _, ok := sc.number()
		if !ok {
			return dst
		}
		if f, ok := fastFloat(lit); ok {
			v = f
			break
		}
		f, err := strconv.ParseFloat(string(lit), 64)
		if err != nil {
			reason, msg := ReasonSyntax, "invalid number "+string(lit)
			if errors.Is(err, strconv.ErrRange) {
				reason, msg = ReasonOutOfRange, "number "+string(lit)+" out of float64 range"
			}
			c.fieldErr(reason, valOff, k, msg)
			return dst
		}
		v = f
	case ch == 't':
		if !sc.literal("true") {
			return dst
		}
		v = 1
	case ch == 'f':
		if !sc.literal("false") {
			return dst
		}
	case ch == '"':
		if _, _, ok := sc.str(); ok {
			d.skips = append(d.skips, name)
		}
		return dst
	default:
		if kind, ok := sc.skipValue(); ok {
			c.fieldErr(ReasonBadFieldType, valOff, k, kind+" is not a number")
		}
		return dst
	}
	return append(dst, wal.Reading{Field: name, Value: v})
}

// series returns the object's series key: the memo's when its tags are
// the memo's (or both have none), else built and interned, and then
// remembered in the memo when its tags were accepted without a complaint.
func (d *JSON) series(c *objCtx, sawTags, memoHit bool, tagsText []byte) string {
	m := c.memo
	if m != nil && m.Series != "" && (memoHit || (!sawTags && m.Tags == "")) {
		return m.Series
	}
	series := d.tags.series(&d.names, c)
	switch {
	case m == nil:
	case len(tagsText) > maxMemoTags:
		*m = SeriesMemo{} // not kept: the memo lives in a cache of thousands of topics
	case !sawTags || tagsText != nil:
		m.Tags, m.Series = string(tagsText), series // a copy: the body is the caller's
	}
	return series
}

// maxMemoTags bounds the tags text a SeriesMemo keeps (the broker keeps a
// memo per topic, for thousands of topics): a device's tags are a few
// short pairs; longer text gets its key built every time.
const maxMemoTags = 256

// tagSet collects the "tags" member of a JSON or biosignal message.
type tagSet struct {
	buf  []byte
	offs []tagOffset
	refs []tagRef
	key  []byte
}

func (t *tagSet) reset() {
	t.buf = t.buf[:0]
	t.offs = t.offs[:0]
}

// parse reads the tags object at sc.p. It returns false when a tag rejects
// the object (the error is recorded) or on a syntax error.
func (t *tagSet) parse(sc *scanner, c *objCtx) bool {
	t.reset() // the last "tags" member wins
	sc.p++    // '{'
	good := true
	if sc.ws() == '}' {
		sc.p++
		return true
	}
	for {
		if sc.ws() != '"' {
			return sc.failChar("looking for beginning of object key string")
		}
		keyOff := sc.p
		k, kNonASCII, ok := sc.str()
		if !ok {
			return false
		}
		o := tagOffset{ks: len(t.buf)}
		t.buf = append(t.buf, k...)
		o.ke = len(t.buf)
		if !sc.expect(':', "after object key") {
			return false
		}
		valOff := sc.p
		name := t.buf[o.ks:o.ke]
		if sc.ws() != '"' {
			kind, ok := sc.skipValue()
			if !ok {
				return false
			}
			c.tagErr(valOff, name, "tag value must be a string, got "+kind)
			good = false
		} else {
			v, vNonASCII, ok := sc.str()
			if !ok {
				return false
			}
			o.vs = len(t.buf)
			t.buf = append(t.buf, v...)
			o.ve = len(t.buf)
			key, val := t.buf[o.ks:o.ke], t.buf[o.vs:o.ve]
			switch {
			case len(key) == 0:
				c.tagErr(keyOff, name, "empty tag key")
				good = false
			case badTagBytes(key, kNonASCII) || badTagBytes(val, vNonASCII):
				c.tagErr(keyOff, name, "tag holds a control character or invalid UTF-8")
				good = false
			case string(key) == "device":
				if string(val) != c.device {
					c.tagErr(valOff, name, "payload tag device="+strconv.Quote(string(val))+
						" contradicts the topic's device "+strconv.Quote(c.device)+"; the topic wins")
				}
			case len(val) > 0:
				t.add(o)
			}
		}
		if sc.ws() == ',' {
			sc.p++
			continue
		}
		if sc.ws() == '}' {
			sc.p++
			return good
		}
		return sc.failChar("after object key:value pair")
	}
}

// add adds a tag, replacing an earlier one with the same key.
func (t *tagSet) add(o tagOffset) {
	k := t.buf[o.ks:o.ke]
	for i, p := range t.offs {
		if string(t.buf[p.ks:p.ke]) == string(k) {
			t.offs[i] = o
			return
		}
	}
	t.offs = append(t.offs, o)
}

// badTagBytes reports control characters (which line protocol cannot carry
// in a tag) or invalid UTF-8.
func badTagBytes(b []byte, nonASCII bool) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return nonASCII && !utf8.Valid(b)
}

// tagErr records a rejected tag.
func (c *objCtx) tagErr(off int, key []byte, msg string) {
	if !c.res.wants() {
		c.res.add(ReasonBadTag, nil)
		return
	}
	c.res.add(ReasonBadTag, &Error{Offset: off, Index: c.index, Field: "tags." + string(key), Msg: msg})
}

// series builds and interns `<name>,device=<device>` plus the tags.
func (t *tagSet) series(names *interner, c *objCtx) string {
	dev := t.appendDevice(c.device)
	t.refs = t.refs[:0]
	for _, o := range t.offs {
		t.refs = append(t.refs, tagRef{k: t.buf[o.ks:o.ke], v: t.buf[o.vs:o.ve]})
	}
	t.refs = append(t.refs, tagRef{k: deviceKey, v: dev})
	if dup := sortTags(t.refs); dup != nil {
		// Cannot happen: add replaces duplicates and "device" is filtered.
		panic("BUG: duplicate tag key " + string(dup))
	}
	t.key = appendKey(t.key[:0], c.name, t.refs)
	return names.bytes(t.key)
}

var deviceKey = []byte("device")

func (t *tagSet) appendDevice(device string) []byte {
	n := len(t.buf)
	t.buf = append(t.buf, device...)
	return t.buf[n:]
}

// badTopic reports a topic that does not have the expected shape.
func badTopic(topic, want string) *Error {
	return &Error{Offset: -1, Index: -1, Msg: "topic " + strconv.Quote(topic) + " is not " + want}
}

// fillLineCol sets Line and Column from Offset for errors that lack them.
func fillLineCol(res *Result, body []byte) {
	for _, e := range res.Errors {
		if e.Line == 0 && e.Offset >= 0 {
			e.Line, e.Column = lineCol(body, e.Offset)
		}
	}
}

// The JSON scanner.

// scanner is the small JSON tokeniser shared by the JSON and biosignal
// decoders. It reads the body in place, validates exactly what RFC 8259
// allows (the fuzz tests hold it to encoding/json), and hands out numbers
// and strings as subslices of the body, or of its own unescape buffer when a
// string holds escapes. It records the first syntax error and then refuses
// to go on: after a syntax error JSON offers no place to resynchronise.
//
// It is written for the shape of telemetry messages (a flat object or an
// array of them) rather than with encoding/json and map[string]any, because
// that costs a map and a boxed value per field at tens of thousands of
// messages per second.
type scanner struct {
	b     []byte
	p     int
	unesc []byte // unescaped string scratch, valid until the next str call
	stack []byte // open brackets of skipValue
	// errOff >= 0 marks a syntax error at that offset, described by errMsg.
	errOff int
	errMsg string
}

// maxDepth bounds nesting in skipped values, as encoding/json does.
const maxDepth = 10000

func (s *scanner) reset(b []byte) {
	s.b, s.p, s.errOff, s.errMsg = b, 0, -1, ""
}

// fail records a syntax error at off and returns false.
func (s *scanner) fail(off int, msg string) bool {
	if s.errOff < 0 {
		s.errOff, s.errMsg = off, msg
	}
	s.p = len(s.b)
	return false
}

// failChar reports an unexpected byte (or the end of input) at s.p.
func (s *scanner) failChar(context string) bool {
	if s.p >= len(s.b) {
		return s.fail(len(s.b), "unexpected end of JSON input")
	}
	return s.fail(s.p, "invalid character "+quoteChar(s.b[s.p])+" "+context)
}

func quoteChar(c byte) string {
	q := strconv.QuoteRuneToASCII(rune(c)) // 'x', '\n', '\u0080'
	if c >= 0x80 {
		q = "'\\x" + strconv.FormatUint(uint64(c), 16) + "'"
	}
	return q
}

// ws skips white space and returns the next byte, or 0 at the end.
func (s *scanner) ws() byte {
	for s.p < len(s.b) {
		switch c := s.b[s.p]; c {
		case ' ', '\t', '\n', '\r':
			s.p++
		default:
			return c
		}
	}
	return 0
}

// more skips white space and reports whether input is left.
func (s *scanner) more() bool {
	s.ws()
	return s.p < len(s.b)
}

// expect consumes c after white space.
func (s *scanner) expect(c byte, context string) bool {
	if s.ws() != c {
		return s.failChar(context)
	}
	s.p++
	return true
}

// str reads the string at s.p (which is '"'). It returns its unescaped
// bytes (a subslice of the body, or of s.unesc when it held escapes) and
// whether it holds non-ASCII bytes (which the caller may need to validate).
func (s *scanner) str() (v []byte, nonASCII bool, ok bool) {
	b := s.b
	start := s.p + 1
	for p := start; p < len(b); p++ {
		c := b[p]
		switch {
		case c == '"':
			s.p = p + 1
			return b[start:p], nonASCII, true
		case c == '\\':
			return s.strEsc(start, p, nonASCII)
		case c < 0x20:
			s.p = p
			return nil, false, s.failChar("in string literal")
		case c >= 0x80:
			nonASCII = true
		}
	}
	return nil, false, s.fail(len(b), "unexpected end of JSON input")
}

// strEsc continues str from the first backslash at p, unescaping into s.str.
func (s *scanner) strEsc(start, p int, nonASCII bool) ([]byte, bool, bool) {
	b := s.b
	out := append(s.unesc[:0], b[start:p]...)
	for p < len(b) {
		c := b[p]
		switch {
		case c == '"':
			s.p = p + 1
			s.unesc = out
			return out, nonASCII, true
		case c < 0x20:
			s.p = p
			return nil, false, s.failChar("in string literal")
		case c != '\\':
			if c >= 0x80 {
				nonASCII = true
			}
			out = append(out, c)
			p++
			continue
		}
		if p+1 >= len(b) {
			return nil, false, s.fail(len(b), "unexpected end of JSON input")
		}
		switch e := b[p+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(b, p+2)
			if !ok {
				s.p = p + 2
				return nil, false, s.badHex(p + 2)
			}
			p += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if p+1 < len(b) && b[p] == '\\' && b[p+1] == 'u' {
					if x, ok := hex4(b, p+2); ok {
						r2 = x
					}
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					r = dec
					p += 6
				} else {
					r = utf8.RuneError
				}
			}
			nonASCII = nonASCII || r >= 0x80
			out = utf8.AppendRune(out, r)
			continue
		default:
			s.p = p + 1
			return nil, false, s.failChar("in string escape code")
		}
		p += 2
	}
	return nil, false, s.fail(len(b), "unexpected end of JSON input")
}

// badHex reports the first non-hex byte of a \u escape starting at p.
func (s *scanner) badHex(p int) bool {
	for i := p; i < p+4; i++ {
		if i >= len(s.b) {
			return s.fail(len(s.b), "unexpected end of JSON input")
		}
		if unhex(s.b[i]) < 0 {
			s.p = i
			return s.failChar("in \\u hexadecimal character escape")
		}
	}
	return s.fail(p, "invalid \\u escape")
}

func hex4(b []byte, p int) (rune, bool) {
	if p+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[p : p+4] {
		h := unhex(c)
		if h < 0 {
			return 0, false
		}
		r = r<<4 | rune(h)
	}
	return r, true
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// number reads the number at s.p, checking the JSON grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; isInt reports that it has
// neither fraction nor exponent.
func (s *scanner) number() (lit []byte, isInt bool, ok bool) {
	b, p := s.b, s.p
	start := p
	if p < len(b) && b[p] == '-' {
		p++
	}
	digits := func(what string) bool {
		if p >= len(b) || b[p] < '0' || b[p] > '9' {
			s.p = p
			return s.failChar(what)
		}
		for p < len(b) && b[p] >= '0' && b[p] <= '9' {
			p++
		}
		return true
	}
	if p < len(b) && b[p] == '0' {
		p++
	} else if !digits("in numeric literal") {
		return nil, false, false
	}
	isInt = true
	if p < len(b) && b[p] == '.' {
		isInt = false
		p++
		if !digits("after decimal point in numeric literal") {
			return nil, false, false
		}
	}
	if p < len(b) && (b[p] == 'e' || b[p] == 'E') {
		isInt = false
		p++
		if p < len(b) && (b[p] == '+' || b[p] == '-') {
			p++
		}
		if !digits("in exponent of numeric literal") {
			return nil, false, false
		}
	}
	s.p = p
	return b[start:p], isInt, true
}

// literal reads true, false or null at s.p.
func (s *scanner) literal(word string) bool {
	if !bytes.HasPrefix(s.b[s.p:], []byte(word)) {
		for i := 0; i < len(word); i++ {
			if s.p+i >= len(s.b) || s.b[s.p+i] != word[i] {
				s.p += i
				return s.failChar("in literal " + word + " (expecting " + quoteChar(word[i]) + ")")
			}
		}
	}
	s.p += len(word)
	return true
}

// skipValue validates and skips the value at s.p (after white space). It
// returns the kind of JSON value it skipped ("object", "array", "string",
// "number", "true", "false", "null").
func (s *scanner) skipValue() (kind string, ok bool) {
	s.stack = s.stack[:0]
	for {
		// A value.
		switch c := s.ws(); {
		case c == '{':
			s.p++
			if s.ws() == '}' {
				s.p++
				if kind == "" {
					kind = "object"
				}
				break
			}
			if kind == "" {
				kind = "object"
			}
			if len(s.stack) >= maxDepth {
				return "", s.fail(s.p, "exceeded max depth")
			}
			s.stack = append(s.stack, '}')
			if !s.objectKey() {
				return "", false
			}
			continue
		case c == '[':
			s.p++
			if kind == "" {
				kind = "array"
			}
			if s.ws() == ']' {
				s.p++
				break
			}
			if len(s.stack) >= maxDepth {
				return "", s.fail(s.p, "exceeded max depth")
			}
			s.stack = append(s.stack, ']')
			continue
		case c == '"':
			if _, _, ok := s.str(); !ok {
				return "", false
			}
			if kind == "" {
				kind = "string"
			}
		case c == '-' || (c >= '0' && c <= '9'):
			if _, _, ok := s.number(); !ok {
				return "", false
			}
			if kind == "" {
				kind = "number"
			}
		case c == 't' || c == 'f' || c == 'n':
			word := "null"
			if c == 't' {
				word = "true"
			} else if c == 'f' {
				word = "false"
			}
			if !s.literal(word) {
				return "", false
			}
			if kind == "" {
				kind = word
			}
		default:
			return "", s.failChar("looking for beginning of value")
		}
		// After a value: close containers until a comma continues one.
		for {
			if len(s.stack) == 0 {
				return kind, true
			}
			top := s.stack[len(s.stack)-1]
			c := s.ws()
			if c == top {
				s.p++
				s.stack = s.stack[:len(s.stack)-1]
				continue
			}
			if c != ',' {
				if top == '}' {
					return "", s.failChar("after object key:value pair")
				}
				return "", s.failChar("after array element")
			}
			s.p++
			if top == '}' && !s.objectKey() {
				return "", false
			}
			break
		}
	}
}

// objectKey reads `"key" :` inside a skipped object.
func (s *scanner) objectKey() bool {
	if s.ws() != '"' {
		return s.failChar("looking for beginning of object key string")
	}
	if _, _, ok := s.str(); !ok {
		return false
	}
	return s.expect(':', "after object key")
}

// msToNs converts a JSON timestamp literal in milliseconds to nanoseconds:
// exactly for integers, to within float64 precision (about 0.25 µs today)
// for fractions and exponents. ok is false when it overflows int64 ns.
func msToNs(lit []byte, isInt bool) (int64, bool) {
	if isInt {
		if n, ok := smallInt(lit); ok {
			if n > maxInt64/1_000_000 || n < -maxInt64/1_000_000 {
				return 0, false
			}
			return n * 1e6, true
		}
		n, err := strconv.ParseInt(string(lit), 10, 64)
		if err != nil || n > maxInt64/1_000_000 || n < -maxInt64/1_000_000 {
			return 0, false
		}
		return n * 1e6, true
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil || math.Abs(f) >= 9.2e12 {
		return 0, false
	}
	whole := math.Trunc(f)
	return int64(whole)*1e6 + int64(math.Round((f-whole)*1e6)), true
}

// fastFloat parses the common shape of a sensor value, a JSON number
// literal without an exponent and with at most 15 digits (21.5, -3,
// 1013.25), as strconv.ParseFloat would: the digits make an integer below
// 2^53 and the fraction digits a power of ten up to 10^15, both exact in
// a float64, so one IEEE division rounds their quotient correctly, which
// is ParseFloat's result. ok is false for anything else, which strconv
// then handles. strconv's general parse was a fifth of a one-field
// message's decode.
func fastFloat(lit []byte) (float64, bool) {
	i, neg := 0, false
	if len(lit) > 0 && lit[0] == '-' {
		i, neg = 1, true
	}
	var m uint64
	digits, frac, dot := 0, 0, false
	for ; i < len(lit); i++ {
		switch c := lit[i]; {
		case c >= '0' && c <= '9':
			m = m*10 + uint64(c-'0')
			digits++
			if dot {
				frac++
			}
		case c == '.' && !dot:
			dot = true
		default:
			return 0, false
		}
	}
	if digits == 0 || digits > 15 || (dot && frac == 0) {
		return 0, false
	}
	f := float64(m)
	if frac > 0 {
		f /= exactPow10[frac]
	}
	if neg {
		f = -f
	}
	return f, true
}

// exactPow10 holds the powers of ten a float64 represents exactly that
// fastFloat divides by.
var exactPow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// smallInt parses an optionally negative decimal integer of at most 18
// digits (no overflow possible), the shape of every millisecond timestamp;
// ok is false for anything else, which strconv then handles. A device
// timestamp per message made strconv.ParseInt a tenth of a JSON decode.
func smallInt(lit []byte) (int64, bool) {
	digits := lit
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if len(digits) < len(lit) {
		n = -n
	}
	return n, true
}
