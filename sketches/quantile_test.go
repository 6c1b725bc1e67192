package sketches

import (
	"bytes"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
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
	want := 1112 // 64-bit
	if strconv.IntSize == 32 {
		want = 1108 // armv7, 386: 4-byte pointers and alignment
	}
	if s := NewQuantile().SizeBytes(); s != want {
		t.Fatalf("SizeBytes %d, documented as %d", s, want)
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
	badCount[13] = 7 // count (after version, kind, budget, α, level) no longer matches the bins
	if err := new(Quantile).UnmarshalBinary(badCount); err == nil {
		t.Error("count mismatch accepted")
	}
	badLevel := append([]byte(nil), valid...)
	badLevel[12] = QuantileMaxLevel + 1
	if err := new(Quantile).UnmarshalBinary(badLevel); err == nil {
		t.Error("level 9 accepted")
	}
	// A collapsed range below the coarsest level cannot come from Add or Merge.
	c := NewQuantile()
	c.Add(1)
	enc := mustMarshal(t, c)
	enc[len(enc)-4] = 1 // positive range: lo, n, collapsed, nnz, gap, count
	if err := new(Quantile).UnmarshalBinary(enc); err == nil {
		t.Error("collapsed range at level 0 accepted")
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
	for _, h := range []string{quantileV1Tiny, quantileV1Narrow} {
		b, _ := hex.DecodeString(h)
		f.Add(b)
	}
	n := NewQuantile()
	for i := range 1000 {
		n.Add(narrowValue(i))
	}
	f.Add(mustMarshal(f, n))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeInvariants(t, data, func() codec { return new(Quantile) })
		// A decoded sketch keeps working: Adds across every scale, a
		// self-merge, and the result still encodes to valid bytes.
		q := new(Quantile)
		if q.UnmarshalBinary(data) != nil || q.Count() > 1<<30 {
			return
		}
		for _, v := range []float64{-1e300, -17, -1e-300, 0, 1e-300, 16.9, 17, 1e300} {
			q.Add(v)
		}
		n := q.Count()
		if err := q.Merge(q); err != nil || q.Count() != 2*n {
			t.Fatalf("self-merge: %v, count %d, want %d", err, q.Count(), 2*n)
		}
		if err := new(Quantile).UnmarshalBinary(mustMarshal(t, q)); err != nil {
			t.Fatalf("after Add and Merge the encoding does not decode: %v", err)
		}
		_ = q.Quantile(0.5)
	})
}

// rankError is how far, as a fraction of n, the estimate v is from the rank
// ⌊x·(n−1)⌋ the sketch targets: zero when v's rank range in sorted (ties)
// covers it.
func rankError(sorted []float64, x, v float64) float64 {
	target := int(x * float64(len(sorted)-1))
	lo, _ := slices.BinarySearch(sorted, v) // values < v
	hi := lo
	for hi < len(sorted) && sorted[hi] == v {
		hi++
	}
	// v occupies ranks lo..hi−1 when present; between lo−1 and lo otherwise.
	switch {
	case target < lo:
		return float64(lo-target) / float64(len(sorted))
	case hi > lo && target >= hi:
		return float64(target-hi+1) / float64(len(sorted))
	case hi == lo && target >= lo:
		return float64(target-lo+1) / float64(len(sorted))
	}
	return 0
}

// checkRank asserts p50, p90 and p99 are within maxErr in rank.
func checkRank(t *testing.T, label string, s *Quantile, sorted []float64, maxErr float64) {
	t.Helper()
	for _, x := range []float64{0.5, 0.9, 0.99} {
		got := s.Quantile(x)
		e := rankError(sorted, x, got)
		t.Logf("%s: p%v true %.5f estimate %.5f rank error %.3f%% (level %d, α_L %.4f%%)",
			label, 100*x, exactQuantile(sorted, x), got, 100*e, s.Level(), 100*s.RelativeError())
		if e > maxErr {
			t.Errorf("%s: p%v estimate %v is %.3f%% off in rank, want ≤ %.2f%%", label, 100*x, got, 100*e, 100*maxErr)
		}
	}
}

