package sketches

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"
)

// Fleet-wide quantile sketch parameters. QuantileAlpha is the relative
// accuracy α; QuantileBins the fixed number of uint32 bins shared by the
// negative and positive ranges. At α = 2% one range of 256 bins spans a
// magnitude ratio of γ^256 ≈ 27,000 (γ = (1+α)/(1−α)), and 128 bins still
// span ≈ 165; at 1% they would span only ≈ 170 and ≈ 13, too little for a
// signal that crosses zero. The whole sketch is 1,104 bytes.
const (
	QuantileAlpha = 0.02
	QuantileBins  = 256
)

const (
	quantileHalf     = QuantileBins / 2
	quantileMaxCount = math.MaxUint32
	quantileMinAlpha = 1e-4
	quantileMaxAlpha = 0.5
	// Magnitudes below the smallest normal float64 (and ±0) go to the zero
	// bin.
	quantileMinMagnitude = 0x1p-1022
	// ln(MaxFloat64) < 710 and ln(0x1p-1022) > -709; keys stay within
	// ±quantileMaxLn/ln γ.
	quantileMaxLn = 710.0
)

// qstore is one sign's window of consecutive keys in Quantile.bins.
type qstore struct {
	lo        int32  // key of the first bin
	n         uint16 // bins in use
	collapsed bool   // the first bin also holds every key below lo
}

func (s *qstore) hi() int32 { return s.lo + int32(s.n) - 1 }

// Quantile is a DDSketch-style quantile sketch (Masson, Rim and Lee, VLDB
// 2019) with a fixed size. A value v ≠ 0 goes to the bin with key
// ⌈log_γ |v|⌉ of its sign, γ = (1+α)/(1−α), and a bin answers with
// 2γ^key/(1+γ), within relative error α of every value in it. The negative
// and positive ranges are windows of consecutive keys sharing QuantileBins
// uint32 counters; ±0 and subnormals have their own zero bin.
//
// When a range outgrows the budget its lowest-magnitude bins are folded into
// one (the range is "collapsed"): that bin then holds every smaller
// magnitude of its sign. First the other sign gives up bins beyond its half
// of the budget, so each sign keeps at least 128 bins (a magnitude ratio of
// ≈165 at α = 2%) once it needs them. Guarantee: a quantile whose true value
// lies in a non-collapsed bin is within relative error α; an answer from a
// collapsed bin, or from the zero bin, only bounds the magnitude from above.
// Answers are clamped to the exact [min, max], so q = 0 and q = 1 are exact.
//
// NaN and ±Inf are not added; they are counted in Dropped. A sketch holds at
// most 2^32−1 values (99 days at 500 Hz); beyond that Add drops and counts
// too, and Merge returns ErrOverflow, so no bin can wrap.
//
// sketches-go was not used: its stores grow by allocation and its collapsing
// stores cap each sign separately, while a window needs a fixed, tiny,
// allocation-free sketch whose budget the two signs share.
//
// The zero value is an empty sketch with the fleet α. A Quantile is not safe
// for concurrent use.
type Quantile struct {
	alpha      float64
	lnGamma    float64
	invLnGamma float64
	count      uint64 // values in the sketch, ≤ 2^32−1
	zero       uint64
	dropped    uint64
	min, max   float64
	neg, pos   qstore
	bins       [QuantileBins]uint32 // neg bins, then pos bins, then unused zeros
}

// NewQuantile returns an empty sketch with the fleet parameters.
func NewQuantile() *Quantile {
	q := &Quantile{}
	q.setAlpha(QuantileAlpha)
	return q
}

// NewQuantileAlpha returns an empty sketch with relative accuracy alpha in
// [0.0001, 0.5].
func NewQuantileAlpha(alpha float64) (*Quantile, error) {
	if !(alpha >= quantileMinAlpha && alpha <= quantileMaxAlpha) {
		return nil, fmt.Errorf("quantile alpha %v, want %v..%v: %w", alpha, quantileMinAlpha, quantileMaxAlpha, ErrInvalidParam)
	}
	q := &Quantile{}
	q.setAlpha(alpha)
	return q, nil
}

