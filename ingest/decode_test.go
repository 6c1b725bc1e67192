package ingest

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/runnel-iot/runnel/wal"
)

// checkInvariants holds for every decoder and input.
func checkInvariants(t *testing.T, body []byte, got []wal.Reading, res *Result, perReading int) {
	t.Helper()
	if res.Readings != len(got) {
		t.Fatalf("Readings %d != %d", res.Readings, len(got))
	}
	if len(got) > len(body)/perReading+1 {
		t.Fatalf("%d readings from %d bytes", len(got), len(body))
	}
	lines := bytes.Count(body, []byte{'\n'}) + 1
	for _, e := range res.Errors {
		if e.Line > lines || e.Offset > len(body) || e.Column > len(body)+1 || e.Msg == "" {
			t.Fatalf("error outside the input (%d lines, %d bytes): %+v", lines, len(body), e)
		}
		_ = e.Error()
	}
	if len(res.Errors) > MaxErrors || len(res.Errors) > res.Problems() {
		t.Fatalf("%d errors, %d problems", len(res.Errors), res.Problems())
	}
	for _, rd := range got {
		if rd.Series == "" || rd.Field == "" || math.IsNaN(rd.Value) || math.IsInf(rd.Value, 0) {
			t.Fatalf("bad reading %+v", rd)
		}
	}
}

func FuzzLineProtocol(f *testing.F) {
	for _, s := range []string{
		"env,device=pi-042,site=plant1 temp=21.5,hum=40.1 1700000000000000000\n",
		"m a=1i,b=2u,c=true,d=\"s\" 1\nm,x=y a=1\n# c\n\nbad\nm a=99999999999999999999i",
		`m\ x,a\,b=c\=d e\ f=1`,
		"m s=\"a\nb\",v=1 5\nm v=2\r\n",
		"m a=1 1800000000000000000\nm,a=1,a=2 v=1",
	} {
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, body []byte, prec uint8) {
		opt := Options{NowNs: testNow, Precision: Precision(prec % 4)}
		d := NewLineProtocol()
		var res Result
		got := d.Decode(nil, body, opt, &res)
		checkInvariants(t, body, got, &res, 3)
		// A prefix of whole lines that decodes cleanly gives a prefix of
		// the readings.
		for i := 0; i < len(body); i++ {
			if body[i] != '\n' {
				continue
			}
			var pres Result
			pre := d.Decode(nil, body[:i+1], opt, &pres)
			if pres.Problems() == 0 && (len(pre) > len(got) || !slices.Equal(pre, got[:len(pre)])) {
				t.Fatalf("prefix %q: %v, full %v", body[:i+1], pre, got)
			}
		}
	})
}

// jsonSeeds are shared by FuzzJSON and FuzzBiosignal.
var jsonSeeds = []string{
	`{"ts":1700000000000,"temp":21.5,"hum":40.1,"tags":{"site":"plant1"}}`,
	`[{"a":1},{"b":true,"c":"x","d":null,"e":{"f":[1,{}]}},5,{"a":1e999}]`,
	`{"t\u0065mp":-0.5e-3,"tags":{"device":"x","a b":"c,d"},"ts":1.7e12}`,
	`{"ts":1700000000000,"rate_hz":250,"samples":[0.1,0.2,null,0.3],"tags":{"lead":"II"}}`,
	`{"rate_hz":360,"samples":[1,2,3]}`,
	`{"a":1,"a":null}`, `[`, `{"a":tru}`, `"\ud83d\ude00"`,
}

func FuzzJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		d := NewJSON()
		var res Result
		opt := Options{NowNs: testNow, MaxFutureSkew: -1}
		got := d.Decode(nil, "telemetry/dev/m", body, opt, &res)
		checkInvariants(t, body, got, &res, 4)
		// A series memo changes nothing: filled by the first decode, used
		// by the second (the same tags), and one left by another payload.
		memo := SeriesMemo{Tags: `{"site":"plant1"}`, Series: "m,device=dev,site=plant1"}
		md := NewJSON()
		decodeBoth(t, md, &memo, "telemetry/dev/m", body)
		decodeBoth(t, md, &memo, "telemetry/dev/m", body)

		// Hold the scanner to encoding/json.
		valid := json.Valid(body)
		if !valid {
			if res.Rejected[ReasonSyntax] == 0 && !tooDeep(body) {
				t.Fatalf("encoding/json rejects %q, we did not", body)
			}
			return
		}
		if res.Rejected[ReasonSyntax] != 0 {
			t.Fatalf("encoding/json accepts %q, we reported %v", body, res.Err())
		}
		if !utf8.Valid(body) {
			return
		}
		// Same numbers as encoding/json for well-shaped objects. Objects
		// with a repeated member are left to the invariants: encoding/json
		// lets the last one win, while a bad "ts" or "tags" rejects the
		// object where it stands (documented in json.go).
		if hasDuplicateKeys(body) {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			return
		}
		objs, ok := v.([]any)
		if !ok {
			objs = []any{v}
		}
		var want []wal.Reading
		for _, o := range objs {
			m, ok := o.(map[string]any)
			if !ok {
				continue
			}
			if !simpleObject(m) {
				return // tags or ts problems: invariants only
			}
			for k, x := range m {
				switch x := x.(type) {
				case json.Number:
					fv, err := strconv.ParseFloat(string(x), 64)
					if err == nil && k != "" {
						want = append(want, wal.Reading{Field: k, Value: fv})
					}
				case bool:
					if k != "" { // an empty field name is rejected, whatever its value
						want = append(want, wal.Reading{Field: k, Value: map[bool]float64{true: 1}[x]})
					}
				}
			}
		}
		gotVals := make([]wal.Reading, len(got))
		for i, rd := range got {
			gotVals[i] = wal.Reading{Field: rd.Field, Value: rd.Value}
		}
		cmp := func(a, b wal.Reading) int {
			if c := bytes.Compare([]byte(a.Field), []byte(b.Field)); c != 0 {
				return c
			}
			return int(math.Float64bits(a.Value)>>1) - int(math.Float64bits(b.Value)>>1)
		}
		slices.SortFunc(want, cmp)
		slices.SortFunc(gotVals, cmp)
		if !slices.Equal(want, gotVals) {
			t.Fatalf("%q:\n got %v\nwant %v", body, gotVals, want)
		}
	})
}

// hasDuplicateKeys reports whether any JSON object in body repeats a member
// name (false when body does not tokenize).
func hasDuplicateKeys(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	type frame struct {
		keys   map[string]bool
		object bool
		want   bool // the next string token is a key
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = &stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if top != nil && top.object {
					top.want = true // this value is done once it closes
				}
				stack = append(stack, frame{keys: map[string]bool{}, object: v == '{', want: v == '{'})
			default:
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].want = true
				}
			}
		case string:
			if top != nil && top.object && top.want {
				if top.keys[v] {
					return true
				}
				top.keys[v] = true
				top.want = false
				continue
			}
			if top != nil && top.object {
				top.want = true
			}
		default:
			if top != nil && top.object {
				top.want = true
			}
		}
	}
}

// simpleObject: no "tags" member and a numeric "ts" if any, so encoding/json
// predicts every reading.
func simpleObject(m map[string]any) bool {
	if _, ok := m["tags"]; ok {
		return false
	}
	if ts, ok := m["ts"]; ok {
		n, ok := ts.(json.Number)
		if !ok {
			return false
		}
		if f, err := n.Float64(); err != nil || math.Abs(f) >= 9e12 {
			return false
		}
		delete(m, "ts")
	}
	return true
}

// tooDeep approximates encoding/json's nesting limit, which the object and
// tags levels of our decoder do not count the same way.
func tooDeep(body []byte) bool {
	return bytes.Count(body, []byte{'['})+bytes.Count(body, []byte{'{'}) >= maxDepth
}

func FuzzBiosignal(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := NewBiosignal(BiosignalConfig{MaxSamples: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var res Result
		got := d.Decode(nil, "biosignal/dev/ecg", body, Options{NowNs: testNow}, &res)
		checkInvariants(t, body, got, &res, 2)
		if !json.Valid(body) {
			if res.Rejected[ReasonSyntax] == 0 && !tooDeep(body) {
				t.Fatalf("encoding/json rejects %q, we did not", body)
			}
		} else if res.Rejected[ReasonSyntax] != 0 {
			t.Fatalf("encoding/json accepts %q, we reported %v", body, res.Err())
		}
		for i := 1; i < len(got); i++ {
			if got[i].TimeNs < got[i-1].TimeNs {
				t.Fatalf("time goes back at %d: %v", i, got)
			}
		}
		// A prefix of the samples gives a prefix of the readings.
		var m struct {
			TS      *json.Number      `json:"ts"`
			Rate    json.Number       `json:"rate_hz"`
			Samples []json.RawMessage `json:"samples"`
		}
		if len(got) == 0 || res.Problems() != 0 || json.Unmarshal(body, &m) != nil || m.TS == nil {
			return
		}
		k := len(m.Samples) / 2
		pre := []byte(`{"ts":` + string(*m.TS) + `,"rate_hz":` + string(m.Rate) + `,"samples":[` +
			string(bytes.Join(func() [][]byte {
				out := make([][]byte, k)
				for i := range out {
					out[i] = m.Samples[i]
				}
				return out
			}(), []byte{','})) + `]}`)
		var pres Result
		pgot := d.Decode(nil, "biosignal/dev/ecg", pre, Options{NowNs: testNow}, &pres)
		if !slices.Equal(pgot, got[:len(pgot)]) {
			t.Fatalf("prefix %q: %v, full %v", pre, pgot, got)
		}
	})
}