// TestQuantileNarrowRank is issue 19's target: 10,000 readings uniform in
// [16.8, 17.4] give p50, p90 and p99 within 1% in rank, in the open window,
// merged from 4 sketches of 2,500 (contiguous and interleaved splits), and
// fed in other orders; every one of those sketches has the same bytes.
func TestQuantileNarrowRank(t *testing.T) {
	const n = 10_000
	// maxErr is 1% for the case. Elsewhere the bound is the mass of
	// the bin that answers: about 2% for a normal only ±0.1 wide (its peak
	// bins at level 1), and a whole tie for data on a 0.01 grid (an answer
	// within α_L of 17.10 but below it ranks before all 166 readings of 17.10).
	for _, dist := range []struct {
		name   string
		gen    func(r *rand.Rand) float64
		maxErr float64
	}{
		{"uniform 16.8..17.4", func(r *rand.Rand) float64 { return 16.8 + 0.6*r.Float64() }, 0.01},
		{"normal 17±0.1", func(r *rand.Rand) float64 { return 17 + 0.1*r.NormFloat64() }, 0.021},
		{"uniform 16.8..17.4 at 0.01 resolution", func(r *rand.Rand) float64 { return math.Round(1680+60*r.Float64()) / 100 }, 0.02},
		{"uniform 10..30", func(r *rand.Rand) float64 { return 10 + 20*r.Float64() }, 0.01},
		{"uniform −0.3..0.3", func(r *rand.Rand) float64 { return 0.6*r.Float64() - 0.3 }, 0.01},
	} {
		t.Run(dist.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(19, 17))
			vals := make([]float64, n)
			whole := NewQuantile()
			parts := [4]*Quantile{NewQuantile(), NewQuantile(), NewQuantile(), NewQuantile()}
			inter := [4]*Quantile{NewQuantile(), NewQuantile(), NewQuantile(), NewQuantile()}
			for i := range vals {
				vals[i] = dist.gen(r)
				whole.Add(vals[i])
				parts[i/(n/4)].Add(vals[i])
				inter[i%4].Add(vals[i])
			}
			sorted := slices.Sorted(slices.Values(vals))
			checkRank(t, "open window", whole, sorted, dist.maxErr)
			want := mustMarshal(t, whole)

			merged := NewQuantile()
			for _, p := range parts {
				if err := merged.Merge(p); err != nil {
					t.Fatal(err)
				}
			}
			checkRank(t, "merged 4×2500", merged, sorted, dist.maxErr)
			// Merge order and shape: ((3+2)+(1+0)) of the interleaved split.
			if err := inter[3].Merge(inter[2]); err != nil {
				t.Fatal(err)
			}
			if err := inter[1].Merge(inter[0]); err != nil {
				t.Fatal(err)
			}
			if err := inter[3].Merge(inter[1]); err != nil {
				t.Fatal(err)
			}
			checkRank(t, "merged interleaved", inter[3], sorted, dist.maxErr)
			rev, shuf := NewQuantile(), NewQuantile()
			for i := range vals {
				rev.Add(vals[n-1-i])
			}
			perm := rand.New(rand.NewPCG(5, 5)).Perm(n)
			for _, i := range perm {
				shuf.Add(vals[i])
			}
			checkRank(t, "shuffled", shuf, sorted, dist.maxErr)
			// Quarters of the sorted data: each narrower, so at a finer
			// level than the whole; merging must re-key them up to it.
			bySorted := NewQuantile()
			for p := range 4 {
				part := sortedSketch(sorted[p*n/4 : (p+1)*n/4])
				if err := part.Merge(bySorted); err != nil {
					t.Fatal(err)
				}
				bySorted = part
			}
			checkRank(t, "merged sorted quarters", bySorted, sorted, dist.maxErr)
			for name, s := range map[string]*Quantile{"sorted quarters": bySorted, "merged": merged, "interleaved": inter[3], "reversed": rev, "shuffled": shuf, "sorted": sortedSketch(sorted)} {
				if !bytes.Equal(mustMarshal(t, s), want) {
					t.Errorf("%s sketch differs from the whole's bytes", name)
				}
			}
		})
	}
}