func (q *Quantile) setAlpha(alpha float64) {
	q.alpha = alpha
	q.lnGamma = math.Log1p(2 * alpha / (1 - alpha))
	q.invLnGamma = 1 / q.lnGamma
}

func (q *Quantile) init() {
	if q.alpha == 0 {
		q.setAlpha(QuantileAlpha)
	}
}

// Alpha reports the relative accuracy α.
func (q *Quantile) Alpha() float64 { q.init(); return q.alpha }

// Count reports the number of values added.
func (q *Quantile) Count() uint64 { return q.count }

// Dropped reports the values not added: NaN, ±Inf, and values past the
// count limit.
func (q *Quantile) Dropped() uint64 { return q.dropped }

// Min reports the smallest value added (NaN when empty).
func (q *Quantile) Min() float64 {
	if q.count == 0 {
		return math.NaN()
	}
	return q.min
}

// Max reports the largest value added (NaN when empty).
func (q *Quantile) Max() float64 {
	if q.count == 0 {
		return math.NaN()
	}
	return q.max
}

func (q *Quantile) key(mag float64) int32 { return int32(math.Ceil(math.Log(mag) * q.invLnGamma)) }

func (q *Quantile) value(key int32) float64 {
	return math.Exp(float64(key)*q.lnGamma) * (1 - q.alpha)
}

func (q *Quantile) keyLimit() int32 { return int32(quantileMaxLn*q.invLnGamma) + 2 }

// Add adds one value. It does not allocate; it is O(1) except when the range
// grows, which moves at most QuantileBins counters.
func (q *Quantile) Add(v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) || q.count >= quantileMaxCount {
		q.dropped++
		return
	}
	q.init()
	if q.count == 0 {
		q.min, q.max = v, v
	} else {
		q.min, q.max = min(q.min, v), max(q.max, v)
	}
	q.count++
	switch {
	case v >= quantileMinMagnitude:
		q.addKey(true, q.key(v), 1)
	case v <= -quantileMinMagnitude:
		q.addKey(false, q.key(-v), 1)
	default:
		q.zero++
	}
}

func (q *Quantile) stores(pos bool) (s, o *qstore) {
	if pos {
		return &q.pos, &q.neg
	}
	return &q.neg, &q.pos
}

// storeBins returns the bins of one sign; index i holds key lo+i.
func (q *Quantile) storeBins(pos bool) []uint32 {
	if pos {
		return q.bins[q.neg.n : q.neg.n+q.pos.n]
	}
	return q.bins[:q.neg.n]
}

// resize moves one sign to the window [newLo, newLo+newN), folding keys
// below newLo into it. Callers keep old keys ≤ newLo+newN−1 and the total
// within QuantileBins.
func (q *Quantile) resize(pos bool, newLo int32, newN int) {
	s, _ := q.stores(pos)
	var tmp [QuantileBins]uint32
	old := tmp[:copy(tmp[:], q.storeBins(pos))]
	var region []uint32
	if pos {
		region = q.bins[q.neg.n : int(q.neg.n)+newN]
	} else {
		copy(q.bins[newN:newN+int(q.pos.n)], q.bins[q.neg.n:q.neg.n+q.pos.n])
		region = q.bins[:newN]
	}
	clear(region)
	for i, c := range old {
		k := max(s.lo+int32(i), newLo)
		region[k-newLo] += c
	}
	if len(old) > 0 && newLo > s.lo {
		s.collapsed = true
	}
	s.lo, s.n = newLo, uint16(newN)
	clear(q.bins[q.neg.n+q.pos.n:])
}

