package sketches

import (
	"encoding"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

type sizer interface{ SizeBytes() int }

func reportSize(b *testing.B, s sizer) {
	b.ReportMetric(float64(s.SizeBytes()), "B/sketch")
}

func benchMarshal(b *testing.B, s interface {
	encoding.BinaryMarshaler
	sizer
}) {
	b.ReportAllocs()
	var n int
	for b.Loop() {
		buf, _ := s.MarshalBinary()
		n = len(buf)
	}
	b.ReportMetric(float64(n), "B/encoding")
}

func BenchmarkHLL(b *testing.B) {
	h := NewHLL()
	addKeys(h, 0, 100_000)
	o := NewHLL()
	addKeys(o, 50_000, 150_000)
	b.Run("Add", func(b *testing.B) {
		b.ReportAllocs()
		defer reportSize(b, h)
		var buf [8]byte
		i := uint64(0)
		for b.Loop() {
			binary.LittleEndian.PutUint64(buf[:], i)
			h.Add(buf[:])
			i++
		}
	})
	b.Run("Estimate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.Estimate()
		}
	})
	b.Run("Merge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = h.Merge(o)
		}
	})
	b.Run("Marshal", func(b *testing.B) { benchMarshal(b, h) })
}

func BenchmarkCountMin(b *testing.B) {
	stream, _ := zipfStream(1<<16, 9)
	keys := make([][4]byte, len(stream))
	for i, k := range stream {
		binary.LittleEndian.PutUint32(keys[i][:], k)
	}
	c, o := NewCountMinDefault(), NewCountMinDefault()
	b.Run("Add", func(b *testing.B) {
		b.ReportAllocs()
		defer reportSize(b, c)
		i := 0
		for b.Loop() {
			c.Add(keys[i&(len(keys)-1)][:], 1)
			i++
		}
	})
	b.Run("Merge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = o.Merge(c)
		}
	})
	b.Run("Marshal", func(b *testing.B) { benchMarshal(b, c) })

	tk, tk2 := NewTopKDefault(), NewTopKDefault()
	for i := range keys {
		tk2.Add(keys[len(keys)-1-i][:], 1)
	}
	b.Run("TopKAdd", func(b *testing.B) {
		b.ReportAllocs()
		defer reportSize(b, tk)
		i := 0
		for b.Loop() {
			tk.Add(keys[i&(len(keys)-1)][:], 1)
			i++
		}
	})
	b.Run("TopKMerge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = tk.Merge(tk2)
		}
	})
	b.Run("TopKMarshal", func(b *testing.B) { benchMarshal(b, tk) })
}

func BenchmarkReservoir(b *testing.B) {
	r, o := NewReservoirDefault(1), NewReservoirDefault(2)
	for i := range 1000 {
		o.Add(Sample{Value: float64(i), TimeNs: int64(i)})
	}
	b.Run("Add", func(b *testing.B) {
		b.ReportAllocs()
		defer reportSize(b, r)
		i := 0
		for b.Loop() {
			r.Add(Sample{Value: float64(i), TimeNs: int64(i)})
			i++
		}
	})
	b.Run("Merge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.Merge(o)
		}
	})
	b.Run("Marshal", func(b *testing.B) { benchMarshal(b, r) })
}

func BenchmarkQuantile(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 3))
	vals := make([]float64, 1<<16)
	for i := range vals {
		vals[i] = 20 + 15*rng.NormFloat64()
	}
	q, o := NewQuantile(), NewQuantile()
	for _, v := range vals {
		o.Add(-v)
	}
	b.Run("Add", func(b *testing.B) {
		b.ReportAllocs()
		defer reportSize(b, q)
		i := 0
		for b.Loop() {
			q.Add(vals[i&(len(vals)-1)])
			i++
		}
	})
	b.Run("Quantile", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			q.Quantile(0.99)
		}
	})
	// A short window: Reset every 32 readings, so the level climbs from 0
	// again each time (wide: 20±15 reaches level 8; narrow: 17±0.3 stays
	// low). Per reading.
	narrow := make([]float64, len(vals))
	for i := range narrow {
		narrow[i] = 17 + 0.3*rng.NormFloat64()
	}
	for _, w := range []struct {
		name string
		vals []float64
	}{{"Window32Wide", vals}, {"Window32Narrow", narrow}} {
		b.Run(w.name, func(b *testing.B) {
			b.ReportAllocs()
			s := NewQuantile()
			i := 0
			for b.Loop() {
				if i%32 == 0 {
					s.Reset()
				}
				s.Add(w.vals[i&(len(w.vals)-1)])
				i++
			}
		})
	}
	b.Run("Merge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := *q
			_ = m.Merge(o)
		}
	})
	b.Run("Marshal", func(b *testing.B) { benchMarshal(b, q) })
}
