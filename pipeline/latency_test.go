package pipeline

import (
	"testing"
	"time"
)

// Every bound has its own count, a duration on a bound counts in that
// bucket, and one past the last bound counts in +Inf.
func TestLatencyHistBuckets(t *testing.T) {
	var h latencyHist
	if len(h.counts) != len(AppliedBuckets)+1 {
		t.Fatalf("%d counts for %d bounds and +Inf", len(h.counts), len(AppliedBuckets))
	}
	for i, b := range AppliedBuckets {
		if i > 0 && b <= AppliedBuckets[i-1] {
			t.Fatalf("bound %d (%v) not above the one before", i, b)
		}
		h.observe(b)
	}
	h.observe(AppliedBuckets[len(AppliedBuckets)-1] + 1)
	h.observe(-time.Second) // a clock step back counts as 0
	counts, _ := h.snapshot()
	for i, n := range counts {
		want := uint64(1)
		if i == 0 {
			want = 2
		}
		if n != want {
			t.Errorf("bucket %d: %d observations, want %d", i, n, want)
		}
	}
}
