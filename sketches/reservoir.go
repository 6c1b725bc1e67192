package sketches

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"unsafe"
)

// ReservoirCapacity is the fleet-wide number of raw readings kept per series.
const ReservoirCapacity = 32

const (
	reservoirMaxCapacity = 1 << 16
	pcgStateLen          = 20 // "pcg:" + 16 state bytes, math/rand/v2 PCG.MarshalBinary
	// pcgStream is the fixed second PCG seed word; the caller's seed picks the
	// sequence.
	pcgStream = 0x9e3779b97f4a7c15
)

// Sample is one raw reading of a series: its value and event time.
type Sample struct {
	Value  float64
	TimeNs int64
}

// Reservoir keeps a uniform random sample of up to k readings of a stream
// using Algorithm L (Li 1994, "Reservoir-sampling algorithms of time
// complexity O(n(1+log(N/n)))"): after the reservoir fills it draws how many
// items to skip, so Add is O(1) and draws random numbers only for the
// O(k·log(N/k)) items it keeps. The sample buffer grows by doubling up to k
// as the first k items arrive (log2 k allocations at most, none once full):
// a series that sees a handful of readings holds a handful of samples, not
// k.
//
// The PRNG (math/rand/v2 PCG) is seeded by the caller and is part of the
// encoding, so a reservoir restored from MarshalBinary and fed the same
// readings makes the same choices as the original.
//
// A Reservoir is not safe for concurrent use.
type Reservoir struct {
	k       int
	n       uint64   // items seen
	samples []Sample // len min(n, k), cap at most k
	w       float64  // Algorithm L's W, valid once full
	next    uint64   // 1-based index of the next item to keep, valid once full
	src     rand.PCG
}

// NewReservoir returns an empty reservoir of capacity k (1..65536) whose
// choices are determined by seed.
func NewReservoir(k int, seed uint64) (*Reservoir, error) {
	if k < 1 || k > reservoirMaxCapacity {
		return nil, fmt.Errorf("reservoir capacity %d, want 1..%d: %w", k, reservoirMaxCapacity, ErrInvalidParam)
	}
	r := &Reservoir{k: k}
	r.src.Seed(seed, pcgStream)
	return r, nil
}

// NewReservoirDefault returns a reservoir with the fleet capacity.
func NewReservoirDefault(seed uint64) *Reservoir {
	r, err := NewReservoir(ReservoirCapacity, seed)
	if err != nil {
		panic("BUG: fleet reservoir capacity rejected: " + err.Error())
	}
	return r
}

// Cap reports the capacity k.
func (r *Reservoir) Cap() int { return r.k }

// Seen reports how many samples have been offered.
func (r *Reservoir) Seen() uint64 { return r.n }

// Samples returns the kept samples in no particular order. The slice aliases
// the reservoir and is valid until the next Add, Merge, Reset or
// UnmarshalBinary.
func (r *Reservoir) Samples() []Sample { return r.samples }

// minGrow is the least capacity the sample buffer grows to: 4 samples are
// 64 bytes, one small allocation.
const minGrow = 4

// ensureCap gives the sample buffer room for n more samples (len + n ≤ k),
// doubling it, at most up to k: a reservoir fills from empty in at most
// log2(k/minGrow)+1 allocations, and one that sees few items stays small.
// The samples and their order are what they would be at full capacity, so
// the encoding and every later choice are too.
func (r *Reservoir) ensureCap(n int) {
	need := len(r.samples) + n
	if need <= cap(r.samples) {
		return
	}
	c := min(r.k, max(need, 2*cap(r.samples), minGrow))
	r.samples = append(make([]Sample, 0, c), r.samples...)
}

// uniform returns a float64 in the open interval (0, 1).
func (r *Reservoir) uniform() float64 {
	return (float64(r.src.Uint64()>>11) + 0.5) / (1 << 53)
}

// below returns a uniform integer in [0, n), n > 0 (Lemire's method).
func (r *Reservoir) below(n uint64) uint64 {
	hi, lo := bits.Mul64(r.src.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(r.src.Uint64(), n)
		}
	}
	return hi
}

// schedule draws the index of the next item to keep given W.
func (r *Reservoir) schedule() {
	skip := math.Floor(math.Log(r.uniform()) / math.Log1p(-r.w))
	if !(skip < float64(math.MaxUint64-r.n-1)) { // huge or NaN: never again
		r.next = math.MaxUint64
		return
	}
	r.next = r.n + uint64(skip) + 1
}

