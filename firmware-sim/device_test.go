package firmwaresim

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

var testStart = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// genOpt returns options for generator tests: fixed start, one device
// unless changed.
func genOpt(scenario Scenario) Options {
	o := DefaultOptions()
	o.Scenario = scenario
	o.Devices = 1
	o.Start = testStart
	return o
}

func newTestDevice(t testing.TB, o Options, index int) *Device {
	t.Helper()
	d, err := NewDevice(o, index)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// ticks returns the messages of the device's next n ticks.
func ticks(d *Device, n int) []Message {
	var out []Message
	for range n {
		_, msgs := d.Next()
		out = append(out, msgs...)
	}
	return out
}

func TestSeedsReproducible(t *testing.T) {
	cases := []struct {
		name string
		o    func() Options
	}{
		{"env-json", func() Options { return genOpt(ScenarioEnv) }},
		{"vibration-json", func() Options { return genOpt(ScenarioVibration) }},
		{"vibration-lp", func() Options { o := genOpt(ScenarioVibration); o.Format = "lp"; return o }},
		{"biosignal-synthetic", func() Options { o := genOpt(ScenarioBiosignal); o.ECG = ECGSynthetic; return o }},
		{"biosignal-mitdb-udp", func() Options {
			o := genOpt(ScenarioBiosignal)
			o.ECG, o.Transport = ECGMITDB, TransportUDP
			return o
		}},
		{"mix-faults", func() Options {
			o := genOpt(ScenarioMix)
			o.Devices = 10
			o.Faults = Faults{MalformedPct: 20, OutOfOrderPct: 20, LatePct: 20, HighCardinality: 0.2}
			return o
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o()
			for i := range o.Devices {
				a := ticks(newTestDevice(t, o, i), 30)
				b := ticks(newTestDevice(t, o, i), 30)
				if len(a) == 0 || len(a) != len(b) {
					t.Fatalf("device %d: %d and %d messages", i, len(a), len(b))
				}
				for j := range a {
					if a[j].Topic != b[j].Topic || !bytes.Equal(a[j].Payload, b[j].Payload) {
						t.Fatalf("device %d message %d differs with the same seed:\n%s\n%s", i, j, a[j].Payload, b[j].Payload)
					}
				}
				o2 := o
				o2.Seed = o.Seed + 1
				c := ticks(newTestDevice(t, o2, i), 30)
				same := 0
				for j := range min(len(a), len(c)) {
					if bytes.Equal(a[j].Payload, c[j].Payload) {
						same++
					}
				}
				if same == len(a) {
					t.Fatalf("device %d: seeds %d and %d gave identical payloads", i, o.Seed, o2.Seed)
				}
			}
		})
	}
}

// TestPayloadsDecode checks that every scenario, format and transport
// produces payloads the gateway's decoders take whole, with the readings
// the message claims, on the topics and series the design names.
func TestPayloadsDecode(t *testing.T) {
	dec := newDecoders(t)
	for _, sc := range []Scenario{ScenarioEnv, ScenarioVibration, ScenarioBiosignal} {
		for _, format := range []string{"json", "lp"} {
			for _, ecg := range []ECGSource{ECGSynthetic, ECGMITDB} {
				if ecg == ECGMITDB && sc != ScenarioBiosignal {
					continue
				}
				t.Run(fmt.Sprintf("%s-%s-%s", sc, format, ecg), func(t *testing.T) {
					o := genOpt(sc)
					o.Format, o.ECG, o.ReadingsPerMessage = format, ecg, 3
					d := newTestDevice(t, o, 0)
					measurements := map[string]bool{}
					for _, m := range ticks(d, 20) {
						if got := formatOfTopic(m.Topic); got != m.Format {
							t.Fatalf("topic %s has format %v, message says %v", m.Topic, got, m.Format)
						}
						rs, res := dec.decode(m.Format, m.Topic, m.Payload)
						if res.Problems() != 0 {
							t.Fatalf("%s: %v\n%s", m.Topic, res.Err(), m.Payload)
						}
						if len(rs) != m.Readings {
							t.Fatalf("%s: %d readings, message says %d", m.Topic, len(rs), m.Readings)
						}
						for _, r := range rs {
							if tagValue(r.Series, "device") != d.ID || tagValue(r.Series, "site") != "site-1" {
								t.Fatalf("series %q: want device %s, site site-1", r.Series, d.ID)
							}
							if r.TimeNs < testStart.UnixNano() || r.TimeNs > testStart.Add(time.Minute).UnixNano() {
								t.Fatalf("reading time %v outside the first minute of event time", time.Unix(0, r.TimeNs).UTC())
							}
							measurements[strings.SplitN(r.Series, ",", 2)[0]+"."+r.Field] = true
						}
					}
					want := map[Scenario][]string{
						ScenarioEnv:       {"env.temp", "env.hum"},
						ScenarioBiosignal: {"ecg.value", "vitals.hr", "vitals.spo2"},
					}[sc]
					if sc == ScenarioVibration {
						want = []string{"vibration.rms", "accel_x.value", "accel_y.value", "accel_z.value"}
						if format == "lp" {
							want = []string{"vibration.rms", "vibration.x", "vibration.y", "vibration.z"}
						}
					}
					for _, w := range want {
						if !measurements[w] {
							t.Errorf("no %s reading; got %v", w, measurements)
						}
					}
				})
			}
		}
	}
}

func TestMalformedInjected(t *testing.T) {
	dec := newDecoders(t)
	for _, format := range []string{"json", "lp"} {
		t.Run(format, func(t *testing.T) {
			o := genOpt(ScenarioMix)
			o.Devices, o.Format = 10, format
			o.Faults.MalformedPct = 10
			total, bad, failed := 0, 0, 0
			for i := range o.Devices {
				d := newTestDevice(t, o, i)
				for _, m := range ticks(d, 150) {
					_, res := dec.decode(m.Format, m.Topic, m.Payload)
					isBad := m.Faults&FaultMalformed != 0
					if isBad != (res.Problems() > 0) {
						t.Fatalf("%s marked malformed=%v but the decoder found %d problems:\n%q", m.Topic, isBad, res.Problems(), m.Payload)
					}
					total++
					if isBad {
						bad++
					}
					if res.Problems() > 0 {
						failed++
					}
				}
			}
			frac := float64(failed) / float64(total)
			t.Logf("%d of %d payloads fail to decode (%.1f %%)", failed, total, 100*frac)
			if frac < 0.085 || frac > 0.115 {
				t.Fatalf("%.2f %% of payloads fail to decode, want about 10 %%", 100*frac)
			}
		})
	}
}

func TestOutOfOrderAndLate(t *testing.T) {
	dec := newDecoders(t)
	o := genOpt(ScenarioEnv)
	o.Faults.OutOfOrderPct = 20
	o.Faults.LatePct = 10
	o.Faults.LateBy = 2 * time.Hour
	d := newTestDevice(t, o, 0)
	const n = 400
	msgs := ticks(d, n)
	msgs = append(msgs, d.Flush()...)
	if len(msgs) != n {
		t.Fatalf("%d messages for %d ticks: out-of-order lost or duplicated some", len(msgs), n)
	}
	var prev int64
	backwards, ooo, late, oldReadings := 0, 0, 0, 0
	seen := map[int64]bool{}
	for _, m := range msgs {
		rs, res := dec.decode(m.Format, m.Topic, m.Payload)
		if res.Problems() > 0 || len(rs) == 0 {
			t.Fatalf("bad payload %s", m.Payload)
		}
		ts := rs[0].TimeNs
		if m.Faults&FaultLate != 0 {
			late++
			if ts > testStart.Add(-2*time.Hour+time.Duration(n)*time.Second).UnixNano() {
				t.Fatalf("late message stamped %v, want about 2h before %v", time.Unix(0, ts).UTC(), testStart)
			}
			oldReadings++
			ts += int64(2 * time.Hour)
		}
		if m.Faults&FaultOutOfOrder != 0 {
			ooo++
		}
		if ts < prev {
			backwards++
		}
		prev = ts
		seen[ts] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct tick times, want %d", len(seen), n)
	}
	t.Logf("%d ticks: %d held back, %d went backwards, %d late", n, ooo, backwards, late)
	if ooo < n/10 || ooo > n*3/10 || backwards != ooo {
		t.Fatalf("%d held back and %d backwards steps, want about 20 %% of %d each, and equal", ooo, backwards, n)
	}
	if late < n/20 || late > n*3/20 {
		t.Fatalf("%d late messages, want about 10 %% of %d", late, n)
	}
}

func TestHighCardinality(t *testing.T) {
	dec := newDecoders(t)
	o := genOpt(ScenarioEnv)
	o.Faults.HighCardinality = 0.5
	d := newTestDevice(t, o, 0)
	ids := map[string]int{}
	const n = 300
	for _, m := range ticks(d, n) {
		rs, _ := dec.decode(m.Format, m.Topic, m.Payload)
		dev := tagValue(rs[0].Series, "device")
		if dev != m.Device || !strings.Contains(m.Topic, "/"+dev+"/") {
			t.Fatalf("device %q in series, %q in message, topic %s", dev, m.Device, m.Topic)
		}
		ids[dev]++
	}
	t.Logf("%d distinct device ids in %d messages", len(ids), n)
	if len(ids) < n*4/10 || len(ids) > n*6/10+1 {
		t.Fatalf("%d distinct device ids in %d messages, want about half fresh", len(ids), n)
	}
	if ids[d.ID] < n*4/10 {
		t.Fatalf("own id used %d times, want about half", ids[d.ID])
	}
}

// series are the decoded vitals and ECG of a biosignal device.
type bioSeries struct {
	hr, spo2 []wal.Reading
	ecg      [][2]int64 // [first, last] sample time of each batch
	ecgVals  []float64
}

func simulateBio(t *testing.T, o Options, seconds int) (*Device, bioSeries) {
	t.Helper()
	dec := newDecoders(t)
	d := newTestDevice(t, o, 0)
	var s bioSeries
	for _, m := range ticks(d, seconds*int(o.Rate)) {
		rs, res := dec.decode(m.Format, m.Topic, m.Payload)
		if res.Problems() > 0 {
			t.Fatal(res.Err())
		}
		switch {
		case strings.HasPrefix(m.Topic, "biosignal/"):
			s.ecg = append(s.ecg, [2]int64{rs[0].TimeNs, rs[len(rs)-1].TimeNs})
			for _, r := range rs {
				s.ecgVals = append(s.ecgVals, r.Value)
			}
		default:
			for _, r := range rs {
				if r.Field == "hr" {
					s.hr = append(s.hr, r)
				} else {
					s.spo2 = append(s.spo2, r)
				}
			}
		}
	}
	return d, s
}

// longestRun returns the longest event-time span of consecutive readings
// that all satisfy cond.
func longestRun(rs []wal.Reading, cond func(float64) bool) time.Duration {
	var best time.Duration
	start := -1
	for i, r := range rs {
		if !cond(r.Value) {
			start = -1
			continue
		}
		if start < 0 {
			start = i
		}
		best = max(best, time.Duration(r.TimeNs-rs[start].TimeNs))
	}
	return best
}

// TestBiosignalAlertsFire runs the biosignal generator over 5 minutes of
// event time (no wall time) for several seeds: every example alert rule
// must have something to fire on.
func TestBiosignalAlertsFire(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			o := genOpt(ScenarioBiosignal)
			o.ECG, o.Seed = ECGSynthetic, seed
			_, s := simulateBio(t, o, 300)
			hrHigh := longestRun(s.hr, func(v float64) bool { return v > 140 })
			lowO2 := longestRun(s.spo2, func(v float64) bool { return v < 90 })
			var gap time.Duration
			for i := 1; i < len(s.ecg); i++ {
				gap = max(gap, time.Duration(s.ecg[i][0]-s.ecg[i-1][1]))
			}
			t.Logf("HR > 140 for %v, SpO2 < 90 for %v, longest ECG gap %v", hrHigh, lowO2, gap)
			if hrHigh <= 10*time.Second {
				t.Errorf("HR above 140 for at most %v, want > 10s", hrHigh)
			}
			if lowO2 <= 15*time.Second {
				t.Errorf("SpO2 below 90 for at most %v, want > 15s", lowO2)
			}
			if gap <= 5*time.Second {
				t.Errorf("longest ECG gap %v, want a lead-off > 5s", gap)
			}
			// Desaturations clear (back above 92) and the baseline is normal.
			if last := s.spo2[len(s.spo2)-1]; longestRun(s.spo2, func(v float64) bool { return v > 92 }) < time.Minute {
				t.Errorf("SpO2 never stays above 92 for a minute (last %v)", last.Value)
			}
			normal := 0
			for _, r := range s.hr {
				if r.Value >= 55 && r.Value <= 100 {
					normal++
				}
			}
			if normal < len(s.hr)*2/3 {
				t.Errorf("only %d of %d HR readings in 55-100 bpm", normal, len(s.hr))
			}
			lo, hi := slices.Min(s.ecgVals), slices.Max(s.ecgVals)
			if hi < 0.8 || hi > 1.6 || lo > -0.1 || lo < -0.6 {
				t.Errorf("ECG range [%v, %v] mV is not PQRST-like", lo, hi)
			}
		})
	}
}

