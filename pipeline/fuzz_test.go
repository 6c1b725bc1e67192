package pipeline

import (
	"bytes"
	"testing"
)

// FuzzDecodeState: any input (versions 1, 2 and 3) either fails or splits
// into parts that encode (version 3) and decode back to the same parts.
func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState([]byte("w"), []byte("a"), []byte(`{"Rules":null}`)))
	f.Add([]byte("RNST\x01\x01w\x01a"))
	f.Add([]byte("RNST\x02\x00\x00\x00"))
	f.Add([]byte("RNST\x02\x01w\x01a\x02{}"))
	f.Add([]byte("RNST\x03\x01a\x02{}RWIN"))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, a, rules, err := decodeState(b)
		if err != nil {
			return
		}
		w2, a2, r2, err := decodeState(encodeState(w, a, rules))
		if err != nil || !bytes.Equal(w, w2) || !bytes.Equal(a, a2) || !bytes.Equal(rules, r2) {
			t.Fatalf("round trip of the parts of %x: %v", b, err)
		}
	})
}

// FuzzDecodeOrigin: any input either fails or decodes to an origin that
// encodes and decodes back to the same values.
func FuzzDecodeOrigin(f *testing.F) {
	f.Add(originPos(outboxPos{5, 1}, 42))
	f.Add([]byte{5, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		pos, fp, _, ok := decodeOrigin(b)
		if !ok {
			return
		}
		pos2, fp2, hasFP, ok := decodeOrigin(originPos(pos, fp))
		if !ok || !hasFP || pos2 != pos || fp2 != fp {
			t.Fatalf("round trip of %x: %v %x", b, pos2, fp2)
		}
	})
}
