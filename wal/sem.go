package wal

import (
	"context"
	"sync"
)

// byteSem bounds the bytes of appends waiting for the writer. Waiters are
// served in arrival order so a large append is not starved by small ones; a
// request larger than the whole budget takes the whole budget.
type byteSem struct {
	mu      sync.Mutex
	avail   int64
	max     int64
	closed  bool
	waiters []*semWaiter
}

type semWaiter struct {
	n     int64
	ready chan struct{}
}

func newByteSem(max int64) *byteSem { return &byteSem{avail: max, max: max} }

// acquire takes n bytes (at most the whole budget) and returns how many it
// took. It blocks until they are free, ctx ends, or the semaphore closes
// (ErrClosed).
func (s *byteSem) acquire(ctx context.Context, n int64) (int64, error) {
	n = min(n, s.max)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	if len(s.waiters) == 0 && s.avail >= n {
		s.avail -= n
		s.mu.Unlock()
		return n, nil
	}
	w := &semWaiter{n: n, ready: make(chan struct{})}
	s.waiters = append(s.waiters, w)
	s.mu.Unlock()

	select {
	case <-w.ready:
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return 0, ErrClosed
		}
		return n, nil
	case <-ctx.Done():
		s.mu.Lock()
		select {
		case <-w.ready:
			// Granted (or closed) while we gave up: hand the bytes back.
			closed := s.closed
			s.mu.Unlock()
			if !closed {
				s.release(n)
			}
		default:
			for i, x := range s.waiters {
				if x == w {
					s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
					break
				}
			}
			s.grantLocked() // the next waiter may fit now that w left the head
			s.mu.Unlock()
		}
		return 0, ctx.Err()
	}
}

// tryAcquire takes n bytes (at most the whole budget) if they are free now
// and no one is waiting before it; else ErrFull, or ErrClosed.
func (s *byteSem) tryAcquire(n int64) (int64, error) {
	n = min(n, s.max)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	if len(s.waiters) > 0 || s.avail < n {
		return 0, ErrFull
	}
	s.avail -= n
	return n, nil
}

// release returns n bytes and wakes the waiters that now fit, in order.
func (s *byteSem) release(n int64) {
	s.mu.Lock()
	s.avail += n
	s.grantLocked()
	s.mu.Unlock()
}

func (s *byteSem) grantLocked() {
	for len(s.waiters) > 0 && s.avail >= s.waiters[0].n {
		w := s.waiters[0]
		s.waiters = s.waiters[1:]
		s.avail -= w.n
		close(w.ready)
	}
}

// close fails every waiter and every later acquire with ErrClosed.
func (s *byteSem) close() {
	s.mu.Lock()
	s.closed = true
	for _, w := range s.waiters {
		close(w.ready)
	}
	s.waiters = nil
	s.mu.Unlock()
}