// makeRoom lets the other sign give up bins beyond its half so that sign pos
// can have need bins, and returns how many bins sign pos may use.
func (q *Quantile) makeRoom(pos bool, need int) int {
	_, o := q.stores(pos)
	if free := QuantileBins - int(o.n); need > free && o.n > quantileHalf {
		keep := max(quantileHalf, QuantileBins-need)
		q.resize(!pos, o.hi()-int32(keep)+1, keep)
	}
	return QuantileBins - int(o.n)
}

// addKey adds c to key in sign pos, growing or collapsing the window.
func (q *Quantile) addKey(pos bool, key int32, c uint32) {
	s, _ := q.stores(pos)
	switch {
	case s.n == 0:
		q.makeRoom(pos, 1)
		q.resize(pos, key, 1)
	case key < s.lo:
		if s.collapsed {
			key = s.lo
			break
		}
		hi := s.hi()
		need := int(hi-key) + 1
		if avail := q.makeRoom(pos, need); need > avail {
			q.resize(pos, hi-int32(avail)+1, avail)
			s.collapsed = true
			key = s.lo
		} else {
			q.resize(pos, key, need)
		}
	case key > s.hi():
		need := int(key-s.lo) + 1
		if avail := q.makeRoom(pos, need); need > avail {
			q.resize(pos, key-int32(avail)+1, avail)
		} else {
			q.resize(pos, s.lo, need)
		}
	}
	q.storeBins(pos)[key-s.lo] += c
}

// Quantile returns an estimate of the value of rank ⌊x·(Count−1)⌋, for x in
// [0, 1], clamped to [Min, Max]; NaN when empty or x is out of range.
func (q *Quantile) Quantile(x float64) float64 {
	if q.count == 0 || !(x >= 0 && x <= 1) {
		return math.NaN()
	}
	switch x {
	case 0:
		return q.min
	case 1:
		return q.max
	}
	rank := uint64(x * float64(q.count-1))
	var cum uint64
	v := q.max
	nb := q.storeBins(false)
	for i := len(nb) - 1; i >= 0; i-- {
		if cum += uint64(nb[i]); cum > rank {
			v = -q.value(q.neg.lo + int32(i))
			return min(max(v, q.min), q.max)
		}
	}
	if cum += q.zero; cum > rank {
		return min(max(0, q.min), q.max)
	}
	for i, c := range q.storeBins(true) {
		if cum += uint64(c); cum > rank {
			v = q.value(q.pos.lo + int32(i))
			break
		}
	}
	return min(max(v, q.min), q.max)
}

// Merge adds o's values to q. α must match (ErrParamMismatch) and the sum of
// counts must stay below 2^32 (ErrOverflow); on error q is unchanged. A
// collapsed range of o folds q's smaller magnitudes of that sign too, since
// o cannot tell them apart. Without any collapse, merging the sketches of
// two halves of a stream gives exactly the sketch of the whole. Merge does
// not allocate.
func (q *Quantile) Merge(o *Quantile) error {
	q.init()
	oAlpha := o.alpha
	if oAlpha == 0 {
		oAlpha = QuantileAlpha
	}
	if oAlpha != q.alpha {
		return fmt.Errorf("merge quantile: alpha %v with %v: %w", q.alpha, oAlpha, ErrParamMismatch)
	}
	if o == q {
		c := *o
		o = &c
	}
	if q.count+o.count > quantileMaxCount {
		return fmt.Errorf("merge quantile: counts %d + %d exceed %d: %w", q.count, o.count, uint64(quantileMaxCount), ErrOverflow)
	}
	q.dropped = satAdd(q.dropped, o.dropped)
	if o.count == 0 {
		return nil
	}
	if q.count == 0 {
		q.min, q.max = o.min, o.max
	} else {
		q.min, q.max = min(q.min, o.min), max(q.max, o.max)
	}
	q.count += o.count
	q.zero += o.zero
	for _, pos := range [2]bool{false, true} {
		os, _ := o.stores(pos)
		if os.collapsed {
			q.foldBelow(pos, os.lo)
		}
		for i, c := range o.storeBins(pos) {
			if c != 0 {
				q.addKey(pos, os.lo+int32(i), c)
			}
		}
		if os.collapsed {
			s, _ := q.stores(pos)
			s.collapsed = true
		}
	}
	return nil
}

