package sketches

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// trueTop returns the keys of exact ordered by count, highest first.
func trueTop(exact []uint64, n int) []uint32 {
	keys := make([]uint32, len(exact))
	for i := range keys {
		keys[i] = uint32(i)
	}
	slices.SortFunc(keys, func(a, b uint32) int {
		return cmp.Or(cmp.Compare(exact[b], exact[a]), cmp.Compare(a, b))
	})
	return keys[:n]
}

func reportedKeys(items []Item) []uint32 {
	out := make([]uint32, len(items))
	for i, it := range items {
		out[i] = uint32(it.Key[0]) | uint32(it.Key[1])<<8 | uint32(it.Key[2])<<16 | uint32(it.Key[3])<<24
	}
	return out
}

// checkHeavyHitters asserts the true top 10 are reported in order and
// reports the recall of the true top-k.
func checkHeavyHitters(t *testing.T, tk *TopK, exact []uint64) {
	t.Helper()
	top := tk.Top()
	if len(top) != TopKCapacity {
		t.Fatalf("Top has %d items, want %d", len(top), TopKCapacity)
	}
	for i := 1; i < len(top); i++ {
		if top[i].Count > top[i-1].Count {
			t.Fatalf("Top not sorted at %d", i)
		}
	}
	got := reportedKeys(top)
	want := trueTop(exact, TopKCapacity)
	if !slices.Equal(got[:10], want[:10]) {
		t.Fatalf("top 10 %v, want %v", got[:10], want[:10])
	}
	found := 0
	for _, k := range want {
		if slices.Contains(got, k) {
			found++
		}
	}
	t.Logf("true top-%d recall %d/%d; #1 true %d reported %d; #%d true %d",
		TopKCapacity, found, TopKCapacity, exact[want[0]], top[0].Count, TopKCapacity, exact[want[TopKCapacity-1]])
	if found < TopKCapacity*9/10 {
		t.Fatalf("recall %d/%d below 90%%", found, TopKCapacity)
	}
}

func TestTopKZipf(t *testing.T) {
	stream, exact := zipf1M()
	tk := NewTopKDefault()
	var buf [4]byte
	for _, k := range stream {
		tk.Add(keyBytes(&buf, k), 1)
	}
	checkHeavyHitters(t, tk, exact)
	checkCountMinBounds(t, tk.Estimate, exact, tk.Total())
}

func TestTopKMerge(t *testing.T) {
	stream, exact := zipf1M()
	a, b := NewTopKDefault(), NewTopKDefault()
	var buf [4]byte
	for i, k := range stream {
		if i < len(stream)/2 {
			a.Add(keyBytes(&buf, k), 1)
		} else {
			b.Add(keyBytes(&buf, k), 1)
		}
	}
	ba, aa := cloneTopK(t, b), cloneTopK(t, a)
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	checkHeavyHitters(t, a, exact)
	checkCountMinBounds(t, a.Estimate, exact, a.Total())
	for _, it := range a.Top() {
		if est := a.EstimateString(it.Key); it.Count != est {
			t.Fatalf("merged count %d for %q, want re-estimate %d", it.Count, it.Key, est)
		}
	}
	// Commutative: candidates are re-estimated against the same merged table.
	if err := ba.Merge(aa); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ba.Top(), a.Top()) {
		t.Fatal("merge is not commutative")
	}
	small, _ := NewTopK(5, CountMinEpsilon, CountMinDelta)
	if err := a.Merge(small); err == nil {
		t.Fatal("merge of different k accepted")
	}
}

func cloneTopKFrom(t *testing.T, stream []uint32) *TopK {
	tk := NewTopKDefault()
	var buf [4]byte
	for _, k := range stream {
		tk.Add(keyBytes(&buf, k), 1)
	}
	return tk
}

