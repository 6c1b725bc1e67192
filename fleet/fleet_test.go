package fleet

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/sketches"
	"github.com/twmb/franz-go/pkg/kgo"
)

// waitComplete waits until runnel.fleet holds, for every expected fleet
// window, a record with all of its readings merged.
func waitComplete(t *testing.T, c *collector, s *sim, e expected, timeout time.Duration) map[string]Output {
	t.Helper()
	var got map[string]Output
	testutil.WaitFor(t, timeout, func() (bool, string) {
		got = c.latest(t)
		for k, vs := range e.values {
			o, ok := got[k]
			if !ok || o.Summary == nil || o.Summary.Count != uint64(len(vs)) {
				return false, fmt.Sprintf("%d keys; summary %s: %+v, want count %d", len(got), k, o.Summary, len(vs))
			}
		}
		for w, per := range e.perDev {
			total := uint64(0)
			for _, n := range per {
				total += n
			}
			for _, g := range []string{"devices_per_measurement", "top_devices"} {
				o, ok := got[s.sketchKey(g, w)]
				if !ok || o.Sketch == nil || o.Sketch.Readings != total {
					return false, fmt.Sprintf("sketch %s window %d: %+v, want readings %d", g, w, o.Sketch, total)
				}
			}
		}
		return true, ""
	})
	return got
}

func relErr(got, want float64) float64 {
	if want == 0 {
		return math.Abs(got)
	}
	return math.Abs(got-want) / math.Abs(want)
}

// quantileOK is the sketch's stated error: relative error in value at most
// 2 % (sketches.Quantile's relative accuracy) or, for a rank-accurate
// sketch, at most 1 % in rank.
func quantileOK(sorted []float64, q, got float64) (bool, string) {
	n := float64(len(sorted))
	exact := sorted[int(q*(n-1))] // the rank sketches.Quantile estimates
	if relErr(got, exact) <= 0.02+1e-12 {
		return true, ""
	}
	lo := sort.SearchFloat64s(sorted, got)
	hi := sort.Search(len(sorted), func(i int) bool { return sorted[i] > got })
	for _, r := range []int{lo, hi} {
		if math.Abs(float64(r)/n-q) <= 0.01 {
			return true, ""
		}
	}
	return false, fmt.Sprintf("q%.2f = %v, exact %v (rank %d..%d of %d)", q, got, exact, lo, hi, len(sorted))
}

// TestFleetCorrectness: three gateways' summaries and sketches (with a
// tenth sent twice, as at-least-once delivery does) go through the fleet
// on a three-broker kfake with six partitions; the final fleet windows
// equal a brute-force computation over all raw readings.
func TestFleetCorrectness(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	s := newSim(1, 3, 60, 3)
	recs := s.records(t)
	var dups []*kgo.Record // fresh records: kgo owns a record until it is produced
	for _, r := range recs[:len(recs)/10] {
		dups = append(dups, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers})
	}
	inst, _ := startInstance(t, brokers, "a")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(metricsText(inst))
		}
	})
	out := collect(t, brokers)
	produce(t, brokers, append(recs, dups...))

	e := s.expect("site")
	got := waitComplete(t, out, s, e, 20*time.Second)

	if len(e.values) != 6 {
		t.Fatalf("simulation: %d summary fleet windows, want 6 (2 sites x 3 windows)", len(e.values))
	}
	for k, vs := range e.values {
		o := got[k].Summary
		sum, mn, mx := 0.0, math.Inf(1), math.Inf(-1)
		for _, v := range vs {
			sum, mn, mx = sum+v, min(mn, v), max(mx, v)
		}
		mean := sum / float64(len(vs))
		m2 := 0.0
		for _, v := range vs {
			m2 += (v - mean) * (v - mean)
		}
		sd := math.Sqrt(m2 / float64(len(vs)-1))
		if o.Sum != sum || o.Min != mn || o.Max != mx {
			t.Errorf("%s: sum/min/max %v/%v/%v, want %v/%v/%v", k, o.Sum, o.Min, o.Max, sum, mn, mx)
		}
		if relErr(o.Mean, mean) > 1e-9 || relErr(o.Stddev, sd) > 1e-9 {
			t.Errorf("%s: mean %v stddev %v, want %v %v (1e-9 relative)", k, o.Mean, o.Stddev, mean, sd)
		}
		sorted := slices.Sorted(slices.Values(vs))
		for _, q := range []struct {
			q, v float64
		}{{0.5, o.P50}, {0.9, o.P90}, {0.99, o.P99}} {
			if ok, why := quantileOK(sorted, q.q, q.v); !ok {
				t.Errorf("%s: %s", k, why)
			}
		}
		var qs sketches.Quantile
		if err := qs.UnmarshalBinary(o.Quantiles); err != nil || qs.Count() != uint64(len(vs)) {
			t.Errorf("%s: merged quantile sketch: %v, count %d, want %d", k, err, qs.Count(), len(vs))
		}
		if gws := got[k].Gateways; !slices.Equal(gws, slices.Sorted(slices.Values(e.gateways[k]))) {
			t.Errorf("%s: gateways %v, want %v", k, gws, e.gateways[k])
		}
		if got[k].Group["site"] == "" {
			t.Errorf("%s: group %v, want a site", k, got[k].Group)
		}
	}
	se := 1.04 / math.Sqrt(16384)
	for w, devs := range e.devices {
		d := got[s.sketchKey("devices_per_measurement", w)].Sketch
		want := float64(len(devs))
		if math.Abs(float64(d.Distinct)-want) > 3*se*want {
			t.Errorf("window %d: distinct %d, want %v within 3 standard errors (%.1f)", w, d.Distinct, want, 3*se*want)
		}
		top := got[s.sketchKey("top_devices", w)].Sketch
		type dc struct {
			dev string
			n   uint64
		}
		var truth []dc
		for dev, n := range e.perDev[w] {
			truth = append(truth, dc{dev, n})
		}
		slices.SortFunc(truth, func(a, b dc) int { return int(b.n) - int(a.n) })
		for _, want := range truth[:3] {
			if !slices.ContainsFunc(top.TopK, func(it TopKItem) bool { return it.Key == want.dev }) {
				t.Errorf("window %d: top-k %v misses %s (%d readings)", w, top.TopK, want.dev, want.n)
			}
		}
		if top.TopK[0].Key != truth[0].dev {
			t.Errorf("window %d: top device %s, want %s", w, top.TopK[0].Key, truth[0].dev)
		}
	}
}
