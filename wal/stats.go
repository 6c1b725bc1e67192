package wal

import (
	"sync/atomic"
	"time"
)

// FsyncBuckets are the upper bounds of the fsync latency histogram in Stats.
var FsyncBuckets = []time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond,
	5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, time.Second,
}

type stats struct {
	appends, records, bytes, groups atomic.Uint64
	fsyncs, fsyncNs, fsyncMaxNs     atomic.Uint64
	fsyncHist                       [12]atomic.Uint64 // len(FsyncBuckets)+1, the last is +Inf
	writeErrors, recoveries         atomic.Uint64
	repairs, cutBytes, holes        atomic.Uint64
	corrupt, removedSegments        atomic.Uint64
	skipped                         atomic.Uint64
}

func (s *stats) observeFsync(d time.Duration) {
	s.fsyncs.Add(1)
	ns := uint64(d.Nanoseconds())
	s.fsyncNs.Add(ns)
	for {
		cur := s.fsyncMaxNs.Load()
		if ns <= cur || s.fsyncMaxNs.CompareAndSwap(cur, ns) {
			break
		}
	}
	i := 0
	for i < len(FsyncBuckets) && d > FsyncBuckets[i] {
		i++
	}
	s.fsyncHist[i].Add(1)
}

func (s *stats) noteRepair(r repairResult) {
	if !r.changed() {
		return
	}
	s.repairs.Add(1)
	s.cutBytes.Add(uint64(r.cutBytes))
	s.holes.Add(uint64(r.holes))
}

// Stats is a snapshot of a log's counters, for metrics and tests.
type Stats struct {
	Appends         uint64 // acknowledged Append calls
	Records         uint64 // acknowledged records
	Bytes           uint64 // acknowledged payload bytes
	Groups          uint64 // group writes (one WriteBatch each)
	Fsyncs          uint64
	FsyncTotal      time.Duration
	FsyncMax        time.Duration
	FsyncHist       []uint64 // counts per FsyncBuckets bound, then +Inf; not cumulative
	WriteErrors     uint64   // failed group writes or syncs (none of their appends acknowledged)
	Recoveries      uint64   // successful close-repair-reopen cycles after a failure
	Repairs         uint64   // repairs that changed the files (open or recovery)
	CutBytes        uint64   // bytes cut from torn or unacknowledged tails
	Holes           uint64   // records replaced by holes when a damaged segment was rewritten
	CorruptRecords  uint64   // records readers skipped because they failed verification
	RemovedSegments uint64   // segments removed by retention
	Failing         bool     // the last group write or sync failed, none succeeded since (Health)
	Skipped         uint64   // indexes passed over by SkipTo (skip frames written)
	Segments        int      // segment files now
	DiskBytes       int64    // bytes in segment files now
	FirstIndex      uint64
	LastIndex       uint64 // last acknowledged index
}

// Stats returns a snapshot of the log's counters. Safe for concurrent use.
func (l *Log) Stats() Stats {
	s := &l.stats
	out := Stats{
		Appends: s.appends.Load(), Records: s.records.Load(), Bytes: s.bytes.Load(),
		Groups: s.groups.Load(), Fsyncs: s.fsyncs.Load(),
		FsyncTotal: time.Duration(s.fsyncNs.Load()), FsyncMax: time.Duration(s.fsyncMaxNs.Load()),
		WriteErrors: s.writeErrors.Load(), Recoveries: s.recoveries.Load(),
		Repairs: s.repairs.Load(), CutBytes: s.cutBytes.Load(), Holes: s.holes.Load(),
		CorruptRecords: s.corrupt.Load(), RemovedSegments: s.removedSegments.Load(),
		Skipped: s.skipped.Load(), LastIndex: l.durable.Load(), Failing: l.failure.Load() != nil,
	}
	out.FsyncHist = make([]uint64, len(s.fsyncHist))
	for i := range s.fsyncHist {
		out.FsyncHist[i] = s.fsyncHist[i].Load()
	}
	out.FirstIndex = l.FirstIndex()
	l.stateMu.RLock()
	out.Segments = len(l.segs)
	for _, sg := range l.segs {
		out.DiskBytes += sg.size
	}
	l.stateMu.RUnlock()
	return out
}
