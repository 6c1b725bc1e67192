package sketches

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// TopKCapacity is the fleet-wide number of heavy hitters a TopK tracks.
const TopKCapacity = 32

const (
	topKMaxK = 4096
	// topKKeyBytes is the key buffer preallocated per slot; a longer key
	// entering the top-k grows that slot's buffer once.
	topKKeyBytes = 64
)

// Item is one heavy hitter and its estimated count.
type Item struct {
	Key   string
	Count uint64
}

type hhEntry struct {
	hash  uint64
	count uint64 // estimate when the key was last updated
	key   []byte // owned slot buffer
}

// TopK tracks the k most frequent keys of a stream over a Count-Min sketch
// (the heavy hitters). A min-heap of k entries, keyed by each key's Count-Min
// estimate, holds candidates; a key whose new estimate exceeds the heap
// minimum replaces it. Keys are copied into per-slot buffers of 64 bytes
// preallocated by NewTopK, so Add allocates only when a key longer than its
// slot's buffer enters the top-k (once per slot, the buffer then stays grown).
// A candidate's count is its estimate at its last update; Top reports those.
//
// A TopK is not safe for concurrent use.
type TopK struct {
	cms  CountMin
	k    int
	heap []hhEntry // min-heap by (count, key descending)
}

// NewTopK returns a tracker of k keys over a Count-Min sketch with the given
// ε and δ (see NewCountMin). k must be in [1, 4096].
func NewTopK(k int, eps, delta float64) (*TopK, error) {
	if k < 1 || k > topKMaxK {
		return nil, fmt.Errorf("top-k capacity %d, want 1..%d: %w", k, topKMaxK, ErrInvalidParam)
	}
	w, d, err := countMinDims(eps, delta)
	if err != nil {
		return nil, err
	}
	t := &TopK{cms: *newCountMinDims(w, d), k: k}
	t.heap = make([]hhEntry, k)
	arena := make([]byte, k*topKKeyBytes)
	for i := range t.heap {
		t.heap[i].key = arena[i*topKKeyBytes : i*topKKeyBytes : (i+1)*topKKeyBytes]
	}
	t.heap = t.heap[:0]
	return t, nil
}

// NewTopKDefault returns a tracker with the fleet parameters.
func NewTopKDefault() *TopK {
	t, err := NewTopK(TopKCapacity, CountMinEpsilon, CountMinDelta)
	if err != nil {
		panic("BUG: fleet top-k parameters rejected: " + err.Error())
	}
	return t
}

// K reports the capacity.
func (t *TopK) K() int { return t.k }

// Total reports the sum of all counts added.
func (t *TopK) Total() uint64 { return t.cms.total }

// Add adds n occurrences of key. key is not retained.
func (t *TopK) Add(key []byte, n uint64) {
	h := xxhash.Sum64(key)
	t.offer(h, key, t.cms.addHash(h, n))
}

// AddString is Add for a string key, without copying it unless it enters
// the top-k.
func (t *TopK) AddString(key string, n uint64) {
	t.Add(unsafe.Slice(unsafe.StringData(key), len(key)), n)
}

// TopKHash is the hash TopK keys its counters by (xxhash64 of the key), for
// a caller that adds the same key often: AddStringHashed and PeekHash take
// it instead of hashing the key on each call.
func TopKHash(key string) uint64 { return xxhash.Sum64String(key) }

// AddStringHashed is AddString for a key whose hash the caller kept: h must
// be TopKHash(key).
func (t *TopK) AddStringHashed(key string, h uint64, n uint64) {
	t.offer(h, unsafe.Slice(unsafe.StringData(key), len(key)), t.cms.addHash(h, n))
}

// PeekHash returns the Count-Min estimate of the key of hash h (as
// TopKHash gives it), changing nothing. It reads the counters an add of
// that key writes, so a caller updating many sketches can load them ahead.
func (t *TopK) PeekHash(h uint64) uint64 { return t.cms.estimateHash(h) }

// Estimate returns key's Count-Min estimate.
func (t *TopK) Estimate(key []byte) uint64 { return t.cms.Estimate(key) }

