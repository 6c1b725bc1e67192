package fleet

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

func filterRecs(t *testing.T, rs []*kgo.Record, keep func(gw string, startNs int64) bool) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	for _, r := range rs {
		var v struct {
			Gateway string `json:"gateway"`
			StartNs int64  `json:"start_ns"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatal(err)
		}
		if keep(v.Gateway, v.StartNs) {
			out = append(out, r)
		}
	}
	return out
}

// TestFleetCloseAndLate: the first window closes by grace with two of the
// three gateways; the third's late records produce a corrected record
// (revision 1, counted) under the same key; the next window closes as
// complete once the previous window's gateways have reported.
func TestFleetCloseAndLate(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	s := newSim(4, 3, 10, 2)
	recs := s.records(t)
	// A grace well above the time the two gateways' records of one window
	// take through the repartition topic under a loaded race run (with 2 s,
	// a window closed once with one gateway, then was corrected).
	inst, _ := startInstanceWith(t, brokers, "a", func(c *Config) { c.Fleet.Grace = 6 * time.Second })
	out := collect(t, brokers)
	w0 := s.start(0)
	produce(t, brokers, filterRecs(t, recs, func(gw string, st int64) bool { return st == w0 && gw != "gw-2" }))
	testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
		n := 0
		for _, o := range out.latest(t) {
			if o.StartNs == w0 && o.Closed == "grace" && o.Revision == 0 && len(o.Gateways) == 2 {
				n++
			}
		}
		return n == 4, fmt.Sprintf("%d of 4 first windows closed by grace with 2 gateways", n)
	})
	produce(t, brokers, filterRecs(t, recs, func(gw string, st int64) bool { return st == w0 && gw == "gw-2" }))
	produce(t, brokers, filterRecs(t, recs, func(_ string, st int64) bool { return st != w0 }))
	got := waitComplete(t, out, s, s.expect("site"), 30*time.Second)
	for k, o := range got {
		switch {
		case o.StartNs == w0 && (o.Revision < 1 || o.Late < 1 || o.Closed != "grace" || len(o.Gateways) != 3):
			t.Errorf("%s: first window after late records: revision %d late %d closed %s gateways %v", k, o.Revision, o.Late, o.Closed, o.Gateways)
		case o.StartNs != w0 && o.Closed != "complete":
			t.Errorf("%s: second window closed %q, want complete", k, o.Closed)
		}
	}
	if m := metricsText(inst); !strings.Contains(m, "runnel_fleet_late_corrections_total") || strings.Contains(m, "runnel_fleet_late_corrections_total 0\n") {
		t.Errorf("late corrections not counted:\n%s", m)
	}
}
