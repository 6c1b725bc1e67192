package pipeline

import (
	"fmt"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// TestCheckpointsUnderBestEffortLoad: with only best-effort appends (UDP,
// MQTT QoS 0: acknowledged before their fsync) at 100 per second, there is
// always an applied record not yet fsynced. Checkpoints must still be
// written on their interval, and the last one at shutdown must cover
// everything applied. (Before the WAL's sync barrier the pipeline skipped a
// checkpoint whenever an applied record was unsynced: none was written.)
func TestCheckpointsUnderBestEffortLoad(t *testing.T) {
	r := newRig(t)
	r.every = 50 * time.Millisecond
	r.start()
	began := time.Now()
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = r.log.TryAppendAsync([][]byte{batch(1000+i/100, "udp,device=a", 1000+i/100)}, func(uint64, uint64, error) {})
		}
	}()
	testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
		n := r.p.Stats().Checkpoints
		return n >= 5, fmt.Sprintf("%d checkpoints written under best-effort load (interval 50ms)", n)
	})
	close(stop)
	<-stopped
	t.Logf("%d checkpoints in %s of best-effort load (interval 50ms); wal fsyncs %d", r.p.Stats().Checkpoints,
		time.Since(began).Round(time.Millisecond), r.log.Stats().Fsyncs)
	// One more best-effort record, applied but (the backstop fsync is a
	// second away) not yet synced, when the pipeline stops.
	done := make(chan uint64, 1)
	if err := r.log.TryAppendAsync([][]byte{batch(2000, "udp,device=a", 2000)}, func(_, last uint64, _ error) { done <- last }); err != nil {
		t.Fatal(err)
	}
	last := <-done
	r.waitApplied(last)
	r.stop()
	if got := r.checkpointIndex(); got != last {
		t.Fatalf("final checkpoint covers index %d, want %d (everything applied at shutdown)", got, last)
	}
}
