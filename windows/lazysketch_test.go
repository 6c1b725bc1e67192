package windows

import (
	"bytes"
	"math"
	"testing"

	"github.com/runnel-iot/runnel/sketches"
	"github.com/runnel-iot/runnel/wal"
)

// TestLazySketch checks that a tumbling window, which makes its quantile
// sketch only on its second value, emits and checkpoints exactly what a
// sketch given every value from the start holds, for the values the
// sketch treats specially, with and without a checkpoint between the
// first value and the second; and that a restored one-value window keeps
// no sketch.
func TestLazySketch(t *testing.T) {
	specials := []float64{17.25, -3, 0, math.Copysign(0, -1), 0x1p-1040, -0x1p-1040, math.NaN(), math.Inf(1), math.Inf(-1), math.MaxFloat64}
	for _, first := range specials {
		for _, second := range []float64{math.NaN(), 21.5, -1e-300} { // NaN: no second value
			for _, restore := range []bool{false, true} {
				c := testConfig() // one 4 s tumbling window, lateness 0
				e := mustNew(t, c)
				batch := func(i uint64, v float64, t int64) *wal.Batch {
					return &wal.Batch{IngestNs: t, Readings: []wal.Reading{{Series: "s", Field: "v", Value: v, TimeNs: t}}}
				}
				var vals []float64
				out := e.Apply(1, batch(1, first, 0), nil)
				vals = append(vals, first)
				if restore {
					ck, err := e.MarshalBinary()
					if err != nil {
						t.Fatal(err)
					}
					e = mustNew(t, c)
					if err := e.UnmarshalBinary(ck); err != nil {
						t.Fatal(err)
					}
					if w := e.series.get("s").pair("v").specs[0].wins[0]; w.q != nil {
						t.Errorf("first %v: a restored one-value window has a sketch", first)
					}
					if again, _ := e.MarshalBinary(); !bytes.Equal(again, ck) {
						t.Errorf("first %v: restored state encodes differently", first)
					}
				}
				if !math.IsNaN(second) {
					out = e.Apply(2, batch(2, second, sec), out)
					vals = append(vals, second)
				}
				out = e.Apply(3, batch(3, 1, 5*sec), out) // closes [0, 4s)
				if len(out) != 1 {
					t.Fatalf("first %v second %v: %d emissions, want 1", first, second, len(out))
				}
				var want sketches.Quantile
				for _, v := range vals {
					want.Add(v)
				}
				wb, _ := want.MarshalBinary()
				w := out[0].Window
				if !bytes.Equal(w.Quantiles, wb) {
					t.Errorf("first %v second %v restore %v: sketch differs from the eager one", first, second, restore)
				}
				for _, q := range [][2]float64{{w.P50, want.Quantile(0.5)}, {w.P90, want.Quantile(0.9)}, {w.P99, want.Quantile(0.99)}} {
					if math.Float64bits(q[0]) != math.Float64bits(q[1]) && !(math.IsNaN(q[0]) && math.IsNaN(q[1])) {
						t.Errorf("first %v second %v restore %v: quantile %v, eager %v", first, second, restore, q[0], q[1])
					}
				}
			}
		}
	}
}

// TestLazySketchQueries checks the read API on a window without a sketch
// against the sketch of its one value.
func TestLazySketchQueries(t *testing.T) {
	for _, v := range []float64{17.25, -3, 0, math.NaN(), math.Inf(-1)} {
		e := mustNew(t, testConfig())
		e.Apply(1, &wal.Batch{Readings: []wal.Reading{{Series: "s", Field: "v", Value: v, TimeNs: 0}}}, nil)
		var want sketches.Quantile
		want.Add(v)
		qs := []float64{0, 0.5, 0.99, 1}
		got, ok := e.Quantiles("s", "v", TumblingName(4e9), qs)
		if !ok {
			t.Fatalf("%v: no open window", v)
		}
		for i, q := range qs {
			if w := want.Quantile(q); math.Float64bits(got[i]) != math.Float64bits(w) && !(math.IsNaN(got[i]) && math.IsNaN(w)) {
				t.Errorf("%v: quantile %v = %v, want %v", v, q, got[i], w)
			}
		}
		open, _, _ := e.Windows("s", "v", TumblingName(4e9), 1)
		if len(open) != 1 || math.Float64bits(open[0].P50) != math.Float64bits(want.Quantile(0.5)) && !math.IsNaN(open[0].P50) {
			t.Errorf("%v: open windows %+v", v, open)
		}
	}
}

