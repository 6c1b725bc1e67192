package wal

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// readingBatch returns a 100-reading batch like one an HTTP write or a
// biosignal message produces: a few series of one device.
func readingBatch(p, n int) Batch {
	b := Batch{IngestNs: 1_700_000_000_000_000_000 + int64(n)*1_000_000}
	for i := range 100 {
		b.Readings = append(b.Readings, Reading{
			Series: fmt.Sprintf("env,device=dev-%04d,site=plant1", p),
			Field:  [...]string{"temp", "hum", "pressure", "co2"}[i%4],
			Value:  20 + float64(i%17)*0.25,
			TimeNs: b.IngestNs + int64(i/4)*10_000_000,
		})
	}
	return b
}

// BenchmarkAppend measures group commit: producers each encode a
// 100-reading batch and append it, in batch and none sync modes in the same
// run. Figures: readings/s and fsyncs/s; compare batch to none per
// producer count (the target is batch ≥ 70 % of none at 64 producers).
func BenchmarkAppend(b *testing.B) {
	for _, producers := range []int{1, 8, 64} {
		for _, mode := range []SyncMode{SyncNone, SyncBatch} {
			b.Run(fmt.Sprintf("producers=%d/sync=%s", producers, mode), func(b *testing.B) {
				cfg := DefaultConfig()
				cfg.Sync = mode
				l := mustOpen(b, b.TempDir(), cfg)
				defer l.Close()
				batches := make([]Batch, producers)
				for p := range batches {
					batches[p] = readingBatch(p, 0)
				}
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				per := (b.N + producers - 1) / producers
				for p := range producers {
					wg.Go(func() {
						var enc BatchEncoder
						var buf []byte
						for range per {
							buf = enc.Append(buf[:0], &batches[p])
							if _, _, err := l.Append(context.Background(), [][]byte{buf}); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				el := time.Since(start).Seconds()
				st := l.Stats()
				b.ReportMetric(float64(per*producers*100)/el, "readings/s")
				b.ReportMetric(float64(st.Fsyncs)/el, "fsyncs/s")
				b.SetBytes(int64(st.Bytes) / int64(per*producers))
			})
		}
	}
}

// TestLiveHeapWhileAppending checks that an open log's live heap stays
// under twice its segment size while appending across several segments:
// tidwall/wal keeps the tail segment in memory (allocated whole at 17/16
// of the segment size), and with no reader following, the log drops the
// rolled one from its read cache at the roll.
func TestLiveHeapWhileAppending(t *testing.T) {
	if testing.Short() {
		t.Skip("measures heap over 16 MiB of appends")
	}
	cfg := DefaultConfig() // 1 MiB segments
	cfg.Sync = SyncNone
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	l := mustOpen(t, t.TempDir(), cfg)
	defer l.Close()
	var peak uint64
	var enc BatchEncoder
	var buf []byte
	bt := readingBatch(1, 0)
	for i := range 12000 { // ~16 MiB: many segments
		buf = enc.Append(buf[:0], &bt)
		if _, _, err := l.Append(context.Background(), [][]byte{buf}); err != nil {
			t.Fatal(err)
		}
		if i%500 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc-min(base, ms.HeapAlloc))
		}
	}
	if st := l.Stats(); st.Segments < 4 {
		t.Fatalf("only %d segments written", st.Segments)
	}
	limit := 2 * uint64(cfg.SegmentBytes)
	t.Logf("peak live heap %.1f MiB with %s segments (limit %.0f MiB)", float64(peak)/(1<<20), cfg.SegmentBytes, float64(limit)/(1<<20))
	if peak > limit {
		t.Fatalf("live heap %d bytes over twice the segment size (%d)", peak, limit)
	}
}
