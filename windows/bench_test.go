package windows

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

const benchPairs = 10_000

// benchStream returns rounds of readings: every round gives each of the
// 10,000 pairs (1,000 devices × 5 series × 2 fields) one reading, one
// second of event time after the previous round.
func benchKeys() (series []string, fields []string) {
	for d := range 1000 {
		for s := range 5 {
			series = append(series, fmt.Sprintf("env%d,device=d%04d,site=s%d", s, d, d%10))
		}
	}
	return series, []string{"temp", "hum"}
}

func benchConfig() Config {
	c := DefaultConfig()
	c.MemoryBudget = 512 * wal.MiB
	return c
}

func BenchmarkApply(b *testing.B) {
	series, fields := benchKeys()
	// burst=1 visits the 10,000 pairs round-robin (every update a cache
	// miss); burst=10 gives each pair 10 consecutive readings, as a device
	// batch does.
	for _, burst := range []int64{1, 10} {
		b.Run(fmt.Sprintf("engine/burst=%d", burst), func(b *testing.B) { benchEngine(b, series, fields, burst) })
	}
	b.Run("baremap", func(b *testing.B) {
		type agg4 struct {
			count         uint64
			sum, min, max float64
		}
		keys := make([]string, benchPairs)
		for k := range keys {
			keys[k] = series[k/2] + "\x00" + fields[k%2]
		}
		m := make(map[string]*agg4, benchPairs)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			k := keys[i%benchPairs]
			a := m[k]
			if a == nil {
				a = &agg4{min: 1e300, max: -1e300}
				m[k] = a
			}
			v := float64(i % 97)
			a.count++
			a.sum += v
			a.min = min(a.min, v)
			a.max = max(a.max, v)
		}
	})
}

// benchEngine measures Apply per reading (one b.N per reading) over
// 10,000 pairs with the default windows and groups.
func benchEngine(b *testing.B, series, fields []string, burst int64) {
	e := mustNew(b, benchConfig())
	const batchN = 500
	step := int64(100 * time.Millisecond)
	batch := wal.Batch{Readings: make([]wal.Reading, batchN)}
	var out []Emission
	var round, pos int64
	idx := uint64(0)
	next := func() {
		for j := range batch.Readings {
			k := (pos / burst) % benchPairs
			if pos > 0 && pos%(burst*benchPairs) == 0 {
				round++
			}
			t := (round*burst + pos%burst) * step
			batch.Readings[j] = wal.Reading{Series: series[k/2], Field: fields[k%2], Value: float64(k%97) + float64(round%13), TimeNs: t}
			pos++
		}
		batch.IngestNs = round * burst * step
		idx++
		out = e.Apply(idx, &batch, out[:0])
	}
	for range 3 * benchPairs / batchN * 40 { // warm up: every window and pane allocated
		next()
	}
	if st := e.Stats(); st.Pairs != benchPairs || st.OverflowReadings != 0 {
		b.Fatalf("pairs %d overflow %d", st.Pairs, st.OverflowReadings)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i += batchN {
		next()
	}
	b.StopTimer()
	// On a shared machine the wall time counts other processes' turns;
	// the process's CPU time (GC included) does not.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(e.Stats().MemoryBytes)/benchPairs, "accounted-B/pair")
}

func BenchmarkCheckpoint(b *testing.B) {
	series, fields := benchKeys()
	e := mustNew(b, benchConfig())
	batch := wal.Batch{}
	for round := range int64(30) {
		batch.Readings = batch.Readings[:0]
		for k := range benchPairs {
			batch.Readings = append(batch.Readings, wal.Reading{Series: series[k/2], Field: fields[k%2], Value: float64(k % 97), TimeNs: round * sec})
		}
		batch.IngestNs = round * sec
		e.Apply(uint64(round+1), &batch, nil)
	}
	var size int
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		data, err := e.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		size = len(data)
	}
	b.StopTimer()
	b.ReportMetric(float64(size), "bytes")
	b.ReportMetric(float64(size)/benchPairs, "bytes/pair")
	fresh := mustNew(b, benchConfig())
	data, _ := e.MarshalBinary()
	if err := fresh.UnmarshalBinary(data); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCheckpointStreamed checkpoints 10,000 pairs the way the stream
// does: BeginCheckpoint, then one Next of 256 KiB after each applied batch
// (every pair touched in turn, so most series are saved before a change) until the end. It reports the longest time the stream
// goroutine spent in one call (Begin, Next, or an Apply that saved series
// first: the stall windows and alerts see), the bytes those checkpoint
// calls allocated and the checkpoint's size.
func BenchmarkCheckpointStreamed(b *testing.B) {
	// A batch is one WAL record: an HTTP write or an MQTT message of a
	// gateway or bridge (50 readings), or a large one (500 readings over
	// 250 series): the save-before-change work of one Apply grows with
	// the series it touches.
	for _, n := range []int{50, 500} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) { benchCheckpointStreamed(b, n) })
	}
}