// EstimateString is Estimate for a string key.
func (t *TopK) EstimateString(key string) uint64 { return t.cms.EstimateString(key) }

func (t *TopK) offer(h uint64, key []byte, est uint64) {
	full := len(t.heap) == t.k
	// A key already in the heap has count ≥ min and est ≥ count, so est ≤ min
	// means it is either absent and too small, or present and unchanged.
	if full && est <= t.heap[0].count {
		return
	}
	for i := range t.heap {
		e := &t.heap[i]
		if e.hash == h && bytes.Equal(e.key, key) {
			e.count = est
			t.down(i)
			return
		}
	}
	i := 0
	if !full {
		i = len(t.heap)
		if i == cap(t.heap) { // only after UnmarshalBinary: grow once to k
			t.heap = slices.Grow(t.heap, t.k-i)
		}
		t.heap = t.heap[:i+1]
	}
	e := &t.heap[i]
	if cap(e.key) < len(key) {
		e.key = make([]byte, 0, max(len(key), topKKeyBytes))
	}
	e.key = append(e.key[:0], key...)
	e.hash, e.count = h, est
	if full {
		t.down(0)
	} else {
		t.up(i)
	}
}

func (t *TopK) less(i, j int) bool {
	a, b := &t.heap[i], &t.heap[j]
	if a.count != b.count {
		return a.count < b.count
	}
	return bytes.Compare(a.key, b.key) > 0
}

func (t *TopK) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.heap[i], t.heap[p] = t.heap[p], t.heap[i]
		i = p
	}
}

func (t *TopK) down(i int) {
	n := len(t.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && t.less(r, l) {
			m = r
		}
		if !t.less(m, i) {
			return
		}
		t.heap[i], t.heap[m] = t.heap[m], t.heap[i]
		i = m
	}
}

// Top returns the tracked keys, highest count first, ties by key. The slice
// and strings are newly allocated and owned by the caller.
func (t *TopK) Top() []Item {
	out := make([]Item, len(t.heap))
	for i, e := range t.heap {
		out[i] = Item{Key: string(e.key), Count: e.count}
	}
	slices.SortFunc(out, func(a, b Item) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	return out
}

// Merge adds o into t: the Count-Min sketches are summed, then every
// candidate of either side is re-estimated against the merged sketch and the
// k highest are kept. k and the Count-Min dimensions must match, else
// ErrParamMismatch and t is unchanged. Merge allocates O(k) scratch space.
func (t *TopK) Merge(o *TopK) error {
	if t.k != o.k {
		return fmt.Errorf("merge top-k: capacity %d with %d: %w", t.k, o.k, ErrParamMismatch)
	}
	if err := t.cms.Merge(&o.cms); err != nil {
		return fmt.Errorf("merge top-k: %w", err)
	}
	type cand struct {
		hash, est uint64
		key       string
	}
	cands := make([]cand, 0, len(t.heap)+len(o.heap))
	for _, e := range t.heap {
		cands = append(cands, cand{e.hash, t.cms.estimateHash(e.hash), string(e.key)})
	}
	for _, e := range o.heap {
		if slices.ContainsFunc(cands, func(c cand) bool { return c.hash == e.hash && c.key == string(e.key) }) {
			continue
		}
		cands = append(cands, cand{e.hash, t.cms.estimateHash(e.hash), string(e.key)})
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if c := cmp.Compare(b.est, a.est); c != 0 {
			return c
		}
		return cmp.Compare(a.key, b.key)
	})
	cands = cands[:min(len(cands), t.k)]
	t.heap = t.heap[:0]
	for _, c := range cands {
		t.offer(c.hash, unsafe.Slice(unsafe.StringData(c.key), len(c.key)), c.est)
	}
	return nil
}

// Reset empties the tracker, keeping its buffers.
func (t *TopK) Reset() {
	t.cms.Reset()
	t.heap = t.heap[:0]
}

