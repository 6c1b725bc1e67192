package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type fakeStatus struct{ st Status }

func (f *fakeStatus) Status() Status { return f.st }

func TestStatusEndpoint(t *testing.T) {
	src := &fakeStatus{Status{
		GatewayID: "gw-1", Version: "v1.2.3", TimeNs: 1_700_000_000_000_000_000, UptimeSeconds: 12.5,
		Ready: false, Reason: "replaying the wal up to index 9",
		Ingest:     IngestStatus{Readings: ByListener{MQTT: 3, UDP: 2, HTTP: 1, Total: 6}, Late: 4},
		WAL:        WALStatus{Appends: 7, DiskBytes: 4096},
		Windows:    WindowsStatus{Series: 2, MemoryBytes: 10, BudgetBytes: 100},
		Checkpoint: CheckpointStatus{AgeSeconds: -1},
	}}
	mux := http.NewServeMux()
	(&API{Status: src}).Register(mux)

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/status", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("status: %d %q %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("Cache-Control"), rec.Body)
	}
	// The dashboard reads these keys by name: keep them stable.
	var raw map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"gateway_id", "version", "time_ns", "uptime_seconds", "ready", "reason", "ingest", "wal", "windows", "checkpoint", "alerts_active"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status lacks %q: %s", k, rec.Body)
		}
	}
	if _, ok := raw["forward"]; ok {
		t.Errorf("forward present while nil: %s", rec.Body)
	}
	var got Status
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.GatewayID != "gw-1" || got.Ready || got.Reason != src.st.Reason || got.Ingest.Readings.Total != 6 ||
		got.Ingest.Late != 4 || got.Checkpoint.AgeSeconds != -1 || got.Windows.BudgetBytes != 100 {
		t.Errorf("status round trip = %+v", got)
	}
	if !strings.Contains(rec.Body.String(), `"readings":{"mqtt":3,"udp":2,"http":1,"total":6}`) {
		t.Errorf("per-listener readings shape changed: %s", rec.Body)
	}

	src.st.Forward = &ForwardStatus{Enabled: true, PendingRecords: 5}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/status", nil))
	if !strings.Contains(rec.Body.String(), `"forward":{"enabled":true,"pending_records":5,`) {
		t.Errorf("forward not reported: %s", rec.Body)
	}

	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/status?verbose=1", nil))
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), `unknown query \"verbose=1\": /api/v1/status takes no parameters`) {
		t.Errorf("unknown parameter: %d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/status", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST status = %d, want 405", rec.Code)
	}
}

func TestStatusAbsentWithoutSource(t *testing.T) {
	mux := http.NewServeMux()
	(&API{}).Register(mux)
	for _, p := range []string{"/api/v1/status", "/", "/assets/app.js"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		if rec.Code != 404 {
			t.Errorf("GET %s without a status source = %d, want 404", p, rec.Code)
		}
	}
}
