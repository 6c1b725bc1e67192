package windows

import (
	"bytes"
	"math"
	"reflect"
	"testing"
	"time"
)

// A series remembers the group window its device was last seen in by the
// window's number (groupAttrs.gwSeq), so a reading skips the search of its
// device's windows. The numbers wrap; an engine whose numbers wrap midway
// must emit and checkpoint exactly what one far from the wrap does.
func TestGroupWinSeqWrap(t *testing.T) {
	c := bruteConfig(2 * time.Second)
	a, b := mustNew(t, c), mustNew(t, c)
	b.gwSeq = math.MaxUint32 - 5
	var outA, outB []Emission
	wrapped := false
	for i, batch := range genStream(4, 600, 2*time.Second) {
		outA = a.Apply(uint64(i+1), &batch, outA[:0])
		outB = b.Apply(uint64(i+1), &batch, outB[:0])
		if !reflect.DeepEqual(outA, outB) {
			t.Fatalf("batch %d: emissions differ:\n%s\n%s", i+1, brief(outA), brief(outB))
		}
		wrapped = wrapped || b.gwSeq < math.MaxUint32-5
	}
	if !wrapped {
		t.Fatalf("the group window numbers never wrapped (last %d)", b.gwSeq)
	}
	ca, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	cb, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca, cb) {
		t.Fatalf("checkpoints differ")
	}
}
