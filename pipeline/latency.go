package pipeline

import (
	"sync/atomic"
	"time"
)

// AppliedBuckets are the upper bounds of the ingest-to-applied latency
// histogram (Pipeline.AppliedLatency): from a batch's ingest time stamp
// (IngestNs, taken before its fsync) to the end of its windows and alerts
// Apply, with the outlets queued. Fine around the targets (2 ms at p50,
// 5 and 20 ms at p99): a quantile read from the buckets is interpolated
// within one, so a coarse bucket there would hide a missed target.
var AppliedBuckets = []time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond, 750 * time.Microsecond, time.Millisecond,
	1500 * time.Microsecond, 2 * time.Millisecond, 3 * time.Millisecond, 4 * time.Millisecond,
	5 * time.Millisecond, 7500 * time.Microsecond, 10 * time.Millisecond, 15 * time.Millisecond,
	20 * time.Millisecond, 30 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 5 * time.Second,
}

// latencyHist counts observations per AppliedBuckets bound, then +Inf;
// written by the stream goroutine, read by /metrics.
type latencyHist struct {
	counts [21]atomic.Uint64 // len(AppliedBuckets)+1
	sumNs  atomic.Int64
}

func (h *latencyHist) observe(d time.Duration) {
	d = max(d, 0) // a clock step back
	i := 0
	for i < len(AppliedBuckets) && d > AppliedBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
}

// AppliedLatency returns the ingest-to-applied histogram of the batches
// applied live (replayed ones are left out: their age is the downtime):
// counts per AppliedBuckets bound, then +Inf, not cumulative, and their sum.
// Safe for concurrent use.
func (p *Pipeline) AppliedLatency() (counts []uint64, sum time.Duration) {
	return p.appliedLat.snapshot()
}

// AlertLatency returns the ingest-to-published histogram of the alert
// events published live: from the ingest time stamp of the batch that
// raised one to its OnAlert call, in AppliedLatency's form.
func (p *Pipeline) AlertLatency() (counts []uint64, sum time.Duration) {
	return p.alertLat.snapshot()
}

func (h *latencyHist) snapshot() (counts []uint64, sum time.Duration) {
	counts = make([]uint64, len(h.counts))
	for i := range counts {
		counts[i] = h.counts[i].Load()
	}
	return counts, time.Duration(h.sumNs.Load())
}
