package pipeline

import (
	"context"
	"fmt"
	"path/filepath"
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
// longest single checkpoint step on the stream goroutine (Stats) and the
// checkpoint's size. BenchmarkCheckpointSteps measures the steps and the
// allocations without the rest of the stream around them.
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
	measure := func(until func() bool) (batches int64) {
		n0 := w.batches.Load()
		w.start()
		testutil.WaitFor(b, 10*time.Minute, func() (bool, string) { return until(), "" })
		w.halt()
		return w.batches.Load() - n0
	}
	// The same stream without checkpoints (interval 1h): its allocations
	// per batch.
	gaps.on.Store(true)
	t0 := time.Now()
	measure(func() bool { return time.Since(t0) > 2*time.Second })
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
	n := measure(func() bool {
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
	gapMax, gapP99 := gaps.take()
	b.ReportMetric(float64(gapMax)/1e6, "max-gap-ms")
	b.ReportMetric(float64(gapP99)/1e6, "p99-gap-ms")
	b.ReportMetric(float64(baseMax)/1e6, "max-gap-no-ckpt-ms")
	b.ReportMetric(float64(baseP99)/1e6, "p99-gap-no-ckpt-ms")
	b.ReportMetric(float64(maxStep)/1e6, "max-step-ms")
	b.ReportMetric(float64(st.CheckpointBytes), "ckpt-B")
	b.ReportMetric(float64(n)/ckpts, "batches/ckpt")
}

// checkpointStep is the longest step of the last checkpoint on the stream
// goroutine (before streamed checkpoints: the whole checkpoint).
func checkpointStep(st Stats) time.Duration { return st.CheckpointStall }

// BenchmarkCheckpointSteps measures one checkpoint of 10,000 pairs (the
// default windows, 30 readings each) on the stream goroutine alone, with
// no writer or scheduler noise from the rest of the stream: whole is the
// path before streamed checkpoints (MarshalBinary of both engines, the
// blob, the file written and committed, all on the stream), streamed the
// path now (Begin, then a chunk after each batch of 50 readings applied,
// the commit off the stream). It reports the longest step on the stream
// goroutine (for streamed also the longest Apply of a batch while the
// checkpoint saves series before changing them, and the same Apply with no
// checkpoint running), and the bytes allocated per checkpoint (everything
// allocated from Begin to the commit's end, Applies included) next to the
// checkpoint's size.
func BenchmarkCheckpointSteps(b *testing.B) {
	for _, mode := range []string{"whole", "streamed"} {
		b.Run(mode, func(b *testing.B) { benchCheckpointSteps(b, mode == "streamed") })
	}
}

func benchCheckpointSteps(b *testing.B, streamed bool) {
	series, fields := benchSeries()
	r := newRig(b)
	r.walCfg.Sync = wal.SyncNone
	r.win = windows.DefaultConfig()
	r.win.MemoryBudget = 512 * wal.MiB
	spy := &ckSpy{}
	p := driven(b, r, spy)
	w := &benchWriter{r: r, series: series, fields: fields}
	var dec wal.BatchDecoder
	var batch wal.Batch
	var out []windows.Emission
	var idx uint64
	apply := func(rec []byte) {
		idx = r.append(rec)
		if err := dec.Decode(rec, &batch); err != nil {
			b.Fatal(err)
		}
		out = p.engine.Apply(idx, &batch, out[:0])
	}
	for range 30 * benchPairs / 500 {
		apply(w.record(500))
	}
	ctx := context.Background()
	var ms runtime.MemStats
	alloc := func() uint64 {
		runtime.ReadMemStats(&ms)
		return ms.TotalAlloc
	}
	// The batches of one checkpoint, encoded before: the benchmark's own
	// allocations stay out of the figures.
	recs := make([][]byte, 400)
	for i := range recs {
		recs[i] = w.record(50)
	}
	whole, err := wal.OpenCheckpoints(filepath.Join(r.dir, "whole"), nil)
	if err != nil {
		b.Fatal(err)
	}
	var maxStep, maxBegin, maxApply, maxApplyIdle time.Duration
	var steps, applies []time.Duration
	var allocs, size uint64
	for i := range recs[:100] { // Apply alone
		t := time.Now()
		apply(recs[i])
		maxApplyIdle = max(maxApplyIdle, time.Since(t))
	}
	b.ResetTimer()
	for range b.N {
		a0 := alloc()
		if !streamed {
			t := time.Now()
			wb, err := p.engine.MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			ab, err := p.alerts.MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			data := encodeState(wb, ab, encodeAlertsConfig(p.alertsCfg))
			if _, err := whole.Write(idx, data); err != nil {
				b.Fatal(err)
			}
			maxStep = max(maxStep, time.Since(t))
			allocs += alloc() - a0
			size = uint64(len(data))
			apply(recs[len(recs)-1]) // the state moves on
			continue
		}
		t := time.Now()
		if !p.beginCheckpoint(ctx, true) {
			b.Fatal("no checkpoint began")
		}
		maxBegin = max(maxBegin, time.Since(t))
		maxStep = max(maxStep, maxBegin)
		for i := 0; p.ck != nil; i++ {
			t := time.Now()
			apply(recs[i%len(recs)])
			applies = append(applies, time.Since(t))
			maxApply = max(maxApply, applies[len(applies)-1])
			t = time.Now()
			p.stepCheckpoint(ctx)
			steps = append(steps, time.Since(t))
			maxStep = max(maxStep, steps[len(steps)-1])
		}
		p.waitCommit()
		allocs += alloc() - a0
		size = uint64(p.Stats().CheckpointBytes)
	}
	b.StopTimer()
	b.ReportMetric(float64(maxStep)/1e6, "max-step-ms")
	if streamed {
		b.ReportMetric(float64(maxBegin)/1e6, "max-begin-ms")
		slices.Sort(steps)
		b.ReportMetric(float64(steps[len(steps)*99/100])/1e6, "p99-step-ms")
		b.ReportMetric(float64(maxApply)/1e6, "max-apply-ms")
		slices.Sort(applies)
		b.ReportMetric(float64(applies[len(applies)*99/100])/1e6, "p99-apply-ms")
		b.ReportMetric(float64(maxApplyIdle)/1e6, "max-apply-no-ckpt-ms")
	}
	b.ReportMetric(float64(allocs)/float64(b.N), "alloc-B/ckpt")
	b.ReportMetric(float64(size), "ckpt-B")
}

// BenchmarkStreamBatch is the stream's cost per WAL record, each one
// reading (one MQTT publish), as Run follows the log: read, decode, the
// windows (default config) and alerts Apply, the outlets, over 10,000
// (series, field) pairs visited round-robin, event time 10 us apart (few
// windows close: the update cost). The WAL does not fsync (the
// figure is the stream's, not the disk's); the records are appended in
// chunks while Run follows, as under load.
func BenchmarkStreamBatch(b *testing.B) {
	r := newRig(b)
	r.walCfg.Sync = wal.SyncNone
	r.win = windows.DefaultConfig()
	r.start()
	series, fields := benchSeries()
	base := int64(3600 * 1000 * 1e9)
	rec := func(i int) []byte {
		s, f := series[i%len(series)], fields[(i/len(series))%len(fields)]
		ts := base + int64(i)*int64(10*time.Microsecond) // a 10 s window closes every 1,000,000 records
		return wal.AppendBatch(nil, &wal.Batch{IngestNs: ts, Readings: []wal.Reading{{Series: s, Field: f, Value: float64(i % 100), TimeNs: ts}}})
	}
	// Warm: every pair exists.
	var last uint64
	for i := 0; i < benchPairs; i += 1000 {
		chunk := make([][]byte, 0, 1000)
		for j := i; j < i+1000; j++ {
			chunk = append(chunk, rec(j))
		}
		last = r.append(chunk...)
	}
	r.waitApplied(last)
	recs := make([][]byte, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(len(recs), b.N-done)
		for j := range n {
			recs[j] = rec(benchPairs + done + j)
		}
		last = r.append(recs[:n]...)
		done += n
	}
	for r.p.Windows().AppliedIndex() < last {
		time.Sleep(100 * time.Microsecond) // polling the end, off the CPU the stream needs
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
}
