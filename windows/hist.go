package windows

import (
	"encoding/binary"
	"math"
)

// The closed history of a pair's spec (ClosedHistory records, for
// queries) is kept encoded, not as closedRec structs: most of a record's
// fields repeat each other or are zero (a window of one value has every
// aggregate equal to it, a sliding window has no quantiles), and its start
// is a small multiple of the spec's unit. A window of one value takes 19
// bytes instead of 104, a tumbling window of many about 80.
//
// Encoding of one record, followed by one byte holding its length:
//
//	header   1 byte: bits 0-1 the closed reason, bit 2 set when the start
//	         is raw (not a multiple of the unit)
//	codes    3 bytes, little endian: 2 bits per float field, in the order
//	         min, max, sum, std, first, last, p50, p90, p99:
//	         0 the value follows (8 bytes, little endian IEEE 754 bits),
//	         1 +0, 2 the bits of min, 3 the bits of max
//	start    zig-zag varint of start/unit, or 8 raw bytes
//	count    uvarint
//	values   the 8-byte floats whose code is 0, in field order
//
// The history is a byte slice holding the records oldest first; histN
// counts them. histHead keeps the slot of the oldest record in a ring of
// ClosedHistory structs (0 until it is full), the layout the checkpoint
// encodes, unchanged.
const (
	recMaxLen  = 1 + 3 + binary.MaxVarintLen64 + binary.MaxVarintLen64 + 9*8
	histRawBit = 1 << 2
)

const (
	codeRaw = iota
	codeZero
	codeMin
	codeMax
)

// recFloats lists a record's float fields in encoding order.
func recFloats(r *closedRec) [9]*float64 {
	return [9]*float64{&r.min, &r.max, &r.sum, &r.std, &r.first, &r.last, &r.p50, &r.p90, &r.p99}
}

// appendRec appends the encoding of r, then its length byte.
func appendRec(b []byte, r *closedRec, unit int64) []byte {
	var tmp [recMaxLen]byte
	e := tmp[:4]
	hdr := r.reason & 3
	if r.start%unit == 0 {
		e = binary.AppendVarint(e, r.start/unit)
	} else {
		hdr |= histRawBit
		e = binary.LittleEndian.AppendUint64(e, uint64(r.start))
	}
	e = binary.AppendUvarint(e, r.count)
	minB, maxB := math.Float64bits(r.min), math.Float64bits(r.max)
	var codes uint32
	for i, f := range recFloats(r) {
		bits := math.Float64bits(*f)
		c := uint32(codeRaw)
		switch {
		case bits == 0:
			c = codeZero
		case i > 0 && bits == minB:
			c = codeMin
		case i > 1 && bits == maxB:
			c = codeMax
		default:
			e = binary.LittleEndian.AppendUint64(e, bits)
		}
		codes |= c << (2 * i)
	}
	e[0] = hdr
	e[1], e[2], e[3] = byte(codes), byte(codes>>8), byte(codes>>16)
	b = append(b, e...)
	return append(b, byte(len(e)))
}

// decodeRec decodes a record as appendRec encoded it (without its length
// byte). The history holds only what appendRec wrote, so it trusts b.
func decodeRec(b []byte, unit int64) closedRec {
	var r closedRec
	hdr := b[0]
	r.reason = hdr & 3
	codes := uint32(b[1]) | uint32(b[2])<<8 | uint32(b[3])<<16
	b = b[4:]
	if hdr&histRawBit != 0 {
		r.start = int64(binary.LittleEndian.Uint64(b))
		b = b[8:]
	} else {
		v, n := binary.Varint(b)
		r.start = v * unit
		b = b[n:]
	}
	c, n := binary.Uvarint(b)
	r.count = c
	b = b[n:]
	for i, f := range recFloats(&r) {
		switch codes >> (2 * i) & 3 {
		case codeRaw:
			*f = math.Float64frombits(binary.LittleEndian.Uint64(b))
			b = b[8:]
		case codeZero:
			*f = 0
		case codeMin:
			*f = r.min
		case codeMax:
			*f = r.max
		}
	}
	return r
}

// pushHist appends rec to the history of at most n records, dropping the
// oldest when it is full. Once the slice has grown to its records' size,
// it allocates only when a record is longer than the one it replaces by
// more than the slack of the last growth.
func (ps *specState) pushHist(rec *closedRec, n int, unit int64) {
	if int(ps.histN) == n {
		l := ps.recLenAt(0)
		copy(ps.hist, ps.hist[l:])
		ps.hist = ps.hist[:len(ps.hist)-l]
		ps.histN--
		ps.histHead = (ps.histHead + 1) % int32(n)
	}
	var tmp [recMaxLen + 1]byte
	e := appendRec(tmp[:0], rec, unit)
	if need := len(ps.hist) + len(e); need > cap(ps.hist) {
		// Grow by a quarter, not by append's doubling: once full, a
		// history keeps about its size, and the slack is kept for good.
		grown := make([]byte, len(ps.hist), allocSize(int64(need+need/4)))
		copy(grown, ps.hist)
		ps.hist = grown
	}
	ps.hist = append(ps.hist, e...)
	ps.histN++
}

// recLenAt is the length, with its length byte, of the record at byte
// offset off.
func (ps *specState) recLenAt(off int) int {
	b := ps.hist[off:]
	hdr := b[0]
	k := 4
	if hdr&histRawBit != 0 {
		k += 8
	} else {
		_, n := binary.Varint(b[k:])
		k += n
	}
	_, n := binary.Uvarint(b[k:])
	k += n
	codes := uint32(b[1]) | uint32(b[2])<<8 | uint32(b[3])<<16
	for i := range 9 {
		if codes>>(2*i)&3 == codeRaw {
			k += 8
		}
	}
	return k + 1
}

// histNewestFirst calls f for each kept record, newest first, until f
// returns false. unit is the spec's (size for tumbling, slide for
// sliding).
func (ps *specState) histNewestFirst(unit int64, f func(*closedRec) bool) {
	end := len(ps.hist)
	for end > 0 {
		l := int(ps.hist[end-1])
		r := decodeRec(ps.hist[end-1-l:end-1], unit)
		if !f(&r) {
			return
		}
		end -= l + 1
	}
}

// histOldestFirst appends the kept records to out, oldest first.
func (ps *specState) histOldestFirst(unit int64, out []closedRec) []closedRec {
	for off := 0; off < len(ps.hist); {
		l := ps.recLenAt(off)
		out = append(out, decodeRec(ps.hist[off:off+l-1], unit))
		off += l
	}
	return out
}
