package windows

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// bruteConfig has every feature on, with short times so random streams hit
// idle devices, evictions and group closes.
func bruteConfig(lateness time.Duration) Config {
	c := DefaultConfig()
	c.Tumbling = []time.Duration{4 * time.Second, 10 * time.Second}
	c.Sliding = []SlidingSpec{{Size: 10 * time.Second, Slide: 2 * time.Second}}
	c.AllowedLateness = lateness
	c.IdleTimeout = 20 * time.Second
	c.SeriesTTL = 60 * time.Second
	c.ClosedHistory = 3
	c.ReservoirSize = 8
	c.MemoryBudget = 1 << 30
	c.Groups = []GroupSpec{
		{Name: "dev", By: "measurement", Size: 10 * time.Second, Distinct: "device"},
		{Name: "top", By: "measurement", Size: 5 * time.Second, TopK: "device", K: 8},
		{Name: "site", By: "tag:site", Size: 10 * time.Second, Distinct: "series", TopK: "series", K: 4},
	}
	return c
}

// genStream makes a random stream: devices with their own clock offsets,
// out-of-order and late events, pauses (idle devices) and processing-time
// jumps (idle sweeps and evictions).
func genStream(seed uint64, n int, lateness time.Duration) []wal.Batch {
	rng := rand.New(rand.NewPCG(seed, 7))
	type dev struct {
		series  []string
		offset  int64
		pausedP int64
		staleP  int64 // until then its clock is stuck far behind: only late readings
	}
	var devs []*dev
	for i := range 6 {
		d := &dev{offset: int64(rng.IntN(20)-10) * sec}
		d.series = append(d.series, fmt.Sprintf("env,device=d%d,site=s%d", i, i%2))
		if i%2 == 0 {
			d.series = append(d.series, fmt.Sprintf("pwr,device=d%d", i))
		}
		if i == 5 {
			d.series = []string{"misc,host=h5"} // no device tag: the series is the device
		}
		devs = append(devs, d)
	}
	fields := []string{"a", "b"}
	P := int64(1000) * sec
	late := int64(lateness)
	var out []wal.Batch
	for range n {
		P += int64(rng.IntN(2500)) * int64(time.Millisecond)
		if rng.IntN(100) < 3 {
			P += int64(30+rng.IntN(60)) * sec
		}
		b := wal.Batch{IngestNs: P}
		for range 1 + rng.IntN(8) {
			d := devs[rng.IntN(len(devs))]
			if d.pausedP > P {
				continue
			}
			switch rng.IntN(200) {
			case 0, 1, 2, 3:
				d.pausedP = P + int64(25+rng.IntN(40))*sec
			case 4:
				d.staleP = P + int64(70+rng.IntN(30))*sec
			}
			t := P + d.offset + rng.Int64N(late+4*sec) - late - 3*sec
			if rng.IntN(100) < 2 {
				t -= 30 * sec
			}
			if d.staleP > P {
				t -= 1000 * sec
			}
			b.Readings = append(b.Readings, wal.Reading{
				Series: d.series[rng.IntN(len(d.series))], Field: fields[rng.IntN(2)],
				Value: float64(rng.IntN(1000)+1) / 8, TimeNs: t,
			})
		}
		out = append(out, b)
	}
	return out
}

func TestBruteForce(t *testing.T) {
	seen := map[string]int{}
	for _, lateness := range []time.Duration{0, 2 * time.Second, 10 * time.Second} {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprintf("lateness=%s/seed=%d", lateness, seed), func(t *testing.T) {
				c := bruteConfig(lateness)
				e := mustNew(t, c)
				sink := &testSink{}
				e.SetLateSink(sink)
				rf := newRef(c)
				var out []Emission
				for i, b := range genStream(seed, 600, lateness) {
					out = e.Apply(uint64(i+1), &b, out[:0])
					want := rf.apply(&b)
					if err := compareEmissions(out, want); err != nil {
						t.Fatalf("batch %d (ingest %d): %v", i+1, b.IngestNs, err)
					}
					for _, em := range out {
						if em.Kind == KindGroup {
							seen["group"]++
						} else {
							seen[em.Kind.String()+"/"+em.Window.Closed]++
						}
					}
				}
				if len(sink.got) != len(rf.late) {
					t.Fatalf("late sink got %d readings, reference %d", len(sink.got), len(rf.late))
				}
				for i := range rf.late {
					if sink.got[i].r != rf.late[i] {
						t.Fatalf("late reading %d: %+v, want %+v", i, sink.got[i].r, rf.late[i])
					}
				}
				if st := e.Stats(); st.LateReadings != uint64(len(rf.late)) {
					t.Errorf("LateReadings %d, want %d", st.LateReadings, len(rf.late))
				}
				seen["late"] += len(rf.late)
			})
		}
	}
	for _, k := range []string{"tumbling/watermark", "tumbling/idle", "tumbling/evicted", "sliding/watermark", "sliding/idle", "sliding/evicted", "group", "late"} {
		if seen[k] == 0 {
			t.Errorf("the streams never produced %s (coverage %v)", k, seen)
		}
	}
	t.Logf("coverage %v", seen)
}

