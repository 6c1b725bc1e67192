package sketches

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Fleet-wide Count-Min parameters: an estimate exceeds the true count by at
// most CountMinEpsilon·N (N the total added) with probability at least
// 1−CountMinDelta. They give width ⌈e/ε⌉ = 2719 and depth ⌈ln(1/δ)⌉ = 5:
// 13595 uint64 counters, 108,760 bytes.
const (
	CountMinEpsilon = 0.001
	CountMinDelta   = 0.01
)

// Bounds that keep a hostile encoding or a typo from sizing a huge table.
const (
	countMinMaxWidth = 1 << 22 // ε ≥ ~6.5e-7
	countMinMaxDepth = 32      // δ ≥ e^-32
)

// CountMin estimates item frequencies with a Count-Min sketch using
// conservative update: an Add raises each of the item's counters only as far
// as the item's new minimum, which never breaks the one-sided guarantee
// (estimates never fall below the true count) and shrinks overestimates.
// Row indices come from one xxhash64 of the key split into two 32-bit halves
// (Kirsch–Mitzenmacher double hashing, index_i = h1 + i·h2 mod width), so
// every gateway and architecture indexes identically.
//
// Counters are uint64 rather than uint32: sketches are summed upstream across
// gateways and windows, and a saturated uint32 would silently turn the
// one-sided bound into an undercount. Counters saturate at 2^64−1.
//
// Conservative update makes the counters depend on arrival order, so the
// merge of two halves is not bit-identical to the sketch of the whole stream;
// it is still one-sided and within εN, and Merge itself is an exact,
// commutative, associative counter-wise sum.
//
// A CountMin is not safe for concurrent use.
type CountMin struct {
	width  uint32
	depth  uint32
	total  uint64
	counts []uint64 // depth rows of width counters
}

// NewCountMin returns a sketch with width ⌈e/eps⌉ and depth ⌈ln(1/delta)⌉.
// eps and delta must lie in (0, 1) and give at most 2^22 columns and 32 rows.
func NewCountMin(eps, delta float64) (*CountMin, error) {
	w, d, err := countMinDims(eps, delta)
	if err != nil {
		return nil, err
	}
	return newCountMinDims(w, d), nil
}

// NewCountMinDefault returns a sketch with the fleet parameters.
func NewCountMinDefault() *CountMin {
	c, err := NewCountMin(CountMinEpsilon, CountMinDelta)
	if err != nil {
		panic("BUG: fleet count-min parameters rejected: " + err.Error())
	}
	return c
}

func countMinDims(eps, delta float64) (width, depth uint32, err error) {
	if !(eps > 0 && eps < 1) {
		return 0, 0, fmt.Errorf("count-min epsilon %v, want 0 < ε < 1: %w", eps, ErrInvalidParam)
	}
	if !(delta > 0 && delta < 1) {
		return 0, 0, fmt.Errorf("count-min delta %v, want 0 < δ < 1: %w", delta, ErrInvalidParam)
	}
	w := math.Ceil(math.E / eps)
	d := max(math.Ceil(math.Log(1/delta)), 1)
	if w > countMinMaxWidth || d > countMinMaxDepth {
		return 0, 0, fmt.Errorf("count-min ε=%v δ=%v need %v×%v counters, max %d×%d: %w",
			eps, delta, w, d, countMinMaxWidth, countMinMaxDepth, ErrInvalidParam)
	}
	return uint32(w), uint32(d), nil
}

func newCountMinDims(w, d uint32) *CountMin {
	return &CountMin{width: w, depth: d, counts: make([]uint64, int(w)*int(d))}
}

// Width and Depth report the table dimensions.
func (c *CountMin) Width() int { return int(c.width) }

// Depth reports the number of rows.
func (c *CountMin) Depth() int { return int(c.depth) }

// Epsilon reports the error factor e/width the sketch guarantees.
func (c *CountMin) Epsilon() float64 { return math.E / float64(c.width) }

// Total reports N, the sum of all counts added (saturating).
func (c *CountMin) Total() uint64 { return c.total }

// Add adds n occurrences of key and returns key's new estimate. key is not
// retained. It does not allocate.
func (c *CountMin) Add(key []byte, n uint64) uint64 { return c.addHash(xxhash.Sum64(key), n) }

// AddString is Add for a string key.
func (c *CountMin) AddString(key string, n uint64) uint64 {
	return c.addHash(xxhash.Sum64String(key), n)
}

// Estimate returns key's estimated count: never below the true count, and at
// most εN above it with probability 1−δ.
func (c *CountMin) Estimate(key []byte) uint64 { return c.estimateHash(xxhash.Sum64(key)) }

// EstimateString is Estimate for a string key.
func (c *CountMin) EstimateString(key string) uint64 {
	return c.estimateHash(xxhash.Sum64String(key))
}

// countMinFleetWidth is the width of the fleet parameters, ⌈e/0.001⌉: cols
// divides by it as a constant, which compiles to multiplications, instead
// of with two 64-bit division instructions (tens of cycles each, twice per
// top-k update of a reading).
const countMinFleetWidth = 2719

// cols returns the first column and the stride of a hash.
func (c *CountMin) cols(h uint64) (base, step uint64) {
	lo, hi := uint64(uint32(h)), h>>32
	if c.width == countMinFleetWidth {
		base, step = lo%countMinFleetWidth, hi%countMinFleetWidth
	} else {
		w := uint64(c.width)
		base, step = lo%w, hi%w
	}
	if step == 0 {
		step = 1 // keep rows on distinct columns
	}
	return base, step
}