// Add offers one sample. It is O(1), and allocates only while the
// reservoir fills (ensureCap).
func (r *Reservoir) Add(s Sample) {
	if r.k == 0 {
		panic("BUG: Reservoir used without NewReservoir")
	}
	r.n++
	if len(r.samples) < r.k {
		r.ensureCap(1)
		r.samples = append(r.samples, s)
		if len(r.samples) == r.k {
			r.w = math.Exp(math.Log(r.uniform()) / float64(r.k))
			r.schedule()
		}
		return
	}
	if r.n != r.next {
		return
	}
	r.samples[r.below(uint64(r.k))] = s
	r.w *= math.Exp(math.Log(r.uniform()) / float64(r.k))
	r.schedule()
}

// Merge combines o into r so that r holds a uniform sample of both streams
// together, as if it had seen all r.Seen()+o.Seen() items: the number taken
// from r is drawn from the hypergeometric distribution of a k-draw from the
// concatenated streams (weights are the seen counts, not the sample sizes),
// then that many of r's samples and the rest of o's are chosen uniformly.
// Algorithm L's W is then redrawn from its distribution after N items,
// Beta(k, N−k+1), so later Adds stay uniform. Randomness comes from r's PRNG;
// o is not modified. Capacities must match, else ErrParamMismatch. Merge
// allocates only to grow r's buffer while r is not full (ensureCap).
func (r *Reservoir) Merge(o *Reservoir) error {
	if r.k != o.k {
		return fmt.Errorf("merge reservoir: capacity %d with %d: %w", r.k, o.k, ErrParamMismatch)
	}
	total := r.n + o.n
	if total < r.n {
		return fmt.Errorf("merge reservoir: seen counts %d + %d: %w", r.n, o.n, ErrOverflow)
	}
	if o.n == 0 {
		return nil
	}
	if o == r {
		c := *o
		c.samples = slices.Clone(o.samples)
		o = &c
	}
	if total <= uint64(r.k) { // nothing dropped yet: keep everything
		r.n = total
		r.ensureCap(len(o.samples))
		r.samples = append(r.samples, o.samples...)
		if len(r.samples) == r.k {
			r.w = math.Exp(math.Log(r.uniform()) / float64(r.k))
			r.schedule()
		}
		return nil
	}
	// How many of the k come from r: sequential hypergeometric draws.
	remA, remB, fromA := r.n, o.n, 0
	for range r.k {
		if r.below(remA+remB) < remA {
			remA--
			fromA++
		} else {
			remB--
		}
	}
	// Keep a uniform fromA-subset of r's samples (partial Fisher–Yates).
	for i := range fromA {
		j := i + int(r.below(uint64(len(r.samples)-i)))
		r.samples[i], r.samples[j] = r.samples[j], r.samples[i]
	}
	r.samples = r.samples[:fromA]
	r.ensureCap(r.k - fromA)
	// Add a uniform (k−fromA)-subset of o's samples (selection sampling,
	// Knuth's Algorithm S) without touching o.
	need := r.k - fromA
	for i, s := range o.samples {
		if need == 0 {
			break
		}
		if r.below(uint64(len(o.samples)-i)) < uint64(need) {
			r.samples = append(r.samples, s)
			need--
		}
	}
	r.n = total
	r.w = r.betaW()
	r.schedule()
	return nil
}

// betaW draws W ~ Beta(k, n−k+1), the k-th smallest of n uniforms, as
// X/(X+Y) with X ~ Gamma(k), Y ~ Gamma(n−k+1).
func (r *Reservoir) betaW() float64 {
	x := r.gamma(float64(r.k))
	y := r.gamma(float64(r.n - uint64(r.k) + 1))
	w := x / (x + y)
	if !(w > 0 && w < 1) {
		w = math.Nextafter(0, 1)
	}
	return w
}

// gamma draws Gamma(a, 1) for a ≥ 1 (Marsaglia and Tsang 2000), using
// Box–Muller normals.
func (r *Reservoir) gamma(a float64) float64 {
	d := a - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		z := math.Sqrt(-2*math.Log(r.uniform())) * math.Cos(2*math.Pi*r.uniform())
		v := 1 + c*z
		if v <= 0 {
			continue
		}
		v = v * v * v
		if math.Log(r.uniform()) < 0.5*z*z+d-d*v+d*math.Log(v) {
			return d * v
		}
	}
}