// foldBelow collapses sign pos so that keys below floor land in floor's bin.
func (q *Quantile) foldBelow(pos bool, floor int32) {
	s, _ := q.stores(pos)
	switch {
	case s.n == 0:
		q.makeRoom(pos, 1)
		q.resize(pos, floor, 1)
	case s.lo < floor:
		hi := max(s.hi(), floor)
		q.resize(pos, floor, int(hi-floor)+1)
	}
	s.collapsed = s.collapsed || s.lo <= floor
}

// Reset empties the sketch, keeping α.
func (q *Quantile) Reset() {
	q.init()
	*q = Quantile{alpha: q.alpha, lnGamma: q.lnGamma, invLnGamma: q.invLnGamma}
}

// SizeBytes reports the in-memory footprint, which is fixed: 1,104 bytes.
func (q *Quantile) SizeBytes() int { return int(unsafe.Sizeof(*q)) }

// MarshalBinary encodes the sketch: version byte, kind 'Q', uvarint bin
// budget, α as 8 float64 bits, uvarints count, zero and dropped, min and max
// as 8 float64 bits each when count > 0, then for the negative and the
// positive range: zig-zag varint lo, uvarint n, collapsed byte, uvarint
// number of non-zero bins, and per non-zero bin the uvarint gap from the
// previous one and its uvarint count. Float fields are little-endian.
func (q *Quantile) MarshalBinary() ([]byte, error) {
	return q.AppendBinary(make([]byte, 0, 64))
}

