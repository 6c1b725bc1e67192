package sketches

import (
	"bytes"
	"encoding"
	"encoding/hex"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// The golden vectors of FORMAT.md: fixed inputs, exact bytes. A change to
// any encoding, parameter or hash fails TestGolden; rewrite the files only
// for an intended format change (with a new version byte), by
// `go test ./sketches/ -run TestGolden -update`.
var update = flag.Bool("update", false, "rewrite sketches/testdata/golden/*.hex")

// narrowValue is the i-th of the portable narrow-signal inputs (i in
// 0..999): 16.8 + 0.6·((7919·i) mod 1000)/1000 in IEEE double arithmetic,
// every value of the grid once, in a scrambled order.
func narrowValue(i int) float64 { return 16.8 + 0.6*(float64((7919*i)%1000)/1000) }

type goldenCase struct {
	name  string
	build func(t *testing.T) encoding.BinaryMarshaler
	fresh func() codec // decodes the bytes back
}

func goldenCases() []goldenCase {
	return []goldenCase{
		{"quantile-tiny", func(t *testing.T) encoding.BinaryMarshaler {
			q := NewQuantile()
			for _, v := range []float64{-2, 0, 1, 1, 17} {
				q.Add(v)
			}
			return q
		}, func() codec { return new(Quantile) }},
		{"quantile-narrow", func(t *testing.T) encoding.BinaryMarshaler {
			q := NewQuantile()
			for i := range 1000 {
				q.Add(narrowValue(i))
			}
			return q
		}, func() codec { return new(Quantile) }},
		{"quantile-wide", func(t *testing.T) encoding.BinaryMarshaler {
			// Cubes cross zero and span 1..8e6; 1e-300 and 1e300 force the
			// coarsest level and a collapsed positive range.
			q := NewQuantile()
			for i := range 400 {
				c := float64(i - 200)
				q.Add(c * c * c)
			}
			q.Add(1e-300)
			q.Add(1e300)
			return q
		}, func() codec { return new(Quantile) }},
		{"hll-abc", func(t *testing.T) encoding.BinaryMarshaler {
			h := NewHLL()
			for _, k := range []string{"a", "b", "c"} {
				h.AddString(k)
			}
			return h
		}, func() codec { return new(HLL) }},
		{"countmin-small", func(t *testing.T) encoding.BinaryMarshaler {
			c, err := NewCountMin(0.5, 0.25) // width ⌈e/0.5⌉ = 6, depth ⌈ln 4⌉ = 2
			if err != nil {
				t.Fatal(err)
			}
			c.AddString("a", 3)
			c.AddString("b", 1)
			c.AddString("c", 2)
			return c
		}, func() codec { return new(CountMin) }},
		{"topk-small", func(t *testing.T) encoding.BinaryMarshaler {
			tk, err := NewTopK(2, 0.5, 0.25)
			if err != nil {
				t.Fatal(err)
			}
			tk.AddString("a", 3)
			tk.AddString("b", 1)
			tk.AddString("c", 2)
			return tk
		}, func() codec { return new(TopK) }},
		{"reservoir-small", func(t *testing.T) encoding.BinaryMarshaler {
			r, err := NewReservoir(4, 42)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				r.Add(Sample{Value: float64(i), TimeNs: int64(i) * 1e9})
			}
			return r
		}, func() codec { return new(Reservoir) }},
	}
}

func goldenPath(name string) string { return filepath.Join("testdata", "golden", name+".hex") }

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(goldenPath(name))
	if err != nil {
		t.Fatalf("read golden %s: %v (run with -update to create it)", name, err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("decode golden %s: %v", name, err)
	}
	return b
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := mustMarshal(t, tc.build(t))
			if *update {
				if err := os.MkdirAll(filepath.Dir(goldenPath(tc.name)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(goldenPath(tc.name), []byte(hex.EncodeToString(got)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want := readGolden(t, tc.name)
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding changed (%d bytes, golden %d); a format change needs a new version byte and FORMAT.md:\ngot  %.200x\nwant %.200x",
					len(got), len(want), got, want)
			}
			// A consumer decoding the golden bytes gets the same sketch.
			v := tc.fresh()
			if err := v.UnmarshalBinary(want); err != nil {
				t.Fatalf("decode golden: %v", err)
			}
			if again := mustMarshal(t, v); !bytes.Equal(again, want) {
				t.Fatal("golden bytes do not re-encode to themselves")
			}
		})
	}
}

