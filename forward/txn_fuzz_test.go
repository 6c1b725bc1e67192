package forward

import "testing"

// FuzzDecodePosition: the position record decoder never panics, and what
// it accepts re-encodes to the same index.
func FuzzDecodePosition(f *testing.F) {
	f.Add(encodePosition(42, KindSummaries))
	f.Add([]byte(`{"index":18446744073709551615}`))
	f.Add([]byte(`{"index":-1}`))
	f.Add([]byte(`1234`))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := decodePosition(b)
		if err != nil {
			return
		}
		back, err := decodePosition(encodePosition(idx, KindAlerts))
		if err != nil || back != idx {
			t.Fatalf("%q: index %d re-encoded decodes to %d, %v", b, idx, back, err)
		}
	})
}

func TestDecodePosition(t *testing.T) {
	if idx, err := decodePosition(encodePosition(7, KindSketches)); err != nil || idx != 7 {
		t.Fatalf("round trip: %d, %v", idx, err)
	}
	for _, bad := range []string{"", "{", `{"index":"7"}`, `{"index":-1}`} {
		if _, err := decodePosition([]byte(bad)); err == nil {
			t.Errorf("%q decoded without error", bad)
		}
	}
}
