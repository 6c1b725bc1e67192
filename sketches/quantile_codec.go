package sketches

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Quantile encodings. Version 2 adds the level byte after α; version 1, the
// fixed-α DDSketch of the previous release, has no level byte and decodes as
// a level-QuantileMaxLevel sketch, whose keys are the same (see setAlpha).
// Windows checkpoints and Kafka records written by the previous release
// therefore still load. MarshalBinary always writes version 2.
const (
	quantileVersion1 = 1
	quantileVersion  = 2
)

// MarshalBinary encodes the sketch (version 2): version byte 2, kind 'Q',
// uvarint bin budget, α as 8 float64 bits, level byte, uvarints count, zero
// and dropped, min and max as 8 float64 bits each when count > 0, then for
// the negative and the positive range: zig-zag varint lo, uvarint n,
// collapsed byte, uvarint number of non-zero bins, and per non-zero bin the
// uvarint gap from the previous one and its uvarint count. Float fields are
// little-endian. sketches/FORMAT.md has the details and golden vectors.
func (q *Quantile) MarshalBinary() ([]byte, error) {
	return q.AppendBinary(make([]byte, 0, 64))
}

// AppendBinary appends the MarshalBinary encoding to b
// (encoding.BinaryAppender): a caller encoding many sketches reuses one
// buffer instead of allocating one per sketch.
func (q *Quantile) AppendBinary(b []byte) ([]byte, error) {
	q.init()
	b = append(b, quantileVersion, kindQuantile)
	b = binary.AppendUvarint(b, QuantileBins)
	b = appendF64(b, q.alpha)
	b = append(b, q.level)
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

// UnmarshalBinary decodes a version 2 encoding from MarshalBinary, or a
// version 1 encoding of the previous release (as level QuantileMaxLevel).
// The bin budget must be QuantileBins and α must equal the receiver's
// (ErrParamMismatch); a zero value adopts any α in [0.0001, 0.5]. It checks
// the level, that windows fit the budget and the key range of the level,
// that only a level-QuantileMaxLevel range is collapsed, that bin counts sum
// to the count, and that min ≤ max are finite. It does not allocate beyond a
// small decoder. On error q is unchanged.
func (q *Quantile) UnmarshalBinary(data []byte) error {
	if len(data) < 2 {
		return fmt.Errorf("unmarshal quantile: header needs 2 bytes, have %d: %w", len(data), ErrCorrupt)
	}
	ver := data[0]
	if ver != quantileVersion && ver != quantileVersion1 {
		return fmt.Errorf("unmarshal quantile: version %d, want %d or %d: %w", ver, quantileVersion1, quantileVersion, ErrVersion)
	}
	if data[1] != kindQuantile {
		return fmt.Errorf("unmarshal quantile: kind byte %q, want %q: %w", data[1], kindQuantile, ErrCorrupt)
	}
	d := &decoder{name: "quantile", b: data, off: 2}
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
	tmp.level = QuantileMaxLevel
	if ver == quantileVersion {
		tmp.level = d.byte("level")
		if d.err == nil && tmp.level > QuantileMaxLevel {
			d.fail(fmt.Sprintf("level %d, want 0..%d", tmp.level, QuantileMaxLevel))
		}
	}
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
	lim := keyLimitAt(q.invLnGamma0, q.level)
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
	case collapsed == 1 && q.level != QuantileMaxLevel:
		d.fail(fmt.Sprintf("collapsed range at level %d", q.level))
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
		gap := d.uvarint("bin gap")
		c := d.uvarint("bin count")
		if d.err != nil {
			return 0
		}
		if gap >= n { // also keeps idx from wrapping back into the window
			d.fail(fmt.Sprintf("bin gap %d in window of %d", gap, n))
			return 0
		}
		idx += int64(gap) + 1
		if idx < 0 || idx >= int64(n) || c == 0 || c > quantileMaxCount {
			d.fail(fmt.Sprintf("bin %d count %d in window of %d", idx, c, n))
			return 0
		}
		bins[idx] = uint32(c)
		sum += c
	}
	return sum
}
