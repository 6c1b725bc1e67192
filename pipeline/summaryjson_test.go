package pipeline

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/runnel-iot/runnel/gateway/schema"
	"github.com/runnel-iot/runnel/windows"
)

// marshalSummaryValue is the summary value as summaryRecord built it
// before appendSummaryValue: json.Marshal of a summaryValue.
func marshalSummaryValue(t testing.TB, gw string, e *windows.Emission) []byte {
	w := &e.Window
	v := summaryValue{
		Schema: schemaSummary, Gateway: gw, Series: w.Series, Field: w.Field, Spec: w.Spec,
		Window: schema.NewWindow(w), Closed: w.Closed,
	}
	if e.Kind == windows.KindTumbling {
		v.Quantiles = w.Quantiles
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %+v: %v", v, err)
	}
	return b
}

func checkSummaryValue(t *testing.T, gw string, e *windows.Emission) {
	t.Helper()
	want := marshalSummaryValue(t, gw, e)
	got := appendSummaryValue([]byte("prefix"), gw, e)
	if string(got[:6]) != "prefix" || string(got[6:]) != string(want) {
		t.Fatalf("appendSummaryValue(%q, %+v):\n got %s\nwant %s", gw, e.Window, got[6:], want)
	}
}

// TestAppendSummaryValueMatchesMarshal: the hand-written encoding is
// byte for byte json.Marshal's, over the awkward values: strings to
// escape (quotes, HTML, control characters, invalid UTF-8, U+2028),
// floats at the 'f'/'e' cutoffs, tiny and huge, negative zero, NaN and
// infinities, windows with and without quantiles.
func TestAppendSummaryValueMatchesMarshal(t *testing.T) {
	strs := []string{"", "env,device=pi-042", `a"b\c`, "<script>&", "tab\there\n", "\x00\x1f\x7f", "caf\xc3\xa9", "bad\xff\xfe",
		"\u2028\u2029", "日本語", "tumbling:10s", "sliding:5m/10s"}
	floats := []float64{0, math.Copysign(0, -1), 1, -1.5, 1e-6, 9.999999e-7, 1e-7, 1.5e-9, 1e20, 1e21, 9.99e20, -1e21, 1e300,
		math.SmallestNonzeroFloat64, math.MaxFloat64, math.NaN(), math.Inf(1), math.Inf(-1), 0.1 + 0.2, 123456789.123}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(xs []float64) float64 { return xs[rng.IntN(len(xs))] }
	for i := range 3000 {
		e := &windows.Emission{Kind: windows.Kind(rng.IntN(2)), Window: windows.WindowSummary{
			Series: strs[rng.IntN(len(strs))], Field: strs[rng.IntN(len(strs))], Spec: strs[rng.IntN(len(strs))],
			StartNs: rng.Int64() - rng.Int64(), EndNs: rng.Int64N(1 << 62), Count: rng.Uint64() >> rng.IntN(64),
			Sum: pick(floats), Min: pick(floats), Max: pick(floats), Mean: rng.NormFloat64() * math.Pow(10, float64(rng.IntN(60)-30)),
			Stddev: pick(floats), First: pick(floats), Last: rng.Float64(), P50: pick(floats), P90: pick(floats), P99: pick(floats),
			Closed: strs[rng.IntN(len(strs))],
		}}
		if i%3 == 0 {
			e.Window.Spec = "tumbling:10s"
		}
		if i%4 != 0 {
			e.Window.Quantiles = make([]byte, rng.IntN(40))
			for j := range e.Window.Quantiles {
				e.Window.Quantiles[j] = byte(rng.Uint32())
			}
		}
		checkSummaryValue(t, strs[rng.IntN(len(strs))], e)
	}
}

func FuzzAppendSummaryValue(f *testing.F) {
	f.Add("gw", "env,device=a", "temp", "tumbling:1m", "watermark", int64(60e9), uint64(2), 1.5, 1e-7, []byte{1, 2}, true)
	f.Add("", "<&>", "\xff", "sliding:5m/10s", "", int64(-1), uint64(0), math.Inf(1), 1e21, []byte(nil), false)
	f.Fuzz(func(t *testing.T, gw, series, field, spec, closed string, start int64, count uint64, x, y float64, q []byte, tumbling bool) {
		e := &windows.Emission{Kind: windows.KindSliding, Window: windows.WindowSummary{
			Series: series, Field: field, Spec: spec, StartNs: start, EndNs: start + 1, Count: count,
			Sum: x, Min: y, Max: x * y, Mean: x / 3, Stddev: y, First: -x, Last: y * 1e10, P50: x, P90: y, P99: x + y,
			Quantiles: q, Closed: closed,
		}}
		if tumbling {
			e.Kind = windows.KindTumbling
		}
		checkSummaryValue(t, gw, e)
	})
}

// sampleSummary is a typical closed 10 s window.
func sampleSummary() *windows.Emission {
	return &windows.Emission{Kind: windows.KindTumbling, Window: windows.WindowSummary{
		Series: "env,device=pi-042", Field: "temp", Spec: "tumbling:10s", StartNs: 1700000000e9, EndNs: 1700000010e9,
		Count: 3, Sum: 63.3, Min: 20.1, Max: 22.2, Mean: 21.1, Stddev: 1.05, First: 20.1, Last: 22.2, P50: 21, P90: 22.2, P99: 22.2,
		Quantiles: make([]byte, 60), Closed: "watermark"}}
}

// TestSummaryRecordAllocations: a summary record costs its one buffer
// (value, key and origin) and its id string.
func TestSummaryRecordAllocations(t *testing.T) {
	e := sampleSummary()
	var sc []byte
	origin := originPos(outboxPos{12, 3}, 42)
	summaryRecord(&sc, "gw", e, origin)
	if n := testing.AllocsPerRun(100, func() { summaryRecord(&sc, "gw", e, origin) }); n > 2 {
		t.Errorf("%v allocations per summary record, want 2", n)
	}
}

func BenchmarkSummaryRecord(b *testing.B) {
	e := sampleSummary()
	var sc []byte
	origin := originPos(outboxPos{12, 3}, 42)
	b.ReportAllocs()
	for b.Loop() {
		summaryRecord(&sc, "gw", e, origin)
	}
}
