package ingest

import (
	"fmt"
	"strings"
	"testing"
)

// TestRequireReadings: the one definition of a message with no usable
// reading (issue 16): a clean decode with no reading is rejected whole as
// no_readings, naming the string fields and the line of the first; a
// message with readings, or with its own problems, is left alone.
func TestRequireReadings(t *testing.T) {
	opt := Options{NowNs: testNow}
	for _, tc := range []struct {
		name, codec, body string
		want              bool   // rejected as no_readings
		msg               string // in the error
		line              int
	}{
		{name: "empty object", codec: CodecJSON, body: `{}`, want: true, msg: "no numeric or boolean field"},
		{name: "empty array", codec: CodecJSON, body: `[]`, want: true, msg: "no numeric or boolean field"},
		{name: "string field", codec: CodecJSON, body: `{"temp":"hot"}`, want: true, msg: `"temp"`, line: 1},
		{name: "string field, line 2", codec: CodecJSON, body: "\n {\"temp\":\"hot\"}", want: true, msg: `"temp"`, line: 2},
		{name: "empty payload", codec: CodecJSON, body: ``, want: false}, // a syntax error already
		{name: "one reading", codec: CodecJSON, body: `{"temp":"hot","hum":1}`, want: false},
		{name: "syntax", codec: CodecJSON, body: `{"temp":`, want: false},
		{name: "lp strings only", codec: CodecLineProtocol, body: "# c\nm state=\"ok\"\nm mode=\"a\"\n", want: true, msg: `"state", "mode"`, line: 2},
		{name: "lp comment only", codec: CodecLineProtocol, body: "# nothing\n", want: true, msg: "no numeric or boolean field"},
		{name: "lp empty", codec: CodecLineProtocol, body: "", want: true, msg: "empty payload"},
		{name: "lp one reading", codec: CodecLineProtocol, body: "m state=\"ok\"\nm v=1\n", want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewDecoder(tc.codec, DecoderConfig{Biosignal: DefaultBiosignalConfig()})
			if err != nil {
				t.Fatal(err)
			}
			var res Result
			d.Decode(nil, "telemetry/dev/env", []byte(tc.body), opt, &res)
			before := res.Problems()
			got := res.requireReadings([]byte(tc.body))
			if got != tc.want {
				t.Fatalf("requireReadings = %v, want %v (result %+v)", got, tc.want, res)
			}
			if !tc.want {
				if res.Problems() != before {
					t.Fatalf("problems changed from %d to %d", before, res.Problems())
				}
				return
			}
			if res.Rejected[ReasonNoReadings] != 1 || len(res.Errors) != 1 {
				t.Fatalf("result %+v, want one no_readings error", res)
			}
			e := res.Errors[0]
			if !strings.Contains(e.Error(), tc.msg) || e.Line != tc.line {
				t.Errorf("error %q (line %d), want it to hold %q at line %d", e.Error(), e.Line, tc.msg, tc.line)
			}
		})
	}
}

// TestEventTimeRange: readings whose event time lies beyond ±2^62 ns are
// rejected at decode as out_of_range with a precise error, on every
// format, even with the future check off; they used to be stored and then
// dropped by the windows engine.
func TestEventTimeRange(t *testing.T) {
	noSkew := Options{NowNs: testNow, MaxFutureSkew: -1}
	for _, tc := range []struct {
		name, codec, body string
		ok                bool
	}{
		{"json below", CodecJSON, `{"ts":-5000000000000,"v":1}`, false},
		{"json above, skew off", CodecJSON, `{"ts":5000000000000,"v":1}`, false},
		{"json at the bound", CodecJSON, fmt.Sprintf(`{"ts":%d,"v":1}`, MinTimeNs/1e6), true},
		{"lp below", CodecLineProtocol, "m v=1 -5000000000000000000", false},
		{"lp above, skew off", CodecLineProtocol, "m v=1 5000000000000000000", false},
		{"lp at the bound", CodecLineProtocol, fmt.Sprintf("m v=1 %d", MaxTimeNs), true},
		{"biosignal below", CodecBiosignal, `{"ts":-5000000000000,"rate_hz":1,"samples":[1,2]}`, false},
		{"biosignal last sample above", CodecBiosignal, fmt.Sprintf(`{"ts":%d,"rate_hz":1,"samples":[1,2]}`, MaxTimeNs/1e6), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewDecoder(tc.codec, DecoderConfig{Biosignal: DefaultBiosignalConfig()})
			if err != nil {
				t.Fatal(err)
			}
			topic := "telemetry/dev/env"
			if tc.codec == CodecBiosignal {
				topic = "biosignal/dev/ecg"
			}
			var res Result
			got := d.Decode(nil, topic, []byte(tc.body), noSkew, &res)
			if tc.ok {
				if len(got) == 0 || res.Problems() > 0 {
					t.Fatalf("rejected at the bound: %v", res.Err())
				}
				return
			}
			if len(got) != 0 || res.Rejected[ReasonOutOfRange] == 0 || len(res.Errors) == 0 ||
				!strings.Contains(res.Errors[0].Error(), "outside the representable range ±2^62 ns") {
				t.Fatalf("%d readings, result %v: want out_of_range naming the ±2^62 ns range", len(got), res.Err())
			}
		})
	}
}

// TestUDPNoUsableReading: a datagram of string fields only is counted as
// no_readings and dead-lettered.
func TestUDPNoUsableReading(t *testing.T) {
	sink := new(rejectBox)
	u, st := startUDP(t, udpTestConfig(), openTestWAL(t), sink)
	c := dialUDP(t, u.Addr())
	if _, err := c.Write([]byte("env,device=a state=\"ok\"\n")); err != nil {
		t.Fatal(err)
	}
	awaitCond(t, func() string { return fmt.Sprint(sink.list()) },
		func() bool { return st.Rejected[ListenerUDP][ReasonNoReadings].Load() == 1 && len(sink.list()) == 1 })
	if r := sink.list()[0]; r.Reason != "no_readings" || !strings.Contains(r.Error, `"state"`) {
		t.Errorf("dead letter %+v, want no_readings naming the field", r)
	}
}
