package wal

import (
	"context"
	"fmt"
)

// skipChunk bounds the skip frames of one append (21 bytes each on disk).
const skipChunk = 16 << 10

// SkipTo moves the log's next index past index, so that the next record
// appended gets index+1: it appends one skip frame (FORMAT.md: kind 2, no
// payload) for every index from LastIndex()+1 to index, durably (fsynced
// under batch and interval sync), and returns how many. Readers pass over
// skip frames silently. With LastIndex() >= index it does nothing.
//
// It exists because tidwall/wal numbers its entries without gaps, while an
// owner may have state that covers indexes the log no longer holds: a
// checkpoint or an outbox written before the tail of the log was lost (a
// torn tail cut at open, a power cut under sync mode none). New records
// must not reuse those indexes, or the owner takes them for records it has
// already applied. Call it at start, before anything else appends: it
// fails if another append got between.
func (l *Log) SkipTo(ctx context.Context, index uint64) (skipped uint64, err error) {
	for {
		last := l.durable.Load()
		if last >= index {
			return skipped, nil
		}
		n := min(index-last, skipChunk, uint64(l.cfg.MaxPendingBytes)/(2*frameHeader))
		recs := make([][]byte, n)
		for i := range recs {
			recs[i] = []byte{}
		}
		cost, err := l.sem.acquire(ctx, int64(n)*frameHeader)
		if err != nil {
			return skipped, fmt.Errorf("wal skip to %d: %w", index, err)
		}
		ch := make(chan error, 1)
		var first uint64
		if err := l.enqueueKind(recs, 0, cost, func(f, _ uint64, err error) { first = f; ch <- err }, false, kindSkip); err != nil {
			return skipped, fmt.Errorf("wal skip to %d: %w", index, err)
		}
		select {
		case err := <-ch:
			if err != nil {
				return skipped, fmt.Errorf("wal skip to %d: %w", index, err)
			}
		case <-ctx.Done():
			return skipped, fmt.Errorf("wal skip to %d: %w", index, ctx.Err())
		}
		if first != last+1 {
			return skipped, fmt.Errorf("wal skip to %d: another append got between (skip frames at %d, log ended at %d)", index, first, last)
		}
		skipped += n
		l.stats.skipped.Add(n)
	}
}