func compareEmissions(got, want []Emission) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d emissions, reference %d:\n got %s\nwant %s", len(got), len(want), brief(got), brief(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Kind != w.Kind || g.Seq != i {
			return fmt.Errorf("emission %d: kind %v seq %d, want %v:\n got %s\nwant %s", i, g.Kind, g.Seq, w.Kind, brief(got), brief(want))
		}
		if g.Kind == KindGroup {
			if err := compareGroup(g.Group, w.Group); err != nil {
				return fmt.Errorf("emission %d: %v", i, err)
			}
			continue
		}
		if err := compareWindow(g.Window, w.Window); err != nil {
			return fmt.Errorf("emission %d: %v\n got %s\nwant %s", i, err, brief(got), brief(want))
		}
	}
	return nil
}

func brief(es []Emission) string {
	s := ""
	for _, e := range es {
		if e.Kind == KindGroup {
			s += fmt.Sprintf("[%s %s %d] ", e.Group.Group, e.Group.Key, e.Group.StartNs/sec)
		} else {
			s += fmt.Sprintf("[%s %s %s %d %s n=%d] ", e.Window.Series, e.Window.Field, e.Window.Spec, e.Window.StartNs/sec, e.Window.Closed, e.Window.Count)
		}
	}
	return s
}

func compareWindow(g, w WindowSummary) error {
	if w.Quantiles != nil && !bytes.Equal(g.Quantiles, w.Quantiles) {
		return fmt.Errorf("quantile sketch differs from the sketch of the window's values in arrival order")
	}
	ge, we := g, w
	ge.Stddev, we.Stddev = 0, 0
	ge.P50, ge.P90, ge.P99, we.P50, we.P90, we.P99 = 0, 0, 0, 0, 0, 0
	ge.Quantiles, we.Quantiles = nil, nil
	if !reflect.DeepEqual(ge, we) {
		return fmt.Errorf("window\n got %+v\nwant %+v", g, w)
	}
	if !near(g.Stddev, w.Stddev, 1e-9) {
		return fmt.Errorf("stddev %v, want %v", g.Stddev, w.Stddev)
	}
	for _, q := range [][2]float64{{g.P50, w.P50}, {g.P90, w.P90}, {g.P99, w.P99}} {
		if math.Abs(q[0]-q[1]) > 0.02*math.Abs(q[1])+1e-12 {
			return fmt.Errorf("quantiles %v %v %v, exact %v %v %v", g.P50, g.P90, g.P99, w.P50, w.P90, w.P99)
		}
	}
	return nil
}

func near(a, b, rel float64) bool {
	return math.Abs(a-b) <= rel*max(math.Abs(a), math.Abs(b), 1e-6)
}

func compareGroup(g, w *GroupSummary) error {
	if g.Group != w.Group || g.Key != w.Key || g.StartNs != w.StartNs || g.EndNs != w.EndNs || g.Readings != w.Readings {
		return fmt.Errorf("group %+v, want %+v", *g, *w)
	}
	if d := math.Abs(float64(g.Distinct) - float64(w.Distinct)); d > max(1, 0.02*float64(w.Distinct)) {
		return fmt.Errorf("group %s/%s distinct %d, exact %d", g.Group, g.Key, g.Distinct, w.Distinct)
	}
	exact := map[string]uint64{}
	for _, it := range w.TopK {
		exact[it.Key] = it.Count
	}
	for _, it := range g.TopK {
		if it.Count < exact[it.Key] {
			return fmt.Errorf("group %s/%s top-k %s=%d below exact %d", g.Group, g.Key, it.Key, it.Count, exact[it.Key])
		}
		delete(exact, it.Key)
	}
	if len(w.TopK) <= len(g.TopK) && len(exact) > 0 {
		return fmt.Errorf("group %s/%s top-k misses %v", g.Group, g.Key, exact)
	}
	if (len(g.HLL) > 0) != (w.Distinct > 0) {
		return fmt.Errorf("group %s/%s HLL blob %d bytes for exact distinct %d", g.Group, g.Key, len(g.HLL), w.Distinct)
	}
	return nil
}

// TestBruteForceLargeBatches runs the random streams in batches of up to
// a few hundred readings, so Apply works through many chunks of readings
// with its pipeline of lookups ahead (hashAhead, seriesAhead), and checks
// every emission against the reference.
func TestBruteForceLargeBatches(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			const lateness = 2 * time.Second
			c := bruteConfig(lateness)
			e := mustNew(t, c)
			rf := newRef(c)
			rng := rand.New(rand.NewPCG(seed, 99))
			var big wal.Batch
			var out []Emission
			idx, chunks := uint64(0), 0
			flush := func() {
				idx++
				out = e.Apply(idx, &big, out[:0])
				want := rf.apply(&big)
				if err := compareEmissions(out, want); err != nil {
					t.Fatalf("batch %d of %d readings: %v", idx, len(big.Readings), err)
				}
				chunks += (len(big.Readings) + prefetchChunk - 1) / prefetchChunk
				big = wal.Batch{}
			}
			for _, b := range genStream(seed+10, 3000, lateness) {
				big.IngestNs = b.IngestNs
				big.Readings = append(big.Readings, b.Readings...)
				if rng.IntN(40) == 0 {
					flush()
				}
			}
			flush()
			if chunks < 4*int(idx) {
				t.Fatalf("%d batches took only %d chunks: too small to pipeline", idx, chunks)
			}
		})
	}
}