func cloneTopK(t *testing.T, tk *TopK) *TopK {
	var out TopK
	if err := out.UnmarshalBinary(mustMarshal(t, tk)); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestTopKSmall(t *testing.T) {
	tk, _ := NewTopK(3, 0.01, 0.01)
	for i, n := range []uint64{5, 50, 1, 20, 9, 30} {
		tk.AddString(fmt.Sprintf("k%d", i), n)
	}
	want := []Item{{"k1", 50}, {"k5", 30}, {"k3", 20}}
	if got := tk.Top(); !slices.Equal(got, want) {
		t.Fatalf("Top %v, want %v", got, want)
	}
	long := strings.Repeat("x", 200)
	tk.AddString(long, 100)
	if got := tk.Top(); got[0] != (Item{long, 100}) || len(got) != 3 {
		t.Fatalf("long key: Top %v", got)
	}
	tk.Reset()
	if len(tk.Top()) != 0 || tk.Total() != 0 {
		t.Fatal("Reset left entries")
	}
}

func TestTopKRoundTrip(t *testing.T) {
	stream, _ := zipfStream(20_000, 5)
	tk := cloneTopKFrom(t, stream)
	b := mustMarshal(t, tk)
	got := NewTopKDefault()
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Top(), tk.Top()) || !bytes.Equal(mustMarshal(t, got), b) {
		t.Fatal("round trip changed the tracker")
	}
	// A decoded tracker keeps working (its buffers grow once).
	var buf [4]byte
	for _, k := range stream {
		got.Add(keyBytes(&buf, k), 1)
		tk.Add(keyBytes(&buf, k), 1)
	}
	if !slices.Equal(got.Top(), tk.Top()) {
		t.Fatal("decoded tracker diverged")
	}
}

func TestTopKUnmarshalRejects(t *testing.T) {
	tk, _ := NewTopK(4, 0.1, 0.1)
	tk.AddString("alpha", 5)
	tk.AddString("beta", 2)
	other, _ := NewTopK(5, 0.1, 0.1)
	recv, _ := NewTopK(4, 0.1, 0.1)
	checkRejects(t, mustMarshal(t, tk), recv, mustMarshal(t, other))

	valid := mustMarshal(t, tk)
	// Entry layout: version, kind, k, n, then count,len,key per entry.
	inflated := append([]byte(nil), valid...)
	inflated[4] = 100 // first entry's count above its estimate
	if err := new(TopK).UnmarshalBinary(inflated); err == nil {
		t.Error("count above estimate accepted")
	}
	dup, _ := NewTopK(4, 0.1, 0.1)
	dup.AddString("alpha", 5)
	dup.AddString("alphb", 5)
	dupBytes := mustMarshal(t, dup)
	dupBytes = bytes.Replace(dupBytes, []byte("alphb"), []byte("alpha"), 1)
	if err := new(TopK).UnmarshalBinary(dupBytes); err == nil {
		t.Error("duplicate key accepted")
	}
}

func TestTopKAddDoesNotAllocate(t *testing.T) {
	stream, _ := zipfStream(20_000, 6)
	tk := cloneTopKFrom(t, stream) // full heap, churn in steady state
	keys := make([][]byte, 4096)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("device-%06d", i))
	}
	i := 0
	if n := testing.AllocsPerRun(10000, func() { tk.Add(keys[i%len(keys)], uint64(i%7)); i++ }); n != 0 {
		t.Fatalf("Add allocates %v times", n)
	}
}

func FuzzUnmarshalTopK(f *testing.F) {
	tk, _ := NewTopK(3, 0.3, 0.2)
	tk.AddString("a", 3)
	tk.AddString("bb", 10)
	valid := mustMarshal(f, tk)
	f.Add(valid)
	f.Add(valid[:9])
	f.Add([]byte{formatVersion, kindTopK, 1, 0, formatVersion, kindCountMin, 1, 1, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeInvariants(t, data, func() codec { return new(TopK) })
	})
}

// AddStringHashed with TopKHash must leave exactly what AddString leaves,
// and PeekHash report the estimate without changing anything.
func TestTopKAddStringHashed(t *testing.T) {
	a, b := NewTopKDefault(), NewTopKDefault()
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 20_000 {
		key := fmt.Sprintf("dev-%d", int(r.ExpFloat64()*50))
		a.AddString(key, 1)
		h := TopKHash(key)
		before, _ := b.MarshalBinary()
		if got, want := b.PeekHash(h), b.EstimateString(key); got != want {
			t.Fatalf("PeekHash %d, estimate %d", got, want)
		}
		if after, _ := b.MarshalBinary(); !bytes.Equal(before, after) {
			t.Fatalf("PeekHash changed the sketch")
		}
		b.AddStringHashed(key, h, 1)
		if i%1000 == 0 || i == 19_999 {
			ab, _ := a.MarshalBinary()
			bb, _ := b.MarshalBinary()
			if !bytes.Equal(ab, bb) {
				t.Fatalf("after %d adds: AddStringHashed differs from AddString", i+1)
			}
		}
	}
}
