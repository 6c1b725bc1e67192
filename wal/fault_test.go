package wal

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"time"

	tidwal "github.com/tidwall/wal"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// faultStore wraps the real store: it records the order of writes, syncs
// and acknowledgements, and fails a chosen call.
type faultStore struct {
	store
	ev *events
	// failWrite and failSync, when they return true for the n-th call
	// (counted from 1 across reopens), make that call fail. A failing
	// write still writes, as a partial write to the file would.
	failWrite, failSync func(n int64) bool
	writes, syncs       *atomic.Int64
}

var errInjected = errors.New("injected I/O error")

func (f *faultStore) WriteBatch(b *tidwal.Batch) error {
	err := f.store.WriteBatch(b)
	if err == nil && f.failWrite != nil && f.failWrite(f.writes.Add(1)) {
		return errInjected
	}
	return err
}

func (f *faultStore) Sync() error {
	last, _ := f.store.LastIndex()
	err := f.store.Sync()
	if err == nil && f.failSync != nil && f.failSync(f.syncs.Add(1)) {
		return errInjected
	}
	f.ev.add(event{kind: "synced", index: last})
	return err
}

type event struct {
	kind  string
	index uint64
}

type events struct {
	mu   sync.Mutex
	list []event
}

func (e *events) add(ev event) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
}

type faultOpts struct {
	failWrite, failSync func(n int64) bool
}

func openFault(t *testing.T, dir string, cfg Config, fo faultOpts) (*Log, *events, *atomic.Int64) {
	t.Helper()
	ev := &events{}
	var opens, writes, syncs atomic.Int64
	l, err := openLog(dir, cfg, nil, openOpts{open: func(dir string, cfg Config) (store, error) {
		opens.Add(1)
		st, err := openTidwall(dir, cfg)
		if err != nil {
			return nil, err
		}
		return &faultStore{store: st, ev: ev, failWrite: fo.failWrite, failSync: fo.failSync, writes: &writes, syncs: &syncs}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	return l, ev, &opens
}

// TestNoReleaseBeforeSync checks, over many concurrent appends, that every
// append returned only after a sync that covered its last record.
func TestNoReleaseBeforeSync(t *testing.T) {
	for _, mode := range []SyncMode{SyncBatch, SyncInterval} {
		t.Run(string(mode), func(t *testing.T) {
			l, ev, _ := openFault(t, t.TempDir(), testConfig(mode), faultOpts{})
			defer l.Close()
			var wg sync.WaitGroup
			for p := range 16 {
				wg.Go(func() {
					for s := range 40 {
						_, last, err := l.Append(context.Background(), [][]byte{payload(p, s)})
						if err != nil {
							t.Error(err)
							return
						}
						ev.add(event{kind: "acked", index: last})
					}
				})
			}
			wg.Wait()
			var synced uint64
			for _, e := range ev.list {
				switch e.kind {
				case "synced":
					synced = max(synced, e.index)
				case "acked":
					if e.index > synced {
						t.Fatalf("record %d acknowledged before any sync covered it (synced through %d)", e.index, synced)
					}
				}
			}
		})
	}
}

func TestInjectedFailures(t *testing.T) {
	cases := []struct {
		name string
		fo   faultOpts
	}{
		{"write error", faultOpts{failWrite: func(n int64) bool { return n == 5 || n == 9 }}},
		{"sync error", faultOpts{failSync: func(n int64) bool { return n == 5 || n == 9 }}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _, opens := openFault(t, dir, testConfig(SyncBatch), tc.fo)
			acked := map[uint64][]byte{}
			failed := 0
			for i := range 20 {
				rec := payload(1, i)
				first, _, err := l.Append(context.Background(), [][]byte{rec})
				if err != nil {
					if !errors.Is(err, errInjected) {
						t.Fatalf("append %d: %v, want the injected error", i, err)
					}
					failed++
					continue
				}
				if _, dup := acked[first]; dup {
					t.Fatalf("index %d acknowledged twice", first)
				}
				acked[first] = rec
			}
			if failed != 2 {
				t.Fatalf("%d appends failed, want 2", failed)
			}
			if got := opens.Load(); got != 3 {
				t.Fatalf("store opened %d times, want 3 (open + a reopen per failure)", got)
			}
			check := func(l *Log) {
				got := readAll(t, l)
				if len(got) != len(acked) {
					t.Fatalf("log holds %d records, %d acknowledged: a failed append's record survived", len(got), len(acked))
				}
				for i, w := range acked {
					if string(got[i]) != string(w) {
						t.Fatalf("record %d = %q, want %q", i, got[i], w)
					}
				}
			}
			check(l)
			if st := l.Stats(); st.WriteErrors != 2 || st.Recoveries != 2 {
				t.Fatalf("write errors %d, recoveries %d; want 2 and 2", st.WriteErrors, st.Recoveries)
			}
			l.Close()
			l2 := mustOpen(t, dir, testConfig(SyncBatch))
			defer l2.Close()
			check(l2)
		})
	}
}

// TestFailureFailsWholeGroup: every append of a failed group fails, and
// the appends queued behind it succeed after recovery.
func TestFailureFailsWholeGroup(t *testing.T) {
	gate := make(chan struct{})
	var once sync.Once
	l, _, _ := openFault(t, t.TempDir(), testConfig(SyncBatch), faultOpts{failSync: func(n int64) bool {
		if n == 1 {
			once.Do(func() { <-gate }) // hold the first sync so a group forms behind it
		}
		return n == 2
	}})
	defer l.Close()
	first := make(chan error, 1)
	go func() {
		_, _, err := l.Append(context.Background(), [][]byte{[]byte("first")})
		first <- err
	}()
	// Queue a group behind the held sync, then release it.
	results := make(chan error, 8)
	waitFor(t, func() bool { return l.stats.groups.Load() == 1 }, "first group written")
	for i := range 8 {
		go func() {
			_, _, err := l.Append(context.Background(), [][]byte{payload(3, i)})
			results <- err
		}()
	}
	waitFor(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return len(l.queue) == 8 }, "8 appends queued")
	close(gate)
	if err := <-first; err != nil {
		t.Fatalf("first append: %v", err)
	}
	var failed int
	for range 8 {
		if err := <-results; err != nil {
			failed++
		}
	}
	if failed != 8 {
		t.Fatalf("%d of the 8 grouped appends failed, want all", failed)
	}
	if _, _, err := l.Append(context.Background(), [][]byte{[]byte("after")}); err != nil {
		t.Fatalf("append after recovery: %v", err)
	}
	if got := len(readAll(t, l)); got != 2 {
		t.Fatalf("log holds %d records, want 2", got)
	}
}

func TestBackpressureBlocksAppend(t *testing.T) {
	gate := make(chan struct{})
	cfg := testConfig(SyncBatch)
	cfg.MaxPendingBytes = 64 * KiB
	var once sync.Once
	l, _, _ := openFault(t, t.TempDir(), cfg, faultOpts{failSync: func(n int64) bool {
		once.Do(func() { <-gate })
		return false
	}})
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		_, _, err := l.Append(context.Background(), [][]byte{[]byte("held")})
		done <- err
	}()
	waitFor(t, func() bool { return l.stats.groups.Load() == 1 }, "first group written")
	// Fill the pending budget; the next append must block, and give up
	// with its context.
	big := make([]byte, 60*1024)
	filled := make(chan error, 1)
	go func() {
		_, _, err := l.Append(context.Background(), [][]byte{big})
		filled <- err
	}()
	waitFor(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return len(l.queue) == 1 }, "budget filled")
	ctx, cancel := context.WithCancel(context.Background())
	blocked := make(chan error, 1)
	go func() {
		_, _, err := l.Append(ctx, [][]byte{big})
		blocked <- err
	}()
	waitFor(t, func() bool { return l.sem.waiting.Load() == 1 }, "third append waiting for budget")
	cancel()
	if err := <-blocked; !errors.Is(err, context.Canceled) {
		t.Fatalf("blocked append: %v, want context.Canceled", err)
	}
	close(gate)
	for _, c := range []chan error{done, filled} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
}

// waitFor is testutil.WaitFor, 10 s, for a condition named by what.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) { return cond(), "waiting for " + what })
}