func sortedSketch(sorted []float64) *Quantile {
	q := NewQuantile()
	for _, v := range sorted {
		q.Add(v)
	}
	return q
}

// TestQuantileDeterministic: the same inputs in the same order give the same
// bytes, also through a checkpoint (decode, continue) in the middle.
func TestQuantileDeterministic(t *testing.T) {
	feed := func(q *Quantile, from, to int) {
		r := rand.New(rand.NewPCG(11, uint64(from)))
		for range to - from {
			v := 20 + 15*r.NormFloat64()
			if r.IntN(50) == 0 {
				v *= 1e5 // outliers push it to the coarse levels and collapse
			}
			q.Add(v)
		}
	}
	a, b := NewQuantile(), NewQuantile()
	feed(a, 0, 5000)
	feed(a, 5000, 10000)
	feed(b, 0, 5000)
	restored := NewQuantile()
	if err := restored.UnmarshalBinary(mustMarshal(t, b)); err != nil {
		t.Fatal(err)
	}
	feed(restored, 5000, 10000)
	if !bytes.Equal(mustMarshal(t, a), mustMarshal(t, restored)) {
		t.Fatal("replay through a checkpoint gave different bytes")
	}
	t.Logf("level %d, collapsed %v/%v", a.Level(), a.neg.collapsed, a.pos.collapsed)
}

// TestQuantileLevels: the level is the smallest at which the key range fits,
// whatever the order, and each level keeps its relative error.
func TestQuantileLevels(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		level  int
	}{{16.8, 17.4, 0}, {16, 18, 2}, {10, 30, 5}, {1, 100, 7}, {1, 1000, 8}} {
		q := NewQuantile()
		for i := range 1001 {
			q.Add(c.lo + (c.hi-c.lo)*float64(i)/1000)
		}
		if q.Level() != c.level {
			t.Errorf("[%v, %v]: level %d, want %d", c.lo, c.hi, q.Level(), c.level)
		}
		want := math.Tanh(math.Log1p(2*QuantileAlpha/(1-QuantileAlpha)) * math.Exp2(float64(c.level-QuantileMaxLevel)) / 2)
		if re := q.RelativeError(); math.Abs(re-want) > 1e-12 || re > q.Alpha()+1e-15 {
			t.Errorf("[%v, %v]: relative error %v, want %v", c.lo, c.hi, re, want)
		}
		vals := make([]float64, 1001)
		for i := range vals {
			vals[i] = c.lo + (c.hi-c.lo)*float64(i)/1000
		}
		for _, x := range []float64{0.1, 0.5, 0.9, 0.99} {
			got, exact := q.Quantile(x), exactQuantile(vals, x)
			if rel := math.Abs(got-exact) / exact; rel > q.RelativeError()+1e-12 {
				t.Errorf("[%v, %v] p%v: %v vs %v, relative error %v > %v", c.lo, c.hi, 100*x, got, exact, rel, q.RelativeError())
			}
		}
	}
	q := NewQuantile()
	q.Add(1)
	q.Add(1000)
	q.Reset()
	if q.Level() != 0 {
		t.Fatalf("Reset kept level %d", q.Level())
	}
}

