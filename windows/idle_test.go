package windows

import (
	"fmt"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// TestIdleCloseAtTimeout: a silent device's windows close at the first
// batch whose processing time is past its last reading plus IdleTimeout
// (within the one-second check interval), whatever the batches are: empty
// ticks at any period and phase, or another device's readings. Processing
// time is an argument (IngestNs), so the test runs in no time.
func TestIdleCloseAtTimeout(t *testing.T) {
	const idle = time.Minute
	for _, tc := range []struct {
		step, phase time.Duration
		busy        bool // the batches carry another device's readings
	}{
		{15 * time.Second, 0, false},
		{15 * time.Second, 7 * time.Second, false},
		{time.Second, 300 * time.Millisecond, false},
		{7 * time.Second, 2 * time.Second, false},
		{100 * time.Millisecond, 0, true},
		{2500 * time.Millisecond, 900 * time.Millisecond, true},
	} {
		t.Run(fmt.Sprintf("step=%s,phase=%s,busy=%v", tc.step, tc.phase, tc.busy), func(t *testing.T) {
			c := testConfig()
			c.IdleTimeout = idle
			e := mustNew(t, c)
			last := 100 * sec // the silent device's last reading, event and processing time
			out := e.Apply(1, &wal.Batch{IngestNs: last, Readings: []wal.Reading{{Series: "env,device=quiet", Field: "v", Value: 1, TimeNs: last}}}, nil)
			if len(out) != 0 {
				t.Fatalf("emissions %+v after one reading", out)
			}
			// The check runs at most once per second of processing time,
			// so a busy stream may close up to 1 s late; ticks of at least
			// 1 s close at the first tick past the timeout.
			slack := max(tc.step, time.Second)
			idx := uint64(2)
			for now := last + int64(tc.phase) + int64(tc.step); now <= last+int64(idle+2*slack); now += int64(tc.step) {
				b := &wal.Batch{IngestNs: now}
				if tc.busy {
					b.Readings = []wal.Reading{{Series: "env,device=busy", Field: "v", Value: 1, TimeNs: now}}
				}
				out = e.Apply(idx, b, out[:0])
				idx++
				var closed bool
				for _, em := range out {
					if em.Window.Series == "env,device=quiet" {
						if em.Window.Closed != "idle" {
							t.Fatalf("at %s: window %+v closed by %q, want idle", time.Duration(now-last), em.Window, em.Window.Closed)
						}
						closed = true
					}
				}
				after := time.Duration(now - last)
				switch {
				case closed && after <= idle:
					t.Fatalf("closed %s after the last reading, before the %s idle timeout", after, idle)
				case closed:
					if e.Stats().IdleCloses < 1 {
						t.Errorf("IdleCloses = 0 after an idle close")
					}
					return
				case after > idle+slack:
					t.Fatalf("still open %s after the last reading (idle timeout %s, batches every %s)", after, idle, tc.step)
				}
			}
			t.Fatal("never closed")
		})
	}
}
