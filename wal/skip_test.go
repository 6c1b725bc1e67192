package wal

import (
	"context"
	"testing"
)

// TestSkipTo checks that SkipTo moves the next index past the given one
// with skip frames that survive a reopen, that readers pass over them
// silently (not counted as corrupt), and that it does nothing when the log
// already reaches the index.
func TestSkipTo(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(SyncBatch)
	cfg.MaxPendingBytes = 64 << 10 // several skip appends for a long gap
	l := mustOpen(t, dir, cfg)
	ctx := context.Background()
	if _, _, err := l.Append(ctx, [][]byte{[]byte("a"), []byte("b")}); err != nil {
		t.Fatal(err)
	}
	const to = 5000
	n, err := l.SkipTo(ctx, to)
	if err != nil || n != to-2 {
		t.Fatalf("SkipTo(%d) = %d, %v; want %d", to, n, err, to-2)
	}
	if n, err := l.SkipTo(ctx, 10); err != nil || n != 0 {
		t.Fatalf("SkipTo below the end = %d, %v; want 0, nil", n, err)
	}
	first, _, err := l.Append(ctx, [][]byte{[]byte("c")})
	if err != nil || first != to+1 {
		t.Fatalf("append after SkipTo got index %d (%v), want %d", first, err, to+1)
	}
	if st := l.Stats(); st.Skipped != to-2 {
		t.Fatalf("Stats.Skipped %d, want %d", st.Skipped, to-2)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dir, cfg)
	defer l.Close()
	got := readAll(t, l)
	want := map[uint64]string{1: "a", 2: "b", to + 1: "c"}
	if len(got) != len(want) {
		t.Fatalf("read %d records after reopen, want %d", len(got), len(want))
	}
	for i, v := range want {
		if string(got[i]) != v {
			t.Fatalf("record %d = %q, want %q", i, got[i], v)
		}
	}
	if st := l.Stats(); st.CorruptRecords != 0 || st.Repairs != 0 || st.LastIndex != to+1 {
		t.Fatalf("after reopen: %d corrupt, %d repairs, last %d", st.CorruptRecords, st.Repairs, st.LastIndex)
	}
}
