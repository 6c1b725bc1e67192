package sketches

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

type quantileCase struct {
	name string
	gen  func(r *rand.Rand) float64
	qs   []float64 // quantiles whose true value lies in non-collapsed bins
}

var quantileCases = []quantileCase{
	{"uniform 0..1000", func(r *rand.Rand) float64 { return 1000 * r.Float64() }, []float64{0.5, 0.9, 0.99}},
	{"lognormal", func(r *rand.Rand) float64 { return 20 * math.Exp(1.5*r.NormFloat64()) }, []float64{0.1, 0.5, 0.9, 0.99}},
	{"normal 20±15 (negatives)", func(r *rand.Rand) float64 { return 20 + 15*r.NormFloat64() }, []float64{0.01, 0.05, 0.5, 0.9, 0.99}},
	{"normal −50±20 (mostly negative)", func(r *rand.Rand) float64 { return -50 + 20*r.NormFloat64() }, []float64{0.01, 0.5, 0.9, 0.99}},
	{"ecg-like ±3 mV", func(r *rand.Rand) float64 { return 0.3 + 0.8*r.NormFloat64() }, []float64{0.01, 0.1, 0.9, 0.99}},
}

// exactQuantile is the value of rank ⌊q·(n−1)⌋, the rank Quantile targets.
func exactQuantile(sorted []float64, q float64) float64 {
	return sorted[int(q*float64(len(sorted)-1))]
}

func checkQuantiles(t *testing.T, s *Quantile, sorted []float64, qs []float64) {
	t.Helper()
	for _, q := range qs {
		want := exactQuantile(sorted, q)
		got := s.Quantile(q)
		rel := math.Abs(got-want) / math.Abs(want)
		t.Logf("p%v: true %.5g estimate %.5g relative error %.3f%%", 100*q, want, got, 100*rel)
		if rel > s.Alpha()+1e-12 {
			t.Errorf("p%v: estimate %v, true %v: relative error %.4f > α %.4f", 100*q, got, want, rel, s.Alpha())
		}
	}
	if s.Quantile(0) != sorted[0] || s.Quantile(1) != sorted[len(sorted)-1] {
		t.Errorf("p0/p100 %v/%v, want exact %v/%v", s.Quantile(0), s.Quantile(1), sorted[0], sorted[len(sorted)-1])
	}
}

func TestQuantileAccuracy(t *testing.T) {
	const n = 1_000_000
	for i, tc := range quantileCases {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(i), 1))
			vals := make([]float64, n)
			whole, a, b := NewQuantile(), NewQuantile(), NewQuantile()
			for j := range vals {
				v := tc.gen(r)
				vals[j] = v
				whole.Add(v)
				if j < n/2 {
					a.Add(v)
				} else {
					b.Add(v)
				}
			}
			slices.Sort(vals)
			if whole.Count() != n {
				t.Fatalf("count %d", whole.Count())
			}
			checkQuantiles(t, whole, vals, tc.qs)
			if err := a.Merge(b); err != nil {
				t.Fatal(err)
			}
			t.Log("merged halves:")
			checkQuantiles(t, a, vals, tc.qs)
			if !whole.neg.collapsed && !whole.pos.collapsed {
				if !bytes.Equal(mustMarshal(t, a), mustMarshal(t, whole)) {
					t.Error("without collapse, merged halves differ from the whole")
				}
			}
			t.Logf("windows: neg [%d,+%d) collapsed=%v, pos [%d,+%d) collapsed=%v",
				whole.neg.lo, whole.neg.n, whole.neg.collapsed, whole.pos.lo, whole.pos.n, whole.pos.collapsed)
		})
	}
}

func TestQuantileMergeExactWithoutCollapse(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	whole, a, b := NewQuantile(), NewQuantile(), NewQuantile()
	for j := range 100_000 {
		v := 100 + 10*r.NormFloat64()
		if j%3 == 0 {
			v = -v // both signs, each well within its budget
		}
		whole.Add(v)
		if j%2 == 0 {
			a.Add(v)
		} else {
			b.Add(v)
		}
	}
	if whole.neg.collapsed || whole.pos.collapsed {
		t.Fatal("test data collapsed; pick a narrower range")
	}
	ab := *a
	if err := ab.Merge(b); err != nil {
		t.Fatal(err)
	}
	if err := b.Merge(a); err != nil {
		t.Fatal(err)
	}
	want := mustMarshal(t, whole)
	if !bytes.Equal(mustMarshal(t, &ab), want) || !bytes.Equal(mustMarshal(t, b), want) {
		t.Fatal("merged bins differ from the whole's")
	}
}

