package pipeline

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// benchPairs is the state checkpointed: 5,000 series (1,000 devices × 5)
// × 2 fields.
const benchPairs = 10_000

func benchSeries() (series, fields []string) {
	for d := range 1000 {
		for s := range 5 {
			series = append(series, fmt.Sprintf("env%d,device=d%04d,site=s%d", s, d, d%10))
		}
	}
	return series, []string{"temp", "hum"}
}

// gapMeter keeps the times between two batches handed to the stream
// (Reader.Next returning true), while on.
type gapMeter struct {
	on   atomic.Bool
	mu   sync.Mutex
	gaps []time.Duration
}

func (g *gapMeter) add(d time.Duration) {
	g.mu.Lock()
	g.gaps = append(g.gaps, d)
	g.mu.Unlock()
}

// take returns the longest gap and the 99th percentile, and starts over.
func (g *gapMeter) take() (longest, p99 time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gs := g.gaps
	g.gaps = nil
	if len(gs) == 0 {
		return 0, 0
	}
	slices.Sort(gs)
	return gs[len(gs)-1], gs[len(gs)*99/100]
}

type timedLog struct {
	Log
	g *gapMeter
}

func (l timedLog) NewReader(from uint64) Reader {
	return &timedReader{Reader: l.Log.NewReader(from), g: l.g}
}

type timedReader struct {
	Reader
	g    *gapMeter
	last time.Time
}

func (r *timedReader) Next() bool {
	ok := r.Reader.Next()
	if ok {
		now := time.Now()
		if r.g.on.Load() && !r.last.IsZero() {
			r.g.add(now.Sub(r.last))
		}
		r.last = now
	}
	return ok
}

// benchWriter appends a batch of 50 readings every millisecond, visiting
// the 10,000 pairs in turn (every series is changed during a checkpoint,
// the worst case for saving series before a change); event time goes on
// by a second per round, so windows close.
type benchWriter struct {
	r       *rig
	series  []string
	fields  []string
	pos     int
	round   int64
	batches atomic.Int64
	stop    chan struct{}
	done    sync.WaitGroup
}

func (w *benchWriter) record(n int) []byte {
	b := wal.Batch{Readings: make([]wal.Reading, 0, n)}
	for range n {
		k := w.pos % benchPairs
		if k == 0 && w.pos > 0 {
			w.round++
		}
		w.pos++
		b.Readings = append(b.Readings, wal.Reading{Series: w.series[k/2], Field: w.fields[k%2], Value: float64(k % 89), TimeNs: (1e6 + w.round) * 1e9})
	}
	b.IngestNs = (1e6 + w.round) * 1e9
	return wal.AppendBatch(nil, &b)
}

func (w *benchWriter) start() {
	w.stop = make(chan struct{})
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			if _, _, err := w.r.log.Append(context.Background(), [][]byte{w.record(50)}); err != nil {
				panic(err)
			}
			w.batches.Add(1)
		}
	}()
}

func (w *benchWriter) halt() {
	close(w.stop)
	w.done.Wait()
}

// BenchmarkCheckpointStall runs the stream over 10,000 (series, field)
// pairs with the default windows while a writer appends a batch of 50
// readings every millisecond, and checkpoints every 100 ms; b.N is the
// number of checkpoints. It reports the longest gap between two batches
// handed to the stream and its 99th percentile (the stall windows and
// alerts see, plus the writer's own pace and the machine's scheduling:
// the same stream without checkpoints gives the floor, no-ckpt), the
// longest single checkpoint step on the stream goroutine, and the bytes
// allocated per checkpoint (the allocations of the same stream without
// checkpoints subtracted) next to the checkpoint's size.
func BenchmarkCheckpointStall(b *testing.B) {
	series, fields := benchSeries()
	r := newRig(b)
	r.walCfg.Sync = wal.SyncNone
	r.win = windows.DefaultConfig()
	r.win.MemoryBudget = 512 * wal.MiB
	gaps := &gapMeter{}
	r.wrap = func(l Log) Log { return timedLog{l, gaps} }
	w := &benchWriter{r: r, series: series, fields: fields}
	r.start()
	var last uint64
	for range 30 * benchPairs / 500 {
		last = r.append(w.record(500))
	}
	r.waitApplied(last)
	if st := r.p.Windows().Stats(); st.Pairs < benchPairs || st.OverflowReadings > 0 {
		b.Fatalf("pairs %d overflow %d", st.Pairs, st.OverflowReadings)
	}
	var ms runtime.MemStats
	measure := func(until func() bool) (alloc uint64, batches int64) {
		runtime.ReadMemStats(&ms)
		a0, n0 := ms.TotalAlloc, w.batches.Load()
		w.start()
		testutil.WaitFor(b, 10*time.Minute, func() (bool, string) { return until(), "" })
		w.halt()
		runtime.ReadMemStats(&ms)
		return ms.TotalAlloc - a0, w.batches.Load() - n0
	}
	// The same stream without checkpoints (interval 1h): its allocations
	// per batch.
	gaps.on.Store(true)
	t0 := time.Now()
	baseAlloc, baseN := measure(func() bool { return time.Since(t0) > 2*time.Second })
	perBatch := float64(baseAlloc) / float64(max(baseN, 1))
	gaps.on.Store(false)
	baseMax, baseP99 := gaps.take()
	r.stop()

	r.every = 100 * time.Millisecond
	r.start()
	testutil.WaitFor(b, time.Minute, func() (bool, string) { return r.p.Replayed(), "replayed" })
	c0 := r.p.Stats().Checkpoints
	var maxStep time.Duration
	gaps.on.Store(true)
	b.ResetTimer()
	alloc, n := measure(func() bool {
		st := r.p.Stats()
		if st.Checkpoints > c0 {
			maxStep = max(maxStep, checkpointStep(st))
		}
		return st.Checkpoints >= c0+uint64(b.N)
	})
	b.StopTimer()
	gaps.on.Store(false)
	st := r.p.Stats()
	ckpts := float64(st.Checkpoints - c0)
	extra := float64(alloc) - perBatch*float64(n)
	gapMax, gapP99 := gaps.take()
	b.ReportMetric(float64(gapMax)/1e6, "max-gap-ms")
	b.ReportMetric(float64(gapP99)/1e6, "p99-gap-ms")
	b.ReportMetric(float64(baseMax)/1e6, "max-gap-no-ckpt-ms")
	b.ReportMetric(float64(baseP99)/1e6, "p99-gap-no-ckpt-ms")
	b.ReportMetric(float64(maxStep)/1e6, "max-step-ms")
	b.ReportMetric(extra/ckpts, "alloc-B/ckpt")
	b.ReportMetric(float64(st.CheckpointBytes), "ckpt-B")
	b.ReportMetric(float64(n)/ckpts, "batches/ckpt")
}

// checkpointStep is the longest step of the last checkpoint on the stream
// goroutine (before streamed checkpoints: the whole checkpoint).
func checkpointStep(st Stats) time.Duration { return st.CheckpointStall }
