package sketches

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// formatVersion is the leading byte of every encoding in this package. A
// change to any layout, parameter meaning or hash function needs a new value.
const formatVersion = 1

// The second byte of every encoding names the sketch, so a blob handed to the
// wrong decoder is rejected rather than misread.
const (
	kindHLL       = 'H'
	kindCountMin  = 'C'
	kindTopK      = 'T'
	kindReservoir = 'R'
	kindQuantile  = 'Q'
)

var (
	// ErrVersion is returned by UnmarshalBinary when the leading version byte
	// is not one this package writes.
	ErrVersion = errors.New("unsupported encoding version")
	// ErrCorrupt is returned by UnmarshalBinary for truncated, trailing or
	// inconsistent input.
	ErrCorrupt = errors.New("malformed encoding")
	// ErrParamMismatch is returned by Merge, and by UnmarshalBinary into an
	// already constructed sketch, when the two sketches were built with
	// different parameters and so cannot be combined.
	ErrParamMismatch = errors.New("sketch parameters differ")
	// ErrInvalidParam is returned by constructors given parameters outside
	// the documented range.
	ErrInvalidParam = errors.New("invalid sketch parameter")
	// ErrOverflow is returned by Merge when the merged sketch would overflow
	// a counter; the receiver is left unchanged.
	ErrOverflow = errors.New("counter overflow")
)

// decoder reads the little-endian and varint fields of an encoding. The
// first failure sticks, so callers check err once at the end.
type decoder struct {
	name string // sketch name for error messages
	b    []byte
	off  int
	err  error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("unmarshal %s: %s at offset %d: %w", d.name, what, d.off, ErrCorrupt)
	}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 1 {
		d.fail(what + " truncated")
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(what + " truncated or overlong varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail(what + " truncated or overlong varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) u64(what string) uint64 {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 8 {
		d.fail(what + " truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

func (d *decoder) f64(what string) float64 { return math.Float64frombits(d.u64(what)) }

func (d *decoder) bytes(n uint64, what string) []byte {
	if d.err != nil {
		return nil
	}
	if uint64(d.remaining()) < n {
		d.fail(what + " truncated")
		return nil
	}
	v := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return v
}

// finish reports the sticky error, or trailing bytes.
func (d *decoder) finish() error {
	if d.err == nil && d.remaining() != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", d.remaining()))
	}
	return d.err
}

// newDecoder checks the version and kind bytes.
func newDecoder(b []byte, kind byte, name string) (*decoder, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("unmarshal %s: header needs 2 bytes, have %d: %w", name, len(b), ErrCorrupt)
	}
	if b[0] != formatVersion {
		return nil, fmt.Errorf("unmarshal %s: version %d, want %d: %w", name, b[0], formatVersion, ErrVersion)
	}
	if b[1] != kind {
		return nil, fmt.Errorf("unmarshal %s: kind byte %q, want %q: %w", name, b[1], kind, ErrCorrupt)
	}
	return &decoder{name: name, b: b, off: 2}, nil
}

func appendU64(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }

func appendF64(b []byte, v float64) []byte { return appendU64(b, math.Float64bits(v)) }

// satAdd adds without wrapping, saturating at the maximum uint64.
func satAdd(a, b uint64) uint64 {
	s := a + b
	if s < a {
		return math.MaxUint64
	}
	return s
}
