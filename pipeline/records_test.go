package pipeline

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/sketches"
	"github.com/runnel-iot/runnel/windows"
)

// TestRecordSchemas checks each record value against its JSON Schema file:
// every property present is declared, every required one is present, and
// the schema constant matches; and the ids are deterministic and differ
// where they must.
func TestRecordSchemas(t *testing.T) {
	q := sketches.NewQuantile()
	q.Add(1)
	qb, _ := q.MarshalBinary()
	sum := &windows.Emission{Kind: windows.KindTumbling, Window: windows.WindowSummary{
		Series: "env,device=a", Field: "temp", Spec: "tumbling:1m", StartNs: 60e9, EndNs: 120e9,
		Count: 2, Sum: 3, Min: 1, Max: 2, Mean: 1.5, First: 1, Last: 2, P50: 1, P90: 2, P99: 2, Quantiles: qb, Closed: "watermark"}}
	grp := &windows.GroupSummary{Group: "g", Key: "env", StartNs: 60e9, EndNs: 120e9, Distinct: 2, Readings: 5,
		TopK: []sketches.Item{{Key: "a", Count: 3}}, HLL: []byte{1}, CountMin: []byte{2}}
	ev := &alerts.Event{ID: "abc", Type: "firing", Rule: "r", Series: "env,device=a", Field: "temp", Severity: "warning",
		Op: ">", Value: 9, Threshold: 5, StartNs: 1, AtNs: 2, Gateway: "gw", Labels: map[string]string{"k": "v"}}
	for _, tc := range []struct {
		schema string
		value  []byte
	}{
		{"../gateway/schema/summary.schema.json", summaryRecord(new([]byte), "gw", sum, nil).Value},
		{"../gateway/schema/sketch.schema.json", sketchRecord("gw", grp, nil).Value},
		{"../gateway/schema/alert.schema.json", alertRecord(ev, nil).Value},
	} {
		var schema struct {
			Required   []string
			Properties map[string]struct {
				Const string
			}
		}
		data, err := os.ReadFile(tc.schema)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &schema); err != nil {
			t.Fatalf("%s: %v", tc.schema, err)
		}
		var v map[string]any
		if err := json.Unmarshal(tc.value, &v); err != nil {
			t.Fatal(err)
		}
		for k := range v {
			if _, ok := schema.Properties[k]; !ok {
				t.Errorf("%s: value has undeclared property %q", tc.schema, k)
			}
		}
		for _, k := range schema.Required {
			if _, ok := v[k]; !ok {
				t.Errorf("%s: value lacks required %q", tc.schema, k)
			}
		}
		if c := schema.Properties["schema"].Const; v["schema"] != c {
			t.Errorf("%s: schema %v, want %q", tc.schema, v["schema"], c)
		}
	}
	a, b := summaryRecord(new([]byte), "gw", sum, nil), summaryRecord(new([]byte), "gw", sum, nil)
	if a.ID != b.ID || string(a.Key) != "gw|env,device=a|temp|tumbling:1m" {
		t.Errorf("summary id %s/%s, key %s", a.ID, b.ID, a.Key)
	}
	other := *sum
	other.Window.StartNs += 60e9
	ids := []string{a.ID, summaryRecord(new([]byte), "gw2", sum, nil).ID, summaryRecord(new([]byte), "gw", &other, nil).ID, alertRecord(ev, nil).ID}
	resolved := *ev
	resolved.Type = "resolved"
	ids = append(ids, alertRecord(&resolved, nil).ID)
	slices.Sort(ids)
	if len(slices.Compact(ids)) != 5 {
		t.Errorf("ids collide: %v", ids)
	}
	if o, fp, hasFP, ok := decodeOrigin(originPos(outboxPos{1 << 40, 7}, 0xfeed)); !ok || !hasFP || fp != 0xfeed || o != (outboxPos{1 << 40, 7}) {
		t.Errorf("origin round trip: %v %x %v %v", o, fp, hasFP, ok)
	}
	// An origin written before fingerprints: index and seq only.
	old := binary.AppendUvarint(binary.AppendUvarint(nil, 9), 2)
	if o, _, hasFP, ok := decodeOrigin(old); !ok || hasFP || o != (outboxPos{9, 2}) {
		t.Errorf("origin without fingerprint: %v %v %v", o, hasFP, ok)
	}
}

