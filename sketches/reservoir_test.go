package sketches

import (
	"bytes"
	"slices"
	"testing"
)

// chiSquare99 is the chi-square critical value for 99 degrees of freedom at
// p = 0.001.
const chiSquare99 = 148.23

// chiSquare returns Σ (obs−exp)²/exp for equal expectations.
func chiSquare(counts []int, expected float64) float64 {
	var x float64
	for _, c := range counts {
		d := float64(c) - expected
		x += d * d / expected
	}
	return x
}

// TestReservoirUniform feeds many seeded trials of a 100-item stream into a
// k=10 reservoir and tests that each position is kept equally often.
func TestReservoirUniform(t *testing.T) {
	const n, k, trials = 100, 10, 20_000
	for _, tc := range []struct {
		name string
		run  func(seed uint64) *Reservoir
	}{
		{"single stream", func(seed uint64) *Reservoir {
			r, _ := NewReservoir(k, seed)
			for i := range n {
				r.Add(Sample{Value: float64(i)})
			}
			return r
		}},
		{"merge 70+30", func(seed uint64) *Reservoir {
			a, _ := NewReservoir(k, seed)
			b, _ := NewReservoir(k, seed^0xabcdef)
			for i := range n {
				if i < 70 {
					a.Add(Sample{Value: float64(i)})
				} else {
					b.Add(Sample{Value: float64(i)})
				}
			}
			if err := a.Merge(b); err != nil {
				t.Fatal(err)
			}
			return a
		}},
		{"merge 25+25 then continue", func(seed uint64) *Reservoir {
			a, _ := NewReservoir(k, seed)
			b, _ := NewReservoir(k, seed^0x123456)
			for i := range 50 {
				if i < 25 {
					a.Add(Sample{Value: float64(i)})
				} else {
					b.Add(Sample{Value: float64(i)})
				}
			}
			if err := a.Merge(b); err != nil {
				t.Fatal(err)
			}
			for i := 50; i < n; i++ {
				a.Add(Sample{Value: float64(i)})
			}
			return a
		}},
		{"merge 6+4 (not full) then continue", func(seed uint64) *Reservoir {
			a, _ := NewReservoir(k, seed)
			b, _ := NewReservoir(k, seed^0x777)
			for i := range 10 {
				if i < 6 {
					a.Add(Sample{Value: float64(i)})
				} else {
					b.Add(Sample{Value: float64(i)})
				}
			}
			if err := a.Merge(b); err != nil {
				t.Fatal(err)
			}
			for i := 10; i < n; i++ {
				a.Add(Sample{Value: float64(i)})
			}
			return a
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counts := make([]int, n)
			for seed := range uint64(trials) {
				r := tc.run(seed + 1)
				if r.Seen() != n || len(r.Samples()) != k {
					t.Fatalf("seen %d, %d samples", r.Seen(), len(r.Samples()))
				}
				for _, s := range r.Samples() {
					counts[int(s.Value)]++
				}
			}
			x := chiSquare(counts, float64(trials*k)/n)
			t.Logf("chi-square %.1f (99 df, critical %.1f at p=0.001)", x, chiSquare99)
			if x > chiSquare99 {
				t.Fatalf("chi-square %.1f exceeds %.1f: not uniform", x, chiSquare99)
			}
		})
	}
}

func TestReservoirLongStreamUniform(t *testing.T) {
	// One long stream: positions bucketed into 100 buckets of 10,000.
	const n, k = 1_000_000, 1000
	counts := make([]int, 100)
	for seed := range uint64(5) {
		r, _ := NewReservoir(k, seed)
		for i := range n {
			r.Add(Sample{Value: float64(i), TimeNs: int64(i)})
		}
		for _, s := range r.Samples() {
			counts[int(s.Value)/(n/100)]++
		}
	}
	x := chiSquare(counts, 5*k/100)
	t.Logf("1M-item stream, 5 seeds: chi-square %.1f", x)
	if x > chiSquare99 {
		t.Fatalf("chi-square %.1f exceeds %.1f", x, chiSquare99)
	}
}

func TestReservoirDeterministicReplay(t *testing.T) {
	r := NewReservoirDefault(42)
	for i := range 1000 {
		r.Add(Sample{Value: float64(i), TimeNs: int64(i) * 1e6})
	}
	b := mustMarshal(t, r)
	var restored Reservoir
	if err := restored.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustMarshal(t, &restored), b) {
		t.Fatal("round trip changed the encoding")
	}
	for i := 1000; i < 50_000; i++ {
		s := Sample{Value: float64(i), TimeNs: int64(i) * 1e6}
		r.Add(s)
		restored.Add(s)
	}
	if !slices.Equal(r.Samples(), restored.Samples()) || !bytes.Equal(mustMarshal(t, r), mustMarshal(t, &restored)) {
		t.Fatal("restored reservoir diverged from the original")
	}
	// Not yet full: decoded buffer grows once and replay still matches.
	small := NewReservoirDefault(7)
	for i := range 5 {
		small.Add(Sample{Value: float64(i)})
	}
	var back Reservoir
	if err := back.UnmarshalBinary(mustMarshal(t, small)); err != nil {
		t.Fatal(err)
	}
	for i := 5; i < 500; i++ {
		small.Add(Sample{Value: float64(i)})
		back.Add(Sample{Value: float64(i)})
	}
	if !slices.Equal(small.Samples(), back.Samples()) {
		t.Fatal("restored partial reservoir diverged")
	}
}

