package windows

import (
	"runtime"
	"strconv"
	"testing"

	"github.com/runnel-iot/runnel/wal"
)

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestMemoryBudget feeds 1,000,000 distinct series through the default
// 64 MiB budget: the live heap must stay within the budget plus the heap
// of an empty engine, and the excess must go to the overflow series.
func TestMemoryBudget(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 200_000
	}
	c := DefaultConfig()
	base := heapAlloc()
	e := mustNew(t, c)
	empty := heapAlloc() - base

	const batch = 1000
	b := wal.Batch{Readings: make([]wal.Reading, batch)}
	var out []Emission
	buf := make([]byte, 0, 64)
	for i := 0; i < n; i += batch {
		b.IngestNs = int64(i) * 1000 // 1 ms of processing time per 1000 readings
		for j := range b.Readings {
			k := i + j
			buf = strconv.AppendInt(append(buf[:0], "env,device=d"...), int64(k), 10)
			buf = append(buf, ",site=s"...)
			buf = strconv.AppendInt(buf, int64(k%7), 10)
			b.Readings[j] = wal.Reading{Series: string(buf), Field: "temp", Value: float64(k % 100), TimeNs: int64(k) * 1000}
		}
		out = e.Apply(uint64(i/batch+1), &b, out[:0])
	}
	clear(b.Readings)
	out = nil
	live := heapAlloc() - base
	st := e.Stats()
	budget := uint64(c.MemoryBudget)
	t.Logf("series %d pairs %d overflow readings %d (distinct ≈ %d); accounted %d B; live heap %d B (empty engine %d B, budget %d B); %.0f B accounted per pair",
		st.Series, st.Pairs, st.OverflowReadings, st.OverflowSeries, st.MemoryBytes, live, empty, budget, float64(st.MemoryBytes)/float64(st.Pairs))
	if live > budget+empty {
		t.Errorf("live heap %d B exceeds budget %d B + empty engine %d B", live, budget, empty)
	}
	if st.MemoryBytes > int64(budget) {
		t.Errorf("accounted %d B exceeds budget %d B", st.MemoryBytes, budget)
	}
	if st.OverflowReadings == 0 || st.OverflowSeries < uint64(n/2) {
		t.Errorf("overflow readings %d, series %d: the budget never overflowed", st.OverflowReadings, st.OverflowSeries)
	}
	if int(st.OverflowReadings)+st.Pairs-1 != n {
		t.Errorf("overflow %d + pairs %d ≠ %d readings", st.OverflowReadings, st.Pairs, n)
	}
	runtime.KeepAlive(e)
}