func (c *CountMin) estimateHash(h uint64) uint64 {
	if c.width == 0 {
		return 0
	}
	col, step := c.cols(h)
	return c.estimateAt(col, step)
}

// estimateAt is the least counter of the columns col, col+step, ... of the
// rows.
func (c *CountMin) estimateAt(col, step uint64) uint64 {
	w := uint64(c.width)
	est := uint64(math.MaxUint64)
	for row := uint64(0); row < uint64(c.depth); row++ {
		est = min(est, c.counts[row*w+col])
		col += step
		if col >= w {
			col -= w
		}
	}
	return est
}

func (c *CountMin) addHash(h uint64, n uint64) uint64 {
	if c.width == 0 {
		panic("BUG: CountMin used without NewCountMin")
	}
	col, step := c.cols(h)
	target := satAdd(c.estimateAt(col, step), n)
	w := uint64(c.width)
	for row := uint64(0); row < uint64(c.depth); row++ {
		p := &c.counts[row*w+col]
		*p = max(*p, target)
		col += step
		if col >= w {
			col -= w
		}
	}
	c.total = satAdd(c.total, n)
	return target
}

// Merge adds o's counters to c. Both must have the same width and depth,
// else ErrParamMismatch and c is unchanged. It does not allocate.
func (c *CountMin) Merge(o *CountMin) error {
	if c.width != o.width || c.depth != o.depth {
		return fmt.Errorf("merge count-min: %d×%d with %d×%d: %w", c.width, c.depth, o.width, o.depth, ErrParamMismatch)
	}
	for i, v := range o.counts {
		c.counts[i] = satAdd(c.counts[i], v)
	}
	c.total = satAdd(c.total, o.total)
	return nil
}

// Reset zeroes the counters.
func (c *CountMin) Reset() {
	clear(c.counts)
	c.total = 0
}

// SizeBytes reports the in-memory footprint: 8 bytes per counter plus the
// struct header.
func (c *CountMin) SizeBytes() int { return int(unsafe.Sizeof(*c)) + 8*len(c.counts) }

// MarshalBinary encodes the sketch: version byte, kind 'C', then uvarints
// width, depth, total and the depth×width counters row by row. An empty
// default sketch takes 13.6 KB (one byte per zero counter).
func (c *CountMin) MarshalBinary() ([]byte, error) {
	return c.appendBinary(make([]byte, 0, 32+2*len(c.counts))), nil
}

func (c *CountMin) appendBinary(b []byte) []byte {
	b = append(b, formatVersion, kindCountMin)
	b = binary.AppendUvarint(b, uint64(c.width))
	b = binary.AppendUvarint(b, uint64(c.depth))
	b = binary.AppendUvarint(b, c.total)
	for _, v := range c.counts {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// UnmarshalBinary decodes an encoding from MarshalBinary. Into a sketch from
// NewCountMin the encoded dimensions must match (ErrParamMismatch); the zero
// value adopts them. Dimensions are bounded, the input must hold at least one
// byte per counter before the table is allocated (so allocation stays within
// 8× the input), and no counter may exceed the total. On error c is
// unchanged.
func (c *CountMin) UnmarshalBinary(data []byte) error {
	d, err := newDecoder(data, kindCountMin, "count-min")
	if err != nil {
		return err
	}
	tmp, err := decodeCountMin(d, c.width, c.depth)
	if err != nil {
		return err
	}
	if err := d.finish(); err != nil {
		return err
	}
	*c = tmp
	return nil
}

// decodeCountMin reads the fields after the header. wantW/wantD of 0 accept
// any valid dimensions.
func decodeCountMin(d *decoder, wantW, wantD uint32) (CountMin, error) {
	w := d.uvarint("width")
	dep := d.uvarint("depth")
	total := d.uvarint("total")
	if d.err != nil {
		return CountMin{}, d.err
	}
	if w < 1 || w > countMinMaxWidth || dep < 1 || dep > countMinMaxDepth {
		return CountMin{}, fmt.Errorf("unmarshal count-min: dimensions %d×%d, allowed 1..%d × 1..%d: %w",
			w, dep, countMinMaxWidth, countMinMaxDepth, ErrCorrupt)
	}
	if wantW != 0 && (uint32(w) != wantW || uint32(dep) != wantD) {
		return CountMin{}, fmt.Errorf("unmarshal count-min: dimensions %d×%d, receiver has %d×%d: %w",
			w, dep, wantW, wantD, ErrParamMismatch)
	}
	n := w * dep
	if uint64(d.remaining()) < n {
		return CountMin{}, fmt.Errorf("unmarshal count-min: %d counters need at least %d bytes, have %d: %w",
			n, n, d.remaining(), ErrCorrupt)
	}
	// A fresh table, so the receiver survives an error.
	counts := make([]uint64, n)
	for i := range counts {
		v := d.uvarint("counter")
		if v > total {
			d.fail(fmt.Sprintf("counter %d = %d exceeds total %d", i, v, total))
		}
		if d.err != nil {
			return CountMin{}, d.err
		}
		counts[i] = v
	}
	return CountMin{width: uint32(w), depth: uint32(dep), total: total, counts: counts}, nil
}