func TestReservoirMergeEdges(t *testing.T) {
	a, b := NewReservoirDefault(1), NewReservoirDefault(2)
	if err := a.Merge(b); err != nil || a.Seen() != 0 {
		t.Fatalf("empty merge: %v, seen %d", err, a.Seen())
	}
	for i := range 100 {
		b.Add(Sample{Value: float64(i)})
	}
	if err := a.Merge(b); err != nil || a.Seen() != 100 || len(a.Samples()) != ReservoirCapacity {
		t.Fatalf("merge into empty: %v, seen %d, %d samples", err, a.Seen(), len(a.Samples()))
	}
	if err := a.Merge(a); err != nil || a.Seen() != 200 {
		t.Fatalf("self merge: %v, seen %d", err, a.Seen())
	}
	c, _ := NewReservoir(8, 1)
	if err := a.Merge(c); err == nil {
		t.Fatal("merge of different capacity accepted")
	}
	a.Reset()
	if a.Seen() != 0 || len(a.Samples()) != 0 {
		t.Fatal("Reset left samples")
	}
}

func TestReservoirUnmarshalRejects(t *testing.T) {
	r, _ := NewReservoir(4, 9)
	for i := range 20 {
		r.Add(Sample{Value: float64(i), TimeNs: int64(i)})
	}
	other, _ := NewReservoir(5, 9)
	recv, _ := NewReservoir(4, 1)
	checkRejects(t, mustMarshal(t, r), recv, mustMarshal(t, other))

	valid := mustMarshal(t, r)
	wrongCount := append([]byte(nil), valid...)
	wrongCount[4] = 3 // sample count ≠ min(seen, k)
	if err := new(Reservoir).UnmarshalBinary(wrongCount); err == nil {
		t.Error("wrong sample count accepted")
	}
	badW := append([]byte(nil), valid...)
	copy(badW[5+16*4:], []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}) // W = 1
	if err := new(Reservoir).UnmarshalBinary(badW); err == nil {
		t.Error("W = 1 accepted")
	}
}

func TestReservoirAddDoesNotAllocate(t *testing.T) {
	r := NewReservoirDefault(3)
	i := 0
	for range ReservoirCapacity { // full: the buffer has grown to k
		r.Add(Sample{Value: float64(i), TimeNs: int64(i)})
		i++
	}
	if n := testing.AllocsPerRun(10000, func() { r.Add(Sample{Value: float64(i), TimeNs: int64(i)}); i++ }); n != 0 {
		t.Fatalf("Add allocates %v times", n)
	}
	o := NewReservoirDefault(4)
	for j := range 100 {
		o.Add(Sample{Value: float64(j)})
	}
	if n := testing.AllocsPerRun(100, func() { _ = r.Merge(o) }); n != 0 {
		t.Fatalf("Merge allocates %v times", n)
	}
}

func FuzzUnmarshalReservoir(f *testing.F) {
	r, _ := NewReservoir(3, 5)
	f.Add(mustMarshal(f, r))
	for i := range 10 {
		r.Add(Sample{Value: float64(i), TimeNs: int64(i)})
	}
	valid := mustMarshal(f, r)
	f.Add(valid)
	f.Add(valid[:10])
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeInvariants(t, data, func() codec { return new(Reservoir) })
	})
}

// TestReservoirGrowsLazily: a reservoir holds room for the samples it has
// seen (doubling, from minGrow), never more than k, and fills in a few
// allocations; its samples are those of the full-capacity buffer it had
// before (the golden encodings check the bytes).
func TestReservoirGrowsLazily(t *testing.T) {
	r := NewReservoirDefault(7)
	if c := cap(r.Samples()); c != 0 {
		t.Fatalf("new reservoir holds room for %d samples, want 0", c)
	}
	allocs := 0
	for i := range 3 * ReservoirCapacity {
		before := cap(r.samples)
		r.Add(Sample{Value: float64(i), TimeNs: int64(i)})
		if cap(r.samples) != before {
			allocs++
		}
		seen := min(i+1, ReservoirCapacity)
		if c := cap(r.samples); c > max(minGrow, 2*seen) || c > ReservoirCapacity || c < seen {
			t.Fatalf("after %d adds: room for %d samples", i+1, c)
		}
	}
	if allocs > 4 { // 4, 8, 16, 32
		t.Errorf("filling took %d allocations, want at most 4", allocs)
	}
	// A merge into a reservoir that is not full grows it as far as needed.
	a, b := NewReservoirDefault(1), NewReservoirDefault(2)
	a.Add(Sample{Value: 1})
	for i := range 20 {
		b.Add(Sample{Value: float64(i)})
	}
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	if len(a.Samples()) != 21 || cap(a.Samples()) > ReservoirCapacity {
		t.Errorf("merged: %d samples, room for %d", len(a.Samples()), cap(a.Samples()))
	}
	for i := range 40 {
		b.Add(Sample{Value: float64(100 + i)})
	}
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	if len(a.Samples()) != ReservoirCapacity || cap(a.Samples()) != ReservoirCapacity {
		t.Errorf("merged past k: %d samples, room for %d", len(a.Samples()), cap(a.Samples()))
	}
}
