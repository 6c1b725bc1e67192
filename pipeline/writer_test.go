package pipeline

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/internal/testutil"
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
