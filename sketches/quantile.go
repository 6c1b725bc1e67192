package sketches

import (
	"fmt"
	"math"
	"unsafe"
)

// Fleet-wide quantile sketch parameters. QuantileAlpha is the worst-case
// relative accuracy α, reached at the coarsest level QuantileMaxLevel;
// QuantileBins the fixed number of uint32 bins shared by the negative and
// positive ranges. A sketch starts 2^QuantileMaxLevel = 256 times finer than
// α (level 0: α₀ ≈ 0.0078%, ±0.0013 at 17) and halves its resolution only
// when the data's key range no longer fits the bins. At α = 2% one range of
// 256 bins spans a magnitude ratio of γ^256 ≈ 27,000 (γ = (1+α)/(1−α)), and
// 128 bins still span ≈ 165. The whole sketch is 1,112 bytes.
const (
	QuantileAlpha    = 0.02
	QuantileBins     = 256
	QuantileMaxLevel = 8
)

const (
	quantileHalf     = QuantileBins / 2
	quantileMaxCount = math.MaxUint32
	quantileMinAlpha = 1e-4
	quantileMaxAlpha = 0.5
	// Magnitudes below the smallest normal float64 (and ±0) go to the zero
	// bin.
	quantileMinMagnitude = 0x1p-1022
	// ln(MaxFloat64) < 710 and ln(0x1p-1022) > -709; level-0 keys stay
	// within ±quantileMaxLn/ln γ₀ (< 2^31 for every α ≥ quantileMinAlpha).
	quantileMaxLn = 710.0
)

// qstore is one sign's window of consecutive keys in Quantile.bins.
type qstore struct {
	lo        int32  // key of the first bin
	n         uint16 // bins in use
	collapsed bool   // the first bin also holds every key below lo
}

func (s *qstore) hi() int32 { return s.lo + int32(s.n) - 1 }

// Quantile is a fixed-size, mergeable, deterministic quantile sketch: a
// DDSketch (Masson, Rim and Lee, VLDB 2019) whose resolution adapts to the
// data's range by uniform collapse, as in UDDSketch (Epicoco et al., 2020).
//
// A value v ≠ 0 goes to the bin with key ⌈log_γ |v|⌉ of its sign, and a bin
// answers with 2γ^key/(1+γ), within relative error α_L = (γ−1)/(γ+1) of
// every value in it. The resolution is a level L in 0..QuantileMaxLevel with
// γ_L = γ_α^(2^(L−8)): level 8 is the fleet α (2%), level 0 is 256 times
// finer. A sketch starts at level 0; when the keys of both signs no longer
// fit QuantileBins bins it moves to L+1 by adding bin pairs (key k of level L
// becomes ⌈k/2⌉ of level L+1, exactly the bin that holds the same values).
// The level is therefore the smallest one at which the data's key range
// fits: it depends on the set of values only, never on their order, so
// sketches of any split or order of a stream merge to the same bytes as the
// sketch of the whole (as long as no range collapses at level 8).
//
// At level 8, when a range still outgrows the budget, its lowest-magnitude
// bins are folded into one (the range is "collapsed"): that bin then holds
// every smaller magnitude of its sign. First the other sign gives up bins
// beyond its half of the budget, so each sign keeps at least 128 bins.
//
// Guarantee: a quantile whose true value lies in a non-collapsed bin is
// within relative error RelativeError() ≤ α of it; an answer from a collapsed
// bin, or from the zero bin, only bounds the magnitude from above. Answers
// are clamped to the exact [min, max], so q = 0 and q = 1 are exact. The rank
// error is at most the count of the bin that answers: for 10,000 readings
// uniform in [16.8, 17.4] the sketch stays at level 0 (225 bins of ≈ 44
// readings), so p50, p90 and p99 are within 0.5% in rank, merged or not.
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
	// What Add reads comes first, so that it shares cache lines.
	count       uint64 // values in the sketch, ≤ 2^32−1
	min, max    float64
	neg, pos    qstore
	level       uint8
	alpha       float64 // worst-case α, the resolution of level QuantileMaxLevel
	invLnGamma0 float64
	lnGamma0    float64 // ln γ at level 0: ln((1+α)/(1−α)) / 2^QuantileMaxLevel
	zero        uint64
	dropped     uint64
	bins        [QuantileBins]uint32 // neg bins, then pos bins, then unused zeros
}

