package forward

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestAckPositionWriteRate: while Kafka acknowledges a steady stream into
// three outboxes, the acknowledged positions are written (each write an
// atomic file write: two fsyncs) at most once per second per outbox, not
// after every round (issue 14, problem 8: SD card wear). The position still
// reaches everything acknowledged once the stream stops.
func TestAckPositionWriteRate(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	cfg := testConfig(c.ListenAddrs())
	var boxes []*Outbox
	for _, k := range []string{KindSummaries, KindSketches, KindAlerts} {
		oc, _ := cfg.Outbox.For(k)
		boxes = append(boxes, openTestOutbox(t, dir, k, oc))
	}
	startForwarder(t, cfg, boxes...)
	const run = 3 * time.Second
	start := time.Now()
	seq := 0
	for time.Since(start) < run {
		for _, o := range boxes {
			appendSeq(t, o, "r", seq, seq+5, 7, 5)
		}
		seq += 5
		for _, o := range boxes {
			want := uint64(seq)
			waitFor(t, 10*time.Second, o.Kind()+" acknowledged", func() (bool, string) {
				o.mu.Lock()
				defer o.mu.Unlock()
				return o.done >= want, fmt.Sprintf("done %d, want %d", o.done, want)
			})
		}
	}
	elapsed := time.Since(start)
	var writes uint64
	for _, o := range boxes {
		writes += o.Stats().AckWrites
	}
	rate := float64(writes) / elapsed.Seconds()
	t.Logf("%d rounds of 5 records per outbox in %s: %d position writes (%.1f/s, %.1f fsyncs/s)", seq/5, elapsed.Round(time.Millisecond), writes, rate, 2*rate)
	if seq/5 < 20 {
		t.Fatalf("only %d rounds in %s: too slow to tell", seq/5, run)
	}
	// At most one write per second per outbox, plus one each for the
	// second started.
	if max := uint64(elapsed.Seconds()+1) * uint64(len(boxes)); writes > max {
		t.Errorf("%d position writes in %s for %d outboxes, want at most %d (one per second each)", writes, elapsed, len(boxes), max)
	}
	for _, o := range boxes {
		want := uint64(seq)
		waitFor(t, 5*time.Second, o.Kind()+" position persisted", func() (bool, string) {
			o.mu.Lock()
			defer o.mu.Unlock()
			return o.persisted == want, fmt.Sprintf("persisted %d, want %d", o.persisted, want)
		})
	}
	_ = context.Background
}
