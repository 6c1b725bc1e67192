package windows

import (
	"hash/maphash"
	"iter"
)

// seriesIndex maps series keys to their state: open addressing with
// linear probing over (hash, series) slots, keyed by the series key's
// 64-bit hash, which each series keeps.
//
// It replaced a Go map keyed by string because Apply looks a series up
// per reading and, with thousands of series visited in turn, each lookup
// is a chain of cache misses: a map's group, its slot, the stored key's
// bytes, then the series. Here a lookup loads one slot (16 bytes) and the
// series, whose key it compares only when the hashes match. prefetch
// computes the hashes of a chunk of readings and loads their slots
// together.
//
// The hash is seeded per index (hash/maphash, as Go's maps are): series
// keys come from the network, and with a fixed hash a client could choose
// keys whose hashes share their low bits, turning each lookup into a walk
// along one long run. Hashes are never stored outside the index's process.
//
// Deletion shifts the following slots back (no tombstones), so probes stay
// short under eviction churn. The table doubles past 3/4 full and never
// shrinks, as a Go map. Iteration order is the table's, fixed for a given
// history of puts and deletes; callers that need an order sort.
type seriesIndex struct {
	seed  maphash.Seed
	slots []seriesSlot // len a power of two, or 0
	n     int
}

type seriesSlot struct {
	h uint64
	s *series // nil: empty
}

const seriesIndexMin = 16

// newSeriesIndex returns an empty index with a seed of its own.
func newSeriesIndex() seriesIndex { return seriesIndex{seed: maphash.MakeSeed()} }

// hash is the index's hash of key, which a series keeps as its hash.
func (x *seriesIndex) hash(key string) uint64 { return maphash.String(x.seed, key) }

func (x *seriesIndex) len() int { return x.n }

// get returns the series of key, nil when absent.
func (x *seriesIndex) get(key string) *series {
	if x.n == 0 {
		return nil
	}
	return x.getHash(key, x.hash(key))
}

// getHash is get for a key whose hash is h.
func (x *seriesIndex) getHash(key string, h uint64) *series {
	if x.n == 0 {
		return nil
	}
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &x.slots[i]
		if sl.s == nil {
			return nil
		}
		if sl.h == h && sl.s.key == key {
			return sl.s
		}
	}
}

// peek returns the series in the slot where a lookup of hash h starts if
// its hash is h (most likely the series of the key hashed, not certainly),
// else nil, for loading it ahead.
func (x *seriesIndex) peek(h uint64) *series {
	if len(x.slots) == 0 {
		return nil
	}
	if sl := &x.slots[h&uint64(len(x.slots)-1)]; sl.h == h {
		return sl.s
	}
	return nil
}

// touch loads the slot where a lookup of hash h starts, for prefetch.
func (x *seriesIndex) touch(h uint64) uint64 {
	if len(x.slots) == 0 {
		return 0
	}
	return x.slots[h&uint64(len(x.slots)-1)].h
}

// put adds s, whose key is absent and whose hash is set.
func (x *seriesIndex) put(s *series) {
	if (x.n+1)*4 > len(x.slots)*3 {
		x.grow()
	}
	x.insert(s)
	x.n++
}

func (x *seriesIndex) insert(s *series) {
	mask := uint64(len(x.slots) - 1)
	i := s.hash & mask
	for x.slots[i].s != nil {
		i = (i + 1) & mask
	}
	x.slots[i] = seriesSlot{h: s.hash, s: s}
}

func (x *seriesIndex) grow() {
	old := x.slots
	x.slots = make([]seriesSlot, max(seriesIndexMin, 2*len(old)))
	for _, sl := range old {
		if sl.s != nil {
			x.insert(sl.s)
		}
	}
}

// del removes s, which must be in the index.
func (x *seriesIndex) del(s *series) {
	mask := uint64(len(x.slots) - 1)
	i := s.hash & mask
	for x.slots[i].s != s {
		if x.slots[i].s == nil {
			panic("BUG: series " + s.key + " not in the index")
		}
		i = (i + 1) & mask
	}
	// Shift back every following slot of the run that may move into the
	// hole: one whose home slot is not between the hole and it.
	for j := (i + 1) & mask; x.slots[j].s != nil; j = (j + 1) & mask {
		home := x.slots[j].h & mask
		if (j-home)&mask >= (j-i)&mask {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = seriesSlot{}
	x.n--
}

// all yields every series, in table order.
func (x *seriesIndex) all() iter.Seq[*series] {
	return func(yield func(*series) bool) {
		for _, sl := range x.slots {
			if sl.s != nil && !yield(sl.s) {
				return
			}
		}
	}
}