func TestAsyncAppends(t *testing.T) {
	gate := make(chan struct{})
	cfg := testConfig(SyncBatch)
	cfg.MaxPendingBytes = 64 * KiB
	var once sync.Once
	l, _, _ := openFault(t, t.TempDir(), cfg, faultOpts{failSync: func(n int64) bool {
		once.Do(func() { <-gate })
		return false
	}})
	var mu sync.Mutex
	var order []uint64
	done := func(first, last uint64, err error) {
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		order = append(order, first)
		mu.Unlock()
	}
	if err := l.AppendAsync(context.Background(), [][]byte{[]byte("a")}, done); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return l.stats.groups.Load() == 1 }, "first group written")
	// With the first sync held, fill the budget: the best-effort append is
	// refused at once, never blocked.
	if err := l.AppendAsync(context.Background(), [][]byte{make([]byte, 60*1024)}, done); err != nil {
		t.Fatal(err)
	}
	if err := l.TryAppendAsync([][]byte{make([]byte, 8*1024)}, done); !errors.Is(err, ErrFull) {
		t.Fatalf("TryAppendAsync on a full budget: %v, want ErrFull", err)
	}
	close(gate)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 2 }, "both appends acknowledged")
	if order[0] != 1 || order[1] != 2 {
		t.Fatalf("callbacks in order %v, want [1 2]", order)
	}
	if err := l.TryAppendAsync([][]byte{[]byte("b")}, done); err != nil {
		t.Fatalf("TryAppendAsync with budget free: %v", err)
	}
	l.Close()
	if err := l.TryAppendAsync([][]byte{[]byte("c")}, done); !errors.Is(err, ErrClosed) {
		t.Fatalf("TryAppendAsync after close: %v", err)
	}
	if len(order) != 3 {
		t.Fatalf("%d callbacks, want 3 (close drains the queue)", len(order))
	}
}

// TestBestEffortAppendsDoNotForceFsync: records appended best effort are
// released once written; the next acknowledged append's fsync, or the
// backstop timer, makes them durable.
func TestBestEffortAppendsDoNotForceFsync(t *testing.T) {
	l := mustOpen(t, t.TempDir(), testConfig(SyncBatch))
	defer l.Close()
	var released atomic.Int64
	for i := range 50 {
		if err := l.TryAppendAsync([][]byte{payload(5, i)}, func(_, _ uint64, err error) {
			if err != nil {
				t.Error(err)
			}
			released.Add(1)
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return released.Load() == 50 }, "best-effort appends released")
	if st := l.Stats(); st.LastIndex != 50 {
		t.Fatalf("last index %d after 50 best-effort appends", st.LastIndex)
	}
	// An acknowledged append syncs everything before it too.
	last, _, err := l.Append(context.Background(), [][]byte{[]byte("acked")})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.SyncedIndex(); got != last {
		t.Fatalf("synced index %d after an acknowledged append at %d", got, last)
	}
	// Without one, the backstop syncs within a second or so.
	for i := range 10 {
		if err := l.TryAppendAsync([][]byte{payload(6, i)}, func(uint64, uint64, error) {}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return l.SyncedIndex() == last+10 }, "backstop fsync of best-effort records")
}

// TestHealthAfterFailure: Health says the log cannot accept, with the
// error, from a failed write until a later append is written again.
func TestHealthAfterFailure(t *testing.T) {
	var fail atomic.Bool
	l, _, _ := openFault(t, t.TempDir(), testConfig(SyncBatch), faultOpts{failWrite: func(int64) bool { return fail.Load() }})
	defer l.Close()
	if ok, reason := l.Health(); !ok {
		t.Fatalf("fresh log: Health = false %q", reason)
	}
	fail.Store(true)
	if _, _, err := l.Append(context.Background(), [][]byte{payload(1, 1)}); !errors.Is(err, errInjected) {
		t.Fatalf("append = %v, want the injected error", err)
	}
	if ok, reason := l.Health(); ok || !strings.HasPrefix(reason, "write failed: ") || !strings.HasSuffix(reason, errInjected.Error()) {
		t.Errorf("after a failed write: Health = %v %q", ok, reason)
	}
	if !l.Stats().Failing {
		t.Error("Stats.Failing false after a failed write")
	}
	fail.Store(false)
	if _, _, err := l.Append(context.Background(), [][]byte{payload(1, 2)}); err != nil {
		t.Fatal(err)
	}
	if ok, reason := l.Health(); !ok || l.Stats().Failing {
		t.Errorf("after a successful append: Health = false %q", reason)
	}
}