// TestExtremeTimesFindTheirWindow checks the division-free window and
// pane lookups at the ends of the time range: a reading at +2^62 after one
// at −2^62 must open a new window, pane and group window, not land in the
// previous one through an overflow.
func TestExtremeTimesFindTheirWindow(t *testing.T) {
	c := testConfig()
	c.Sliding = []SlidingSpec{{Size: 8e9, Slide: 4e9}}
	c.Groups = []GroupSpec{{Name: "g", By: "measurement", Size: 4e9, Distinct: "device"}}
	e := mustNew(t, c)
	var out []Emission
	for i, ts := range []int64{-timeLimit, timeLimit} {
		out = e.Apply(uint64(i+1), &wal.Batch{Readings: []wal.Reading{{Series: "m,device=d", Field: "v", Value: float64(i), TimeNs: ts}}}, out)
	}
	starts := map[Kind][]int64{}
	for _, em := range out {
		if em.Kind == KindGroup {
			starts[em.Kind] = append(starts[em.Kind], em.Group.StartNs)
			continue
		}
		if em.Window.Count != 1 {
			t.Errorf("%s window at %d holds %d readings, want 1", em.Window.Spec, em.Window.StartNs, em.Window.Count)
		}
		starts[em.Kind] = append(starts[em.Kind], em.Window.StartNs)
	}
	if got, want := starts[KindTumbling], []int64{alignDown(-timeLimit, 4e9)}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("tumbling closed %v, want %v", got, want)
	}
	if got := starts[KindGroup]; len(got) != 1 || got[0] != alignDown(-timeLimit, 4e9) {
		t.Errorf("group closed %v", got)
	}
	if len(starts[KindSliding]) == 0 {
		t.Errorf("no sliding window closed")
	}
	open, _, _ := e.Windows("m,device=d", "v", TumblingName(4e9), 1)
	if len(open) != 1 || open[0].StartNs != alignDown(timeLimit, 4e9) || open[0].Count != 1 {
		t.Errorf("open tumbling %+v", open)
	}
}

// TestPendingSketchValues checks that a tumbling window, which holds up
// to winBuf values back from its quantile sketch, answers queries, emits
// and checkpoints exactly what a sketch given every value as it came
// holds, for every count of values around the flushes and with a
// checkpoint restored after any of them.
func TestPendingSketchValues(t *testing.T) {
	vals := []float64{17.25, 1e6, -3, math.NaN(), 0, 1e-300, 21.5, -1e9, 17.5, math.Inf(1), 3, 4, 5, -0.25, 1e12, 6, 7}
	for n := 1; n <= len(vals); n++ {
		for restoreAt := -1; restoreAt < n; restoreAt++ {
			c := testConfig() // one 4 s tumbling window, lateness 0
			e := mustNew(t, c)
			var want sketches.Quantile
			var out []Emission
			for i, v := range vals[:n] {
				out = e.Apply(uint64(i+1), &wal.Batch{IngestNs: int64(i), Readings: []wal.Reading{{Series: "s", Field: "v", Value: v, TimeNs: int64(i)}}}, out)
				want.Add(v)
				got, ok := e.Quantiles("s", "v", TumblingName(4e9), []float64{0, 0.5, 0.9, 1})
				if !ok {
					t.Fatalf("n %d: no open window after %d values", n, i+1)
				}
				for k, q := range []float64{0, 0.5, 0.9, 1} {
					if w := want.Quantile(q); math.Float64bits(got[k]) != math.Float64bits(w) && !(math.IsNaN(got[k]) && math.IsNaN(w)) {
						t.Fatalf("n %d after %d values: quantile %v = %v, want %v", n, i+1, q, got[k], w)
					}
				}
				if i == restoreAt {
					ck, err := e.MarshalBinary()
					if err != nil {
						t.Fatal(err)
					}
					e = mustNew(t, c)
					if err := e.UnmarshalBinary(ck); err != nil {
						t.Fatal(err)
					}
					if again, _ := e.MarshalBinary(); !bytes.Equal(again, ck) {
						t.Fatalf("n %d restored after %d: encodes differently", n, i+1)
					}
				}
			}
			if w := e.series.get("s").pair("v").specs[0].wins[0]; n <= winBuf && restoreAt < 0 && w.q != nil {
				t.Errorf("n %d: a window of at most %d values made a sketch", n, winBuf)
			}
			out = e.Apply(uint64(n+1), &wal.Batch{IngestNs: 5 * sec, Readings: []wal.Reading{{Series: "s", Field: "v", Value: 1, TimeNs: 5 * sec}}}, out)
			if len(out) != 1 {
				t.Fatalf("n %d: %d emissions, want 1", n, len(out))
			}
			wb, _ := want.MarshalBinary()
			if !bytes.Equal(out[0].Window.Quantiles, wb) {
				t.Errorf("n %d restored after %d: emitted sketch differs from the eager one", n, restoreAt+1)
			}
		}
	}
}
