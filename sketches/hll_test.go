package sketches

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"testing"
)

func addKeys(h *HLL, from, to uint64) {
	var buf [8]byte
	for i := from; i < to; i++ {
		binary.LittleEndian.PutUint64(buf[:], i)
		h.Add(buf[:])
	}
}

func TestHLLAccuracy(t *testing.T) {
	stdErr := 1.04 / math.Sqrt(hllRegisters)
	for _, tc := range []struct {
		name  string
		n     uint64
		seed  uint64 // key offset, so each case sees different items
		dupes int
	}{
		{"1k", 1_000, 1 << 40, 3},
		{"100k", 100_000, 2 << 40, 1},
		{"1M", 1_000_000, 3 << 40, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHLL()
			for range tc.dupes {
				addKeys(h, tc.seed, tc.seed+tc.n)
			}
			got := h.Estimate()
			rel := math.Abs(float64(got)-float64(tc.n)) / float64(tc.n)
			t.Logf("n=%d estimate=%d relative error %.4f%% (3σ = %.4f%%)", tc.n, got, 100*rel, 300*stdErr)
			if rel > 3*stdErr {
				t.Fatalf("relative error %.4f exceeds 3 standard errors %.4f", rel, 3*stdErr)
			}
		})
	}
}

func TestHLLMergeHalvesEqualsWhole(t *testing.T) {
	whole, a, b := NewHLL(), NewHLL(), NewHLL()
	addKeys(whole, 0, 200_000)
	addKeys(a, 0, 120_000)
	addKeys(b, 80_000, 200_000) // overlapping halves
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	// Register-wise max is exact: the merged registers equal the whole's.
	if !bytes.Equal(mustMarshal(t, a), mustMarshal(t, whole)) {
		t.Fatalf("merged registers differ from whole; estimates %d vs %d", a.Estimate(), whole.Estimate())
	}
	var zero HLL
	if err := zero.Merge(a); err != nil || zero.Estimate() != whole.Estimate() {
		t.Fatalf("merge into zero value: %v, estimate %d want %d", err, zero.Estimate(), whole.Estimate())
	}
}

func TestHLLStringAndHashAdds(t *testing.T) {
	a, b := NewHLL(), NewHLL()
	a.AddString("device-17")
	b.Add([]byte("device-17"))
	if !bytes.Equal(mustMarshal(t, a), mustMarshal(t, b)) {
		t.Fatal("AddString and Add disagree")
	}
	c := NewHLL()
	for i := range uint64(1000) {
		c.AddHash(i * 0x9e3779b97f4a7c15)
	}
	if e := c.Estimate(); e < 950 || e > 1050 {
		t.Fatalf("AddHash estimate %d for 1000 items", e)
	}
	c.Reset()
	if e := c.Estimate(); e != 0 {
		t.Fatalf("estimate %d after Reset", e)
	}
}

func TestHLLRoundTrip(t *testing.T) {
	for _, n := range []uint64{0, 10, 50_000} {
		h := NewHLL()
		addKeys(h, 0, n)
		b := mustMarshal(t, h)
		if len(b) != hllEncodedLen {
			t.Fatalf("encoding length %d, want %d", len(b), hllEncodedLen)
		}
		var got HLL
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if got.Estimate() != h.Estimate() || !bytes.Equal(mustMarshal(t, &got), b) {
			t.Fatalf("n=%d: round trip changed the sketch", n)
		}
	}
	var zero HLL
	var back HLL
	if err := back.UnmarshalBinary(mustMarshal(t, &zero)); err != nil || back.Estimate() != 0 {
		t.Fatalf("zero value round trip: %v, %d", err, back.Estimate())
	}
}

func TestHLLUnmarshalRejects(t *testing.T) {
	h := NewHLL()
	addKeys(h, 0, 1000)
	valid := mustMarshal(t, h)
	mismatch := append([]byte(nil), valid...)
	mismatch[2] = 16
	checkRejects(t, valid, NewHLL(), mismatch)

	sparse := append([]byte(nil), valid...)
	sparse[3+3] = 1
	if err := NewHLL().UnmarshalBinary(sparse); err == nil {
		t.Error("sparse payload accepted")
	}
	badReg := append([]byte(nil), valid...)
	badReg[len(badReg)-1] = 64 - HLLPrecision + 2
	if err := NewHLL().UnmarshalBinary(badReg); err == nil {
		t.Error("register above 64-p+1 accepted")
	}
}

// AddHash(HLLHash(k)) must leave the registers AddString(k) leaves, or a
// caller caching the hash would count differently from every other gateway.
func TestHLLHashMatchesAdd(t *testing.T) {
	a, b := NewHLL(), NewHLL()
	for i := range 5000 {
		k := fmt.Sprintf("d%05d", i)
		a.AddString(k)
		b.AddHash(HLLHash(k))
	}
	a.AddString("")
	b.AddHash(HLLHash(""))
	if !bytes.Equal(mustMarshal(t, a), mustMarshal(t, b)) {
		t.Fatal("AddHash(HLLHash(k)) and AddString(k) leave different registers")
	}
}

func TestHLLAddDoesNotAllocate(t *testing.T) {
	h := NewHLL()
	key := []byte("sensor-0042")
	if n := testing.AllocsPerRun(1000, func() { h.Add(key); h.AddString("sensor-0043"); h.AddHash(42) }); n != 0 {
		t.Fatalf("Add allocates %v times", n)
	}
	if n := testing.AllocsPerRun(10, func() { h.Estimate() }); n != 0 {
		t.Fatalf("Estimate allocates %v times", n)
	}
}

func FuzzUnmarshalHLL(f *testing.F) {
	h := NewHLL()
	addKeys(h, 0, 500)
	valid := mustMarshal(f, h)
	f.Add(valid)
	f.Add(valid[:100])
	f.Add([]byte{formatVersion, kindHLL, HLLPrecision})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeInvariants(t, data, func() codec { return new(HLL) })
	})
}
