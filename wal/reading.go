package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Reading is one sensor value: a float64 of one field of one series at an
// event time. It is the unit every stage after ingest works on.
//
// Series is the measurement plus its sorted tags, as in line protocol
// (`env,device=pi-042,site=plant1`); Field names the value within it
// (`temp`). TimeNs is the event time in nanoseconds since the Unix epoch,
// as the device reported it (or the receive time when it reported none).
type Reading struct {
	Series string
	Field  string
	Value  float64
	TimeNs int64
}

// Batch is the unit the readings WAL stores: the readings of one append,
// stamped with the gateway time at which they were ingested.
//
// IngestNs is the only processing-time input of every later stage: idle
// devices and missing data are judged by it, never by the wall clock, so a
// replay makes exactly the decisions the live run made.
type Batch struct {
	IngestNs int64
	Readings []Reading
}

// batchVersion is the first byte of every encoded batch; see FORMAT.md.
const batchVersion = 1

// ErrBadBatch marks an encoded batch that cannot be decoded: a wrong
// version byte, a count or length running past the input, or trailing bytes.
var ErrBadBatch = errors.New("bad reading batch")

// AppendBatch appends the encoding of b to dst and returns the extended
// slice. Series keys and field names are written once per batch and then
// referred to by position; event times are zig-zag varint delta-of-deltas
// (the first delta from IngestNs), so a regular sample rate costs one byte
// per timestamp; values are the 8 raw bytes of the float64, so every value,
// NaN payloads included, survives bit-exactly.
//
// The format is described in FORMAT.md. AppendBatch does not retain dst or
// b. A caller encoding many batches should keep a BatchEncoder instead.
func AppendBatch(dst []byte, b *Batch) []byte {
	var enc BatchEncoder
	return enc.Append(dst, b)
}

// BatchEncoder encodes batches, keeping its dictionaries between calls so
// steady-state encoding does not allocate. The zero value is ready to use;
// it is not safe for concurrent use (keep one per goroutine, or pool them).
type BatchEncoder struct {
	series map[string]uint64
	sList  []string
	fList  []string // fields are few: a linear scan beats a map
	sIdx   []uint64 // per reading: position of its series
	fIdx   []uint64 // per reading: position of its field
}

// Append appends the encoding of b to dst and returns the extended slice;
// see AppendBatch.
func (e *BatchEncoder) Append(dst []byte, b *Batch) []byte {
	if e.series == nil {
		e.series = make(map[string]uint64)
	}
	clear(e.series)
	e.sList, e.fList = e.sList[:0], e.fList[:0]
	e.sIdx, e.fIdx = e.sIdx[:0], e.fIdx[:0]
	lastS, lastSi := "", uint64(0)
	haveLast := false
	for i := range b.Readings {
		r := &b.Readings[i]
		// Consecutive readings mostly share a series (the fields of one
		// line, the samples of one biosignal batch).
		if !haveLast || r.Series != lastS {
			si, ok := e.series[r.Series]
			if !ok {
				si = uint64(len(e.sList))
				e.series[r.Series] = si
				e.sList = append(e.sList, r.Series)
			}
			lastS, lastSi, haveLast = r.Series, si, true
		}
		fi := -1
		for j, f := range e.fList {
			if f == r.Field {
				fi = j
				break
			}
		}
		if fi < 0 {
			fi = len(e.fList)
			e.fList = append(e.fList, r.Field)
		}
		e.fIdx = append(e.fIdx, uint64(fi))
		e.sIdx = append(e.sIdx, lastSi)
	}
	dst = append(dst, batchVersion)
	dst = binary.AppendVarint(dst, b.IngestNs)
	dst = appendStrings(dst, e.sList)
	dst = appendStrings(dst, e.fList)
	dst = binary.AppendUvarint(dst, uint64(len(b.Readings)))
	prev, prevDelta := b.IngestNs, int64(0)
	for i := range b.Readings {
		r := &b.Readings[i]
		delta := r.TimeNs - prev
		dst = binary.AppendUvarint(dst, e.sIdx[i])
		dst = binary.AppendUvarint(dst, e.fIdx[i])
		dst = binary.AppendVarint(dst, delta-prevDelta)
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Value))
		prev, prevDelta = r.TimeNs, delta
	}
	return dst
}

