package sketches

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/axiomhq/hyperloglog"
	metro "github.com/dgryski/go-metro"
)

// HLLPrecision is the fleet-wide HyperLogLog precision p: m = 2^14 = 16384
// one-byte registers, a standard error of 1.04/√m ≈ 0.81%.
const HLLPrecision = 14

const (
	hllRegisters = 1 << HLLPrecision
	// hllInnerLen is axiomhq's version 2 dense encoding: an 8-byte header
	// (version 2, p, 0, dense flag 0, big-endian register count) and the
	// registers.
	hllInnerLen   = 8 + hllRegisters
	hllEncodedLen = 3 + hllInnerLen
	hllInnerVer   = 2
)

// HLL counts distinct items with HyperLogLog (axiomhq/hyperloglog, precision
// HLLPrecision). It is always dense: axiomhq's sparse mode grows a hash set
// and a compressed list and allocates on insert and on Estimate, so the
// registers are allocated once at construction and updates never allocate.
//
// The zero value is an empty sketch; it allocates its registers on first use.
// An HLL is not safe for concurrent use.
type HLL struct {
	sk *hyperloglog.Sketch
}

// NewHLL returns an empty sketch with the fleet precision.
func NewHLL() *HLL {
	h := &HLL{}
	h.init()
	return h
}

func (h *HLL) init() {
	if h.sk != nil {
		return
	}
	sk, err := hyperloglog.NewSketch(HLLPrecision, false)
	if err != nil {
		panic("BUG: hyperloglog rejects fleet precision: " + err.Error())
	}
	h.sk = sk
}

// Add counts the item key. It hashes with MetroHash64 seed 1337, the hash
// that axiomhq's version 2 encoding pins, so sketches from every gateway and
// from any axiomhq user upstream agree on what a register means. key is not
// retained.
func (h *HLL) Add(key []byte) {
	h.init()
	h.sk.Insert(key)
}

// AddString is Add for a string key, without copying it.
func (h *HLL) AddString(key string) {
	h.Add(unsafe.Slice(unsafe.StringData(key), len(key)))
}

// HLLHash is the hash Add gives key (MetroHash64, seed 1337):
// AddHash(HLLHash(k)) counts k exactly as AddString(k) does. A caller that
// adds the same key again and again keeps it and skips the hashing.
func HLLHash(key string) uint64 { return metro.Hash64Str(key, hllSeed) }

// hllSeed is axiomhq's MetroHash64 seed, pinned by its version 2 encoding.
const hllSeed = 1337

// AddHash counts an item by a caller-computed, uniformly distributed 64-bit
// hash. Mixing AddHash with Add, or hash functions across gateways, makes the
// same item count twice; prefer Add.
func (h *HLL) AddHash(x uint64) {
	h.init()
	h.sk.InsertHash(x)
}

// Estimate returns the estimated number of distinct items. It reads all
// 16384 registers (tens of microseconds) and does not allocate.
func (h *HLL) Estimate() uint64 {
	if h.sk == nil {
		return 0
	}
	return h.sk.Estimate()
}

// Merge adds the items of o to h (register-wise max). o is not modified.
func (h *HLL) Merge(o *HLL) error {
	if o == nil || o.sk == nil {
		return nil
	}
	h.init()
	if err := h.sk.Merge(o.sk); err != nil {
		if errors.Is(err, hyperloglog.ErrorPrecisionMismatch) {
			return fmt.Errorf("merge hll: %v: %w", err, ErrParamMismatch)
		}
		return fmt.Errorf("merge hll: %w", err)
	}
	return nil
}

// Reset empties the sketch, keeping its registers.
func (h *HLL) Reset() {
	if h.sk != nil {
		h.sk.Reset()
	}
}

// SizeBytes reports the in-memory footprint: the 16384 registers plus the
// fixed struct headers (exact up to allocator rounding).
func (h *HLL) SizeBytes() int {
	n := int(unsafe.Sizeof(*h))
	if h.sk != nil {
		n += int(unsafe.Sizeof(*h.sk)) + hllRegisters
	}
	return n
}

// MarshalBinary encodes the sketch in 16395 bytes: version byte, kind 'H',
// precision, then axiomhq's version 2 dense encoding (8-byte header, 16384
// registers).
func (h *HLL) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, hllEncodedLen)
	b = append(b, formatVersion, kindHLL, HLLPrecision)
	if h.sk == nil {
		b = append(b, hllInnerVer, HLLPrecision, 0, 0)
		b = binary.BigEndian.AppendUint32(b, hllRegisters)
		return append(b, make([]byte, hllRegisters)...), nil
	}
	b, err := h.sk.AppendBinary(b)
	if err != nil {
		return nil, fmt.Errorf("marshal hll: %w", err)
	}
	return b, nil
}

// UnmarshalBinary decodes an encoding from MarshalBinary. It rejects other
// versions, a precision other than HLLPrecision (ErrParamMismatch), sparse
// payloads, registers out of range and any length other than 16395 bytes
// before allocating. On error h is unchanged.
func (h *HLL) UnmarshalBinary(data []byte) error {
	if len(data) < 3 {
		return fmt.Errorf("unmarshal hll: header needs 3 bytes, have %d: %w", len(data), ErrCorrupt)
	}
	if _, err := newDecoder(data, kindHLL, "hll"); err != nil {
		return err
	}
	if data[2] != HLLPrecision {
		return fmt.Errorf("unmarshal hll: precision %d, want %d: %w", data[2], HLLPrecision, ErrParamMismatch)
	}
	if len(data) != hllEncodedLen {
		return fmt.Errorf("unmarshal hll: length %d, want %d: %w", len(data), hllEncodedLen, ErrCorrupt)
	}
	inner := data[3:]
	if inner[0] != hllInnerVer || inner[1] != HLLPrecision || inner[3] != 0 {
		return fmt.Errorf("unmarshal hll: inner header % x, want dense version %d precision %d: %w",
			inner[:4], hllInnerVer, HLLPrecision, ErrCorrupt)
	}
	sk := new(hyperloglog.Sketch)
	if err := sk.UnmarshalBinary(inner); err != nil {
		return fmt.Errorf("unmarshal hll: %v: %w", err, ErrCorrupt)
	}
	h.sk = sk
	return nil
}