// NewQuantile returns an empty sketch with the fleet parameters.
func NewQuantile() *Quantile {
	q := &Quantile{}
	q.setAlpha(QuantileAlpha)
	return q
}

// NewQuantileAlpha returns an empty sketch whose worst-case relative
// accuracy is alpha in [0.0001, 0.5].
func NewQuantileAlpha(alpha float64) (*Quantile, error) {
	if !(alpha >= quantileMinAlpha && alpha <= quantileMaxAlpha) {
		return nil, fmt.Errorf("quantile alpha %v, want %v..%v: %w", alpha, quantileMinAlpha, quantileMaxAlpha, ErrInvalidParam)
	}
	q := &Quantile{}
	q.setAlpha(alpha)
	return q, nil
}

// setAlpha derives the level-0 γ. Dividing by 2^8 is exact in floating
// point, so level-8 keys ⌈⌈x·256⌉/256⌉ equal the version 1 keys ⌈x⌉ bit for
// bit.
func (q *Quantile) setAlpha(alpha float64) {
	q.alpha = alpha
	if alpha == QuantileAlpha && fleetLnGamma0 != 0 {
		// The fleet α, computed once: every new window's sketch sets it.
		q.lnGamma0, q.invLnGamma0 = fleetLnGamma0, fleetInvLnGamma0
		return
	}
	q.lnGamma0, q.invLnGamma0 = lnGamma0Of(alpha)
}

// lnGamma0Of returns ln γ₀ and its inverse for α.
func lnGamma0Of(alpha float64) (ln, inv float64) {
	ln = math.Log1p(2*alpha/(1-alpha)) / (1 << QuantileMaxLevel)
	return ln, 1 / ln
}

func (q *Quantile) init() {
	if q.alpha == 0 {
		q.setAlpha(QuantileAlpha)
	}
}

// Alpha reports the worst-case relative accuracy α (that of the coarsest
// level).
func (q *Quantile) Alpha() float64 { q.init(); return q.alpha }

// Level reports the current resolution level, 0 (finest) to QuantileMaxLevel.
func (q *Quantile) Level() int { return int(q.level) }

// RelativeError reports the relative accuracy of the current level,
// (γ_L−1)/(γ_L+1), which is at most Alpha.
func (q *Quantile) RelativeError() float64 {
	q.init()
	return math.Tanh(q.lnGamma() / 2)
}

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

// ceilShift is ⌈k/2^s⌉: the key at level L+s of the level-L key k.
// Arithmetic right shift floors, so negate around it.
func ceilShift(k int32, s uint8) int32 { return -((-k) >> s) }

// key returns the key of magnitude mag at the current level.
func (q *Quantile) key(mag float64) int32 {
	return ceilShift(int32(math.Ceil(math.Log(mag)*q.invLnGamma0)), q.level)
}

// lnGamma is ln γ of the current level; scaling by 2^L is exact.
func (q *Quantile) lnGamma() float64 { return q.lnGamma0 * float64(uint32(1)<<q.level) }

// value is the representative of a bin at the current level, 2γ^key/(1+γ):
// within (γ−1)/(γ+1) of both bin bounds.
func (q *Quantile) value(key int32) float64 {
	lg := q.lnGamma()
	return 2 * math.Exp(float64(key)*lg) / (1 + math.Exp(lg))
}

// keyLimit bounds |key| at level L.
func keyLimitAt(invLnGamma0 float64, level uint8) int64 {
	return (int64(quantileMaxLn*invLnGamma0) + 2) >> level
}

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