// Benchmarks: cost per point of each format.

// benchDecode runs decode b.N times over body and reports per-point costs.
func benchDecode(b *testing.B, body []byte, points int, decode func(dst []wal.Reading, res *Result) []wal.Reading) {
	var res Result
	dst := make([]wal.Reading, 0, points)
	if got := decode(dst, &res); len(got) != points || res.Problems() != 0 {
		b.Fatalf("%d readings, want %d: %v", len(got), points, res.Err())
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		dst = decode(dst[:0], &res)
	}
	el := time.Since(start)
	b.ReportMetric(float64(el.Nanoseconds())/float64(b.N*points), "ns/point")
	b.StopTimer()
}

func BenchmarkLineProtocol(b *testing.B) {
	for _, lines := range []int{1, 100} {
		b.Run("lines="+strconv.Itoa(lines), func(b *testing.B) {
			body := []byte(strings.Repeat("env,device=pi-042,site=plant1 temp=21.5,hum=40.1 1700000000000000000\n", lines))
			d := NewLineProtocol()
			opt := Options{NowNs: testNow}
			benchDecode(b, body, 2*lines, func(dst []wal.Reading, res *Result) []wal.Reading {
				return d.Decode(dst, body, opt, res)
			})
		})
	}
}

func BenchmarkJSON(b *testing.B) {
	body := []byte(`{"ts":1700000000000,"temp":21.5,"hum":40.1,"tags":{"site":"plant1"}}`)
	d := NewJSON()
	opt := Options{NowNs: testNow}
	benchDecode(b, body, 2, func(dst []wal.Reading, res *Result) []wal.Reading {
		return d.Decode(dst, "telemetry/pi-042/env", body, opt, res)
	})
}

func BenchmarkBiosignal(b *testing.B) {
	body := []byte(`{"ts":1700000000000,"rate_hz":250,"samples":[` + samplesJSON(250) + `]}`)
	d, _ := NewBiosignal(DefaultBiosignalConfig())
	opt := Options{NowNs: testNow}
	benchDecode(b, body, 250, func(dst []wal.Reading, res *Result) []wal.Reading {
		return d.Decode(dst, "biosignal/pi-042/ecg", body, opt, res)
	})
}

// BenchmarkJSONDevices is the payload of make bench's MQTT phases, one
// reading per message, each message from the next of 1,000 devices.
func BenchmarkJSONDevices(b *testing.B) {
	const devices = 1000
	topics := make([]string, devices)
	for i := range topics {
		topics[i] = "telemetry/dev-" + strconv.Itoa(i) + "/env"
	}
	body := []byte(`{"ts":1700000000000,"temp":21.5}`)
	d := NewJSON()
	opt := Options{NowNs: testNow}
	k := 0
	benchDecode(b, body, 1, func(dst []wal.Reading, res *Result) []wal.Reading {
		k++
		return d.Decode(dst, topics[k%devices], body, opt, res)
	})
}

// BenchmarkJSONDevicesMemo is BenchmarkJSONDevices with a tag and each
// topic's SeriesMemo, as the MQTT broker decodes it.
func BenchmarkJSONDevicesMemo(b *testing.B) {
	const devices = 1000
	topics := make([]string, devices)
	memos := make([]SeriesMemo, devices)
	for i := range topics {
		topics[i] = "telemetry/dev-" + strconv.Itoa(i) + "/env"
	}
	body := []byte(`{"ts":1700000000000,"temp":21.5,"tags":{"site":"site-1"}}`)
	d := NewJSON()
	k := 0
	benchDecode(b, body, 1, func(dst []wal.Reading, res *Result) []wal.Reading {
		k++
		opt := Options{NowNs: testNow, Memo: &memos[k%devices]}
		return d.Decode(dst, topics[k%devices], body, opt, res)
	})
}
