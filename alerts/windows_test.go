package alerts

import (
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// TestWithWindowsEngine feeds the real windows engine and hands its
// emissions to the alerts engine as the gateway does, checking that rule
// window specs (spelled differently) match the windows' own spec names and
// that the window end is the event time.
func TestWithWindowsEngine(t *testing.T) {
	wcfg := windows.DefaultConfig()
	wcfg.Tumbling = []time.Duration{time.Minute}
	wcfg.Sliding = []windows.SlidingSpec{{Size: 5 * time.Minute, Slide: 10 * time.Second}}
	wcfg.AllowedLateness = 0
	wcfg.Groups = nil
	w, err := windows.New(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Rules = []Rule{
		{Name: "vib", Match: Match{Field: "rms"}, Value: "mean", Window: "tumbling:60s", Op: ">", Threshold: fp(7.1), Clear: fp(6)},
		{Name: "busy", Match: Match{Field: "rms"}, Value: "count", Window: "sliding:300s/10000ms", Op: ">=", Threshold: fp(200), For: 30 * time.Second},
	}
	specs := cfg.Specs()
	if len(specs) != 2 || specs[0] != "tumbling:1m" || specs[1] != "sliding:5m/10s" {
		t.Fatalf("Specs %q", specs)
	}
	a, err := New(cfg, "gw")
	if err != nil {
		t.Fatal(err)
	}
	const base = int64(1_700_000_040) * 1e9 // a minute boundary
	var closed []windows.Emission
	var evs []Event
	seen := map[string]bool{}
	for s := range 240 {
		v := 8.0
		if s >= 120 {
			v = 5
		}
		tNs := base + int64(s)*1e9
		b := &wal.Batch{IngestNs: tNs, Readings: []wal.Reading{{Series: "machine,device=m1", Field: "rms", Value: v, TimeNs: tNs}}}
		closed = w.Apply(uint64(s+1), b, closed[:0])
		for _, em := range closed {
			seen[em.Window.Spec] = true
		}
		evs = a.Apply(uint64(s+1), b, closed, evs)
	}
	if !seen["tumbling:1m"] || !seen["sliding:5m/10s"] {
		t.Fatalf("windows emitted specs %v", seen)
	}
	checkPairs(t, evs)
	var got []string
	for _, ev := range evs {
		got = append(got, ev.Rule+" "+ev.Type)
	}
	// vib fires when the first minute closes (mean 8) and resolves when
	// the third closes (mean 5); busy needs 200 readings in 5 minutes,
	// held for 30 s of window ends.
	want := []string{"vib firing", "vib resolved", "busy firing"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("events %q, want %q", got, want)
	}
	if evs[0].StartNs != base+60e9 || evs[0].Value != 8 || evs[1].AtNs != base+180e9 || evs[1].Value != 5 {
		t.Fatalf("events %+v", evs[:2])
	}
	if evs[2].StartNs != base+200e9 || evs[2].AtNs != base+230e9 {
		t.Fatalf("busy %+v", evs[2])
	}
}