// TestSyntheticECGFollowsHR counts R peaks: a tachycardia must show in the
// waveform, not only in the hr field.
func TestSyntheticECGFollowsHR(t *testing.T) {
	o := genOpt(ScenarioBiosignal)
	o.ECG = ECGSynthetic
	d, s := simulateBio(t, o, 300)
	_ = d
	peaks := 0
	for i := 1; i+1 < len(s.ecgVals); i++ {
		if v := s.ecgVals[i]; v > 0.7 && v >= s.ecgVals[i-1] && v > s.ecgVals[i+1] {
			peaks++
		}
	}
	var sum float64
	for _, r := range s.hr {
		sum += r.Value
	}
	ecgSeconds := float64(len(s.ecgVals)) / ECGRateHz
	bpm := float64(peaks) / ecgSeconds * 60
	meanHR := sum / float64(len(s.hr))
	t.Logf("%d R peaks in %.0f s of ECG: %.1f bpm; mean hr field %.1f", peaks, ecgSeconds, bpm, meanHR)
	if math.Abs(bpm-meanHR) > 0.1*meanHR {
		t.Fatalf("ECG beats at %.1f bpm, hr field says %.1f", bpm, meanHR)
	}
}

func TestMITDBReplay(t *testing.T) {
	dec := newDecoders(t)
	o := genOpt(ScenarioBiosignal)
	o.ECG = ECGMITDB
	d := newTestDevice(t, o, 0)
	if d.ECG != ECGMITDB {
		t.Fatalf("ECG %q", d.ECG)
	}
	// The first rows of ecg-first-5min.csv (lead MLII, mV).
	first := []float64{-0.145, -0.145, -0.145, -0.145, -0.145, -0.145, -0.145, -0.145, -0.120, -0.135, -0.145, -0.150}
	var batches [][]wal.Reading
	var hrs []float64
	for _, m := range ticks(d, 30) {
		rs, res := dec.decode(m.Format, m.Topic, m.Payload)
		if res.Problems() > 0 {
			t.Fatal(res.Err())
		}
		if m.Format == FormatBiosignal {
			if !bytes.Contains(m.Payload, []byte(`"rate_hz":360`)) {
				t.Fatalf("replay batch without rate_hz 360: %.80s", m.Payload)
			}
			batches = append(batches, rs)
		} else {
			hrs = append(hrs, rs[0].Value)
		}
	}
	if len(batches) < 2 || len(batches[0]) != 360 {
		t.Fatalf("%d batches, first of %d samples; want 1 s batches of 360", len(batches), len(batches[0]))
	}
	for i, want := range first {
		if got := batches[0][i].Value; got != want {
			t.Fatalf("sample %d = %v, want %v (CSV row %d)", i, got, want, i+2)
		}
		if wantT := testStart.UnixNano() + int64(i)*1e9/360; batches[0][i].TimeNs != wantT {
			t.Fatalf("sample %d at %d, want %d", i, batches[0][i].TimeNs, wantT)
		}
	}
	// Sample 360 (t_s 1.000000) opens the second batch.
	if got := batches[1][0].Value; got != -0.535 {
		t.Fatalf("sample 360 = %v, want -0.535", got)
	}
	for _, hr := range hrs {
		if hr < 55 || hr > 100 {
			t.Fatalf("replay HR %v bpm; record 100 is about 75", hr)
		}
	}
}

