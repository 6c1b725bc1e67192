package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSketchEndpoints(t *testing.T) {
	e := seedEngine(t)
	mux := http.NewServeMux()
	(&API{Windows: e, Sketches: e}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string, v any) int { t.Helper(); return getJSON(t, srv.URL+path, v) }
	// The open 4 s window of pi-042 holds the last reading, 5.
	var qr quantilesResponse
	if code := get("/api/v1/sketches/quantiles?series=env,device=pi-042&field=temp&q=0.5,1", &qr); code != 200 {
		t.Fatalf("quantiles: %d %+v", code, qr)
	}
	if qr.Spec != "tumbling:4s" || qr.Count != 1 || qr.Quantiles["0.5"] != 5 || qr.Quantiles["1"] != 5 {
		t.Fatalf("quantiles %+v; want the open 4s window with p50 = max = 5", qr)
	}
	var sr struct {
		Samples []sampleJSON `json:"samples"`
	}
	if code := get("/api/v1/sketches/samples?series=env,device=pi-042&field=temp", &sr); code != 200 || len(sr.Samples) != 13 {
		t.Fatalf("samples: %d, %d samples; want all 13 readings (reservoir of 32)", code, len(sr.Samples))
	}
	var gr struct {
		Windows []groupJSON `json:"windows"`
	}
	if code := get("/api/v1/sketches/distinct?group=devices_per_measurement&key=env", &gr); code != 200 || len(gr.Windows) == 0 {
		t.Fatalf("distinct: %d %+v", code, gr)
	}
	if d := gr.Windows[0].Distinct; d == nil || *d != 2 {
		t.Fatalf("distinct devices %v, want 2", d)
	}
	if code := get("/api/v1/sketches/topk?group=top_devices&key=env", &gr); code != 200 || len(gr.Windows) == 0 || len(gr.Windows[0].TopK) != 2 {
		t.Fatalf("topk: %d %+v", code, gr)
	}
	// The items use the names of the Kafka sketch records (schema
	// runnel.sketch/v1): key and count, lower case. Decoding into a map
	// checks the exact names (struct decoding ignores case).
	var raw struct {
		Windows []struct {
			TopK []map[string]any `json:"topk"`
		} `json:"windows"`
	}
	get("/api/v1/sketches/topk?group=top_devices&key=env", &raw)
	for _, it := range raw.Windows[0].TopK {
		if _, ok := it["key"].(string); !ok || len(it) != 2 || it["count"] == nil {
			t.Errorf("topk item %v, want exactly key and count", it)
		}
	}
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/api/v1/sketches/quantiles?series=x&field=y", 404, `no series "x"`},
		{"/api/v1/sketches/quantiles?series=env,device=pi-042&field=temp&q=2", 400, `q: "2" is not a number from 0 to 1`},
		{"/api/v1/sketches/quantiles?series=env,device=pi-042&field=temp&size=1h", 404, "no open tumbling window of size 1h0m0s"},
		{"/api/v1/sketches/distinct?group=nope&key=env", 404, `no windows of group "nope"`},
		{"/api/v1/sketches/topk?group=top_devices", 400, "group and key are required"},
		{"/api/v1/sketches/samples?series=a&field=b&x=1", 400, "unknown query parameter x"},
	} {
		var e errorBody
		if code := get(tc.path, &e); code != tc.code || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.path, code, e.Error, tc.code, tc.want)
		}
	}
}