func benchCheckpointStreamed(b *testing.B, batchN int) {
	series, fields := benchKeys()
	e := mustNew(b, benchConfig())
	batch := wal.Batch{}
	idx := uint64(0)
	for round := range int64(30) {
		batch.Readings = batch.Readings[:0]
		for k := range benchPairs {
			batch.Readings = append(batch.Readings, wal.Reading{Series: series[k/2], Field: fields[k%2], Value: float64(k % 97), TimeNs: round * sec})
		}
		batch.IngestNs = round * sec
		idx++
		e.Apply(idx, &batch, nil)
	}
	small := wal.Batch{Readings: make([]wal.Reading, batchN)}
	pos := 0
	round := int64(30)
	nextBatch := func() {
		for j := range small.Readings {
			k := pos % benchPairs
			if k == 0 && pos > 0 {
				round++
			}
			small.Readings[j] = wal.Reading{Series: series[k/2], Field: fields[k%2], Value: float64(k % 89), TimeNs: round * sec}
			pos++
		}
		small.IngestNs = round * sec
		idx++
	}
	var out []Emission
	var maxBegin, maxApply, maxNext, maxBase time.Duration
	var ckptAlloc, baseAlloc uint64
	var calls []time.Duration // every call on the stream goroutine during a checkpoint
	var size int64
	var ms runtime.MemStats
	timed := func(f func()) (time.Duration, uint64) {
		runtime.ReadMemStats(&ms)
		a := ms.TotalAlloc
		t := time.Now()
		f()
		d := time.Since(t)
		runtime.ReadMemStats(&ms)
		return d, ms.TotalAlloc - a
	}
	apply := func() { out = e.Apply(idx, &small, out[:0]) }
	b.ResetTimer()
	for range b.N {
		var ck *Checkpoint
		d, a := timed(func() {
			var err error
			if ck, err = e.BeginCheckpoint(); err != nil {
				b.Fatal(err)
			}
		})
		maxBegin, ckptAlloc = max(maxBegin, d), ckptAlloc+a
		batches := 0
		for {
			nextBatch()
			d, a := timed(apply) // saves the series it changes first
			maxApply, ckptAlloc = max(maxApply, d), ckptAlloc+a
			calls = append(calls, d)
			batches++
			var err error
			d, a = timed(func() { _, err = ck.Next(256 << 10) })
			maxNext, ckptAlloc = max(maxNext, d), ckptAlloc+a
			calls = append(calls, d)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		size = ck.Size()
		// The same number of batches with no checkpoint running: what
		// Apply allocates and takes by itself (closed windows' summaries).
		for range batches {
			nextBatch()
			d, a := timed(apply)
			maxBase, baseAlloc = max(maxBase, d), baseAlloc+a
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(max(maxBegin, maxApply, maxNext))/1e6, "max-stall-ms")
	b.ReportMetric(float64(maxBegin)/1e6, "max-begin-ms")
	// On a shared machine the maximum catches preemption; the 99th
	// percentile shows the work itself.
	slices.Sort(calls)
	b.ReportMetric(float64(calls[len(calls)*99/100])/1e6, "p99-call-ms")
	b.ReportMetric(float64(maxApply)/1e6, "max-apply-ms")
	b.ReportMetric(float64(maxBase)/1e6, "max-apply-no-ckpt-ms")
	b.ReportMetric(float64(maxNext)/1e6, "max-next-ms")
	b.ReportMetric(float64(int64(ckptAlloc)-int64(baseAlloc))/float64(b.N), "ckpt-alloc-B/op")
	b.ReportMetric(float64(size), "bytes")
}

// BenchmarkPairMemory reports the live heap and the accounted bytes per
// (series, field) pair of 10,000 pairs after 30 rounds of readings, 10 s
// of event time apart: one reading per pair and round with the default
// windows ("default") and with the make-bench forward phase's single 10 s
// tumbling window (allowed lateness 0, so each round closes the window of
// the round before: "forward"); ten readings per pair and round, 1 s
// apart, with the default windows ("dense": every window has its quantile
// sketch). It measures memory, not time: run it with -benchtime 1x.
func BenchmarkPairMemory(b *testing.B) {
	fwd := benchConfig()
	fwd.Tumbling = []time.Duration{10 * time.Second}
	fwd.Sliding = nil
	fwd.AllowedLateness = 0
	for _, tc := range []struct {
		name  string
		c     Config
		burst int64
	}{{"default", benchConfig(), 1}, {"forward", fwd, 1}, {"dense", benchConfig(), 10}} {
		b.Run(tc.name, func(b *testing.B) {
			series, fields := benchKeys()
			var heap, acct float64
			for range b.N {
				base := heapAlloc()
				e := mustNew(b, tc.c)
				batch := wal.Batch{Readings: make([]wal.Reading, benchPairs)}
				var out []Emission
				idx := uint64(0)
				for round := range int64(30) {
					for j := range tc.burst {
						for k := range batch.Readings {
							batch.Readings[k] = wal.Reading{Series: series[k/2], Field: fields[k%2], Value: float64(k%97) + float64((round+j)%13), TimeNs: round*10*sec + j*sec}
						}
						batch.IngestNs = round*10*sec + j*sec
						idx++
						out = e.Apply(idx, &batch, out[:0])
					}
				}
				out, batch.Readings = nil, nil
				heap = float64(heapAlloc()-base) / benchPairs
				acct = float64(e.Stats().MemoryBytes) / benchPairs
				runtime.KeepAlive(e)
			}
			b.ReportMetric(heap, "heap-B/pair")
			b.ReportMetric(acct, "accounted-B/pair")
		})
	}
}
