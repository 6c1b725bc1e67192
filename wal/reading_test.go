package wal

import (
	"errors"
	"math"
	"slices"
	"testing"
	"unsafe"
)

func sampleBatch() Batch {
	return Batch{IngestNs: 1_700_000_000_123_456_789, Readings: []Reading{
		{Series: "env,device=pi-042,site=plant1", Field: "temp", Value: 21.5, TimeNs: 1_700_000_000_000_000_000},
		{Series: "env,device=pi-042,site=plant1", Field: "hum", Value: 40.1, TimeNs: 1_700_000_000_000_000_000},
		{Series: "ecg,device=w-7", Field: "value", Value: -0.125, TimeNs: 1_700_000_000_004_000_000},
		{Series: "ecg,device=w-7", Field: "value", Value: math.Inf(-1), TimeNs: 1_699_999_999_000_000_000},
		{Series: "", Field: "", Value: math.Float64frombits(0x7ff8_0000_dead_beef), TimeNs: -5},
	}}
}

func TestBatchRoundTrip(t *testing.T) {
	cases := map[string]Batch{
		"empty":  {IngestNs: 42},
		"sample": sampleBatch(),
		"one":    {Readings: []Reading{{Series: "a", Field: "b", Value: 1, TimeNs: math.MaxInt64}}},
		"min ts": {IngestNs: math.MaxInt64, Readings: []Reading{{Series: "a", Field: "b", TimeNs: math.MinInt64}}},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			enc := AppendBatch(nil, &b)
			var got Batch
			if err := DecodeBatch(enc, &got); err != nil {
				t.Fatal(err)
			}
			if got.IngestNs != b.IngestNs || len(got.Readings) != len(b.Readings) {
				t.Fatalf("got %+v, want %+v", got, b)
			}
			for i := range b.Readings {
				w, g := b.Readings[i], got.Readings[i]
				if w.Series != g.Series || w.Field != g.Field || w.TimeNs != g.TimeNs ||
					math.Float64bits(w.Value) != math.Float64bits(g.Value) {
					t.Fatalf("reading %d: got %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestBatchIsCompact(t *testing.T) {
	b := Batch{IngestNs: 1_700_000_000_000_000_000}
	for i := range 100 {
		b.Readings = append(b.Readings, Reading{Series: "ecg,device=wearable-0042", Field: "value",
			Value: float64(i) * 0.01, TimeNs: b.IngestNs + int64(i)*4_000_000})
	}
	enc := AppendBatch(nil, &b)
	if per := float64(len(enc)) / 100; per > 11.5 {
		t.Fatalf("%.1f bytes per reading, want at most 11.5", per)
	}
}

func TestDecodeBatchErrors(t *testing.T) {
	b := sampleBatch()
	enc := AppendBatch(nil, &b)
	for i := 0; i < len(enc); i++ {
		var got Batch
		if err := DecodeBatch(enc[:i], &got); !errors.Is(err, ErrBadBatch) {
			t.Fatalf("prefix of %d bytes: err %v, want ErrBadBatch", i, err)
		}
		if len(got.Readings) != 0 {
			t.Fatalf("prefix of %d bytes left %d readings", i, len(got.Readings))
		}
	}
	bad := map[string][]byte{
		"version":        append([]byte{9}, enc[1:]...),
		"trailing":       append(append([]byte(nil), enc...), 0),
		"huge count":     {batchVersion, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad series ref": AppendBatch(nil, &Batch{Readings: []Reading{{Series: "s", Field: "f"}}})[:0],
	}
	// A reading that refers past the series table.
	ref := AppendBatch(nil, &Batch{Readings: []Reading{{Series: "s", Field: "f"}}})
	ref[len(ref)-11] = 5
	bad["bad series ref"] = ref
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			var got Batch
			if err := DecodeBatch(in, &got); !errors.Is(err, ErrBadBatch) {
				t.Fatalf("err %v, want ErrBadBatch", err)
			}
		})
	}
}

func TestDecodeBatchReusesReadings(t *testing.T) {
	b := sampleBatch()
	enc := AppendBatch(nil, &b)
	var got Batch
	if err := DecodeBatch(enc, &got); err != nil {
		t.Fatal(err)
	}
	p := &got.Readings[0]
	if err := DecodeBatch(enc, &got); err != nil {
		t.Fatal(err)
	}
	if p != &got.Readings[0] {
		t.Fatal("decode did not reuse the readings slice")
	}
}

// TestBatchDecoderInterns: a BatchDecoder decodes as DecodeBatch, and once
// it has seen a batch's series and fields, decoding it again allocates
// nothing.
func TestBatchDecoderInterns(t *testing.T) {
	b := readingBatch(7, 1)
	src := AppendBatch(nil, &b)
	var bd BatchDecoder
	var got, want Batch
	if err := bd.Decode(src, &got); err != nil {
		t.Fatal(err)
	}
	if err := DecodeBatch(src, &want); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Readings, want.Readings) || got.IngestNs != want.IngestNs {
		t.Fatal("BatchDecoder and DecodeBatch disagree")
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = bd.Decode(src, &got) }); allocs != 0 {
		t.Errorf("%v allocations decoding a known batch", allocs)
	}
	if unsafe.StringData(got.Readings[0].Series) != unsafe.StringData(got.Readings[4].Series) {
		t.Error("one series decoded into two strings")
	}
}

func FuzzDecodeBatch(f *testing.F) {
	b := sampleBatch()
	f.Add(AppendBatch(nil, &b))
	f.Add(AppendBatch(nil, &Batch{}))
	f.Add([]byte{batchVersion, 0, 1, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		var got Batch
		if err := DecodeBatch(data, &got); err != nil {
			if len(got.Readings) != 0 {
				t.Fatal("failed decode left readings")
			}
			return
		}
		if len(got.Readings) > len(data)/minReadingBytes {
			t.Fatalf("%d readings from %d bytes", len(got.Readings), len(data))
		}
		if cap(got.Readings) > len(data)/minReadingBytes+1 {
			t.Fatalf("allocated %d readings for %d bytes", cap(got.Readings), len(data))
		}
		// decode(encode(x)) == x
		again := AppendBatch(nil, &got)
		var back Batch
		if err := DecodeBatch(again, &back); err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if back.IngestNs != got.IngestNs || len(back.Readings) != len(got.Readings) {
			t.Fatal("re-encoded batch differs")
		}
		for i := range got.Readings {
			g, w := back.Readings[i], got.Readings[i]
			if g.Series != w.Series || g.Field != w.Field || g.TimeNs != w.TimeNs ||
				math.Float64bits(g.Value) != math.Float64bits(w.Value) {
				t.Fatalf("reading %d differs after re-encode", i)
			}
		}
		if len(again) > len(data) {
			t.Fatalf("canonical encoding of %d bytes grew to %d", len(data), len(again))
		}
	})
}