func TestQuantileCollapse(t *testing.T) {
	q := NewQuantile()
	// Magnitudes from 1e-6 to 1e6 on both signs: far beyond 256 bins.
	for e := -6.0; e <= 6; e += 0.001 {
		q.Add(math.Pow(10, e))
		q.Add(-math.Pow(10, e))
	}
	if !q.neg.collapsed || !q.pos.collapsed {
		t.Fatal("expected both signs to collapse")
	}
	if q.neg.n != QuantileBins/2 || q.pos.n != QuantileBins/2 {
		t.Fatalf("bins split %d/%d, want %d each", q.neg.n, q.pos.n, QuantileBins/2)
	}
	// The top magnitudes keep α: p99 is about 10^(6−0.24·... ) in range.
	vals := make([]float64, 0, int(q.Count()))
	for e := -6.0; e <= 6; e += 0.001 {
		vals = append(vals, math.Pow(10, e), -math.Pow(10, e))
	}
	slices.Sort(vals)
	checkQuantiles(t, q, vals, []float64{0.001, 0.01, 0.99, 0.999})
	// Merging a collapsed sketch folds the receiver's small magnitudes too.
	fine := NewQuantile()
	fine.Add(1e-3)
	fine.Add(1e5)
	if err := fine.Merge(q); err != nil {
		t.Fatal(err)
	}
	if !fine.pos.collapsed || fine.pos.lo < q.pos.lo {
		t.Fatalf("merge ignored the collapse: lo %d, want ≥ %d", fine.pos.lo, q.pos.lo)
	}
	if fine.Count() != q.Count()+2 {
		t.Fatalf("count %d", fine.Count())
	}
}

func TestQuantileEdges(t *testing.T) {
	q := NewQuantile()
	if !math.IsNaN(q.Quantile(0.5)) || !math.IsNaN(q.Min()) {
		t.Fatal("empty sketch answers a number")
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		q.Add(v)
	}
	q.Add(0)
	q.Add(math.Copysign(0, -1))
	q.Add(5e-324)
	if q.Dropped() != 3 || q.Count() != 3 || q.Quantile(0.5) != 0 {
		t.Fatalf("dropped %d count %d p50 %v", q.Dropped(), q.Count(), q.Quantile(0.5))
	}
	q.Add(math.MaxFloat64)
	q.Add(-math.MaxFloat64)
	if q.Quantile(1) != math.MaxFloat64 || q.Quantile(0) != -math.MaxFloat64 {
		t.Fatal("extremes not exact")
	}
	if got := q.Quantile(0.9); math.IsInf(got, 0) || math.IsNaN(got) {
		t.Fatalf("p90 %v", got)
	}
	if !math.IsNaN(q.Quantile(1.5)) || !math.IsNaN(q.Quantile(math.NaN())) {
		t.Fatal("out-of-range q answered")
	}
	other, _ := NewQuantileAlpha(0.01)
	if err := q.Merge(other); err == nil {
		t.Fatal("merge with different alpha accepted")
	}
	var zero Quantile
	zero.Add(3)
	if zero.Alpha() != QuantileAlpha || zero.Quantile(0.5) != 3 {
		t.Fatal("zero value not usable")
	}
	zero.Reset()
	if zero.Count() != 0 {
		t.Fatal("Reset left values")
	}
	if s := NewQuantile().SizeBytes(); s > 1230 {
		t.Fatalf("SizeBytes %d, budget ~1.2 KiB", s)
	}
}

func TestQuantileRoundTrip(t *testing.T) {
	for i, tc := range quantileCases {
		r := rand.New(rand.NewPCG(uint64(i), 2))
		q := NewQuantile()
		for range 50_000 {
			q.Add(tc.gen(r))
		}
		b := mustMarshal(t, q)
		got := NewQuantile()
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if *got != *q {
			t.Fatalf("%s: round trip changed the sketch", tc.name)
		}
		t.Logf("%s: encoding %d bytes", tc.name, len(b))
	}
}

func TestQuantileUnmarshalRejects(t *testing.T) {
	q := NewQuantile()
	for _, v := range []float64{-3, -1, 0, 2, 7, 1e4} {
		q.Add(v)
	}
	other, _ := NewQuantileAlpha(0.01)
	other.Add(1)
	checkRejects(t, mustMarshal(t, q), NewQuantile(), mustMarshal(t, other))

	valid := mustMarshal(t, q)
	budget := append([]byte(nil), valid...)
	budget[3] = 1 // uvarint 0x80 0x01 = 128
	if err := new(Quantile).UnmarshalBinary(budget); err == nil {
		t.Error("bin budget 128 accepted")
	}
	badCount := append([]byte(nil), valid...)
	badCount[11] = 7 // count no longer matches the bins
	if err := new(Quantile).UnmarshalBinary(badCount); err == nil {
		t.Error("count mismatch accepted")
	}
}

func TestQuantileAddDoesNotAllocate(t *testing.T) {
	q := NewQuantile()
	r := rand.New(rand.NewPCG(1, 1))
	if n := testing.AllocsPerRun(10000, func() { q.Add(r.NormFloat64() * 1e3) }); n != 0 {
		t.Fatalf("Add allocates %v times", n)
	}
	o := NewQuantile()
	o.Add(-1e-9)
	o.Add(1e9)
	if n := testing.AllocsPerRun(100, func() { q.Reset(); q.Add(1); _ = q.Merge(o) }); n != 0 {
		t.Fatalf("Merge allocates %v times", n)
	}
}

func FuzzUnmarshalQuantile(f *testing.F) {
	q := NewQuantile()
	f.Add(mustMarshal(f, q))
	for _, v := range []float64{-3, -1e-5, 0, 2, 7, 1e4} {
		q.Add(v)
	}
	valid := mustMarshal(f, q)
	f.Add(valid)
	f.Add(valid[:20])
	for e := -6.0; e <= 6; e += 0.05 {
		q.Add(math.Pow(10, e))
	}
	f.Add(mustMarshal(f, q))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeInvariants(t, data, func() codec { return new(Quantile) })
	})
}
