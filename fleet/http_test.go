package fleet

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
)

func getJSON(t *testing.T, s *Service, url string, v any) int {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
	if rec.Code == 200 && v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("GET %s: %v\n%s", url, err, rec.Body)
		}
	}
	return rec.Code
}

// TestFleetHTTP: two instances share the keys; each answers every query
// (closed windows from its read_committed view of runnel.fleet).
func TestFleetHTTP(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	s := newSim(3, 3, 20, 2)
	a, _ := startInstance(t, brokers, "a")
	b, _ := startInstance(t, brokers, "b")
	out := collect(t, brokers)
	produce(t, brokers, s.records(t))
	e := s.expect("site")
	waitComplete(t, out, s, e, 60*time.Second)

	for _, inst := range []*Service{a, b} {
		testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
			var r struct{ Windows []Output }
			getJSON(t, inst, "/api/v1/fleet/windows?measurement=vibration&field=rms&size=1m&group=site%3D1&last=100", &r)
			total := uint64(0)
			for _, o := range r.Windows {
				if o.Group["site"] != "1" {
					return false, fmt.Sprintf("window of group %v for group=site=1", o.Group)
				}
				total += o.Summary.Count
			}
			want := 0
			for k, vs := range e.values {
				if splitKey(k)[4] == "site=1" {
					want += len(vs)
				}
			}
			return len(r.Windows) == 2 && total == uint64(want), fmt.Sprintf("%d windows, count %d, want 2, %d", len(r.Windows), total, want)
		})
		var d struct {
			Windows []struct {
				Distinct *uint64
				Gateways []string
			}
		}
		getJSON(t, inst, "/api/v1/fleet/distinct?measurement=vibration&size=1m", &d)
		if len(d.Windows) != 2 || d.Windows[0].Distinct == nil || *d.Windows[0].Distinct == 0 || len(d.Windows[0].Gateways) != 3 {
			t.Errorf("distinct: %+v", d)
		}
		var k struct{ Windows []struct{ TopK []TopKItem } }
		getJSON(t, inst, "/api/v1/fleet/topk?measurement=vibration&size=1m", &k)
		if len(k.Windows) != 2 || len(k.Windows[0].TopK) == 0 {
			t.Errorf("topk: %+v", k)
		}
		var g struct{ Gateways []struct{ Gateway string } }
		getJSON(t, inst, "/api/v1/fleet/gateways", &g)
		if len(g.Gateways) != 3 {
			t.Errorf("gateways: %+v", g)
		}
		if code := getJSON(t, inst, "/healthz", nil); code != 200 {
			t.Errorf("healthz %d", code)
		}
		if code := getJSON(t, inst, "/readyz", nil); code != 200 {
			t.Errorf("readyz %d", code)
		}
		if code := getJSON(t, inst, "/api/v1/fleet/windows?last=x", nil); code != 400 {
			t.Errorf("last=x: %d, want 400", code)
		}
	}
}

func TestViewPrune(t *testing.T) {
	v := &view{windows: map[string]Output{"old": {EndNs: 1}, "new": {EndNs: int64(2 * time.Hour)}}, newest: int64(2 * time.Hour)}
	v.prune(time.Hour)
	if _, ok := v.windows["old"]; ok || len(v.windows) != 1 {
		t.Errorf("after prune: %v", v.windows)
	}
}