// QuantileValue is a value with its bin key at level 0 for the fleet α,
// computed once by PrepareQuantile for the several sketches that take the
// same value (one per window of a reading): the logarithm is most of
// Add's arithmetic.
type QuantileValue struct {
	v    float64
	key0 int32
	sign int8 // 1 positive, -1 negative, 0 the zero bin, 2 not added (NaN, ±Inf)
}

// fleetLnGamma0 and fleetInvLnGamma0 are ln γ₀ and 1/ln γ₀ for
// QuantileAlpha.
var fleetLnGamma0, fleetInvLnGamma0 = lnGamma0Of(QuantileAlpha)

// PrepareQuantile returns v with its level-0 key for the fleet α.
func PrepareQuantile(v float64) QuantileValue {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return QuantileValue{v: v, sign: 2}
	case v >= quantileMinMagnitude:
		return QuantileValue{v: v, key0: int32(math.Ceil(math.Log(v) * fleetInvLnGamma0)), sign: 1}
	case v <= -quantileMinMagnitude:
		return QuantileValue{v: v, key0: int32(math.Ceil(math.Log(-v) * fleetInvLnGamma0)), sign: -1}
	}
	return QuantileValue{v: v}
}

// Key0 reports pv's level-0 key (0 for the zero bin and for values not
// added), so a caller that keeps prepared values can store them in 12
// bytes and rebuild them with PreparedQuantile.
func (pv QuantileValue) Key0() int32 { return pv.key0 }

// PreparedQuantile rebuilds the QuantileValue of v whose level-0 key
// PrepareQuantile(v) gave as key0 (pv.Key0()), without the logarithm: it is
// PrepareQuantile(v) when key0 is that key.
func PreparedQuantile(v float64, key0 int32) QuantileValue {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return QuantileValue{v: v, sign: 2}
	case v >= quantileMinMagnitude:
		return QuantileValue{v: v, key0: key0, sign: 1}
	case v <= -quantileMinMagnitude:
		return QuantileValue{v: v, key0: key0, sign: -1}
	}
	return QuantileValue{v: v}
}

// AddPrepared adds pv's value, exactly as Add(v) does, without its
// logarithm when the sketch has the fleet α.
func (q *Quantile) AddPrepared(pv QuantileValue) {
	if pv.sign == 2 || q.count >= quantileMaxCount || (q.alpha != QuantileAlpha && q.alpha != 0) {
		q.Add(pv.v)
		return
	}
	q.init()
	v := pv.v
	if q.count == 0 {
		q.min, q.max = v, v
	} else {
		q.min, q.max = min(q.min, v), max(q.max, v)
	}
	q.count++
	switch pv.sign {
	case 1:
		q.addKey(true, ceilShift(pv.key0, q.level), 1)
	case -1:
		q.addKey(false, ceilShift(pv.key0, q.level), 1)
	default:
		q.zero++
	}
}

// AddKeyed adds vals in order, each with its level-0 key from keys (as
// PrepareQuantile(v).Key0() gives it), exactly as AddPrepared of each
// would. keys must be at least as long as vals. A value that lands in a bin
// in use costs a compare and an increment here, without AddPrepared's
// per-call checks; any other (a new extreme, the zero bin, NaN, ±Inf)
// goes through AddPrepared, in its turn.
func (q *Quantile) AddKeyed(vals []float64, keys []int32) {
	keys = keys[:len(vals)]
	if (q.alpha != QuantileAlpha && q.alpha != 0) || q.count+uint64(len(vals)) >= quantileMaxCount {
		for i, v := range vals {
			q.AddPrepared(PreparedQuantile(v, keys[i]))
		}
		return
	}
	for i, v := range vals {
		var s *qstore
		off := 0
		switch {
		case v >= quantileMinMagnitude && v <= math.MaxFloat64:
			s, off = &q.pos, int(q.neg.n)
		case v <= -quantileMinMagnitude && v >= -math.MaxFloat64:
			s = &q.neg
		}
		if s == nil || s.n == 0 {
			q.AddPrepared(PreparedQuantile(v, keys[i]))
			continue
		}
		k := ceilShift(keys[i], q.level)
		if k < s.lo || k > s.hi() {
			q.AddPrepared(PreparedQuantile(v, keys[i]))
			continue
		}
		// A store in use means count > 0 and the fleet α is set. v is
		// finite and not ±0, and so are not min and max (never NaN): a
		// plain comparison is min's and max's answer.
		if v < q.min {
			q.min = v
		}
		if v > q.max {
			q.max = v
		}
		q.count++
		q.bins[off+int(k-s.lo)]++
	}
}