// TestGoldenAnswers pins what the golden sketches answer, the numbers
// FORMAT.md's worked examples quote.
func TestGoldenAnswers(t *testing.T) {
	var q Quantile
	if err := q.UnmarshalBinary(readGolden(t, "quantile-tiny")); err != nil {
		t.Fatal(err)
	}
	if q.Level() != 7 || q.Quantile(0.25) != 0 || math.Abs(q.Quantile(0.5)-1) > q.RelativeError() || q.Quantile(1) != 17 {
		t.Errorf("tiny: level %d p25 %v p50 %v p100 %v", q.Level(), q.Quantile(0.25), q.Quantile(0.5), q.Quantile(1))
	}
	if err := q.UnmarshalBinary(readGolden(t, "quantile-narrow")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ x, want float64 }{{0.5, 17.0994}, {0.9, 17.3394}, {0.99, 17.3934}} {
		if got := q.Quantile(c.x); math.Abs(got-c.want) > 0.0015 {
			t.Errorf("narrow p%v = %v, want %v ± 0.0015", 100*c.x, got, c.want)
		}
	}
	if err := q.UnmarshalBinary(readGolden(t, "quantile-wide")); err != nil {
		t.Fatal(err)
	}
	if q.Level() != QuantileMaxLevel || !q.pos.collapsed {
		t.Errorf("wide: level %d, positive range collapsed %v", q.Level(), q.pos.collapsed)
	}
	var h HLL
	if err := h.UnmarshalBinary(readGolden(t, "hll-abc")); err != nil {
		t.Fatal(err)
	}
	if h.Estimate() != 3 {
		t.Errorf("hll-abc estimate %d, want 3", h.Estimate())
	}
	var tk TopK
	if err := tk.UnmarshalBinary(readGolden(t, "topk-small")); err != nil {
		t.Fatal(err)
	}
	if top := tk.Top(); len(top) != 2 || top[0] != (Item{"a", 3}) || top[1].Key != "c" {
		t.Errorf("topk-small top %v, want a:3 then c", top)
	}
}

// The previous release's version 1 quantile encodings (fixed α = 2%), as
// its MarshalBinary wrote them: windows checkpoints and Kafka records hold
// such bytes. tiny is −2, 0, 1, 1, 17; narrow is 1,000 readings uniform in
// [16.8, 17.4].
const (
	quantileV1Tiny   = "015180027b14ae47e17a943f05010000000000000000c000000000000031402401000100010048000200024601"
	quantileV1Narrow = "015180027b14ae47e17a943fe807000039a69e36d3cc3040367a6ea143663140000000008e0102000200a70400c103"
)

func TestQuantileDecodesVersion1(t *testing.T) {
	for _, c := range []struct {
		name, hex string
		x, want   []float64 // answers of the previous release
	}{
		{"tiny", quantileV1Tiny, []float64{0.25, 0.5, 0.75}, []float64{0, 0.98, 0.98}},
		{"narrow", quantileV1Narrow, []float64{0.5, 0.9, 0.99}, []float64{16.800097860081426, 17.399469460937517, 17.399469460937517}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, _ := hex.DecodeString(c.hex)
			q := NewQuantile()
			if err := q.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if q.Level() != QuantileMaxLevel {
				t.Fatalf("version 1 decoded at level %d, want %d", q.Level(), QuantileMaxLevel)
			}
			for i, x := range c.x {
				if got := q.Quantile(x); math.Abs(got-c.want[i]) > 1e-12*math.Abs(c.want[i]) {
					t.Errorf("p%v = %v, previous release answered %v", 100*x, got, c.want[i])
				}
			}
			// A new sketch merges with it; the result is at level 8 with
			// both sketches' values.
			n := NewQuantile()
			for i := range 100 {
				n.Add(narrowValue(i))
			}
			if err := n.Merge(q); err != nil {
				t.Fatal(err)
			}
			if n.Level() != QuantileMaxLevel || n.Count() != q.Count()+100 {
				t.Fatalf("merged level %d count %d", n.Level(), n.Count())
			}
			// Re-encoded as version 2, it decodes to the same sketch.
			v2 := NewQuantile()
			if err := v2.UnmarshalBinary(mustMarshal(t, q)); err != nil || *v2 != *q {
				t.Fatalf("version 2 re-encoding differs (err %v)", err)
			}
		})
	}
}

// TestHashVectors pins the hashes FORMAT.md gives other languages:
// MetroHash64 seed 1337 for HLL (through AddHash, which skips the hash) and
// XXH64 seed 0 for Count-Min.
func TestHashVectors(t *testing.T) {
	for _, c := range []struct {
		key          string
		metro, xxh64 uint64
	}{
		{"", 0xe2f700c7be596c30, 0xef46db3751d8e999},
		{"a", 0xd924f06e80703f5f, 0xd24ec4f1a98c6e5b},
		{"b", 0x2646112ed2ce11df, 0x78452aa11af39f9b},
		{"c", 0x7cecfec479c3e056, 0xa3dad144c40657ed},
		{"device-0042", 0xd752c4e8377056e8, 0x792d8829fea76bef},
	} {
		byKey, byHash := NewHLL(), NewHLL()
		byKey.AddString(c.key)
		byHash.AddHash(c.metro)
		if !bytes.Equal(mustMarshal(t, byKey), mustMarshal(t, byHash)) {
			t.Errorf("%q: HLL hash is not MetroHash64(seed 1337) = %016x", c.key, c.metro)
		}
		if h := xxhash.Sum64String(c.key); h != c.xxh64 {
			t.Errorf("%q: XXH64 %016x, want %016x", c.key, h, c.xxh64)
		}
	}
}
