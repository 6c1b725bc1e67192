package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir) // never returns
	}
	if os.Getenv(fsizeChildEnv) != "" {
		os.Exit(fsizeChild())
	}
	goleak.VerifyTestMain(m)
}

// testConfig is a config with small segments so tests cross boundaries.
func testConfig(mode SyncMode) Config {
	c := DefaultConfig()
	c.Sync = mode
	c.SyncInterval = 5 * time.Millisecond
	c.SegmentBytes = 64 * KiB
	c.MaxPendingBytes = 256 * KiB
	return c
}

func mustOpen(t testing.TB, dir string, cfg Config) *Log {
	t.Helper()
	l, err := Open(dir, cfg, nil)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return l
}

// payload returns the deterministic record of producer p, sequence s.
func payload(p, s int) []byte {
	n := 10 + (p*7919+s*104729)%300
	b := make([]byte, 0, n+16)
	b = fmt.Appendf(b, "%d/%d:", p, s)
	for len(b) < n {
		b = append(b, byte('a'+(p+s+len(b))%26))
	}
	return b
}

// readAll returns every record from index 1 on, keyed by index.
func readAll(t testing.TB, l *Log) map[uint64][]byte {
	t.Helper()
	out := map[uint64][]byte{}
	r := l.NewReader(1)
	for r.Next() {
		out[r.Index()] = bytes.Clone(r.Record())
	}
	if err := r.Err(); err != nil {
		t.Fatalf("read: %v", err)
	}
	return out
}

