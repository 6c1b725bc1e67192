package firmwaresim

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func FuzzParseECGCSV(f *testing.F) {
	f.Add([]byte("t_s,mlii_mv,v5_mv\n0.000000,-0.145,-0.065\n0.002778,-0.145,-0.065\n"))
	f.Add([]byte("t_s,mlii_mv,v5_mv\r\n0,1,2\r\n"))
	f.Add([]byte("t_s,mlii_mv,v5_mv\n0,1\n"))
	f.Add([]byte("t_s,mlii_mv,v5_mv\n1,NaN,0\n"))
	f.Add([]byte("t_s,mlii_mv,v5_mv\n1,0,0\n1,0,0\n"))
	f.Add([]byte("time,a,b\n"))
	f.Add([]byte(""))
	f.Add([]byte("t_s,mlii_mv,v5_mv\n" + strings.Repeat("9", 300) + ",0,0\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := ParseECGCSV(bytes.NewReader(in))
		if err != nil {
			var ce *CSVError
			if !errors.As(err, &ce) || ce.Line < 1 || ce.Column < 1 {
				t.Fatalf("error without a position: %v", err)
			}
			return
		}
		if lines := bytes.Count(in, []byte("\n")) + 1; len(out) > lines {
			t.Fatalf("%d samples from %d lines", len(out), lines)
		}
		for _, v := range out {
			if math.IsNaN(float64(v)) {
				t.Fatal("NaN sample")
			}
		}
	})
}

func FuzzParseBeatAnnotations(f *testing.F) {
	f.Add([]byte("sample,t_s,symbol\n18,0.0500,+\n77,0.2139,N\n370,1.0278,N\n"))
	f.Add([]byte("sample,t_s,symbol\n-1,0,N\n"))
	f.Add([]byte("sample,t_s,symbol\n5,0,N\n4,0,N\n"))
	f.Add([]byte("sample,t_s,symbol\n5,0,\n"))
	f.Add([]byte("sample,t_s,symbol\n5,x,N\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		beats, err := ParseBeatAnnotations(bytes.NewReader(in))
		if err != nil {
			var ce *CSVError
			if !errors.As(err, &ce) || ce.Line < 1 || ce.Column < 1 {
				t.Fatalf("error without a position: %v", err)
			}
			return
		}
		for i := 1; i < len(beats); i++ {
			if beats[i] < beats[i-1] {
				t.Fatalf("beats go back: %v", beats)
			}
		}
	})
}

// FuzzPayloads checks the generator's contract over seeds, scenarios,
// formats and fault rates: a payload fails the gateway's decoder exactly
// when it is marked malformed, and a good one carries exactly the readings
// it claims.
func FuzzPayloads(f *testing.F) {
	f.Add(uint64(1), uint8(0), uint8(10), false, uint16(1))
	f.Add(uint64(7), uint8(1), uint8(50), true, uint16(250))
	f.Add(uint64(99), uint8(2), uint8(100), false, uint16(3))
	f.Add(uint64(3), uint8(3), uint8(30), true, uint16(7))
	dec := newDecoders(f)
	f.Fuzz(func(t *testing.T, seed uint64, scenario, malformed uint8, lp bool, rateMilli uint16) {
		o := DefaultOptions()
		o.Scenario = []Scenario{ScenarioEnv, ScenarioVibration, ScenarioBiosignal, ScenarioMix}[scenario%4]
		o.Devices, o.Seed, o.Start = 10, seed, testStart
		o.Rate = float64(max(rateMilli, 1)) / 100 // 0.01 to 655 ticks/s
		o.ReadingsPerMessage = int(seed%5) + 1
		if lp {
			o.Format = "lp"
		}
		o.Faults = Faults{MalformedPct: float64(malformed % 101), LatePct: 20, LateBy: time.Hour, OutOfOrderPct: 20, HighCardinality: 0.1}
		d, err := NewDevice(o, int(seed%10))
		if err != nil {
			t.Fatal(err)
		}
		for range 8 {
			_, msgs := d.Next()
			for _, m := range msgs {
				rs, res := dec.decode(m.Format, m.Topic, m.Payload)
				bad := m.Faults&FaultMalformed != 0
				if bad != (res.Problems() > 0) {
					t.Fatalf("malformed=%v, %d problems (%v):\n%q", bad, res.Problems(), res.Err(), m.Payload)
				}
				if !bad && len(rs) != m.Readings {
					t.Fatalf("%d readings, message claims %d", len(rs), m.Readings)
				}
			}
		}
	})
}