// AppendBinary appends the MarshalBinary encoding to b
// (encoding.BinaryAppender): a caller encoding many sketches reuses one
// buffer instead of allocating one per sketch.
func (q *Quantile) AppendBinary(b []byte) ([]byte, error) {
	q.init()
	b = append(b, formatVersion, kindQuantile)
	b = binary.AppendUvarint(b, QuantileBins)
	b = appendF64(b, q.alpha)
	b = binary.AppendUvarint(b, q.count)
	b = binary.AppendUvarint(b, q.zero)
	b = binary.AppendUvarint(b, q.dropped)
	if q.count > 0 {
		b = appendF64(b, q.min)
		b = appendF64(b, q.max)
	}
	for _, pos := range [2]bool{false, true} {
		s, _ := q.stores(pos)
		bins := q.storeBins(pos)
		b = binary.AppendVarint(b, int64(s.lo))
		b = binary.AppendUvarint(b, uint64(s.n))
		b = append(b, boolByte(s.collapsed))
		nnz := 0
		for _, c := range bins {
			if c != 0 {
				nnz++
			}
		}
		b = binary.AppendUvarint(b, uint64(nnz))
		prev := -1
		for i, c := range bins {
			if c != 0 {
				b = binary.AppendUvarint(b, uint64(i-prev-1))
				b = binary.AppendUvarint(b, uint64(c))
				prev = i
			}
		}
	}
	return b, nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// UnmarshalBinary decodes an encoding from MarshalBinary. The bin budget must
// be QuantileBins and α must equal the receiver's (ErrParamMismatch); a zero
// value adopts any α in [0.0001, 0.5]. It checks that windows fit the budget
// and the key range, bin counts sum to the count, and min ≤ max are finite.
// It does not allocate beyond a small decoder. On error q is unchanged.
func (q *Quantile) UnmarshalBinary(data []byte) error {
	d, err := newDecoder(data, kindQuantile, "quantile")
	if err != nil {
		return err
	}
	budget := d.uvarint("bin budget")
	alpha := d.f64("alpha")
	if d.err != nil {
		return d.err
	}
	if budget != QuantileBins {
		return fmt.Errorf("unmarshal quantile: bin budget %d, want %d: %w", budget, QuantileBins, ErrParamMismatch)
	}
	if q.alpha != 0 && alpha != q.alpha {
		return fmt.Errorf("unmarshal quantile: alpha %v, receiver has %v: %w", alpha, q.alpha, ErrParamMismatch)
	}
	if !(alpha >= quantileMinAlpha && alpha <= quantileMaxAlpha) {
		return fmt.Errorf("unmarshal quantile: alpha %v, want %v..%v: %w", alpha, quantileMinAlpha, quantileMaxAlpha, ErrCorrupt)
	}
	var tmp Quantile
	tmp.setAlpha(alpha)
	tmp.count = d.uvarint("count")
	tmp.zero = d.uvarint("zero count")
	tmp.dropped = d.uvarint("dropped count")
	if d.err == nil && (tmp.count > quantileMaxCount || tmp.zero > tmp.count) {
		d.fail(fmt.Sprintf("count %d with zero count %d", tmp.count, tmp.zero))
	}
	if tmp.count > 0 {
		tmp.min, tmp.max = d.f64("min"), d.f64("max")
		if d.err == nil && !(tmp.min <= tmp.max && !math.IsInf(tmp.min, 0) && !math.IsInf(tmp.max, 0)) {
			d.fail(fmt.Sprintf("min %v max %v", tmp.min, tmp.max))
		}
	}
	sum := tmp.zero
	for _, pos := range [2]bool{false, true} {
		sum += tmp.decodeStore(d, pos)
	}
	if d.err == nil && sum != tmp.count {
		d.fail(fmt.Sprintf("bins hold %d values, count is %d", sum, tmp.count))
	}
	if d.err == nil && tmp.count > 0 && (tmp.neg.n > 0 && tmp.min >= 0 || tmp.pos.n > 0 && tmp.max <= 0) {
		d.fail(fmt.Sprintf("min %v max %v disagree with the bin signs", tmp.min, tmp.max))
	}
	if err := d.finish(); err != nil {
		return err
	}
	*q = tmp
	return nil
}

// decodeStore reads one sign's window into q and returns its total count.
func (q *Quantile) decodeStore(d *decoder, pos bool) uint64 {
	lo := d.varint("window start")
	n := d.uvarint("window length")
	collapsed := d.byte("collapsed flag")
	nnz := d.uvarint("non-zero bins")
	if d.err != nil {
		return 0
	}
	lim := int64(q.keyLimit())
	used := uint64(q.neg.n) // pos follows neg
	switch {
	case n > QuantileBins-used:
		d.fail(fmt.Sprintf("window of %d bins, %d left", n, QuantileBins-used))
	case n == 0 && (lo != 0 || collapsed != 0 || nnz != 0):
		d.fail("empty window with a start, flag or bins")
	case lo < -lim || lo+int64(n)-1 > lim:
		d.fail(fmt.Sprintf("window [%d, %d) outside key range ±%d", lo, lo+int64(n), lim))
	case collapsed > 1 || nnz > n:
		d.fail(fmt.Sprintf("collapsed flag %d with %d non-zero bins of %d", collapsed, nnz, n))
	}
	if d.err != nil {
		return 0
	}
	s, _ := q.stores(pos)
	s.lo, s.n, s.collapsed = int32(lo), uint16(n), collapsed == 1
	bins := q.storeBins(pos)
	var sum uint64
	idx := int64(-1)
	for range nnz {
		idx += int64(d.uvarint("bin gap")) + 1
		c := d.uvarint("bin count")
		if d.err != nil {
			return 0
		}
		if idx < 0 || idx >= int64(n) || c == 0 || c > quantileMaxCount {
			d.fail(fmt.Sprintf("bin %d count %d in window of %d", idx, c, n))
			return 0
		}
		bins[idx] = uint32(c)
		sum += c
	}
	return sum
}
