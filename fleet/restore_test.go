package fleet

import (
	"fmt"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestFleetRestoreFromChangelog: an instance takes over from one that
// stopped and continues from the changelog: it merges only the records
// that came after (the input is not re-read from its start) and the fleet
// windows end with every reading.
func TestFleetRestoreFromChangelog(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	s := newSim(7, 3, 10, 1)
	recs := s.records(t)
	out := collect(t, brokers)
	a, stopA := startInstance(t, brokers, "a")
	first := filterRecs(t, recs, func(gw string, _ int64) bool { return gw != "gw-2" })
	produce(t, brokers, first)
	waitCommitted(t, a, len(first))
	stopA()

	b, _ := startInstance(t, brokers, "b")
	rest := filterRecs(t, recs, func(gw string, _ int64) bool { return gw == "gw-2" })
	// Some of the first records again: b knows their ids from the changelog.
	var again []*kgo.Record
	for _, r := range first[:5] {
		again = append(again, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers})
	}
	produce(t, brokers, append(again, rest...))
	got := waitComplete(t, out, s, s.expect("site"), 30*time.Second)
	if n := b.m.merged.Load(); n != uint64(len(rest)) {
		t.Errorf("b merged %d records, want only the %d sent after the handover", n, len(rest))
	}
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		d := b.m.duplicates.Load()
		return d == 5, fmt.Sprintf("b dropped %d duplicates, want 5", d)
	})
	if b.m.restoredRecords.Load() == 0 {
		t.Error("b restored no changelog record")
	}
	for k, o := range got {
		if len(o.Gateways) != 3 {
			t.Errorf("%s: gateways %v", k, o.Gateways)
		}
	}
}

// waitCommitted waits until s's merge transactions committed n records.
func waitCommitted(t *testing.T, s *Service, n int) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
		m := s.m.committed.Load()
		return m >= uint64(n), fmt.Sprintf("committed %d of %d", m, n)
	})
}
