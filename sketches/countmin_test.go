package sketches

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"slices"
	"sync"
	"testing"
)

const zipfUniverse = 100_000

// zipfStream returns n keys drawn from Zipf(s=1.1) over zipfUniverse keys,
// fixed seed, and the exact count of each key.
func zipfStream(n int, seed int64) (stream []uint32, exact []uint64) {
	z := rand.NewZipf(rand.New(rand.NewSource(seed)), 1.1, 1, zipfUniverse-1)
	stream = make([]uint32, n)
	exact = make([]uint64, zipfUniverse)
	for i := range stream {
		k := uint32(z.Uint64())
		stream[i] = k
		exact[k]++
	}
	return stream, exact
}

var zipf1M = sync.OnceValues(func() ([]uint32, []uint64) { return zipfStream(1_000_000, 1) })

func keyBytes(buf *[4]byte, k uint32) []byte {
	binary.LittleEndian.PutUint32(buf[:], k)
	return buf[:]
}

// checkCountMinBounds asserts estimates never undercount and exceed the
// true count by at most εN for at least 1−δ of the universe.
func checkCountMinBounds(t *testing.T, estimate func([]byte) uint64, exact []uint64, total uint64) {
	t.Helper()
	var buf [4]byte
	bound := uint64(CountMinEpsilon * float64(total))
	over, maxErr := 0, uint64(0)
	for k, want := range exact {
		got := estimate(keyBytes(&buf, uint32(k)))
		if got < want {
			t.Fatalf("key %d: estimate %d below true count %d", k, got, want)
		}
		maxErr = max(maxErr, got-want)
		if got-want > bound {
			over++
		}
	}
	frac := float64(over) / float64(len(exact))
	t.Logf("N=%d εN=%d: %d of %d keys over εN (%.4f%%, δ=%.0f%%), max overestimate %d",
		total, bound, over, len(exact), 100*frac, 100*CountMinDelta, maxErr)
	if frac > CountMinDelta {
		t.Fatalf("%.4f of keys exceed εN, allowed %v", frac, CountMinDelta)
	}
}

func TestCountMinParameters(t *testing.T) {
	c := NewCountMinDefault()
	if c.Width() != 2719 || c.Depth() != 5 {
		t.Fatalf("fleet dimensions %d×%d, want 2719×5", c.Width(), c.Depth())
	}
	t.Logf("count-min fleet: %d×%d, SizeBytes %d", c.Width(), c.Depth(), c.SizeBytes())
	for _, tc := range []struct{ eps, delta float64 }{{0, 0.01}, {1, 0.01}, {0.001, 0}, {0.001, 1}, {1e-9, 0.01}, {0.01, 1e-20}} {
		if _, err := NewCountMin(tc.eps, tc.delta); err == nil {
			t.Errorf("NewCountMin(%v, %v) accepted", tc.eps, tc.delta)
		}
	}
}

func TestCountMinAccuracyZipf(t *testing.T) {
	stream, exact := zipf1M()
	c := NewCountMinDefault()
	var buf [4]byte
	for _, k := range stream {
		c.Add(keyBytes(&buf, k), 1)
	}
	checkCountMinBounds(t, c.Estimate, exact, c.Total())
}

func TestCountMinMerge(t *testing.T) {
	stream, exact := zipfStream(400_000, 2)
	a, b := NewCountMinDefault(), NewCountMinDefault()
	var buf [4]byte
	for i, k := range stream {
		if i%2 == 0 {
			a.Add(keyBytes(&buf, k), 1)
		} else {
			b.Add(keyBytes(&buf, k), 1)
		}
	}
	ab, ba := cloneCountMin(t, a), cloneCountMin(t, b)
	if err := ab.Merge(b); err != nil {
		t.Fatal(err)
	}
	if err := ba.Merge(a); err != nil {
		t.Fatal(err)
	}
	// Merge is an exact counter-wise sum: commutative, and every counter is
	// the sum of the halves' counters.
	if !bytes.Equal(mustMarshal(t, ab), mustMarshal(t, ba)) {
		t.Fatal("merge is not commutative")
	}
	for i := range ab.counts {
		if ab.counts[i] != a.counts[i]+b.counts[i] {
			t.Fatalf("counter %d: %d, want %d+%d", i, ab.counts[i], a.counts[i], b.counts[i])
		}
	}
	if ab.Total() != uint64(len(stream)) {
		t.Fatalf("total %d, want %d", ab.Total(), len(stream))
	}
	checkCountMinBounds(t, ab.Estimate, exact, ab.Total())

	other, _ := NewCountMin(0.01, 0.01)
	if err := a.Merge(other); err == nil {
		t.Fatal("merge of different dimensions accepted")
	}
}

