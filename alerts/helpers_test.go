package alerts

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	windowsEmission = windows.Emission
	wsum            = windows.WindowSummary
)

func nan() float64 { return math.NaN() }

// sec converts seconds to nanoseconds.
func sec(s float64) int64 { return int64(math.Round(s * 1e9)) }

func rd(series, field string, v, tSec float64) wal.Reading {
	return wal.Reading{Series: series, Field: field, Value: v, TimeNs: sec(tSec)}
}

func batch(ingestNs int64, rs ...wal.Reading) *wal.Batch {
	return &wal.Batch{IngestNs: ingestNs, Readings: rs}
}

// emission builds a closed window of spec ending at endSec.
func emission(series, field, spec string, endSec float64, set func(*wsum)) windows.Emission {
	kind := windows.KindTumbling
	if strings.HasPrefix(spec, "sliding:") {
		kind = windows.KindSliding
	}
	em := windows.Emission{Kind: kind, Window: windows.WindowSummary{
		Series: series, Field: field, Spec: spec, EndNs: sec(endSec), StartNs: sec(endSec - 60), Count: 1, Closed: "watermark",
	}}
	if set != nil {
		set(&em.Window)
	}
	return em
}

func newEngine(t testing.TB, rules ...Rule) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Rules = rules
	e, err := New(cfg, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// brief renders events for comparison: "firing@10s v=13 start=0s".
func brief(evs []Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%s@%gs v=%g th=%g start=%gs", ev.Type, float64(ev.AtNs)/1e9, ev.Value, ev.Threshold, float64(ev.StartNs)/1e9)
	}
	return out
}

// checkPairs checks that every resolved event follows a firing event of
// the same alert with the same id and start, and that alerts alternate.
func checkPairs(t *testing.T, evs []Event) {
	t.Helper()
	open := map[string]Event{}
	for _, ev := range evs {
		k := ev.Rule + "\x00" + ev.Series + "\x00" + ev.Field
		prev, isOpen := open[k]
		switch ev.Type {
		case Firing:
			if isOpen {
				t.Fatalf("%s fired twice without resolving: %+v then %+v", k, prev, ev)
			}
			want, _ := alertID(nil, ev.Gateway, ev.Rule, ev.Series, ev.Field, ev.StartNs)
			if ev.ID != want {
				t.Fatalf("id %s, want %s", ev.ID, want)
			}
			open[k] = ev
		case Resolved:
			if !isOpen || prev.ID != ev.ID || prev.StartNs != ev.StartNs || prev.Threshold != ev.Threshold {
				t.Fatalf("resolved %+v does not match its firing %+v (open %v)", ev, prev, isOpen)
			}
			delete(open, k)
		default:
			t.Fatalf("event type %q", ev.Type)
		}
	}
}
