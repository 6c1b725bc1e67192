package wal

import (
	"context"
	"fmt"
)

// syncWaiter is one Sync call waiting for the fsync that covers index.
type syncWaiter struct {
	index uint64
	done  chan error // 1-slot
}

// Sync is a barrier: it returns once every record up to index is covered
// by an fsync (SyncedIndex() >= index), asking the writer for one at once
// when none is due. Records appended best effort (TryAppendAsync) are
// acknowledged before their fsync, so a steady best-effort load always has
// some; a caller that must not get ahead of the disk (a checkpoint that
// covers index) waits here instead of for a moment when nothing is
// unsynced, which such a load never offers.
//
// index must not exceed LastIndex(). Under sync mode none every written
// record counts as synced. Sync returns ctx's error if ctx ends first,
// ErrClosed once the log is closing. Safe for concurrent use.
func (l *Log) Sync(ctx context.Context, index uint64) error {
	if l.synced.Load() >= index {
		return nil
	}
	if last := l.durable.Load(); index > last {
		return fmt.Errorf("wal sync up to %d: beyond the last record %d", index, last)
	}
	w := syncWaiter{index: index, done: make(chan error, 1)}
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return ErrClosed
	}
	l.syncWaiters = append(l.syncWaiters, w)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wal sync up to %d: %w", index, ctx.Err())
	}
}

// syncWanted reports whether a Sync call waits for an fsync.
func (l *Log) syncWanted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.syncWaiters) > 0
}

// releaseSyncWaiters releases the Sync calls the synced index covers, and
// every one with err when err is not nil (the log is closing).
func (l *Log) releaseSyncWaiters(err error) {
	synced := l.synced.Load()
	l.mu.Lock()
	defer l.mu.Unlock()
	keep := l.syncWaiters[:0]
	for _, w := range l.syncWaiters {
		switch {
		case w.index <= synced:
			w.done <- nil
		case err != nil:
			w.done <- err
		default:
			keep = append(keep, w)
		}
	}
	clear(l.syncWaiters[len(keep):])
	l.syncWaiters = keep
}
