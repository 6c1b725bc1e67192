package fleet

import (
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func FuzzDecodeInput(f *testing.F) {
	f.Add([]byte(`{"schema":"runnel.summary/v1","gateway":"g","series":"m,site=1","field":"f","window":"tumbling:1m","start_ns":0,"end_ns":60,"count":2,"sum":3,"min":1,"max":2,"mean":1.5,"stddev":0.7}`))
	f.Add([]byte(`{"schema":"runnel.sketch/v1","gateway":"g","group":"x","key":"m","start_ns":0,"end_ns":60,"readings":3,"hll":"AAE="}`))
	f.Add([]byte(`{"schema":"runnel.summary/v1","gateway":"g","series":"m\\,a,t\\=x=v\\|w","field":"f|g","window":"w","start_ns":1,"end_ns":2,"quantiles":"AQ=="}`))
	f.Add([]byte(`{"schema":"runnel.sketch/v1","gateway":"g","group":"x","key":"m,site=a\\,b","start_ns":0,"end_ns":60,"readings":3}`))
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

// escapeGroupPart escapes as windows writes a several-attribute group key.
func escapeGroupPart(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', '=', ' ', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// FuzzGroupKeyParts: a group key written as windows writes it parses back
// to its measurement and tags; any other key never panics.
func FuzzGroupKeyParts(f *testing.F) {
	f.Add("env", "site", "plant 1", "env,site=x")
	f.Add(`a\,b`, "t=x", `v\`, `\`)
	f.Fuzz(func(t *testing.T, meas, tag, val, raw string) {
		groupKeyParts(raw)
		if tag == "" {
			return
		}
		k := escapeGroupPart(meas) + "," + escapeGroupPart(tag) + "=" + escapeGroupPart(val)
		m, tags := groupKeyParts(k)
		if m != meas || len(tags) != 1 || tags[tag] != val {
			t.Fatalf("key %q parsed as %q %v, want %q %s=%q", k, m, tags, meas, tag, val)
		}
	})
}

// FuzzViewRecord: a changelog or output record, whatever its bytes, is
// kept or skipped by the query view, and what it keeps renders.
func FuzzViewRecord(f *testing.F) {
	f.Add(true, []byte("k|g|m|1m0s|site=|1"), []byte(`{"window":{"key":"k|g|m|1m0s|site=|1","kind":"sketch","hll":"AUg=","countmin":"AVQ="}}`))
	f.Add(true, []byte("s|m|f|w|site=1|1"), []byte(`{"window":{"key":"s|m|f|w|site=1|1","kind":"summary","count":2,"gateways":{"g":1},"quantiles":"AQ=="}}`))
	f.Add(false, []byte("s|m|f|w|site=1|1"), []byte(`{"schema":"runnel.fleet/v1","key":"s|m|f|w|site=1|1","end_ns":5}`))
	f.Add(true, []byte("I|x|1"), []byte("1"))
	f.Fuzz(func(t *testing.T, changelog bool, key, value []byte) {
		v := newView()
		r := &kgo.Record{Key: key, Value: value}
		if changelog {
			v.applyChangelog(r)
		} else {
			v.applyOutput(r)
		}
		for _, ow := range v.open {
			_ = ow.render([]string{"site"})
		}
	})
}
