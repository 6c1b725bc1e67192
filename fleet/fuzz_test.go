package fleet

import (
	"slices"
	"testing"
)

func FuzzDecodeInput(f *testing.F) {
	f.Add([]byte(`{"schema":"runnel.summary/v1","gateway":"g","series":"m,site=1","field":"f","window":"tumbling:1m","start_ns":0,"end_ns":60,"count":2,"sum":3,"min":1,"max":2,"mean":1.5,"stddev":0.7}`))
	f.Add([]byte(`{"schema":"runnel.sketch/v1","gateway":"g","group":"x","key":"m","start_ns":0,"end_ns":60,"readings":3,"hll":"AAE="}`))
	f.Add([]byte(`{"schema":"runnel.summary/v1","gateway":"g","series":"m\\,a,t\\=x=v\\|w","field":"f|g","window":"w","start_ns":1,"end_ns":2,"quantiles":"AQ=="}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := decodeInput(b, []string{"site"})
		if err != nil {
			return
		}
		parts := splitKey(in.key)
		if got := joinKey(parts...); got != in.key {
			t.Fatalf("key %q does not round-trip: %q", in.key, got)
		}
		if !slices.Equal(splitKey(in.lineage), parts[:len(parts)-1]) {
			t.Fatalf("lineage %q is not key %q without its start", in.lineage, in.key)
		}
		w := newWindow(&in, 0, testEpoch)
		_ = w.merge(&in) // corrupt sketches are errors, never panics
		w.encode()
		_ = w.output([]string{"site"})
	})
}

func TestJoinKeyNoCollision(t *testing.T) {
	a := joinKey("s", "coll,device=x|y", "z")
	b := joinKey("s", "coll,device=x", "y|z")
	if a == b {
		t.Fatalf("keys collide: %q", a)
	}
	if !slices.Equal(splitKey(a), []string{"s", "coll,device=x|y", "z"}) || !slices.Equal(splitKey(joinKey(`a\`, "b")), []string{`a\`, "b"}) {
		t.Fatal("splitKey does not undo joinKey")
	}
}
