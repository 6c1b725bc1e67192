// Package schema holds Runnel's public JSON formats: the JSON Schemas of
// the Kafka record values (*.schema.json in this folder, one per record
// kind) and the Go types of the parts that the records and the HTTP API
// share, so that each shape is defined once.
//
// A window's figures (Window) appear in three places:
//
//   - the Kafka summary record (runnel.summary/v1, summary.schema.json):
//     schema, gateway, series, field, window (the spec), then Window, then
//     quantiles and closed;
//   - GET /api/v1/windows: spec, open, closed_by, then Window;
//   - the live stream (GET /api/v1/stream, event window): series, field,
//     then the API's form.
//
// Each format keeps its own envelope (the names spec/window and
// closed_by/closed differ and stay as published); the figures inside are
// the same struct. A heavy hitter (TopKItem) is likewise the same in the
// sketch record (runnel.sketch/v1) and in GET /api/v1/sketches/topk.
//
// The package has no state and does no I/O.
package schema

import (
	"math"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/windows"
)

// Window is the JSON core of one window of one series and field: its span
// and its aggregates.
type Window struct {
	Start   string  `json:"start"` // RFC 3339, UTC, event time
	End     string  `json:"end"`   // exclusive
	StartNs int64   `json:"start_ns"`
	EndNs   int64   `json:"end_ns"`
	Count   uint64  `json:"count"`
	Sum     float64 `json:"sum"`
	Min     float64 `json:"min"`
	Max     float64 `json:"max"`
	Mean    float64 `json:"mean"`
	Stddev  float64 `json:"stddev"` // sample standard deviation (n-1); 0 for fewer than 2 readings
	First   float64 `json:"first"`  // the earliest reading by event time
	Last    float64 `json:"last"`   // the latest reading by event time
	// Quantiles of tumbling windows that hold a reading (within 2 %
	// relative error); absent for sliding windows.
	P50 *float64 `json:"p50,omitempty"`
	P90 *float64 `json:"p90,omitempty"`
	P99 *float64 `json:"p99,omitempty"`
}

// NewWindow returns the JSON core of w. A NaN or infinity (a sum of huge
// readings can overflow) becomes 0: JSON has no such numbers, and one
// window must not stop a record or a response from encoding.
func NewWindow(w *windows.WindowSummary) Window {
	j := Window{
		Start: rfc3339(w.StartNs), End: rfc3339(w.EndNs), StartNs: w.StartNs, EndNs: w.EndNs,
		Count: w.Count, Sum: finite(w.Sum), Min: finite(w.Min), Max: finite(w.Max), Mean: finite(w.Mean),
		Stddev: finite(w.Stddev), First: finite(w.First), Last: finite(w.Last),
	}
	if strings.HasPrefix(w.Spec, "tumbling:") && w.Count > 0 {
		p50, p90, p99 := finite(w.P50), finite(w.P90), finite(w.P99)
		j.P50, j.P90, j.P99 = &p50, &p90, &p99
	}
	return j
}

// TopKItem is one heavy hitter of a group window: a key (e.g. a device)
// and its estimated count of readings.
type TopKItem struct {
	Key   string `json:"key"`
	Count uint64 `json:"count"`
}

// finite keeps a number encodable in JSON: NaN and infinities become 0.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// rfc3339 formats Unix nanoseconds as RFC 3339 in UTC, with as many
// fractional digits as needed.
func rfc3339(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }
