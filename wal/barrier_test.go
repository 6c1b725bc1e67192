package wal

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSyncBarrier checks that Sync makes best-effort records durable at
// once (well before the one-second backstop), with an fsync that covers
// them, for each sync mode; that it refuses an index beyond the log; and
// that a waiter is released with ErrClosed, not left hanging, by Close.
func TestSyncBarrier(t *testing.T) {
	for _, mode := range []SyncMode{SyncBatch, SyncInterval, SyncNone} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := testConfig(mode)
			l, ev, _ := openFault(t, t.TempDir(), cfg, faultOpts{})
			defer l.Close()
			written := make(chan uint64, 1)
			for i := range 20 {
				if err := l.TryAppendAsync([][]byte{payload(7, i)}, func(_, last uint64, err error) {
					if err == nil && last == 20 {
						written <- last
					}
				}); err != nil {
					t.Fatal(err)
				}
			}
			last := <-written
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := l.Sync(ctx, last); err != nil {
				t.Fatalf("Sync(%d): %v", last, err)
			}
			if took := time.Since(start); mode != SyncInterval && took > bestEffortSync/2 {
				t.Errorf("Sync took %s: it waited for the backstop instead of forcing an fsync", took)
			}
			if got := l.SyncedIndex(); got < last {
				t.Fatalf("synced index %d after Sync(%d)", got, last)
			}
			if mode != SyncNone {
				ev.mu.Lock()
				covered := false
				for _, e := range ev.list {
					covered = covered || e.kind == "synced" && e.index >= last
				}
				ev.mu.Unlock()
				if !covered {
					t.Fatalf("Sync(%d) returned without an fsync covering it: %+v", last, ev.list)
				}
			}
			if err := l.Sync(ctx, last+5); err == nil {
				t.Fatalf("Sync beyond the last record succeeded")
			}
			l.Close()
			if err := l.Sync(ctx, last); err != nil {
				t.Fatalf("Sync of synced records after Close: %v", err)
			}
		})
	}
}

// TestSyncWaiterReleasedByClose: a Sync that cannot be satisfied (its
// fsync fails) ends with ErrClosed when the log closes.
func TestSyncWaiterReleasedByClose(t *testing.T) {
	l, _, _ := openFault(t, t.TempDir(), testConfig(SyncBatch), faultOpts{failSync: func(int64) bool { return true }})
	done := make(chan struct{})
	if err := l.TryAppendAsync([][]byte{[]byte("x")}, func(uint64, uint64, error) { close(done) }); err != nil {
		t.Fatal(err)
	}
	<-done
	errc := make(chan error, 1)
	go func() { errc <- l.Sync(context.Background(), 1) }()
	waitFor(t, func() bool { return l.syncWanted() || l.SyncedIndex() >= 1 }, "sync waiter registered")
	l.Close()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Fatalf("Sync after Close: %v, want nil or ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sync still waiting 10s after Close")
	}
}
