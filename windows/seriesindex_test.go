package windows

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// TestSeriesIndex drives the index and a map side by side through random
// puts and deletes with hashes drawn from a few values (long collision
// runs, wrapping round the table's end) and with real hashes, and checks
// every lookup, the count and the iteration after each step.
func TestSeriesIndex(t *testing.T) {
	for _, tc := range []struct {
		name string
		hash func(key string, r *rand.Rand) uint64
	}{
		{"collisions", func(_ string, r *rand.Rand) uint64 { return []uint64{0, 1, 15, 31, 1 << 40, ^uint64(0)}[r.IntN(6)] }},
		{"seeded", func(key string, _ *rand.Rand) uint64 { return seededTestIndex.hash(key) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(9, 10))
			x := newSeriesIndex()
			model := map[string]*series{}
			for step := range 5000 {
				key := fmt.Sprintf("m,device=d%d", r.IntN(200))
				if s := model[key]; s != nil && r.IntN(2) == 0 {
					x.del(s)
					delete(model, key)
				} else if s == nil {
					s := &series{key: key, hash: tc.hash(key, r)}
					x.put(s)
					model[key] = s
				}
				if x.len() != len(model) {
					t.Fatalf("step %d: len %d, want %d", step, x.len(), len(model))
				}
				if step%50 != 0 {
					continue
				}
				for k := range 200 {
					key := fmt.Sprintf("m,device=d%d", k)
					want := model[key]
					var got *series
					if want != nil {
						got = x.getHash(key, want.hash)
					} else {
						got = x.get(key)
						for _, h := range []uint64{0, 15, ^uint64(0)} {
							if s := x.getHash(key, h); s != nil {
								t.Fatalf("step %d: absent %s found as %s under hash %d", step, key, s.key, h)
							}
						}
					}
					if got != want {
						t.Fatalf("step %d: %s is %p, want %p", step, key, got, want)
					}
				}
				seen := 0
				for s := range x.all() {
					if model[s.key] != s {
						t.Fatalf("step %d: iteration yields %s, not in the model", step, s.key)
					}
					seen++
				}
				if seen != len(model) {
					t.Fatalf("step %d: iteration yields %d, want %d", step, seen, len(model))
				}
			}
		})
	}
}

// TestSeriesIndexResistsChosenKeys: series keys come from the network, so
// a client can choose keys whose hashes share their low bits if it knows
// the hash function. With linear probing every lookup would then walk one
// long run (each reading a scan of thousands of slots). The index's hash
// is seeded per index, so keys chosen against an unseeded xxhash spread
// like any others.
func TestSeriesIndexResistsChosenKeys(t *testing.T) {
	const n, bits = 1000, 11 // a table of 2,048 slots for 1,000 series
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := fmt.Sprintf("m,device=d%d", i)
		if xxhash.Sum64String(k)&(1<<bits-1) == 0 {
			keys = append(keys, k)
		}
	}
	x := newSeriesIndex()
	for _, k := range keys {
		x.put(&series{key: k, hash: x.hash(k)})
	}
	if len(x.slots) != 1<<bits {
		t.Fatalf("table of %d slots, want %d", len(x.slots), 1<<bits)
	}
	mask := uint64(len(x.slots) - 1)
	longest := uint64(0)
	for j, sl := range x.slots {
		if sl.s != nil {
			longest = max(longest, (uint64(j)-sl.h&mask)&mask)
		}
	}
	if longest > 64 {
		t.Fatalf("a series sits %d slots past its home: chosen keys cluster", longest)
	}
	for _, k := range keys {
		if x.get(k) == nil {
			t.Fatalf("%s not found", k)
		}
	}
}

var seededTestIndex = newSeriesIndex()
