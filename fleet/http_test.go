package fleet

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
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

// ownedParts is the repartition partitions an instance owns.
func ownedParts(s *Service) []int32 {
	s.cbMu.Lock()
	defer s.cbMu.Unlock()
	return slices.Sorted(maps.Keys(s.owned))
}

// TestFleetOpenWindowsFromAnyInstance: two instances own different
// partitions and every window is still open (the first of each lineage
// closes only by grace, here long); the same query to either instance
// returns the same full answer, every open window with all its readings,
// including the windows the other instance owns.
func TestFleetOpenWindowsFromAnyInstance(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	s := newSimSites(11, 3, 24, 1, 6)
	e := s.expect("site")
	lineageParts := map[int32]bool{}
	for k := range e.values {
		p := splitKey(k)
		lineageParts[int32(xxhash.Sum64String(joinKey(p[:len(p)-1]...))%6)] = true
	}
	if len(lineageParts) < 4 {
		t.Fatalf("simulation: the summary lineages use %d of 6 partitions; want 4 or more so both instances own some", len(lineageParts))
	}
	long := func(c *Config) { c.Fleet.Grace, c.Fleet.Retain = 10*time.Minute, time.Hour }
	a, stopA := startInstanceWith(t, brokers, "a", long)
	b, _ := startInstanceWith(t, brokers, "b", long)
	testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
		pa, pb := ownedParts(a), ownedParts(b)
		return len(pa) == 3 && len(pb) == 3, fmt.Sprintf("a owns %v, b owns %v", pa, pb)
	})
	recs := s.records(t)
	produce(t, brokers, recs)
	testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
		n := a.m.committed.Load() + b.m.committed.Load()
		return n >= uint64(len(recs)), fmt.Sprintf("committed %d of %d", n, len(recs))
	})

	const q = "/api/v1/fleet/windows?measurement=vibration&field=rms&size=1m&last=1000"
	answers := map[*Service]string{}
	for name, inst := range map[string]*Service{"a": a, "b": b} {
		testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
			var r struct {
				Windows []Output
				Partial bool
			}
			getJSON(t, inst, q, &r)
			got := map[string]uint64{}
			for _, o := range r.Windows {
				if o.Closed != "" {
					t.Fatalf("%s: window %s closed %q, want open (grace 10m)", name, o.Key, o.Closed)
				}
				got[o.Key] = o.Summary.Count
			}
			for k, vs := range e.values {
				if got[k] != uint64(len(vs)) {
					return false, fmt.Sprintf("%s: %d windows (partial %v); %s count %d, want %d", name, len(r.Windows), r.Partial, k, got[k], len(vs))
				}
			}
			return len(got) == len(e.values) && !r.Partial, fmt.Sprintf("%s: %d windows, want %d (partial %v)", name, len(got), len(e.values), r.Partial)
		})
		rec := httptest.NewRecorder()
		inst.Handler().ServeHTTP(rec, httptest.NewRequest("GET", q, nil))
		answers[inst] = rec.Body.String()

		// The instance answered windows it does not own.
		inst.mu.Lock()
		foreign := 0
		for k := range e.values {
			if inst.windows[k] == nil {
				foreign++
			}
		}
		inst.mu.Unlock()
		if foreign == 0 {
			t.Errorf("%s owns every window (partitions %v): the test shows nothing", name, ownedParts(inst))
		}

		var d struct {
			Windows []struct {
				Closed   string
				Readings uint64
				Distinct *uint64
			}
		}
		getJSON(t, inst, "/api/v1/fleet/distinct?measurement=vibration&size=1m", &d)
		total := uint64(0)
		for _, n := range e.perDev[0] {
			total += n
		}
		if len(d.Windows) != 1 || d.Windows[0].Closed != "" || d.Windows[0].Readings != total || d.Windows[0].Distinct == nil {
			t.Errorf("%s: open distinct windows %+v, want one with %d readings", name, d.Windows, total)
		}
	}
	if answers[a] != answers[b] {
		t.Errorf("the same query answers differently:\na: %s\nb: %s", answers[a], answers[b])
	}
	// With a stopped, b still answers a's open windows: from its view,
	// never from a.
	stopA()
	rec := httptest.NewRecorder()
	b.Handler().ServeHTTP(rec, httptest.NewRequest("GET", q, nil))
	if rec.Body.String() != answers[b] {
		t.Errorf("b's answer changed with a stopped:\nbefore: %s\nafter: %s", answers[b], rec.Body)
	}
}

// TestViewCatchUpAndClose: answers are partial until every partition has
// been read to its target; an open window leaves the view's open part
// when its closing changelog state or its output record arrives.
func TestViewCatchUpAndClose(t *testing.T) {
	s := New(testConfig([]string{"127.0.0.1:1"}, "v"), nil)
	v := s.view
	v.pending = map[topicPart]int64{{"runnel.fleet", 0}: 5, {"runnel.fleet.changelog", 1}: 3}
	all := func(string) bool { return true }
	steps := []struct {
		topic   string
		part    int32
		offset  int64
		partial bool
	}{
		{"runnel.fleet", 0, 3, true},
		{"runnel.fleet", 0, 4, true},           // output done, changelog left
		{"runnel.fleet.changelog", 0, 9, true}, // not a pending partition
		{"runnel.fleet.changelog", 1, 7, false},
	}
	for _, st := range steps {
		v.reached(st.topic, st.part, st.offset)
		if _, partial := s.snapshot(all); partial != st.partial {
			t.Fatalf("after %s[%d]@%d: partial %v, want %v", st.topic, st.part, st.offset, partial, st.partial)
		}
	}

	key := "s|vibration|rms|tumbling:1m|site=1|60"
	state := func(closed string) *kgo.Record {
		w := &windowState{Key: key, Kind: "summary", StartNs: 60, EndNs: 120, Count: 2, Sum: 3, Min: 1, Max: 2, Mean: 1.5,
			Gateways: map[string]int{"gw-0": 1}, Closed: closed}
		return &kgo.Record{Key: []byte(key), Value: marshal(changelogValue{Window: w})}
	}
	v.applyChangelog(&kgo.Record{Key: []byte(idKey(key, "ab")), Value: []byte("1")})
	v.applyChangelog(state(""))
	if got, _ := s.snapshot(all); len(got) != 1 || got[0].Closed != "" || got[0].Summary.Count != 2 || got[0].Group["site"] != "1" {
		t.Fatalf("open window: %+v", got)
	}
	v.applyChangelog(state("grace"))
	if got, _ := s.snapshot(all); len(got) != 1 || got[0].Closed != "grace" {
		t.Fatalf("closed state before its output record: %+v, want it answered closed", got)
	}
	v.applyOutput(&kgo.Record{Key: []byte(key), Value: marshal(Output{Key: key, Kind: "summary", Closed: "complete", EndNs: 120,
		Summary: &SummaryOut{Count: 2}})})
	if got, _ := s.snapshot(all); len(got) != 1 || got[0].Closed != "complete" || len(v.open) != 0 {
		t.Fatalf("after the output record: %+v, open %d", got, len(v.open))
	}
	// The other order: the output record first, then the closing state.
	v.applyChangelog(state("complete"))
	if got, _ := s.snapshot(all); len(got) != 1 || len(v.open) != 0 {
		t.Fatalf("closing state after its output record: %+v, open %d, want it dropped", got, len(v.open))
	}
}
