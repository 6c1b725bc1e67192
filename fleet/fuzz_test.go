package fleet

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
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

// FuzzChangelogRecord: a changelog record, whatever its bytes, restores
// or is skipped; it never panics, and what it restores renders.
func FuzzChangelogRecord(f *testing.F) {
	f.Add([]byte("s|m|f|w|1"), []byte(`{"window":{"key":"s|m|f|w|1","lineage":"s|m|f|w","kind":"summary","start_ns":1,"end_ns":2,"count":2,"gateways":{"g":1},"ids":["a"],"quantiles":"AQ=="}}`))
	f.Add([]byte("L|s|m|f|w"), []byte(`{"lineage":{"lineage":"s|m|f|w","start_ns":1,"gateways":{"g":2}}}`))
	f.Add([]byte("k|g|m|1m0s|1"), []byte(`{"window":{"key":"k|g|m|1m0s|1","kind":"sketch","hll":"AUg=","countmin":"AVQ="}}`))
	f.Add([]byte("L|x"), []byte(nil))
	f.Add([]byte("I|s|m|f|w|1|00ff"), []byte("1"))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		s := New(DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		ids := map[string]map[string]struct{}{}
		s.restoreRecord(&kgo.Record{Key: key, Value: value, Partition: 1}, ids)
		for _, w := range s.windows {
			w.encode()
			_ = w.output([]string{"site"})
			_ = w.complete(s.lineages[w.Lineage])
		}
	})
}