// PeekKeyed returns the sum of the counts of the bins AddKeyed of vals
// (with their level-0 keys) would increment, changing nothing: Peek for
// several values at once, for loading their cache lines ahead. Values of
// the zero bin, NaN and ±Inf add an arbitrary bin of the sketch.
func (q *Quantile) PeekKeyed(vals []float64, keys []int32) uint32 {
	keys = keys[:len(vals)]
	var sum uint32
	for i, v := range vals {
		s, off := &q.neg, 0
		if v > 0 {
			s, off = &q.pos, int(q.neg.n)
		}
		k := ceilShift(keys[i], q.level)
		if k >= s.lo && k <= s.hi() && s.n != 0 {
			sum += q.bins[(off+int(k-s.lo))%QuantileBins]
		}
	}
	return sum
}

// Peek returns the count of the bin pv would be added to (0 when it lies
// outside the bins in use), changing nothing. It reads the cache lines an
// AddPrepared of pv will write, so a caller updating many sketches can
// load them ahead, several sketches at a time.
func (q *Quantile) Peek(pv QuantileValue) uint32 {
	var s *qstore
	switch pv.sign {
	case 1:
		s = &q.pos
	case -1:
		s = &q.neg
	case 0:
		return uint32(q.zero)
	default:
		return 0
	}
	k := ceilShift(pv.key0, q.level)
	if s.n == 0 || k < s.lo || k > s.hi() {
		return 0
	}
	return q.storeBins(pv.sign == 1)[k-s.lo]
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

// grow widens sign pos to [newLo, newLo+newN) ⊇ its window without
// folding anything: a memmove of the bins in use, not a pass over the whole
// array, since at fine levels a narrow signal's new extremes land outside
// the window often. Bins past those in use are always zero.
func (q *Quantile) grow(pos bool, newLo int32, newN int) {
	s, _ := q.stores(pos)
	old := int(s.n)
	d := newN - old
	front := 0
	if old > 0 {
		front = int(s.lo - newLo)
	}
	start := 0
	if pos {
		start = int(q.neg.n)
	} else if p0 := int(q.neg.n); q.pos.n > 0 {
		copy(q.bins[p0+d:p0+d+int(q.pos.n)], q.bins[p0:p0+int(q.pos.n)])
		clear(q.bins[p0 : p0+min(d, int(q.pos.n))])
	}
	if front > 0 {
		copy(q.bins[start+front:start+front+old], q.bins[start:start+old])
		clear(q.bins[start : start+min(front, old)])
	}
	s.lo, s.n = newLo, uint16(newN)
}

// raiseLevel lowers the resolution by 2^by: key k becomes ⌈k/2^by⌉ in both
// signs, so each window shrinks to about 1/2^by. One pass whatever by, so a
// window whose range jumps pays one re-keying, not one per level. Called
// only below QuantileMaxLevel, where no range is collapsed.
//
// It moves counts in place, in bin order: a bin's new index is never above
// its old one (keys only merge, and the negative window, first, only
// shrinks), and every bin below has already moved. It skips empty bins,
// most of them at the fine levels a new window raises through (every new
// window of a steady signal raises a few times as its range grows).
func (q *Quantile) raiseLevel(by uint8) {
	off, src := 0, 0
	for _, s := range [2]*qstore{&q.neg, &q.pos} {
		if s.n == 0 {
			continue
		}
		lo, hi := ceilShift(s.lo, by), ceilShift(s.hi(), by)
		for i, c := range q.bins[src : src+int(s.n)] {
			if c != 0 {
				q.bins[src+i] = 0
				q.bins[off+int(ceilShift(s.lo+int32(i), by)-lo)] += c
			}
		}
		src += int(s.n)
		s.lo, s.n = lo, uint16(hi-lo+1)
		off += int(s.n)
	}
	q.level += by
}

// needAt is the number of bins both signs need, with key added to sign pos,
// at by levels above the current one.
func (q *Quantile) needAt(pos bool, key int32, by uint8) int64 {
	s, o := q.stores(pos)
	k := ceilShift(key, by)
	n := int64(1)
	if s.n != 0 {
		n = int64(max(ceilShift(s.hi(), by), k)) - int64(min(ceilShift(s.lo, by), k)) + 1
	}
	if o.n != 0 {
		n += int64(ceilShift(o.hi(), by)) - int64(ceilShift(o.lo, by)) + 1
	}
	return n
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

// span is the number of bins sign s needs to also hold key.
func span(s *qstore, key int32) int64 {
	if s.n == 0 {
		return 1
	}
	return int64(max(s.hi(), key)) - int64(min(s.lo, key)) + 1
}

// addKey adds c to key (at the current level) in sign pos, raising the
// level while the key range does not fit, then growing or collapsing the
// window.
func (q *Quantile) addKey(pos bool, key int32, c uint32) {
	s, o := q.stores(pos)
	if s.n != 0 && key >= s.lo && key <= s.hi() { // the common case
		q.storeBins(pos)[key-s.lo] += c
		return
	}
	if q.level < QuantileMaxLevel && span(s, key)+int64(o.n) > QuantileBins {
		by := uint8(1)
		for q.level+by < QuantileMaxLevel && q.needAt(pos, key, by) > QuantileBins {
			by++
		}
		q.raiseLevel(by)
		key = ceilShift(key, by)
	}
	switch {
	case s.n == 0:
		q.makeRoom(pos, 1)
		q.grow(pos, key, 1)
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
			q.grow(pos, key, need)
		}
	case key > s.hi():
		need := int(key-s.lo) + 1
		if avail := q.makeRoom(pos, need); need > avail {
			q.resize(pos, key-int32(avail)+1, avail)
		} else {
			q.grow(pos, s.lo, need)
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
// counts must stay below 2^32 (ErrOverflow); on error q is unchanged. The
// result has the coarser of the two levels, or a coarser one if the union's
// range needs it. A collapsed range of o folds q's smaller magnitudes of that
// sign too, since o cannot tell them apart. Without any collapse, merging
// the sketches of any split of a stream gives exactly the sketch of the
// whole. Merge does not allocate.
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
	if q.level < o.level {
		q.raiseLevel(o.level - q.level)
	}
	for _, pos := range [2]bool{false, true} {
		os, _ := o.stores(pos)
		if os.collapsed { // only at QuantileMaxLevel, so q is there too
			q.foldBelow(pos, os.lo)
		}
		for i, c := range o.storeBins(pos) {
			if c != 0 {
				q.addKey(pos, ceilShift(os.lo+int32(i), q.level-o.level), c)
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

// Reset empties the sketch, keeping α, and returns it to level 0.
func (q *Quantile) Reset() {
	q.init()
	*q = Quantile{alpha: q.alpha, lnGamma0: q.lnGamma0, invLnGamma0: q.invLnGamma0}
}

// SizeBytes reports the in-memory footprint, which is fixed: 1,112 bytes
// (1,108 on 32-bit platforms).
func (q *Quantile) SizeBytes() int { return int(unsafe.Sizeof(*q)) }
