package pipeline

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

// TestSlowOutboxDoesNotStallTheStream: an outbox append that takes its
// time (an fsync queued behind the readings WAL's on a busy disk) holds
// neither the windows nor the alerts behind it: readings after it are
// applied, and an alert is published on OnAlert, while the append still
// waits. Once it returns, every record is in its outbox, in origin order,
// and a checkpoint covers them. Before, the stream waited in every append
// (each alert, each catch-up with closed windows), and alerts were
// published only after their append.
func TestSlowOutboxDoesNotStallTheStream(t *testing.T) {
	const s = "env,device=a"
	base := int64(3600 * 1000)
	r := newRig(t)
	r.al.Rules = []alerts.Rule{hot(50), cold()}
	release := make(chan struct{})
	var blocked atomic.Int32
	for _, k := range []Kind{KindSummaries, KindAlerts} {
		r.boxes[k].setFail(func() error {
			blocked.Add(1)
			<-release
			blocked.Add(-1)
			return nil
		})
	}
	r.start()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	// The first hour window closes when the second reading passes its
	// end: its summary's append blocks.
	r.append(reading(s, base, 10))
	r.append(reading(s, base+3600, 20))
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		return blocked.Load() > 0, "no outbox append started"
	})
	// While it waits: more readings are applied, one fires an alert.
	last := r.append(reading(s, base+3601, 30))
	last = max(last, r.append(reading(s, base+3602, 60)))
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		a := r.p.Windows().AppliedIndex()
		return a >= last, fmt.Sprintf("applied %d, want %d, while an outbox append waits", a, last)
	})
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		pub := r.onAlerts()
		return len(pub) == 1 && pub[0].Type == alerts.Firing, fmt.Sprintf("published %+v, want one firing alert while its append waits", pub)
	})
	if blocked.Load() == 0 {
		t.Fatal("the outbox append returned before the checks")
	}
	var n uint64
	counts, _ := r.p.AlertLatency()
	for _, c := range counts {
		n += c
	}
	if n != 1 {
		t.Fatalf("ingest-to-alert histogram holds %d events, want 1", n)
	}
	close(release)
	r.setFailNone()
	r.stop()
	if n := len(r.boxes[KindSummaries].records()); n != 1 {
		t.Fatalf("%d summaries in the outbox, want 1", n)
	}
	if vs := r.alertValues(); len(vs) != 1 || vs[0].Type != alerts.Firing {
		t.Fatalf("alert records %+v, want one firing", vs)
	}
	if idx := r.checkpointIndex(); idx != last {
		t.Fatalf("final checkpoint covers %d, want %d", idx, last)
	}
}

// setFailNone makes every outbox append succeed again.
func (r *rig) setFailNone() {
	for _, b := range r.boxes {
		b.setFail(nil)
	}
}

// TestHandOffBounded: a batch that closes a window for thousands of
// series at once reaches the outbox in hand-overs of handOffBytes, not as
// one batch's worth of records: what waits between the stream and the
// outbox is bounded in bytes, whatever a batch closes. (Before, the 4,000
// records went over in one hand-over and one append of about 3 MB.)
func TestHandOffBounded(t *testing.T) {
	r := newRig(t)
	r.start()
	const series = 4000
	open := wal.Batch{IngestNs: 1e9}
	closing := wal.Batch{IngestNs: 2e9}
	for i := range series {
		s := fmt.Sprintf("m,device=d%04d", i) // a device each: its own watermark
		open.Readings = append(open.Readings, wal.Reading{Series: s, Field: "v", Value: 1, TimeNs: 1e9})
		closing.Readings = append(closing.Readings, wal.Reading{Series: s, Field: "v", Value: 2, TimeNs: 3601e9})
	}
	last := r.append(wal.AppendBatch(nil, &open), wal.AppendBatch(nil, &closing))
	r.waitApplied(last)
	box := r.boxes[KindSummaries]
	testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
		n := len(box.records())
		return n == series, fmt.Sprintf("%d summaries in the outbox, want %d", n, series)
	})
	box.mu.Lock()
	maxBytes := box.maxBytes
	box.mu.Unlock()
	total := 0
	for _, rec := range box.records() {
		total += recordSize(&rec)
	}
	if bound := (writerQueue+1)*handOffBytes + 4<<10; maxBytes > bound || total <= bound {
		t.Errorf("largest append %d bytes of %d in all, want at most %d", maxBytes, total, bound)
	}
}