// SizeBytes reports the in-memory footprint: the Count-Min table, the k heap
// entries and their key buffers' capacity.
func (t *TopK) SizeBytes() int {
	n := int(unsafe.Sizeof(*t)) + 8*len(t.cms.counts)
	full := t.heap[:cap(t.heap)]
	n += len(full) * int(unsafe.Sizeof(hhEntry{}))
	for _, e := range full {
		n += cap(e.key)
	}
	return n
}

// MarshalBinary encodes the tracker: version byte, kind 'T', uvarint k,
// uvarint entry count, per entry uvarint count, uvarint key length and the
// key, then the Count-Min encoding (see CountMin.MarshalBinary) to the end.
func (t *TopK) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 64+len(t.heap)*(16+topKKeyBytes)+2*len(t.cms.counts))
	b = append(b, formatVersion, kindTopK)
	b = binary.AppendUvarint(b, uint64(t.k))
	b = binary.AppendUvarint(b, uint64(len(t.heap)))
	for _, e := range t.heap {
		b = binary.AppendUvarint(b, e.count)
		b = binary.AppendUvarint(b, uint64(len(e.key)))
		b = append(b, e.key...)
	}
	return t.cms.appendBinary(b), nil
}

// UnmarshalBinary decodes an encoding from MarshalBinary. Into a tracker from
// NewTopK, k and the Count-Min dimensions must match (ErrParamMismatch); the
// zero value adopts them. It rejects duplicate keys and counts above the
// key's Count-Min estimate. Allocation is bounded by the input size: keys
// share one buffer, and the heap is sized to the entries present (slots up to
// k are allocated by a later Add, once). On error t is unchanged.
func (t *TopK) UnmarshalBinary(data []byte) error {
	d, err := newDecoder(data, kindTopK, "top-k")
	if err != nil {
		return err
	}
	k := d.uvarint("k")
	n := d.uvarint("entry count")
	if d.err != nil {
		return d.err
	}
	if k < 1 || k > topKMaxK || n > k {
		return fmt.Errorf("unmarshal top-k: k=%d with %d entries, want 1 ≤ entries ≤ k ≤ %d: %w", k, n, topKMaxK, ErrCorrupt)
	}
	if t.k != 0 && int(k) != t.k {
		return fmt.Errorf("unmarshal top-k: k=%d, receiver has %d: %w", k, t.k, ErrParamMismatch)
	}
	if uint64(d.remaining()) < 2*n {
		return fmt.Errorf("unmarshal top-k: %d entries need at least %d bytes, have %d: %w", n, 2*n, d.remaining(), ErrCorrupt)
	}
	type raw struct {
		count uint64
		key   []byte
	}
	entries := make([]raw, n)
	keyBytes := 0
	for i := range entries {
		entries[i].count = d.uvarint("entry count")
		entries[i].key = d.bytes(d.uvarint("key length"), "key")
		keyBytes += len(entries[i].key)
	}
	if d.err != nil {
		return d.err
	}
	cd, err := newDecoder(data[d.off:], kindCountMin, "top-k count-min")
	if err != nil {
		return err
	}
	cms, err := decodeCountMin(cd, t.cms.width, t.cms.depth)
	if err != nil {
		return err
	}
	if err := cd.finish(); err != nil {
		return err
	}
	heap := make([]hhEntry, 0, n)
	arena := make([]byte, 0, keyBytes)
	tmp := TopK{cms: cms, k: int(k)}
	for _, r := range entries {
		h := xxhash.Sum64(r.key)
		if est := cms.estimateHash(h); r.count > est {
			return fmt.Errorf("unmarshal top-k: key %q count %d exceeds its estimate %d: %w", r.key, r.count, est, ErrCorrupt)
		}
		for _, e := range heap {
			if e.hash == h && bytes.Equal(e.key, r.key) {
				return fmt.Errorf("unmarshal top-k: duplicate key %q: %w", r.key, ErrCorrupt)
			}
		}
		start := len(arena)
		arena = append(arena, r.key...)
		heap = append(heap, hhEntry{hash: h, count: r.count, key: arena[start:len(arena):len(arena)]})
	}
	tmp.heap = heap
	for i := len(heap)/2 - 1; i >= 0; i-- {
		tmp.down(i)
	}
	*t = tmp
	return nil
}
