package wal

import (
	"context"
	"errors"
	"testing"
)

// TestByteSem checks what the log needs of its pending-bytes semaphore on
// top of semaphore.Weighted: a request over the budget takes the whole
// budget, waiters are served in order (a try never overtakes a waiter),
// a cancelled waiter lets the next one in, and close fails waiters and
// later acquires with ErrClosed.
func TestByteSem(t *testing.T) {
	ctx := context.Background()
	s := newByteSem(100)
	if n, err := s.acquire(ctx, 500); err != nil || n != 100 {
		t.Fatalf("acquire over the budget: %d, %v; want 100, nil", n, err)
	}
	if _, err := s.tryAcquire(1); !errors.Is(err, ErrFull) {
		t.Fatalf("tryAcquire on a full budget: %v, want ErrFull", err)
	}
	s.release(100)

	if _, err := s.acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	// A waiter for 50 (does not fit), then one cancelled before it is served.
	big := make(chan error, 1)
	go func() { _, err := s.acquire(ctx, 50); big <- err }()
	waitFor(t, func() bool { return queued(s) }, "a waiter for 50 bytes")
	if _, err := s.tryAcquire(10); !errors.Is(err, ErrFull) {
		t.Fatalf("tryAcquire of 10 free bytes with a waiter before it: %v, want ErrFull", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() { _, err := s.acquire(cctx, 30); cancelled <- err }()
	waitFor(t, func() bool { return s.waiting.Load() == 2 }, "a second waiter")
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want context.Canceled", err)
	}
	s.release(60)
	if err := <-big; err != nil {
		t.Fatalf("the first waiter after the release: %v", err)
	}

	// 50 held: a waiter for 80 is failed by close, as is every later call.
	closed := make(chan error, 1)
	go func() { _, err := s.acquire(ctx, 80); closed <- err }()
	waitFor(t, func() bool { return queued(s) }, "a waiter for 80 bytes")
	s.close()
	if err := <-closed; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiter at close: %v, want ErrClosed", err)
	}
	if _, err := s.acquire(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("acquire after close: %v, want ErrClosed", err)
	}
	if _, err := s.tryAcquire(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("tryAcquire after close: %v, want ErrClosed", err)
	}
	s.release(50) // holders still release after close
}

// queued reports whether an acquire waits in the semaphore's queue:
// Weighted refuses even a zero-byte try then (and takes nothing
// otherwise).
func queued(s *byteSem) bool { return !s.sem.TryAcquire(0) }