// Reset empties the reservoir, keeping its buffer and PRNG state.
func (r *Reservoir) Reset() {
	r.n, r.w, r.next = 0, 0, 0
	r.samples = r.samples[:0]
}

// SizeBytes reports the in-memory footprint once full (the bound a memory
// budget needs): the struct plus k samples of 16 bytes.
func (r *Reservoir) SizeBytes() int {
	return int(unsafe.Sizeof(*r)) + r.k*int(unsafe.Sizeof(Sample{}))
}

// MarshalBinary encodes the reservoir: version byte, kind 'R', uvarints k,
// seen and sample count, then per sample 8-byte little-endian value bits and
// time; once full, W as 8 float64 bits and uvarint next index; last the 20
// bytes of PCG state.
func (r *Reservoir) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, 32+16*len(r.samples)+pcgStateLen))
}

// AppendBinary appends the MarshalBinary encoding to b
// (encoding.BinaryAppender), without allocating when b has room.
func (r *Reservoir) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, formatVersion, kindReservoir)
	b = binary.AppendUvarint(b, uint64(r.k))
	b = binary.AppendUvarint(b, r.n)
	b = binary.AppendUvarint(b, uint64(len(r.samples)))
	for _, s := range r.samples {
		b = appendF64(b, s.Value)
		b = appendU64(b, uint64(s.TimeNs))
	}
	if len(r.samples) == r.k && r.k > 0 {
		b = appendF64(b, r.w)
		b = binary.AppendUvarint(b, r.next)
	}
	b, err := r.src.AppendBinary(b)
	if err != nil {
		return nil, fmt.Errorf("marshal reservoir: %w", err)
	}
	return b, nil
}

// UnmarshalBinary decodes an encoding from MarshalBinary. Into a reservoir
// from NewReservoir the capacity must match (ErrParamMismatch); the zero value
// adopts it. The sample count must equal min(seen, k), W must lie in (0, 1)
// and the next index must follow seen. Allocation is bounded by the input:
// the sample buffer is sized to the samples present and grows, up to k, on
// later Adds. On error r is unchanged.
func (r *Reservoir) UnmarshalBinary(data []byte) error {
	d, err := newDecoder(data, kindReservoir, "reservoir")
	if err != nil {
		return err
	}
	k := d.uvarint("capacity")
	n := d.uvarint("seen")
	m := d.uvarint("sample count")
	if d.err != nil {
		return d.err
	}
	if k < 1 || k > reservoirMaxCapacity {
		return fmt.Errorf("unmarshal reservoir: capacity %d, want 1..%d: %w", k, reservoirMaxCapacity, ErrCorrupt)
	}
	if r.k != 0 && int(k) != r.k {
		return fmt.Errorf("unmarshal reservoir: capacity %d, receiver has %d: %w", k, r.k, ErrParamMismatch)
	}
	if m != min(n, k) {
		return fmt.Errorf("unmarshal reservoir: %d samples for %d seen and capacity %d: %w", m, n, k, ErrCorrupt)
	}
	if uint64(d.remaining()) < 16*m {
		return fmt.Errorf("unmarshal reservoir: %d samples need %d bytes, have %d: %w", m, 16*m, d.remaining(), ErrCorrupt)
	}
	tmp := Reservoir{k: int(k), n: n, samples: make([]Sample, m)}
	for i := range tmp.samples {
		tmp.samples[i].Value = d.f64("sample value")
		tmp.samples[i].TimeNs = int64(d.u64("sample time"))
	}
	if m == k {
		tmp.w = d.f64("W")
		tmp.next = d.uvarint("next index")
		if d.err == nil && (!(tmp.w > 0 && tmp.w < 1) || tmp.next <= n) {
			d.fail(fmt.Sprintf("W %v and next index %d after %d seen", tmp.w, tmp.next, n))
		}
	}
	if err := tmp.src.UnmarshalBinary(d.bytes(pcgStateLen, "PCG state")); d.err == nil && err != nil {
		d.fail("PCG state: " + err.Error())
	}
	if err := d.finish(); err != nil {
		return err
	}
	*r = tmp
	return nil
}
