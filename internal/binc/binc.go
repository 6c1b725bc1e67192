// Package binc is the byte-level encoding the windows and alerts
// checkpoints are written in: unsigned and signed varints, little-endian
// float64s, single bytes and bools, and length-prefixed bytes and strings.
// Dec remembers the first error and returns zero values after it, so a
// decoder reads straight through and checks once.
package binc

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Enc appends to B.
type Enc struct{ B []byte }

func (w *Enc) U(v uint64)  { w.B = binary.AppendUvarint(w.B, v) }
func (w *Enc) I(v int64)   { w.B = binary.AppendVarint(w.B, v) }
func (w *Enc) F(v float64) { w.B = binary.LittleEndian.AppendUint64(w.B, math.Float64bits(v)) }
func (w *Enc) Byte(v byte) { w.B = append(w.B, v) }

// Bytes and S write a length, then v.
func (w *Enc) Bytes(v []byte) { w.U(uint64(len(v))); w.B = append(w.B, v...) }
func (w *Enc) S(v string)     { w.U(uint64(len(v))); w.B = append(w.B, v...) }

func (w *Enc) Bool(v bool) {
	if v {
		w.Byte(1)
	} else {
		w.Byte(0)
	}
}

// Dec reads B from Off. Its errors wrap Kind (the caller's sentinel, such
// as a package's ErrCheckpoint) and say at which byte reading failed.
type Dec struct {
	B    []byte
	Off  int
	Err  error
	Kind error
}

// Fail records the first error; reading stops there.
func (d *Dec) Fail(format string, args ...any) {
	if d.Err == nil {
		d.Err = fmt.Errorf("%w: at byte %d: %s", d.Kind, d.Off, fmt.Sprintf(format, args...))
	}
	d.Off = len(d.B)
}

func (d *Dec) U() uint64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.B[d.Off:])
	if n <= 0 {
		d.Fail("bad uvarint")
		return 0
	}
	d.Off += n
	return v
}

func (d *Dec) I() int64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Varint(d.B[d.Off:])
	if n <= 0 {
		d.Fail("bad varint")
		return 0
	}
	d.Off += n
	return v
}

// Take returns the next n bytes, a view into B.
func (d *Dec) Take(n uint64) []byte {
	if d.Err != nil {
		return nil
	}
	if n > uint64(len(d.B)-d.Off) {
		d.Fail("%d bytes wanted, %d left", n, len(d.B)-d.Off)
		return nil
	}
	p := d.B[d.Off : d.Off+int(n)]
	d.Off += int(n)
	return p
}

func (d *Dec) F() float64 {
	p := d.Take(8)
	if p == nil {
		return 0
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(p))
}

func (d *Dec) Byte() byte {
	p := d.Take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *Dec) Bool() bool {
	switch d.Byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.Fail("bad bool")
	return false
}

// Bytes reads a length and that many bytes, a view into B.
func (d *Dec) Bytes() []byte { return d.Take(d.U()) }

// S reads a length and that many bytes as a string.
func (d *Dec) S() string { return string(d.Bytes()) }

// Count reads a count of items that take at least minBytes each, so a
// corrupt count cannot make the caller allocate beyond the input.
func (d *Dec) Count(minBytes int, what string) int {
	n := d.U()
	if d.Err == nil && n > uint64((len(d.B)-d.Off)/minBytes) {
		d.Fail("%d %s cannot fit in %d bytes", n, what, len(d.B)-d.Off)
		return 0
	}
	return int(n)
}
