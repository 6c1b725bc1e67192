package sketches

import (
	"bytes"
	"encoding"
	"errors"
	"runtime"
	"testing"
)

type codec interface {
	encoding.BinaryMarshaler
	encoding.BinaryUnmarshaler
}

// mustMarshal marshals s or fails the test.
func mustMarshal(t testing.TB, s encoding.BinaryMarshaler) []byte {
	t.Helper()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	return b
}

// allocatedBytes reports the heap bytes f allocates. MemStats counts the
// whole process (the fuzzing engine allocates concurrently), and that noise
// only ever adds.
func allocatedBytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// checkDecodeInvariants is the body of every fuzz target: decoding never
// panics, allocates within a small multiple of the input, and a decoded
// sketch re-encodes to bytes that decode to the same encoding again.
func checkDecodeInvariants(t *testing.T, data []byte, fresh func() codec) {
	// Measured once; over the bound, twice more, keeping the least (noise
	// only adds). ReadMemStats stops the world: fewer calls keep the fuzzing
	// engine's workers responsive.
	limit := 64*uint64(len(data)) + 4096
	var v codec
	var err error
	n := ^uint64(0)
	for try := 0; try < 3 && n > limit; try++ {
		fv := fresh() // built outside the measured call
		n = min(n, allocatedBytes(func() { err = fv.UnmarshalBinary(data) }))
		v = fv
	}
	if n > limit {
		t.Fatalf("decoding %d bytes allocated %d, limit %d", len(data), n, limit)
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrParamMismatch) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		return
	}
	b1 := mustMarshal(t, v)
	v2 := fresh()
	if err := v2.UnmarshalBinary(b1); err != nil {
		t.Fatalf("re-decoding own encoding: %v", err)
	}
	if b2 := mustMarshal(t, v2); !bytes.Equal(b1, b2) {
		t.Fatalf("encoding not stable:\n%x\n%x", b1, b2)
	}
}

// checkRejects asserts that every listed corruption of a valid encoding is
// rejected with the wanted sentinel and leaves the receiver's encoding as it
// was.
func checkRejects(t *testing.T, valid []byte, recv codec, mismatch []byte) {
	t.Helper()
	before := mustMarshal(t, recv)
	bad := func(name string, data []byte, want error) {
		t.Helper()
		err := recv.UnmarshalBinary(data)
		if !errors.Is(err, want) {
			t.Errorf("%s: got %v, want %v", name, err, want)
		}
		if after := mustMarshal(t, recv); !bytes.Equal(before, after) {
			t.Errorf("%s: receiver changed on error", name)
		}
	}
	// Every prefix of a small encoding, a spread of prefixes of a large one.
	step := max(1, len(valid)/200)
	for n := 0; n < len(valid); n += step {
		bad("truncated", valid[:n], ErrCorrupt)
	}
	bad("truncated by one", valid[:len(valid)-1], ErrCorrupt)
	bad("trailing byte", append(append([]byte(nil), valid...), 0), ErrCorrupt)
	wrongVersion := append([]byte(nil), valid...)
	wrongVersion[0] = 0x7f // no sketch has used it
	bad("wrong version", wrongVersion, ErrVersion)
	wrongKind := append([]byte(nil), valid...)
	wrongKind[1] = 'Z'
	bad("wrong kind", wrongKind, ErrCorrupt)
	bad("wrong parameters", mismatch, ErrParamMismatch)
}