func TestEnvDailyCycle(t *testing.T) {
	o := genOpt(ScenarioEnv)
	o.Start = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	o.Rate = 1.0 / 600 // one reading per 10 minutes of event time
	dec := newDecoders(t)
	var day, night []float64
	var humDay, humNight float64
	for _, m := range ticks(newTestDevice(t, o, 0), 6*24) {
		rs, _ := dec.decode(m.Format, m.Topic, m.Payload)
		h := time.Unix(0, rs[0].TimeNs).UTC().Hour()
		switch {
		case h >= 13 && h < 17:
			day = append(day, rs[0].Value)
			humDay += rs[1].Value
		case h >= 1 && h < 5:
			night = append(night, rs[0].Value)
			humNight += rs[1].Value
		}
	}
	mean := func(v []float64) float64 {
		var s float64
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	if mean(day) < mean(night)+4 || humDay >= humNight { // humidity peaks at night
		t.Fatalf("afternoon %.1f °C vs night %.1f °C (humidity %.0f vs %.0f): no daily cycle",
			mean(day), mean(night), humDay, humNight)
	}
}

func TestBurstsTickFaster(t *testing.T) {
	o := genOpt(ScenarioEnv)
	o.Rate = 10
	o.Faults.BurstEvery, o.Faults.BurstFor, o.Faults.BurstFactor = 2*time.Second, 500*time.Millisecond, 4
	d := newTestDevice(t, o, 0)
	inBurst, total := 0, 0
	for {
		at, msgs := d.Next()
		if at > 6*time.Second {
			break
		}
		for _, m := range msgs {
			total++
			if m.Faults&FaultBurst != 0 {
				inBurst++
			}
		}
	}
	// 6 s at 10/s plus two bursts (at 2 s and 4 s) of 0.5 s at 40/s.
	if inBurst < 36 || inBurst > 42 || total < 90 || total > 96 {
		t.Fatalf("%d messages, %d in bursts; want about 93 and 40", total, inBurst)
	}
}

func TestSampleClock(t *testing.T) {
	for _, hz := range []int64{100, 250, 360} {
		for _, tc := range []int64{0, 1, 999_999_999, 1e9, 3_333_333_333, 86400e9*365*30 + 7} {
			n := firstSampleAt(tc, hz)
			if sampleTime(n, hz) < tc || (n > 0 && sampleTime(n-1, hz) >= tc) {
				t.Fatalf("hz %d t %d: first sample %d at %d", hz, tc, n, sampleTime(n, hz))
			}
		}
	}
	// Consecutive spans tile the samples: none lost, none repeated.
	var next int64
	for t0 := int64(0); t0 < 5e9; t0 += 37_000_001 {
		n0, n1 := sampleRange(t0, t0+37_000_001, 360)
		if n0 != next {
			t.Fatalf("span at %d starts at sample %d, want %d", t0, n0, next)
		}
		next = n1
	}
}

func TestAppendMs(t *testing.T) {
	for ns, want := range map[int64]string{
		0: "0", 1_700_000_000_000_000_000: "1700000000000", 1_500_000: "1.5", 2_777_778: "2.777778",
		-1_500_000: "-1.5", 1_000_001: "1.000001",
	} {
		if got := string(appendMs(nil, ns)); got != want {
			t.Errorf("appendMs(%d) = %s, want %s", ns, got, want)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	s := h.summary()
	check := func(name string, got, want float64) {
		if math.Abs(got-want) > want*0.04 {
			t.Errorf("%s = %v ms, want %v ± 4 %%", name, got, want)
		}
	}
	check("p50", s.P50, 500)
	check("p90", s.P90, 900)
	check("p99", s.P99, 990)
	if s.Max != 1000 || s.Count != 1000 {
		t.Errorf("max %v count %d", s.Max, s.Count)
	}
	idx := make([]int, 0, 64)
	for _, us := range []int64{0, 1, 63, 64, 65, 127, 128, 1 << 20, 1 << 39, 1 << 62} {
		idx = append(idx, histIndex(us))
	}
	if !sort.IntsAreSorted(idx) || idx[len(idx)-1] != histBuckets-1 {
		t.Fatalf("bucket indexes %v not monotonic or not capped", idx)
	}
}

func TestValidate(t *testing.T) {
	o := DefaultOptions()
	o.Devices, o.Rate, o.QoS, o.Transport, o.Faults.MalformedPct, o.Faults.HighCardinality = -1, -2, 3, "carrier-pigeon", 101, 2
	err := o.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"-devices", "-rate", "-qos", "-transport", "-malformed", "-high-cardinality"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s: %v", want, err)
		}
	}
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestLowRateSplitsBatches: a tick of 100 s holds 36000 ECG samples, more
// than the gateway takes in one message (10000) or one datagram holds; the
// device splits it, losing nothing.
func TestLowRateSplitsBatches(t *testing.T) {
	dec := newDecoders(t)
	for _, tc := range []struct {
		sc     Scenario
		format string
		want   int // samples (readings) in the first tick, vitals and rms aside
	}{
		{ScenarioBiosignal, "json", 36000}, {ScenarioBiosignal, "lp", 36000},
		{ScenarioVibration, "json", 3 * 10000}, {ScenarioVibration, "lp", 3 * 10000},
	} {
		o := genOpt(tc.sc)
		o.Rate, o.Format, o.ECG = 0.01, tc.format, ECGMITDB
		d := newTestDevice(t, o, 0)
		_, msgs := d.Next()
		samples := 0
		var times []int64
		for _, m := range msgs {
			if len(m.Payload) > maxDatagram {
				t.Fatalf("%s %s: a %d-byte message does not fit a datagram", tc.sc, tc.format, len(m.Payload))
			}
			rs, res := dec.decode(m.Format, m.Topic, m.Payload)
			if res.Problems() > 0 {
				t.Fatal(res.Err())
			}
			for _, r := range rs {
				if r.Field != "hr" && r.Field != "spo2" && r.Field != "rms" {
					samples++
					if r.Field == "value" || r.Field == "x" {
						times = append(times, r.TimeNs)
					}
				}
			}
		}
		if samples != tc.want {
			t.Fatalf("%s %s: %d samples in a 100 s tick, want %d", tc.sc, tc.format, samples, tc.want)
		}
		if tc.sc == ScenarioBiosignal {
			for i := 1; i < len(times); i++ {
				if d := times[i] - times[i-1]; d < 2_777_000 || d > 2_778_000 {
					t.Fatalf("samples %d and %d are %d ns apart, want 1/360 s", i-1, i, d)
				}
			}
		}
	}
}

// TestDevicePrefix: the prefix makes a simulator's devices its own (the
// fleet demo's gateways must not share device ids); a prefix that would
// break the topic or the series key is refused.
func TestDevicePrefix(t *testing.T) {
	opt := DefaultOptions()
	opt.Scenario, opt.DevicePrefix = ScenarioEnv, "gw-a-"
	d, err := NewDevice(opt, 0)
	if err != nil || d.ID != "gw-a-env-0001" {
		t.Fatalf("device 0 with prefix gw-a-: %v %v, want gw-a-env-0001", d, err)
	}
	for _, bad := range []string{"a/b", "a,b", "a=b", "a b", "+", strings.Repeat("x", 65)} {
		opt.DevicePrefix = bad
		if _, err := NewDevice(opt, 0); err == nil {
			t.Errorf("prefix %q accepted", bad)
		}
	}
}