// TestQuantileBinsMatchReference checks the windows' in-place growth and
// re-keying against a map of level-0 keys re-keyed once to the final level.
func TestQuantileBinsMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 29))
	for trial := range 300 {
		q := NewQuantile()
		center := math.Exp(r.NormFloat64() * 3)
		spread := center * math.Exp(-4+4*r.Float64())
		ref := map[bool]map[int32]uint32{false: {}, true: {}}
		var keys0 []struct {
			pos bool
			k   int32
		}
		for range 1 + r.IntN(300) {
			v := center + spread*r.NormFloat64()
			if r.IntN(4) == 0 {
				v = -v
			}
			q.Add(v)
			if v != 0 {
				keys0 = append(keys0, struct {
					pos bool
					k   int32
				}{v > 0, int32(math.Ceil(math.Log(math.Abs(v)) * q.invLnGamma0))})
			}
		}
		if q.neg.collapsed || q.pos.collapsed {
			continue
		}
		for _, k := range keys0 {
			ref[k.pos][ceilShift(k.k, q.level)]++
		}
		for _, pos := range []bool{false, true} {
			s, _ := q.stores(pos)
			got := map[int32]uint32{}
			for i, c := range q.storeBins(pos) {
				if c != 0 {
					got[s.lo+int32(i)] = c
				}
			}
			if len(got) != len(ref[pos]) {
				t.Fatalf("trial %d sign %v: %d bins, reference %d", trial, pos, len(got), len(ref[pos]))
			}
			for k, c := range ref[pos] {
				if got[k] != c {
					t.Fatalf("trial %d sign %v key %d: %d, reference %d", trial, pos, k, got[k], c)
				}
			}
		}
		for _, c := range q.bins[q.neg.n+q.pos.n:] {
			if c != 0 {
				t.Fatalf("trial %d: a bin past those in use is %d", trial, c)
			}
		}
	}
}

// addCases returns the values of every kind the add paths must treat
// alike (zeros, NaN, infinities, subnormals, extremes) and the value
// generators, quantileCases and a wide one.
func addCases() (special []float64, gens []quantileCase) {
	special = []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1), 0x1p-1030, -0x1p-1030,
		math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 1, -1}
	gens = append(slices.Clone(quantileCases), quantileCase{name: "wide ±1e300", gen: func(r *rand.Rand) float64 {
		return math.Copysign(math.Pow(10, 600*r.Float64()-300), r.Float64()-0.3)
	}})
	return special, gens
}

// AddPrepared must leave exactly the sketch Add leaves, for every kind of
// value, at every level, and for sketches of another α (which fall back to
// Add).
func TestQuantileAddPreparedMatchesAdd(t *testing.T) {
	special, gens := addCases()
	for i, tc := range gens {
		for _, alpha := range []float64{0, QuantileAlpha, 0.01} {
			t.Run(tc.name+"/alpha="+strconv.FormatFloat(alpha, 'g', -1, 64), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(i), 7))
				a, b := &Quantile{}, &Quantile{}
				if alpha != 0 {
					a, _ = NewQuantileAlpha(alpha)
					b, _ = NewQuantileAlpha(alpha)
				}
				for j := range 20_000 {
					v := tc.gen(r)
					if j%997 == 0 {
						v = special[(j/997)%len(special)]
					}
					pv := PrepareQuantile(v)
					_ = b.Peek(pv)
					a.Add(v)
					b.AddPrepared(pv)
					if j%1000 == 0 || j == 19_999 {
						ab, _ := a.MarshalBinary()
						bb, _ := b.MarshalBinary()
						if !bytes.Equal(ab, bb) || a.Dropped() != b.Dropped() {
							t.Fatalf("after %d values (last %v): AddPrepared differs from Add", j+1, v)
						}
					}
				}
				if *a != *b {
					t.Fatalf("in-memory state differs")
				}
			})
		}
	}
}

