package pipeline

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/runnel-iot/runnel/windows"
)

// appendSummaryValue appends the JSON value of a closed window (schema
// runnel.summary/v1) to b: byte for byte what encoding/json's Marshal
// writes for the summaryValue summaryRecord used to build
// (TestAppendSummaryValueMatchesMarshal, FuzzAppendSummaryValue hold it
// to that), without reflection and without allocating when b has room.
//
// Why by hand: a burst of closing windows is thousands of these at once
// (10,000 series closing 10 s windows), and json.Marshal of the struct,
// with its RFC 3339 strings and the copy Marshal returns, took a quarter
// of the gateway's CPU in make bench's forward phase and most of the
// bytes the pipeline allocated.
func appendSummaryValue(b []byte, gw string, e *windows.Emission) []byte {
	w := &e.Window
	b = append(b, `{"schema":`...)
	b = appendJSONString(b, schemaSummary)
	b = append(b, `,"gateway":`...)
	b = appendJSONString(b, gw)
	b = append(b, `,"series":`...)
	b = appendJSONString(b, w.Series)
	b = append(b, `,"field":`...)
	b = appendJSONString(b, w.Field)
	b = append(b, `,"window":`...)
	b = appendJSONString(b, w.Spec)
	// schema.Window, embedded: its fields in its order (schema.NewWindow).
	b = append(b, `,"start":"`...)
	b = appendRFC3339(b, w.StartNs)
	b = append(b, `","end":"`...)
	b = appendRFC3339(b, w.EndNs)
	b = append(b, `","start_ns":`...)
	b = strconv.AppendInt(b, w.StartNs, 10)
	b = append(b, `,"end_ns":`...)
	b = strconv.AppendInt(b, w.EndNs, 10)
	b = append(b, `,"count":`...)
	b = strconv.AppendUint(b, w.Count, 10)
	for _, f := range [...]jsonFloat{{`,"sum":`, w.Sum}, {`,"min":`, w.Min}, {`,"max":`, w.Max},
		{`,"mean":`, w.Mean}, {`,"stddev":`, w.Stddev}, {`,"first":`, w.First}, {`,"last":`, w.Last}} {
		b = appendJSONFloat(append(b, f.key...), f.v)
	}
	if strings.HasPrefix(w.Spec, "tumbling:") && w.Count > 0 {
		for _, f := range [...]jsonFloat{{`,"p50":`, w.P50}, {`,"p90":`, w.P90}, {`,"p99":`, w.P99}} {
			b = appendJSONFloat(append(b, f.key...), f.v)
		}
	}
	if e.Kind == windows.KindTumbling && len(w.Quantiles) > 0 { // omitempty
		b = append(b, `,"quantiles":"`...)
		b = base64.StdEncoding.AppendEncode(b, w.Quantiles)
		b = append(b, '"')
	}
	b = append(b, `,"closed":`...)
	b = appendJSONString(b, w.Closed)
	return append(b, '}')
}

// jsonFloat is a member of a summary value: its key, with the comma
// before it, and its number.
type jsonFloat struct {
	key string
	v   float64
}

// appendRFC3339 appends rfc3339(ns), which needs no JSON escaping.
func appendRFC3339(b []byte, ns int64) []byte {
	return time.Unix(0, ns).UTC().AppendFormat(b, time.RFC3339Nano)
}

// appendJSONFloat appends f as encoding/json writes a float64 (ES6 number
// formatting), after schema.NewWindow's rule: a NaN or an infinity is 0.
func appendJSONFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		f = 0
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 becomes e-9, as encoding/json does.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendJSONString appends s quoted as encoding/json's Marshal does (HTML
// characters escaped). Printable ASCII without a quote, a backslash or an
// HTML character, which series, fields and gateway ids almost always are,
// is copied as it is; anything else goes through json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			if err != nil {
				panic("BUG: marshal string: " + err.Error())
			}
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
