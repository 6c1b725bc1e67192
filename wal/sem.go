package wal

import (
	"context"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

// byteSem bounds the bytes of appends waiting for the writer: a
// semaphore.Weighted, which serves waiters in arrival order so a large
// append is not starved by small ones, plus what the log needs on top: a
// request larger than the whole budget takes the whole budget (Weighted
// would wait for ever), and close fails every waiter and every later
// acquire with ErrClosed.
type byteSem struct {
	sem *semaphore.Weighted
	max int64
	// closed ends the waits of close; its context is never a caller's.
	closed     context.Context
	closeWaits context.CancelFunc
	isClosed   atomic.Bool
	waiting    atomic.Int32 // acquires blocked now, for tests
}

func newByteSem(max int64) *byteSem {
	s := &byteSem{sem: semaphore.NewWeighted(max), max: max}
	s.closed, s.closeWaits = context.WithCancel(context.Background())
	return s
}

// acquire takes n bytes (at most the whole budget) and returns how many it
// took. It blocks until they are free, ctx ends, or the semaphore closes
// (ErrClosed).
func (s *byteSem) acquire(ctx context.Context, n int64) (int64, error) {
	n = min(n, s.max)
	if s.isClosed.Load() {
		return 0, ErrClosed
	}
	if s.sem.TryAcquire(n) { // the common case, without a context to build
		return n, nil
	}
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closed, cancel)
	defer stop()
	if err := s.sem.Acquire(wctx, n); err != nil {
		if s.isClosed.Load() {
			return 0, ErrClosed
		}
		return 0, ctx.Err()
	}
	if s.isClosed.Load() {
		s.sem.Release(n)
		return 0, ErrClosed
	}
	return n, nil
}

// tryAcquire takes n bytes (at most the whole budget) if they are free now
// and no one is waiting before it; else ErrFull, or ErrClosed.
func (s *byteSem) tryAcquire(n int64) (int64, error) {
	n = min(n, s.max)
	if s.isClosed.Load() {
		return 0, ErrClosed
	}
	if !s.sem.TryAcquire(n) {
		return 0, ErrFull
	}
	return n, nil
}

// release returns n bytes and wakes the waiters that now fit, in order.
func (s *byteSem) release(n int64) { s.sem.Release(n) }

// close fails every waiter and every later acquire with ErrClosed. Bytes
// already taken are still released by their holders.
func (s *byteSem) close() {
	s.isClosed.Store(true)
	s.closeWaits()
}
