package binc

import (
	"errors"
	"math"
	"strings"
	"testing"
)

var errTest = errors.New("bad test data")

func TestRoundTrip(t *testing.T) {
	var w Enc
	w.U(300)
	w.I(-5)
	w.F(math.Inf(-1))
	w.Byte(7)
	w.Bool(true)
	w.Bytes([]byte{1, 2})
	w.S("héllo")
	w.U(2) // a count of two 8-byte items
	w.F(1)
	w.F(2)
	d := Dec{B: w.B, Kind: errTest}
	if d.U() != 300 || d.I() != -5 || d.F() != math.Inf(-1) || d.Byte() != 7 || !d.Bool() ||
		string(d.Bytes()) != "\x01\x02" || d.S() != "héllo" || d.Count(8, "floats") != 2 ||
		d.F() != 1 || d.F() != 2 || d.Err != nil || d.Off != len(w.B) {
		t.Fatalf("round trip: off %d of %d, err %v", d.Off, len(w.B), d.Err)
	}
}

// TestFirstErrorSticks: a read past the end fails with Kind and the byte
// offset; later reads return zero values and keep that error.
func TestFirstErrorSticks(t *testing.T) {
	var w Enc
	w.U(1 << 40) // a length far past the end
	d := Dec{B: w.B, Kind: errTest}
	if b := d.Bytes(); b != nil || !errors.Is(d.Err, errTest) || !strings.Contains(d.Err.Error(), "at byte 6") {
		t.Fatalf("got %v, %v", b, d.Err)
	}
	first := d.Err
	if d.U() != 0 || d.F() != 0 || d.Bool() || d.Count(1, "x") != 0 || d.Err != first {
		t.Fatalf("reads after the error: %v", d.Err)
	}
	d = Dec{B: []byte{2}, Kind: errTest}
	if d.Bool(); d.Err == nil {
		t.Fatal("byte 2 read as a bool")
	}
	d = Dec{B: []byte{200, 1}, Kind: errTest} // a count of 200 in one byte
	if n := d.Count(1, "items"); n != 0 || d.Err == nil {
		t.Fatalf("count %d, err %v", n, d.Err)
	}
}
