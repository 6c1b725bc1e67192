package schema

import (
	"encoding/json"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/runnel-iot/runnel/windows"
)

func TestNewWindow(t *testing.T) {
	f := func(name string, w windows.WindowSummary, want string) {
		t.Helper()
		b, err := json.Marshal(NewWindow(&w))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(b) != want {
			t.Errorf("%s:\n got %s\nwant %s", name, b, want)
		}
	}
	f("tumbling", windows.WindowSummary{Spec: "tumbling:1m", StartNs: 60e9, EndNs: 120e9, Count: 2, Sum: 3, Min: 1, Max: 2,
		Mean: 1.5, Stddev: 0.5, First: 1, Last: 2, P50: 1, P90: 2, P99: 2, Quantiles: []byte{1}, Closed: "idle"},
		`{"start":"1970-01-01T00:01:00Z","end":"1970-01-01T00:02:00Z","start_ns":60000000000,"end_ns":120000000000,`+
			`"count":2,"sum":3,"min":1,"max":2,"mean":1.5,"stddev":0.5,"first":1,"last":2,"p50":1,"p90":2,"p99":2}`)
	f("sliding: no quantiles", windows.WindowSummary{Spec: "sliding:5m/10s", StartNs: 1, EndNs: 300e9 + 1, Count: 1, Sum: 1, Min: 1, Max: 1,
		Mean: 1, First: 1, Last: 1, P50: 1},
		`{"start":"1970-01-01T00:00:00.000000001Z","end":"1970-01-01T00:05:00.000000001Z","start_ns":1,"end_ns":300000000001,`+
			`"count":1,"sum":1,"min":1,"max":1,"mean":1,"stddev":0,"first":1,"last":1}`)
	f("empty tumbling: no quantiles", windows.WindowSummary{Spec: "tumbling:10s", EndNs: 10e9},
		`{"start":"1970-01-01T00:00:00Z","end":"1970-01-01T00:00:10Z","start_ns":0,"end_ns":10000000000,`+
			`"count":0,"sum":0,"min":0,"max":0,"mean":0,"stddev":0,"first":0,"last":0}`)
	f("overflowed numbers become 0", windows.WindowSummary{Spec: "tumbling:10s", EndNs: 10e9, Count: 2, Sum: math.Inf(1),
		Min: 1e308, Max: 1e308, Mean: math.Inf(1), Stddev: math.NaN(), First: 1e308, Last: 1e308, P50: 1e308, P90: math.Inf(-1), P99: math.NaN()},
		`{"start":"1970-01-01T00:00:00Z","end":"1970-01-01T00:00:10Z","start_ns":0,"end_ns":10000000000,`+
			`"count":2,"sum":0,"min":1e+308,"max":1e+308,"mean":0,"stddev":0,"first":1e+308,"last":1e+308,"p50":1e+308,"p90":0,"p99":0}`)
}

// TestWindowInSummarySchema: every property of Window is declared in the
// summary record's JSON Schema (the record embeds it), and each required
// one of its figures is always present.
func TestWindowInSummarySchema(t *testing.T) {
	data, err := os.ReadFile("summary.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Required   []string
		Properties map[string]json.RawMessage
	}
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatal(err)
	}
	w := windows.WindowSummary{Spec: "tumbling:1m", Count: 1}
	b, _ := json.Marshal(NewWindow(&w))
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	for k := range v {
		if _, ok := schema.Properties[k]; !ok {
			t.Errorf("Window property %q is not in summary.schema.json", k)
		}
	}
	for _, k := range []string{"start", "end", "start_ns", "end_ns", "count", "sum", "min", "max", "mean", "stddev", "first", "last"} {
		if !slices.Contains(schema.Required, k) {
			t.Errorf("summary.schema.json does not require %q", k)
		}
		if _, ok := v[k]; !ok {
			t.Errorf("Window lacks %q", k)
		}
	}
}
