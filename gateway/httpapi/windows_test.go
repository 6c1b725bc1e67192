package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// seedEngine feeds a real engine the seed vector: 9,6,8,4,7,3,8,4,2,1,3,2
// one second apart, in 4-second tumbling windows (sums 27, 22, 8), then one
// reading that moves the watermark past 12 s.
func seedEngine(t *testing.T) *windows.Engine {
	t.Helper()
	cfg := windows.DefaultConfig()
	cfg.Tumbling = []time.Duration{4 * time.Second}
	cfg.Sliding = nil
	cfg.AllowedLateness = 0
	e, err := windows.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := int64(1_700_000_000) * int64(time.Second) // a multiple of 4 s
	var out []windows.Emission
	for i, v := range []float64{9, 6, 8, 4, 7, 3, 8, 4, 2, 1, 3, 2, 5} {
		ts := base + int64(i)*int64(time.Second)
		out = e.Apply(uint64(i+1), &wal.Batch{IngestNs: ts, Readings: []wal.Reading{
			{Series: "env,device=pi-042", Field: "temp", Value: v, TimeNs: ts},
			{Series: "env,device=pi-043", Field: "temp", Value: 1, TimeNs: ts},
		}}, out)
	}
	return e
}

func TestWindowsAndSeries(t *testing.T) {
	mux := http.NewServeMux()
	(&API{Windows: seedEngine(t)}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string, v any) int { t.Helper(); return getJSON(t, srv.URL+path, v) }
	var wr windowsResponse
	if code := get("/api/v1/windows?series=env,device=pi-042&field=temp&size=4s", &wr); code != 200 {
		t.Fatalf("status %d", code)
	}
	var sums []float64
	var open int
	for _, w := range wr.Windows {
		if w.Open {
			open++
			continue
		}
		sums = append(sums, w.Sum)
		if w.Count != 4 || w.P50 == nil || w.ClosedBy != "watermark" {
			t.Errorf("closed window %+v: want count 4, quantiles, closed by the watermark", w)
		}
	}
	// Closed windows come newest first.
	if len(sums) != 3 || sums[0] != 8 || sums[1] != 22 || sums[2] != 27 || open != 1 {
		t.Fatalf("closed sums %v (newest first) and %d open; want [8 22 27] and 1 open", sums, open)
	}
	if get("/api/v1/windows?series=env,device=pi-042&field=temp&size=4s&last=1", &wr); len(wr.Windows) != 2 {
		t.Fatalf("last=1: %d windows, want the open one and one closed", len(wr.Windows))
	}
	if get("/api/v1/windows?series=env,device=pi-042&field=temp&size=1m", &wr); len(wr.Windows) != 0 {
		t.Fatalf("size=1m: %d windows, want none", len(wr.Windows))
	}

	var sr seriesResponse
	if get("/api/v1/series", &sr); sr.Total != 2 || len(sr.Series) != 2 || sr.Series[0].Series != "env,device=pi-042" || sr.Series[0].Readings != 13 {
		t.Fatalf("series: %+v", sr)
	}
	if get("/api/v1/series?tag=device=pi-043", &sr); sr.Total != 1 || sr.Series[0].Series != "env,device=pi-043" {
		t.Fatalf("series by tag: %+v", sr)
	}
	if get("/api/v1/series?limit=1&offset=1", &sr); sr.Total != 2 || len(sr.Series) != 1 || sr.Series[0].Series != "env,device=pi-043" {
		t.Fatalf("series page 2: %+v", sr)
	}

	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/api/v1/windows?series=env,device=pi-042", 400, "series and field are required"},
		{"/api/v1/windows?series=nope&field=temp", 404, `no series "nope" with field "temp"`},
		{"/api/v1/windows?series=a&field=b&sise=1m", 400, "unknown query parameter sise"},
		{"/api/v1/windows?series=a&field=b&size=fast", 400, `size: "fast" is not a duration`},
		{"/api/v1/series?limit=0", 400, "limit"},
		{"/api/v1/series?tag=device", 400, `tag: "device" is not key=value`},
	} {
		var e errorBody
		if code := get(tc.path, &e); code != tc.code || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.path, code, e.Error, tc.code, tc.want)
		}
	}
}

// getJSON GETs url, decodes the JSON body into v and returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v: %s", url, err, b)
	}
	return resp.StatusCode
}

// TestWindowsLastPerSpec: last bounds the closed windows of each spec
// after size and kind narrow them. A device that went idle has no open
// window, and its newest closed windows by end are the largest ones: a
// last applied before the size filter kept only those and answered [] for
// ?size=4s&last=1 (the README's example query on an idle device).
func TestWindowsLastPerSpec(t *testing.T) {
	cfg := windows.DefaultConfig()
	cfg.Tumbling = []time.Duration{4 * time.Second, time.Minute}
	cfg.Sliding = []windows.SlidingSpec{{Size: 8 * time.Second, Slide: 4 * time.Second}}
	cfg.AllowedLateness = 0
	e, err := windows.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := int64(1_700_000_040) * int64(time.Second) // a multiple of 1 m
	for i := range 13 {
		ts := base + int64(i)*int64(time.Second)
		e.Apply(uint64(i+1), &wal.Batch{IngestNs: ts, Readings: []wal.Reading{
			{Series: "env,device=pi-042", Field: "temp", Value: float64(i), TimeNs: ts}}}, nil)
	}
	// An empty batch well past the idle timeout: the device goes idle and
	// every window closes.
	e.Apply(14, &wal.Batch{IngestNs: base + int64(cfg.IdleTimeout) + 20*int64(time.Second)}, nil)

	mux := http.NewServeMux()
	(&API{Windows: e}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	const q = "/api/v1/windows?series=env,device=pi-042&field=temp"
	for _, tc := range []struct {
		query string
		want  []string // specs, in order
	}{
		{"&size=4s&last=1", []string{"tumbling:4s"}},
		{"&size=4s&last=2", []string{"tumbling:4s", "tumbling:4s"}},
		{"&size=8s&last=1", []string{"sliding:8s/4s"}},
		{"&size=1m&last=1", []string{"tumbling:1m"}},
		{"&kind=tumbling&last=1", []string{"tumbling:1m", "tumbling:4s"}},
		{"&last=1", []string{"tumbling:1m", "sliding:8s/4s", "tumbling:4s"}},
	} {
		var wr windowsResponse
		if code := getJSON(t, srv.URL+q+tc.query, &wr); code != 200 {
			t.Fatalf("%s: status %d", tc.query, code)
		}
		var got []string
		for _, w := range wr.Windows {
			if w.Open || w.ClosedBy != "idle" && w.ClosedBy != "watermark" {
				t.Errorf("%s: window %+v, want closed", tc.query, w)
			}
			got = append(got, w.Spec)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: specs %q, want %q", tc.query, got, tc.want)
		}
	}
}

// TestWindowJSONFormat locks the API's window shape: its envelope (spec,
// open, closed_by) around the figures shared with the Kafka summary record
// (schema.Window).
func TestWindowJSONFormat(t *testing.T) {
	f := func(w windows.WindowSummary, want string) {
		t.Helper()
		b, err := json.Marshal(toWindowJSON(w))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Errorf("\n got %s\nwant %s", b, want)
		}
	}
	f(windows.WindowSummary{Series: "env,device=a", Field: "temp", Spec: "tumbling:1m", StartNs: 60e9, EndNs: 120e9,
		Count: 2, Sum: 3, Min: 1, Max: 2, Mean: 1.5, Stddev: 0.5, First: 1, Last: 2, P50: 1, P90: 2, P99: 2, Quantiles: []byte{1}, Closed: "watermark"},
		`{"spec":"tumbling:1m","open":false,"closed_by":"watermark","start":"1970-01-01T00:01:00Z","end":"1970-01-01T00:02:00Z",`+
			`"start_ns":60000000000,"end_ns":120000000000,"count":2,"sum":3,"min":1,"max":2,"mean":1.5,"stddev":0.5,"first":1,"last":2,"p50":1,"p90":2,"p99":2}`)
	f(windows.WindowSummary{Spec: "sliding:5m/10s", EndNs: 300e9, Open: true, Count: 1, Sum: 1, Min: 1, Max: 1, Mean: 1, First: 1, Last: 1},
		`{"spec":"sliding:5m/10s","open":true,"start":"1970-01-01T00:00:00Z","end":"1970-01-01T00:05:00Z",`+
			`"start_ns":0,"end_ns":300000000000,"count":1,"sum":1,"min":1,"max":1,"mean":1,"stddev":0,"first":1,"last":1}`)
}
