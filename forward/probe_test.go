package forward

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestUplinkSilentReportedDown: a Kafka that stops answering (connections
// stay open, requests get no response, as a paused broker or a black-holed
// link) is reported down within 10s, not after the 30s request timeout,
// and up again once it answers (issue 14, problem 4).
func TestUplinkSilentReportedDown(t *testing.T) {
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	cfg.RequestTimeout = 30 * time.Second // the default: the probe must not wait for it
	o := openTestOutbox(t, t.TempDir(), KindSummaries, cfg.Outbox.Summaries)
	r := startForwarder(t, cfg, o)
	appendSeq(t, o, "s", 0, 10, 3, 10)
	waitFor(t, 10*time.Second, "delivered", func() (bool, string) {
		st := r.f.Status()
		return st.Connected && st.Acked == 10, fmt.Sprintf("%+v", st)
	})

	var silent atomic.Bool
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if silent.Load() {
			return nil, nil, true // no answer, connection kept open
		}
		return nil, nil, false
	})
	silent.Store(true)
	start := time.Now()
	waitFor(t, 15*time.Second, "reported down", func() (bool, string) {
		st := r.f.Status()
		return !st.Connected, fmt.Sprintf("connected %v, last error %q", st.Connected, st.LastError)
	})
	d := time.Since(start)
	t.Logf("silent uplink reported down after %s", d.Round(time.Millisecond))
	if d > 10*time.Second {
		t.Errorf("silent uplink reported down after %s, want within 10s", d)
	}
	st := r.f.Status()
	if !strings.Contains(st.LastError, "probe") || st.ProbeFailures == 0 {
		t.Errorf("status after silence: last error %q, probe failures %d; want a probe error", st.LastError, st.ProbeFailures)
	}
	silent.Store(false)
	start = time.Now()
	waitFor(t, 20*time.Second, "reported up again", func() (bool, string) {
		st := r.f.Status()
		return st.Connected, fmt.Sprintf("connected %v, last error %q", st.Connected, st.LastError)
	})
	t.Logf("answering uplink reported up after %s", time.Since(start).Round(time.Millisecond))
}