// TestKindsTable: each engine output belongs to exactly one record kind,
// whose builder makes a record of its schema.
func TestKindsTable(t *testing.T) {
	sum := &windows.Emission{Kind: windows.KindTumbling, Window: windows.WindowSummary{Series: "s", Field: "f", Spec: "tumbling:1m"}}
	grp := &windows.Emission{Kind: windows.KindGroup, Group: &windows.GroupSummary{Group: "g", Key: "k"}}
	ev := &alerts.Event{ID: "x", Type: alerts.Firing, Rule: "r", Gateway: "gw"}
	for _, tc := range []struct {
		o    output
		want Kind
	}{{output{em: sum}, KindSummaries}, {output{em: grp}, KindSketches}, {output{ev: ev}, KindAlerts}} {
		var kinds []Kind
		for k := range Kinds {
			if Kinds[k].of(tc.o) {
				kinds = append(kinds, Kind(k))
			}
		}
		if len(kinds) != 1 || kinds[0] != tc.want {
			t.Fatalf("output %+v is of kinds %v, want [%d]", tc.o, kinds, tc.want)
		}
		var sc []byte
		rec := Kinds[tc.want].build(&sc, "gw", tc.o, nil)
		if len(rec.Headers) == 0 || string(rec.Headers[0].Value) != Kinds[tc.want].Schema {
			t.Fatalf("kind %d builds a record with headers %+v, want schema %s", tc.want, rec.Headers, Kinds[tc.want].Schema)
		}
	}
}

// TestSummaryRecordNonFinite: a window whose sum overflowed (two readings
// of 1e308) has an infinite sum and mean and a NaN stddev, which JSON
// cannot carry. The record must still encode (numbers that overflowed
// become 0, as in the HTTP API), not panic the stream goroutine on every
// replay.
func TestSummaryRecordNonFinite(t *testing.T) {
	e := &windows.Emission{Kind: windows.KindTumbling, Window: windows.WindowSummary{
		Series: "env,device=a", Field: "temp", Spec: "tumbling:1m", StartNs: 60e9, EndNs: 120e9,
		Count: 2, Sum: math.Inf(1), Min: 1e308, Max: 1e308, Mean: math.Inf(1), Stddev: math.NaN(),
		First: 1e308, Last: 1e308, P50: 1e308, P90: 1e308, P99: math.Inf(1), Closed: "watermark"}}
	var rec forward.Record
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("summaryRecord panicked: %v", p)
			}
		}()
		rec = summaryRecord(new([]byte), "gw", e, nil)
	}()
	var v map[string]any
	if err := json.Unmarshal(rec.Value, &v); err != nil {
		t.Fatalf("record value is not JSON: %v: %s", err, rec.Value)
	}
	for k, want := range map[string]float64{"sum": 0, "mean": 0, "stddev": 0, "p99": 0, "max": 1e308, "p50": 1e308} {
		if v[k] != want {
			t.Errorf("%s = %v, want %v", k, v[k], want)
		}
	}
}

// TestRecordKeyNoCollision: parts holding the separator or the escape
// never make two different tuples share a key.
func TestRecordKeyNoCollision(t *testing.T) {
	a := string(recordKey("gw", "coll,device=x|y", "z", "tumbling:1m"))
	b := string(recordKey("gw", "coll,device=x", "y|z", "tumbling:1m"))
	if a == b {
		t.Fatalf("two tuples share the key %q", a)
	}
	if a != `gw|coll,device=x\|y|z|tumbling:1m` {
		t.Errorf("key %q", a)
	}
	c := string(recordKey("gw", `s\`, "|f"))
	d := string(recordKey("gw", `s\|`, "f"))
	if c == d {
		t.Fatalf("escape collision: %q", c)
	}
	if got := string(recordKey("gw", "env,device=pi-042", "temp", "tumbling:1m")); got != "gw|env,device=pi-042|temp|tumbling:1m" {
		t.Errorf("a plain key changed: %q", got)
	}
}