func TestAppendReadReopen(t *testing.T) {
	for _, mode := range syncModes {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			l := mustOpen(t, dir, testConfig(mode))
			const producers, per = 8, 150
			want := map[uint64][]byte{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for p := range producers {
				wg.Go(func() {
					for s := range per {
						recs := [][]byte{payload(p, s), payload(p, s+1000)}
						first, last, err := l.Append(context.Background(), recs)
						if err != nil {
							t.Errorf("append: %v", err)
							return
						}
						if last != first+1 {
							t.Errorf("range %d-%d for 2 records", first, last)
						}
						mu.Lock()
						want[first], want[last] = recs[0], recs[1]
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if got := l.LastIndex(); got != producers*per*2 {
				t.Fatalf("last index %d, want %d", got, producers*per*2)
			}
			check := func(l *Log) {
				got := readAll(t, l)
				if len(got) != len(want) {
					t.Fatalf("read %d records, want %d", len(got), len(want))
				}
				for i, w := range want {
					if !bytes.Equal(got[i], w) {
						t.Fatalf("record %d = %q, want %q", i, got[i], w)
					}
				}
			}
			check(l)
			st := l.Stats()
			if st.Segments < 3 {
				t.Errorf("only %d segments; the test should cross segment boundaries", st.Segments)
			}
			if mode != SyncNone && st.Fsyncs == 0 {
				t.Errorf("no fsyncs in %s mode", mode)
			}
			if mode == SyncBatch && st.Fsyncs >= st.Appends {
				t.Errorf("%d fsyncs for %d appends: no group commit", st.Fsyncs, st.Appends)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l2 := mustOpen(t, dir, testConfig(mode))
			defer l2.Close()
			check(l2)
			first, _, err := l2.Append(context.Background(), [][]byte{[]byte("after reopen")})
			if err != nil || first != producers*per*2+1 {
				t.Fatalf("append after reopen: index %d, %v", first, err)
			}
		})
	}
}

func TestSegmentTrackingMatchesDirectory(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, testConfig(SyncNone))
	defer l.Close()
	for i := range 2000 {
		if _, _, err := l.Append(context.Background(), [][]byte{payload(i, i), payload(i, i+7)}); err != nil {
			t.Fatal(err)
		}
	}
	files, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	l.stateMu.RLock()
	defer l.stateMu.RUnlock()
	if len(files) != len(l.segs) {
		t.Fatalf("directory has %d segments, log tracks %d", len(files), len(l.segs))
	}
	for i, f := range files {
		if f.base != l.segs[i].base || f.size != l.segs[i].size {
			t.Fatalf("segment %d: file base %d size %d, tracked base %d size %d",
				i, f.base, f.size, l.segs[i].base, l.segs[i].size)
		}
	}
}

func TestAppendErrors(t *testing.T) {
	l := mustOpen(t, t.TempDir(), testConfig(SyncBatch))
	if _, _, err := l.Append(context.Background(), nil); err != ErrNoRecords {
		t.Fatalf("empty append: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := l.Append(ctx, [][]byte{make([]byte, 512*1024)}); err != nil && err != context.Canceled {
		t.Fatalf("append with done ctx: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, _, err := l.Append(context.Background(), [][]byte{[]byte("x")}); err != ErrClosed {
		t.Fatalf("append after close: %v", err)
	}
}

func TestDirectoryLock(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, testConfig(SyncBatch))
	defer l.Close()
	if _, err := Open(dir, testConfig(SyncBatch), nil); err == nil {
		t.Fatal("second open of a locked log succeeded")
	}
}

func TestRetention(t *testing.T) {
	cases := []struct {
		name      string
		bytes     ByteSize
		age       time.Duration
		release   uint64
		wantFirst func(first uint64) bool
	}{
		{"nothing released keeps all", 0, 0, 0, func(f uint64) bool { return f == 1 }},
		{"released without history", 0, 0, 1 << 62, func(f uint64) bool { return f > 1 }},
		{"released within size budget", 100 * MiB, 0, 1 << 62, func(f uint64) bool { return f == 1 }},
		{"released past the age", 100 * MiB, time.Nanosecond, 1 << 62, func(f uint64) bool { return f > 1 }},
		{"release point bounds it", 0, 0, 500, func(f uint64) bool { return f > 1 && f <= 500 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(SyncNone)
			cfg.RetentionBytes, cfg.RetentionAge = tc.bytes, tc.age
			var clock atomic.Int64
			clock.Store(time.Now().UnixNano())
			now := func() time.Time { return time.Unix(0, clock.Load()) }
			l, err := openLog(t.TempDir(), cfg, nil, openOpts{now: now})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			for i := range 1500 {
				if _, _, err := l.Append(context.Background(), [][]byte{payload(i, i)}); err != nil {
					t.Fatal(err)
				}
			}
			clock.Add(int64(time.Hour)) // every segment is now an hour old
			l.Release(tc.release)
			// Retention runs on the writer after a release; an append
			// forces a writer turn, so it has run when this returns.
			if _, _, err := l.Append(context.Background(), [][]byte{[]byte("x")}); err != nil {
				t.Fatal(err)
			}
			first := l.FirstIndex()
			if !tc.wantFirst(first) {
				t.Fatalf("first index %d after release %d", first, tc.release)
			}
			got := readAll(t, l)
			for i := first; i <= 1500; i++ {
				if !bytes.Equal(got[i], payload(int(i-1), int(i-1))) {
					t.Fatalf("record %d lost or wrong after retention", i)
				}
			}
			if seg := l.Stats(); first > 1 && seg.RemovedSegments == 0 {
				t.Fatalf("first index moved but no segment counted as removed")
			}
		})
	}
}

func TestRetentionSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(SyncNone)
	cfg.RetentionBytes = 0
	l := mustOpen(t, dir, cfg)
	for i := range 1500 {
		if _, _, err := l.Append(context.Background(), [][]byte{payload(i, i)}); err != nil {
			t.Fatal(err)
		}
	}
	l.Release(1 << 62)
	if _, _, err := l.Append(context.Background(), [][]byte{[]byte("last")}); err != nil {
		t.Fatal(err)
	}
	first := l.FirstIndex()
	l.Close()
	l2 := mustOpen(t, dir, cfg)
	defer l2.Close()
	if got := l2.FirstIndex(); got != first {
		t.Fatalf("first index %d after reopen, was %d", got, first)
	}
	if got := l2.LastIndex(); got != 1501 {
		t.Fatalf("last index %d after reopen, want 1501", got)
	}
	if _, err := os.Stat(filepath.Join(dir, segmentName(1))); !os.IsNotExist(err) {
		t.Fatalf("first segment still on disk: %v", err)
	}
}

// clearCounter counts the store's ClearCache calls.
type clearCounter struct {
	store
	n *atomic.Int64
}

func (c clearCounter) ClearCache() error {
	c.n.Add(1)
	return c.store.ClearCache()
}

// openCountingClears opens a log in a temporary dir that counts its
// store's ClearCache calls; the log closes when the test ends.
func openCountingClears(t *testing.T, cfg Config) (*Log, *atomic.Int64) {
	t.Helper()
	clears := new(atomic.Int64)
	l, err := openLog(t.TempDir(), cfg, nil, openOpts{open: func(dir string, cfg Config) (store, error) {
		st, err := openTidwall(dir, cfg)
		return clearCounter{st, clears}, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, clears
}

// TestFollowingReaderReadsNoSegmentFile checks that a reader following an
// appending log is served from memory across segment rolls: the segment
// that was just rolled stays in the cache until the reader has read its
// end. Emptying the cache at the roll made tidwall/wal read the whole
// segment file back for the last group, once per segment.
func TestFollowingReaderReadsNoSegmentFile(t *testing.T) {
	cfg := testConfig(SyncNone)
	l, clears := openCountingClears(t, cfg)
	group := make([][]byte, 100)
	for i := range group {
		group[i] = make([]byte, 100)
	}
	r := l.NewReader(1)
	var readAlloc uint64
	var ms runtime.MemStats
	read := 0
	for l.Stats().Segments < 64 {
		if _, _, err := l.Append(context.Background(), group); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		for r.Next() {
			read++
		}
		runtime.ReadMemStats(&ms)
		readAlloc += ms.TotalAlloc - before
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if want := int(l.Stats().LastIndex); read != want {
		t.Fatalf("read %d records, want %d", read, want)
	}
	// Reading a segment file back allocates the file and its entry table:
	// over 63 rolls at least 63 × 64 KiB.
	if limit := uint64(cfg.SegmentBytes) * 63 / 8; readAlloc > limit {
		t.Errorf("the reader allocated %d bytes over 63 segment rolls, want < %d: segments were read back from disk", readAlloc, limit)
	}
	// The rolled segment is still dropped from the cache, once per roll.
	if c := clears.Load(); c < 60 {
		t.Errorf("%d cache clears over 63 rolls: rolled segments stay in memory", c)
	}
}

// TestRolledSegmentDropped checks that an appending log holds one segment
// in memory, not two, unless a reader is about to read the rolled one: with
// no reader the rolled segment leaves the cache at the roll; when a reader
// had reached it and then stalls, once the new tail is half full.
func TestRolledSegmentDropped(t *testing.T) {
	for _, withReader := range []bool{false, true} {
		t.Run(fmt.Sprint("reader=", withReader), func(t *testing.T) {
			cfg := testConfig(SyncNone)
			l, clears := openCountingClears(t, cfg)
			rec := [][]byte{make([]byte, 1000)}
			r := l.NewReader(1)
			for l.Stats().Segments < 2 {
				if _, _, err := l.Append(context.Background(), rec); err != nil {
					t.Fatal(err)
				}
				if withReader && l.Stats().Segments < 2 {
					for r.Next() {
					}
				}
			}
			want := int64(1)
			if withReader {
				want = 0
			}
			if c := clears.Load(); c != want {
				t.Fatalf("%d cache clears right after the roll, want %d", c, want)
			}
			for range int(cfg.SegmentBytes)/2/1000 + 2 {
				if _, _, err := l.Append(context.Background(), rec); err != nil {
					t.Fatal(err)
				}
			}
			if c := clears.Load(); c != 1 {
				t.Fatalf("%d cache clears with the tail half full, want 1", c)
			}
		})
	}
}

// TestReaderViewsStayValid: a record's view (Reader.Record) is never
// modified by the log, through appends to its segment, segment rolls,
// cache drops, retention removing its segment and a reopen: the forward
// sender holds views for a whole delivery round instead of copies.
func TestReaderViewsStayValid(t *testing.T) {
	cfg := testConfig(SyncBatch)
	cfg.RetentionBytes = 0
	l := mustOpen(t, t.TempDir(), cfg)
	ctx := context.Background()
	rec := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 600+i%50) }
	appendN := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, _, err := l.Append(ctx, [][]byte{rec(i)}); err != nil {
				t.Fatalf("append %d: %v", i, err)
			}
		}
	}
	held := map[uint64][]byte{}
	r := l.NewReader(1)
	readAllViews := func() {
		t.Helper()
		for r.Next() {
			held[r.Index()] = r.Record() // no copy
		}
		if err := r.Err(); err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	appendN(0, 10) // the tail segment, appended to after the reads
	readAllViews()
	appendN(10, 400) // several rolls
	readAllViews()
	l.Release(300)
	appendN(400, 410) // retention removes the segments before 300
	readAllViews()
	if l.FirstIndex() <= 1 {
		t.Fatalf("retention removed nothing: first index %d", l.FirstIndex())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if len(held) != 410 {
		t.Fatalf("read %d records, want 410", len(held))
	}
	for idx, v := range held {
		if !bytes.Equal(v, rec(int(idx-1))) {
			t.Fatalf("view of record %d changed", idx)
		}
	}
}

// TestNotifyBeforeAcknowledgements: the follower (the pipeline's stream)
// is woken as soon as a group is durable, not after every append's done
// callback has run. Under a saturating QoS 1 load a group holds thousands
// of appends, each done sending a PUBACK; readings waited for all of them
// before they could be applied. The done callback here holds until the
// follower's wake-up has been seen.
func TestNotifyBeforeAcknowledgements(t *testing.T) {
	l := mustOpen(t, t.TempDir(), testConfig(SyncBatch))
	defer l.Close()
	woken := make(chan struct{})
	res := make(chan error, 1)
	err := l.AppendAsync(context.Background(), [][]byte{[]byte("r")}, func(_, _ uint64, err error) {
		if err != nil {
			res <- err
			return
		}
		select {
		case <-woken:
			res <- nil
		case <-time.After(5 * time.Second):
			res <- errors.New("the follower was not notified while the done callback ran")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Notify():
		if got := l.LastIndex(); got != 1 {
			t.Errorf("notified with LastIndex %d, want 1", got)
		}
		close(woken)
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}