// Peek reports the bin a value would go to and changes nothing.
func TestQuantilePeek(t *testing.T) {
	q := NewQuantile()
	for _, v := range []float64{17, 17, 17.5, 0} {
		q.Add(v)
	}
	if q.Level() != 0 {
		t.Fatalf("level %d, want 0", q.Level())
	}
	before := *q
	for v, want := range map[float64]uint32{17: 2, 17.5: 1, 17.25: 0, -17: 0, 1e300: 0} {
		if got := q.Peek(PrepareQuantile(v)); got != want {
			t.Errorf("Peek(%v) = %d, want %d", v, got, want)
		}
	}
	_ = q.Peek(PrepareQuantile(math.NaN()))
	if *q != before {
		t.Errorf("Peek changed the sketch")
	}
}

// PreparedQuantile(v, PrepareQuantile(v).Key0()) must be PrepareQuantile(v)
// for every kind of value, so a caller may keep prepared values packed.
func TestPreparedQuantileRebuilds(t *testing.T) {
	vals := []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1), 0x1p-1030, -0x1p-1030,
		0x1p-1022, -0x1p-1022, math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 1, -1, 17.25, -3e-200}
	r := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		vals = append(vals, math.Copysign(math.Pow(10, 600*r.Float64()-300), r.Float64()-0.5))
	}
	for _, v := range vals {
		pv := PrepareQuantile(v)
		got := PreparedQuantile(v, pv.Key0())
		if math.Float64bits(got.v) != math.Float64bits(pv.v) || got.key0 != pv.key0 || got.sign != pv.sign {
			t.Fatalf("%v: rebuilt %+v, prepared %+v", v, got, pv)
		}
	}
}

// The fleet α's constants, computed once, are those setAlpha computes for
// any other α.
func TestQuantileFleetAlphaConstants(t *testing.T) {
	ln, inv := lnGamma0Of(QuantileAlpha)
	q := NewQuantile()
	var z Quantile
	z.Add(1)
	for _, got := range []*Quantile{q, &z} {
		if got.lnGamma0 != ln || got.invLnGamma0 != inv || got.alpha != QuantileAlpha {
			t.Errorf("fleet sketch has ln γ₀ %v inv %v α %v, want %v %v %v", got.lnGamma0, got.invLnGamma0, got.alpha, ln, inv, QuantileAlpha)
		}
	}
}

// AddKeyed of values in batches must leave exactly the sketch AddPrepared
// of each leaves, for every kind of value, at every level, and for
// sketches of another α; PeekKeyed sums the bins Peek reports.
func TestQuantileAddKeyedMatchesAddPrepared(t *testing.T) {
	special, gens := addCases()
	for i, tc := range gens {
		for _, alpha := range []float64{0, QuantileAlpha, 0.01} {
			t.Run(tc.name+"/alpha="+strconv.FormatFloat(alpha, 'g', -1, 64), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(i), 11))
				a, b := &Quantile{}, &Quantile{}
				if alpha != 0 {
					a, _ = NewQuantileAlpha(alpha)
					b, _ = NewQuantileAlpha(alpha)
				}
				var vals []float64
				var keys []int32
				for j := range 20_000 {
					v := tc.gen(r)
					if j%397 == 0 {
						v = special[(j/397)%len(special)]
					}
					vals = append(vals, v)
					keys = append(keys, PrepareQuantile(v).Key0())
					if r.IntN(5) > 0 && j != 19_999 {
						continue // a batch of 1 to about 8 values
					}
					var want uint32
					finite := true
					for k, v := range vals {
						finite = finite && math.Abs(v) >= 0x1p-1022 && !math.IsInf(v, 0)
						want += b.Peek(PreparedQuantile(v, keys[k]))
					}
					if got := b.PeekKeyed(vals, keys); finite && got != want {
						t.Fatalf("PeekKeyed %v = %d, Peeks sum to %d", vals, got, want)
					}
					for k, v := range vals {
						a.AddPrepared(PreparedQuantile(v, keys[k]))
					}
					b.AddKeyed(vals, keys)
					if *a != *b {
						t.Fatalf("after %d values (batch %v): AddKeyed differs from AddPrepared", j+1, vals)
					}
					vals, keys = vals[:0], keys[:0]
				}
			})
		}
	}
}
