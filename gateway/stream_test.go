package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// TestManyWindowsCloseAtOnce writes one request whose readings close
// thousands of windows in one batch: more summary bytes than an outbox
// takes in one append (a quarter of its quota). The stream appends them in
// chunks; the gateway keeps running and the outbox holds them all.
func TestManyWindowsCloseAtOnce(t *testing.T) {
	cfg := testConfig(t)
	cfg.Kafka.Outbox.Summaries.MaxBytes = 1 * wal.MiB
	cfg.Windows.Tumbling = []time.Duration{10 * time.Second}
	cfg.Windows.Sliding = nil
	cfg.Windows.AllowedLateness = 0
	cfg.Windows.MemoryBudget = 256 * wal.MiB
	g := runGateway(t, cfg)
	const n = 3000 // each closes one window: ~600 bytes of summary each, 1.8 MB in all
	var body strings.Builder
	now := time.Now().Add(-time.Minute).Truncate(10 * time.Second)
	for i := range n {
		fmt.Fprintf(&body, "m,device=d%04d v=1 %d\n", i, now.UnixNano())
	}
	for i := range n {
		fmt.Fprintf(&body, "m,device=d%04d v=2 %d\n", i, now.Add(20*time.Second).UnixNano())
	}
	resp, err := http.Post("http://"+g.Addr()+"/api/v2/write", "text/plain", strings.NewReader(body.String()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write: %s", resp.Status)
	}
	waitFor(t, 20*time.Second, func() (bool, string) {
		st := g.outboxes[0].Stats()
		return st.Appended+st.Dropped >= n, fmt.Sprintf("%+v; ready %+v", st, g.readiness())
	})
	if r := g.readiness(); !r.Ready {
		t.Fatalf("gateway not ready after the burst: %+v", r)
	}
}