func appendStrings(dst []byte, ss []string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ss)))
	for _, s := range ss {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

// minReadingBytes is the smallest encoding of one reading: two one-byte
// indexes, a one-byte time delta and the 8-byte value. Counts are checked
// against it before anything is allocated, so hostile input cannot make the
// decoder allocate more than a small multiple of its own size.
const minReadingBytes = 11

// DecodeBatch decodes src into b, reusing b.Readings' capacity. Strings in
// the result are copied out of src (one allocation per distinct series and
// field), so src may be reused afterwards. On error b holds no readings.
func DecodeBatch(src []byte, b *Batch) error {
	var bd BatchDecoder
	return bd.Decode(src, b)
}

// BatchDecoder is DecodeBatch for a stream of batches: it hands out one
// string per distinct series key and field name across calls (at most
// maxInterned of them; past that it starts over), so decoding a record
// allocates nothing once the series are known. The zero value is ready;
// not safe for concurrent use.
type BatchDecoder struct {
	strs           map[string]string
	series, fields []string
}

// maxInterned and maxInternedLen bound what a BatchDecoder keeps.
const (
	maxInterned    = 1 << 14
	maxInternedLen = 512
)

// Decode decodes src into b as DecodeBatch does.
func (bd *BatchDecoder) Decode(src []byte, b *Batch) error {
	b.Readings = b.Readings[:0]
	if err := bd.decode(src, b); err != nil {
		b.Readings = b.Readings[:0]
		return err
	}
	return nil
}

func (bd *BatchDecoder) intern(s []byte) string {
	if len(s) > maxInternedLen {
		return string(s)
	}
	if v, ok := bd.strs[string(s)]; ok {
		return v
	}
	if bd.strs == nil || len(bd.strs) >= maxInterned {
		bd.strs = make(map[string]string)
	}
	v := string(s)
	bd.strs[v] = v
	return v
}

func (bd *BatchDecoder) decode(src []byte, b *Batch) error {
	d := decoder{buf: src, bd: bd}
	if v := d.byte(); v != batchVersion {
		if d.err != nil {
			return d.err
		}
		return fmt.Errorf("%w: version %d, want %d", ErrBadBatch, v, batchVersion)
	}
	b.IngestNs = d.varint()
	bd.series = d.strings(bd.series[:0])
	bd.fields = d.strings(bd.fields[:0])
	series, fields := bd.series, bd.fields
	n := d.count(minReadingBytes)
	if d.err != nil {
		return d.err
	}
	if cap(b.Readings) < int(n) {
		b.Readings = make([]Reading, 0, n)
	}
	prev, delta := b.IngestNs, int64(0)
	for i := uint64(0); i < n; i++ {
		si, fi := d.uvarint(), d.uvarint()
		delta += d.varint()
		bits := d.uint64()
		if d.err != nil {
			return d.err
		}
		if si >= uint64(len(series)) || fi >= uint64(len(fields)) {
			return fmt.Errorf("%w: reading %d refers to series %d/%d, field %d/%d",
				ErrBadBatch, i, si, len(series), fi, len(fields))
		}
		prev += delta
		b.Readings = append(b.Readings, Reading{
			Series: series[si], Field: fields[fi],
			Value: math.Float64frombits(bits), TimeNs: prev,
		})
	}
	if len(d.buf) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadBatch, len(d.buf))
	}
	return nil
}

// decoder reads varints from a byte slice and remembers the first error, so
// a decode reads straight through and checks once.
type decoder struct {
	buf []byte
	err error
	bd  *BatchDecoder
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or invalid %s", ErrBadBatch, what)
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if len(d.buf) < 1 {
		d.fail("header")
		return 0
	}
	v := d.buf[0]
	d.buf = d.buf[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) uint64() uint64 {
	if len(d.buf) < 8 {
		d.fail("value")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.buf)
	d.buf = d.buf[8:]
	return v
}

// count reads an element count and checks that the rest of the input could
// hold that many elements of at least minBytes each.
func (d *decoder) count(minBytes int) uint64 {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.buf)/minBytes) {
		d.fail("count")
		return 0
	}
	return n
}

// strings appends a string list to out (interned by d.bd).
func (d *decoder) strings(out []string) []string {
	n := d.count(1)
	if d.err != nil {
		return out
	}
	for range n {
		l := d.uvarint()
		if d.err == nil && l > uint64(len(d.buf)) {
			d.fail("string length")
		}
		if d.err != nil {
			return out
		}
		out = append(out, d.bd.intern(d.buf[:l]))
		d.buf = d.buf[l:]
	}
	return out
}
