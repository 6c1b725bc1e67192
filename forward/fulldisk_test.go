package forward

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

// TestOutboxFullDisk: on a full disk an append fails with the error (it
// stores nothing: no phantom entry), the outbox reports it (Health,
// Stats.Failing), and once space returns the same append succeeds and the
// outbox works on, across a reopen too (issue 14, problem 3, outbox side).
func TestOutboxFullDisk(t *testing.T) {
	dir := testutil.Tmpfs(t, 1<<20)
	o, err := OpenOutbox(dir, KindSummaries, OutboxConfig{MaxBytes: 4 * wal.MiB}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { o.Close() }()
	appendSeq(t, o, "s", 0, 10, 3, 10)
	filler := testutil.Fill(t, dir)

	big := make([]Record, 20) // more than the pages left in the last partly written one
	for i := range big {
		big[i] = seqRecord("f", i, 3)
		big[i].Value = []byte(strings.Repeat("x", 2000))
	}
	for i := range 3 { // failures in a row: each one recovers the log
		err := o.Append(context.Background(), big)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("append %d on a full disk = %v, want ENOSPC", i, err)
		}
	}
	if ok, reason := o.Health(); ok || !strings.Contains(reason, "no space left on device") {
		t.Errorf("Health on a full disk = %v %q", ok, reason)
	}
	if st := o.Stats(); !st.Failing || st.LastIndex != 10 {
		t.Errorf("stats on a full disk: failing %v, last index %d (want true, 10)", st.Failing, st.LastIndex)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := o.Append(context.Background(), big); err != nil {
		t.Fatalf("append once space returned: %v", err)
	}
	if ok, reason := o.Health(); !ok || o.Stats().Failing {
		t.Errorf("Health once space returned = false %q", reason)
	}
	rec, ok, err := o.Last()
	if err != nil || !ok || rec.ID != big[len(big)-1].ID {
		t.Fatalf("last after recovery = %q %v %v, want %q", rec.ID, ok, err, big[len(big)-1].ID)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o, err = OpenOutbox(dir, KindSummaries, OutboxConfig{MaxBytes: 4 * wal.MiB}, testLogger(t))
	if err != nil {
		t.Fatalf("reopen after a full disk: %v", err)
	}
	if st := o.Stats(); st.LastIndex != 30 {
		t.Errorf("after reopen: last index %d, want 30 (10, then 20 once space returned)", st.LastIndex)
	}
	r := o.log.NewReader(1)
	n := 0
	for r.Next() {
		n++
		rec, _, err := DecodeRecord(r.Record())
		if err != nil {
			t.Fatalf("entry %d: %v", r.Index(), err)
		}
		want := seqRecord("s", n-1, 3).ID
		if n > 10 {
			want = big[n-11].ID
		}
		if rec.ID != want {
			t.Fatalf("entry %d is %q, want %q", r.Index(), rec.ID, want)
		}
	}
	if n != 30 {
		t.Errorf("read %d entries, want 30", n)
	}
}

// TestAckPositionFullDisk: a write of the acknowledged position that fails
// on a full disk is retried (at the persist rate) until space returns,
// with no new acknowledgement needed to trigger it.
func TestAckPositionFullDisk(t *testing.T) {
	dir := testutil.Tmpfs(t, 1<<20)
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	o := openTestOutbox(t, dir, KindSummaries, OutboxConfig{MaxBytes: 4 * wal.MiB})
	appendSeq(t, o, "s", 0, 10, 3, 10)
	filler := testutil.Fill(t, dir)
	startForwarder(t, cfg, o)
	waitFor(t, 10*time.Second, "position write failed", func() (bool, string) {
		st := o.Stats()
		return st.AckedIndex == 10 && st.AckWriteErrors > 0, fmt.Sprintf("%+v", st)
	})
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "position persisted once space returned", func() (bool, string) {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.persisted == 10, fmt.Sprintf("persisted %d", o.persisted)
	})
}
