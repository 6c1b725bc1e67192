package gateway

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// The automatic soft memory limit (gateway.memory_limit: 0) follows the
// heap the last collection found live:
//
//	limit = 28 MiB + 1.5 × max(0, live − 14 MiB)
//
// Go's default lets the heap double between collections, and its scavenger
// keeps the freed pages of the largest recent heap: on the mixed workload
// of make bench (4 publishers with 1,000 QoS 1 messages in flight each,
// 1,000 devices, 10 s windows, forwarding on), with 10-13 MB live, peak RSS
// was 41-47 MiB. The 28 MiB floor holds it near 36 MiB (the binary's
// mapped code is another ~12 MiB) for no measurable CPU (CPU per message
// 1.06-1.19x the bare broker's with and without it, 2-core VM). A live
// heap a little over 14 MiB (a burst of closing windows) leaves the heap
// little room, but collections of a small heap are cheap, and the limit
// rises smoothly rather than jumping.
//
// A limit the heap presses against costs CPU: the collector runs more
// often and the allocator returns pages to the OS as it goes. A fixed
// 31 MiB cost QoS 0 floods a third of their throughput and a 10,000-series
// forward load two thirds, and even 2 × live + 2 MiB cost the forward load
// 10 %.
// Large heaps collect at 1.5 × their growth past 14 MiB: a 50 MB live
// heap at 82 MiB instead of the collector's own 2 × live.
//
// Measured again for issue 17 (make bench phases of 10 s, 2-core VM,
// alternating runs): with 28 MiB + 1.5 × (live − 14 MiB), the forward
// phase (50-60 MiB live) peaked at 104-107 MiB instead of 150-155, but
// took 2.2 CPU-s per 100k summaries instead of 1.4-1.5 and acknowledged
// 22-25k summaries/s instead of 40-43k; with 1.0 × it peaked at 81-86 MiB
// for 3-5× the CPU. On QoS 1 (under 20 MiB live) 24 MiB + 1.5 × (live −
// 16 MiB) peaked at 31-38 MiB instead of 45-47 for 16-34 % more CPU per
// message, 26 MiB + 2 × (live − 16 MiB) at 38-43 MiB for 3-23 % more. A
// tighter limit trades CPU for RSS at a steep rate; RSS comes down with
// the live heap and the allocation rate, not with this formula.
//
// Measured once more after the forward path's allocations were cut (the
// hand-written summary JSON, views instead of copies in the sender,
// bounded hand-overs to the outbox writer: about a third less CPU per
// summary), same phases and machine, alternating: 2.5 × (live − 14 MiB)
// peaked at 116-132 MiB in the forward phase (52-61 MB live) for 0.97-1.26
// CPU-s per 100k summaries; 2 × at 100-109 MiB for 1.34-1.35; 1.5 × at
// 85-99 MiB for 1.07-1.69 (most runs 1.3-1.4); 1.25 × at 85-90 MiB for
// 1.76-1.95; 1 × at 77-90 MiB for 2.4-2.5. 1.5 × keeps the forward phase
// under the 1.5-2.0 CPU-s it took before those changes, and on QoS 1 it
// peaked at 37.5 MiB (2.5 ×: 38.8-42.6) for the same CPU per message
// (0.84-0.93 of the bare broker's; 2.5 ×: 0.93-0.97), the floor binding
// there until a burst of closing windows lifts the live heap past 14 MiB.
const (
	autoLimitFloor = 28 << 20
	autoLimitEvery = 250 * time.Millisecond
)

// autoLimit is the automatic limit for a live heap of live bytes.
func autoLimit(live uint64) int64 {
	l := int64(min(live, 1<<50)) // no overflow below
	return autoLimitFloor + max(0, l-autoLimitFloor/2)*3/2
}

// autoTuners counts the gateways of this process running the automatic
// limit (one, except in tests); the limit the first one found is restored
// when the last one stops.
var autoTuners struct {
	sync.Mutex
	n     int
	saved int64
}

// setMemoryLimit applies gateway.memory_limit, unless GOMEMLIMIT is set
// (the operator set the runtime's limit directly; GOMEMLIMIT=off turns the
// automatic limit off). It reports whether the limit is automatic: then
// the caller runs tuneMemoryLimit and calls releaseMemoryLimit after it.
func (g *Gateway) setMemoryLimit() (auto bool) {
	if os.Getenv("GOMEMLIMIT") != "" {
		g.logger.Info("memory limit from GOMEMLIMIT", "limit_bytes", debug.SetMemoryLimit(-1))
		return false
	}
	if l := g.cfg.Gateway.MemoryLimit; l != 0 {
		debug.SetMemoryLimit(int64(l))
		return false
	}
	autoTuners.Lock()
	defer autoTuners.Unlock()
	if autoTuners.n == 0 {
		autoTuners.saved = debug.SetMemoryLimit(autoLimit(liveHeap()))
	}
	autoTuners.n++
	return true
}

// releaseMemoryLimit ends one setMemoryLimit that returned true.
func releaseMemoryLimit() {
	autoTuners.Lock()
	defer autoTuners.Unlock()
	if autoTuners.n--; autoTuners.n == 0 {
		debug.SetMemoryLimit(autoTuners.saved)
	}
}

// tuneMemoryLimit keeps the automatic limit at autoLimit of the live heap
// until ctx ends.
func tuneMemoryLimit(ctx context.Context) error {
	t := time.NewTicker(autoLimitEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		want := autoLimit(liveHeap())
		if debug.SetMemoryLimit(-1) != want {
			debug.SetMemoryLimit(want)
		}
	}
}

// liveHeap returns the heap the last collection marked live (0 before the
// first one).
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
