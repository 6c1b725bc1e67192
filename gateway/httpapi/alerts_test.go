package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/wal"
)

// TestAlerts runs GET /api/v1/alerts over a real alerts engine fed with
// known readings: two series fire, one of them resolves, one is pending.
func TestAlerts(t *testing.T) {
	th, clr := 90.0, 92.0
	cfg := alerts.DefaultConfig()
	cfg.Rules = []alerts.Rule{
		{Name: "spo2_low", Match: alerts.Match{Measurement: "vitals", Field: "spo2"}, Op: "<", Threshold: &th, Clear: &clr, Severity: "critical"},
		{Name: "spo2_low_long", Match: alerts.Match{Measurement: "vitals", Field: "spo2"}, Op: "<", Threshold: &th, For: time.Hour, Severity: "warning"},
	}
	e, err := alerts.New(cfg, "gw")
	if err != nil {
		t.Fatal(err)
	}
	const sec = int64(time.Second)
	feed := func(idx uint64, series string, v float64, at int64) {
		e.Apply(idx, &wal.Batch{IngestNs: at, Readings: []wal.Reading{{Series: series, Field: "spo2", Value: v, TimeNs: at}}}, nil, nil)
	}
	feed(1, "vitals,device=a", 85, 1*sec) // a fires
	feed(2, "vitals,device=b", 80, 2*sec) // b fires
	feed(3, "vitals,device=b", 95, 3*sec) // b resolves

	mux := http.NewServeMux()
	(&API{Alerts: e}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string, want int) alertsResponse {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("GET %s = %d %s, want %d", path, resp.StatusCode, b, want)
		}
		var r alertsResponse
		if want == http.StatusOK {
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "wal_index") {
				t.Errorf("internal fields leak: %s", b)
			}
		} else if !strings.Contains(string(b), `"error"`) {
			t.Errorf("GET %s: no JSON error: %s", path, b)
		}
		return r
	}

	all := get("/api/v1/alerts", http.StatusOK)
	// Active: a firing (spo2_low), a and b pending (spo2_low_long; b's
	// pending state ended at 95), so: a firing, a pending.
	if len(all.Active) != 2 || all.Stats.Firing != 1 || all.Stats.Pending != 1 || all.Stats.Fired != 2 || all.Stats.Resolved != 1 {
		t.Fatalf("active %+v stats %+v", all.Active, all.Stats)
	}
	if len(all.Recent) != 3 || all.Recent[0].Type != "resolved" || all.Recent[0].Series != "vitals,device=b" || all.Recent[0].At == "" {
		t.Errorf("recent %+v", all.Recent)
	}
	if r := get("/api/v1/alerts?state=firing", http.StatusOK); len(r.Active) != 1 || r.Active[0].Series != "vitals,device=a" || r.Active[0].Start == "" {
		t.Errorf("state=firing: %+v", r.Active)
	}
	if r := get("/api/v1/alerts?rule=spo2_low_long", http.StatusOK); len(r.Active) != 1 || r.Active[0].State != "pending" || len(r.Recent) != 0 {
		t.Errorf("rule=spo2_low_long: %+v %+v", r.Active, r.Recent)
	}
	if r := get("/api/v1/alerts?series=vitals,device=b", http.StatusOK); len(r.Active) != 0 || len(r.Recent) != 2 {
		t.Errorf("series=b: %+v %+v", r.Active, r.Recent)
	}
	if r := get("/api/v1/alerts?severity=warning&limit=1", http.StatusOK); len(r.Active) != 1 || len(r.Recent) != 0 {
		t.Errorf("severity=warning: %+v %+v", r.Active, r.Recent)
	}
	if r := get("/api/v1/alerts?limit=1", http.StatusOK); len(r.Recent) != 1 {
		t.Errorf("limit=1: %d recent", len(r.Recent))
	}
	if r := get("/api/v1/alerts?limit=0", http.StatusOK); len(r.Recent) != 0 || len(r.Active) != 2 {
		t.Errorf("limit=0: %+v", r)
	}
	for _, bad := range []string{"?state=resolved", "?severity=fatal", "?limit=-1", "?limit=1001", "?limit=x", "?colour=red"} {
		get("/api/v1/alerts"+bad, http.StatusBadRequest)
	}
}

// TestStreamAlerts checks that alert events reach stream clients that ask
// for kind=alert, and only them.
func TestStreamAlerts(t *testing.T) {
	h := NewHub(4)
	all, windowsOnly := h.subscribe(streamFilter{kinds: map[string]bool{"alert": true}}), h.subscribe(streamFilter{kinds: map[string]bool{"tumbling": true}})
	h.PublishAlert(alerts.Event{Series: "vitals,device=a", Field: "spo2"}, json.RawMessage(`{"type":"firing"}`))
	select {
	case e := <-all.ch:
		if e.Type != "alert" || string(e.Data) != `{"type":"firing"}` {
			t.Errorf("event %+v", e)
		}
	default:
		t.Error("the alert client got nothing")
	}
	select {
	case e := <-windowsOnly.ch:
		t.Errorf("a tumbling-only client got %+v", e)
	default:
	}
}
