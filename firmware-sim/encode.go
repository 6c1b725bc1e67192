package firmwaresim

import (
	"bytes"
	"math/rand/v2"
	"strconv"
)

// Format is the wire format of a payload.
type Format uint8

// The payload formats the gateway accepts (see ingest/doc.go).
const (
	// FormatJSON: JSON telemetry on telemetry/<device>/<measurement>.
	FormatJSON Format = iota
	// FormatBiosignal: a biosignal batch on biosignal/<device>/<signal>.
	FormatBiosignal
	// FormatLineProtocol: InfluxDB line protocol (lp/<device>/<measurement>
	// on MQTT, a datagram on UDP, a body on HTTP).
	FormatLineProtocol
)

// String returns json, biosignal or lp.
func (f Format) String() string {
	switch f {
	case FormatJSON:
		return "json"
	case FormatBiosignal:
		return "biosignal"
	case FormatLineProtocol:
		return "lp"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// record is one message before encoding: either rows (each a timestamp
// and one value per field) or a batch (samples at a fixed rate).
type record struct {
	meas string
	// Rows.
	fields []string
	prec   []int     // decimal digits per field
	times  []int64   // ns, one per row
	values []float64 // row-major, len(times)*len(fields)
	// extra is one more field on the last row (the batch RMS of
	// vibration as line protocol); "" for none.
	extra     string
	extraVal  float64
	extraPrec int
	// Batch.
	batch   bool
	t0      int64 // ns of sample 0
	n0      int64 // index of sample 0 in the device's sample clock
	hz      int64
	samples []float64
	sprec   int
}

// readings is the number of readings the record holds.
func (r *record) readings() int {
	if r.batch {
		return len(r.samples)
	}
	n := len(r.values)
	if r.extra != "" && len(r.times) > 0 {
		n++
	}
	return n
}

// sampleOffset returns the offset of sample i of a batch from its first
// sample, exactly as the gateway's biosignal decoder computes it.
func sampleOffset(i, hz int64) int64 { return i * 1e9 / hz }

// encoder renders records; it holds no state between calls.
type encoder struct {
	device, site string
	format       Format // FormatJSON (json + biosignal) or FormatLineProtocol
}

// encode renders r with its timestamps moved by shift ns (a late
// message) and returns topic, payload and format.
func (e *encoder) encode(r *record, device string, shift int64) (string, []byte, Format) {
	if e.format == FormatLineProtocol {
		return "lp/" + device + "/" + r.meas, e.lineProtocol(r, device, shift), FormatLineProtocol
	}
	if r.batch {
		return "biosignal/" + device + "/" + r.meas, e.biosignal(r, shift), FormatBiosignal
	}
	return "telemetry/" + device + "/" + r.meas, e.json(r, shift), FormatJSON
}

// appendMs writes ns as an exact decimal number of milliseconds.
func appendMs(b []byte, ns int64) []byte {
	neg := ns < 0
	if neg {
		b = append(b, '-')
		ns = -ns
	}
	b = strconv.AppendInt(b, ns/1e6, 10)
	if frac := ns % 1e6; frac != 0 {
		var d [7]byte
		d[0] = '.'
		for i := 6; i >= 1; i-- {
			d[i] = byte('0' + frac%10)
			frac /= 10
		}
		end := 7
		for d[end-1] == '0' {
			end--
		}
		b = append(b, d[:end]...)
	}
	return b
}

func appendFloat(b []byte, v float64, prec int) []byte {
	return strconv.AppendFloat(b, v, 'f', prec, 64)
}

func (e *encoder) appendTags(b []byte) []byte {
	b = append(b, `"tags":{"site":"`...)
	b = append(b, e.site...)
	return append(b, `"}`...)
}

func (e *encoder) json(r *record, shift int64) []byte {
	nf := len(r.fields)
	b := make([]byte, 0, 16+len(r.times)*(40+nf*16))
	if len(r.times) != 1 {
		b = append(b, '[')
	}
	for i, t := range r.times {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"ts":`...)
		b = appendMs(b, t+shift)
		for j, f := range r.fields {
			b = append(b, ",\""...)
			b = append(b, f...)
			b = append(b, "\":"...)
			b = appendFloat(b, r.values[i*nf+j], r.prec[j])
		}
		if r.extra != "" && i == len(r.times)-1 {
			b = append(b, ",\""...)
			b = append(b, r.extra...)
			b = append(b, "\":"...)
			b = appendFloat(b, r.extraVal, r.extraPrec)
		}
		b = append(b, ',')
		b = e.appendTags(b)
		b = append(b, '}')
	}
	if len(r.times) != 1 {
		b = append(b, ']')
	}
	return b
}

func (e *encoder) biosignal(r *record, shift int64) []byte {
	b := make([]byte, 0, 64+len(r.samples)*8)
	b = append(b, `{"ts":`...)
	b = appendMs(b, r.t0+shift)
	b = append(b, `,"rate_hz":`...)
	b = strconv.AppendInt(b, r.hz, 10)
	b = append(b, `,"samples":[`...)
	for i, v := range r.samples {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendFloat(b, v, r.sprec)
	}
	b = append(b, "],"...)
	b = e.appendTags(b)
	return append(b, '}')
}

func (e *encoder) lineProtocol(r *record, device string, shift int64) []byte {
	prefix := make([]byte, 0, 48)
	prefix = append(prefix, r.meas...)
	prefix = append(prefix, ",device="...)
	prefix = append(prefix, device...)
	prefix = append(prefix, ",site="...)
	prefix = append(prefix, e.site...)
	prefix = append(prefix, ' ')
	if r.batch {
		b := make([]byte, 0, len(r.samples)*(len(prefix)+32))
		for i, v := range r.samples {
			b = append(b, prefix...)
			b = append(b, "value="...)
			b = appendFloat(b, v, r.sprec)
			b = append(b, ' ')
			b = strconv.AppendInt(b, r.t0+sampleOffset(int64(i), r.hz)+shift, 10)
			b = append(b, '\n')
		}
		return b
	}
	nf := len(r.fields)
	b := make([]byte, 0, len(r.times)*(len(prefix)+32+nf*16))
	for i, t := range r.times {
		b = append(b, prefix...)
		for j, f := range r.fields {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, f...)
			b = append(b, '=')
			b = appendFloat(b, r.values[i*nf+j], r.prec[j])
		}
		if r.extra != "" && i == len(r.times)-1 {
			b = append(b, ',')
			b = append(b, r.extra...)
			b = append(b, '=')
			b = appendFloat(b, r.extraVal, r.extraPrec)
		}
		b = append(b, ' ')
		b = strconv.AppendInt(b, t+shift, 10)
		b = append(b, '\n')
	}
	return b
}

// corrupt damages a payload so that the gateway's decoder for format f
// reports at least one problem, in one of three ways picked by rng. Each
// way is certain to fail, not merely likely: the fault tests count on it.
//
//   - JSON and biosignal: truncation (a proper prefix of one JSON value is
//     never a complete value), a string where the timestamp number must be
//     (rejects the object or batch), or a stray '}' after the value.
//   - Line protocol, on the first line only (the other lines stay good, as
//     a device with one bad sensor would send): an unquoted word as the
//     first field value, the field set removed, or a letter appended to
//     the timestamp.
func corrupt(p []byte, f Format, rng *rand.Rand) []byte {
	mode := rng.IntN(3)
	if f != FormatLineProtocol {
		switch mode {
		case 0:
			if len(p) >= 2 {
				return p[:1+rng.IntN(len(p)-1)]
			}
		case 1:
			if i := bytes.Index(p, []byte(`"ts":`)); i >= 0 {
				j := i + len(`"ts":`)
				k := j
				for k < len(p) && (p[k] == '-' || p[k] == '.' || (p[k] >= '0' && p[k] <= '9')) {
					k++
				}
				out := make([]byte, 0, len(p)+2)
				out = append(out, p[:j]...)
				out = append(out, '"')
				out = append(out, p[j:k]...)
				out = append(out, '"')
				return append(out, p[k:]...)
			}
		}
		return append(p, '}')
	}
	line := p
	if i := bytes.IndexByte(p, '\n'); i >= 0 {
		line = p[:i]
	}
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 < 0 || sp2 <= sp1 {
		return append([]byte("?"), p...) // not our own line protocol; still invalid
	}
	out := make([]byte, 0, len(p)+4)
	switch mode {
	case 0: // measurement,tags f=x1... ts
		eq := bytes.IndexByte(line[sp1:], '=') + sp1
		end := eq + 1
		for end < sp2 && line[end] != ',' {
			end++
		}
		out = append(out, p[:eq+1]...)
		out = append(out, "x1"...)
		out = append(out, p[end:]...)
	case 1: // measurement,tags ts
		out = append(out, p[:sp1]...)
		out = append(out, p[sp2:]...)
	default: // measurement,tags fields tsX
		out = append(out, line...)
		out = append(out, 'x')
		out = append(out, p[len(line):]...)
	}
	return out
}
