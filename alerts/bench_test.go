package alerts

import (
	"fmt"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// benchRules are 10 rules of the kinds the examples use.
func benchRules() []Rule {
	return []Rule{
		{Name: "hr", Match: Match{Measurement: "biosignal", Field: "hr"}, Op: "outside", Low: fp(40), High: fp(140), For: 10 * time.Second},
		{Name: "spo2", Match: Match{Field: "spo2"}, Op: "<", Threshold: fp(90), Clear: fp(92), For: 15 * time.Second},
		{Name: "ecg", Match: Match{Field: "ecg"}, Op: "missing", For: 5 * time.Second},
		{Name: "vib", Match: Match{Field: "rms"}, Value: "mean", Window: "tumbling:1m", Op: ">", Threshold: fp(7.1), Clear: fp(6)},
		{Name: "bearing", Match: Match{Measurement: "machine", Tags: map[string]string{"sensor": "bearing*"}, Field: "temp"}, Op: ">", Threshold: fp(85), Clear: fp(80), For: 30 * time.Second},
		{Name: "env_hot", Match: Match{Measurement: "env", Tags: map[string]string{"site": "plant[0-4]"}, Field: "temp"}, Op: ">", Threshold: fp(40), Clear: fp(38)},
		{Name: "env_cold", Match: Match{Measurement: "env", Field: "temp"}, Op: "<", Threshold: fp(-10)},
		{Name: "env_hum", Match: Match{Measurement: "env", Field: "hum"}, Op: "outside", Low: fp(10), High: fp(90), ClearLow: fp(15), ClearHigh: fp(85)},
		{Name: "env_silent", Match: Match{Measurement: "env", Tags: map[string]string{"device": "pi-00*"}}, Op: "missing", For: time.Minute},
		{Name: "power", Match: Match{Measurement: "power*", Field: "watts"}, Op: ">=", Threshold: fp(3000), For: time.Minute},
	}
}

// BenchmarkApply applies batches of 1000 readings cycling over 10,000
// series (fields temp and hum) against the 10 rules: "nomatch" readings
// match no rule (measurement "other"), "match" readings are env series
// that match 2 to 4 rules each without changing state.
func BenchmarkApply(b *testing.B) {
	const nSeries, batchN = 10000, 1000
	for _, bc := range []struct {
		name, meas string
	}{{"nomatch", "other"}, {"match", "env"}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Rules = benchRules()
			cfg.MaxStates = 100000
			e, err := New(cfg, "gw")
			if err != nil {
				b.Fatal(err)
			}
			series := make([]string, nSeries)
			for i := range series {
				series[i] = fmt.Sprintf("%s,device=pi-%05d,site=plant%d", bc.meas, i, i%10)
			}
			batches := make([]*wal.Batch, nSeries*2/batchN)
			for j := range batches {
				bt := &wal.Batch{Readings: make([]wal.Reading, batchN)}
				for k := range bt.Readings {
					n := j*batchN + k
					bt.Readings[k] = wal.Reading{Series: series[n%nSeries], Field: []string{"temp", "hum"}[n/nSeries], Value: 20 + float64(n%7)}
				}
				batches[j] = bt
			}
			var out []Event
			apply := func(i int) {
				bt := batches[i%len(batches)]
				bt.IngestNs = int64(i) * 1e6
				for k := range bt.Readings {
					bt.Readings[k].TimeNs = int64(i) * 1e6
				}
				out = e.Apply(uint64(i), bt, nil, out[:0])
			}
			for i := range len(batches) {
				apply(i) // warm the match cache and create the states
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				apply(len(batches) + i)
			}
			b.StopTimer()
			if len(out) != 0 {
				b.Fatalf("events in steady state: %q", brief(out))
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchN), "ns/reading")
			st := e.Stats()
			b.ReportMetric(float64(st.States), "states")
		})
	}
}

// BenchmarkMarshalBinary checkpoints an engine holding 20,000 states.
func BenchmarkMarshalBinary(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Rules = benchRules()
	cfg.MaxStates = 100000
	e, err := New(cfg, "gw")
	if err != nil {
		b.Fatal(err)
	}
	bt := &wal.Batch{IngestNs: 1}
	for i := range 10000 {
		s := fmt.Sprintf("env,device=dev-%05d,site=plant%d", i, i%10)
		bt.Readings = append(bt.Readings, wal.Reading{Series: s, Field: "temp", Value: 20, TimeNs: 1}, wal.Reading{Series: s, Field: "hum", Value: 50, TimeNs: 1})
	}
	e.Apply(1, bt, nil, nil)
	var n int
	b.ReportAllocs()
	for b.Loop() {
		c, err := e.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		n = len(c)
	}
	st := e.Stats()
	b.ReportMetric(float64(n)/float64(st.States), "bytes/state")
	b.ReportMetric(float64(st.States), "states")
}