func cloneCountMin(t *testing.T, c *CountMin) *CountMin {
	var out CountMin
	if err := out.UnmarshalBinary(mustMarshal(t, c)); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestCountMinConservativeUpdate(t *testing.T) {
	c, _ := NewCountMin(0.5, 0.5) // width 6, depth 1: forced collisions
	c.AddString("a", 10)
	if got := c.AddString("a", 5); got != 15 || c.EstimateString("a") != 15 {
		t.Fatalf("estimate %d, want 15", got)
	}
	c.AddString("b", 1)
	if c.EstimateString("b") < 1 {
		t.Fatal("undercount")
	}
	c.Reset()
	if c.EstimateString("a") != 0 || c.Total() != 0 {
		t.Fatal("Reset left counts")
	}
}

func TestCountMinRoundTrip(t *testing.T) {
	c := NewCountMinDefault()
	stream, _ := zipfStream(10_000, 3)
	var buf [4]byte
	for _, k := range stream {
		c.Add(keyBytes(&buf, k), 3)
	}
	b := mustMarshal(t, c)
	got := NewCountMinDefault()
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.counts, c.counts) || got.Total() != c.Total() || !bytes.Equal(mustMarshal(t, got), b) {
		t.Fatal("round trip changed the sketch")
	}
	t.Logf("count-min encoding after 10k adds: %d bytes", len(b))
}

func TestCountMinUnmarshalRejects(t *testing.T) {
	small, _ := NewCountMin(0.1, 0.1)
	small.AddString("x", 7)
	other, _ := NewCountMin(0.2, 0.1)
	recv, _ := NewCountMin(0.1, 0.1)
	checkRejects(t, mustMarshal(t, small), recv, mustMarshal(t, other))

	for name, data := range map[string][]byte{
		"huge width":     {formatVersion, kindCountMin, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 0},
		"zero depth":     {formatVersion, kindCountMin, 1, 0, 0},
		"counter>total":  {formatVersion, kindCountMin, 1, 1, 1, 2},
		"missing counts": {formatVersion, kindCountMin, 0x80, 0x80, 0x01, 2, 0},
	} {
		if err := new(CountMin).UnmarshalBinary(data); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestCountMinAddDoesNotAllocate(t *testing.T) {
	c := NewCountMinDefault()
	key := []byte("site-a/device-1")
	if n := testing.AllocsPerRun(1000, func() { c.Add(key, 1); c.AddString("site-b", 2); c.Estimate(key) }); n != 0 {
		t.Fatalf("Add allocates %v times", n)
	}
}

func FuzzUnmarshalCountMin(f *testing.F) {
	c, _ := NewCountMin(0.2, 0.1)
	c.AddString("a", 3)
	c.AddString("b", 1000)
	valid := mustMarshal(f, c)
	f.Add(valid)
	f.Add(valid[:5])
	f.Add([]byte{formatVersion, kindCountMin, 1, 1, 5, 5})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeInvariants(t, data, func() codec { return new(CountMin) })
	})
}

// TestCountMinFleetWidthColumns guards cols' constant-divisor path: the
// fleet parameters have that width, and it picks the columns the generic
// division does.
func TestCountMinFleetWidthColumns(t *testing.T) {
	c := NewCountMinDefault()
	if c.Width() != countMinFleetWidth {
		t.Fatalf("fleet width %d, cols' constant %d", c.Width(), countMinFleetWidth)
	}
	r := rand.New(rand.NewSource(3))
	for range 100_000 {
		h := r.Uint64()
		base, step := c.cols(h)
		wantBase, wantStep := uint64(uint32(h))%uint64(c.width), (h>>32)%uint64(c.width)
		if wantStep == 0 {
			wantStep = 1
		}
		if base != wantBase || step != wantStep {
			t.Fatalf("cols(%#x) = %d, %d; want %d, %d", h, base, step, wantBase, wantStep)
		}
	}
}
