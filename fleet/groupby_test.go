package fleet

import (
	"fmt"
	"math"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// TestFleetSketchesByGroup: three gateways send, besides the fleet-wide
// group sketches, a devices_per_site group (by measurement and site, key
// "vibration,site=<s>"); the fleet merges them per fleet.group_by site,
// and /distinct and /topk with group=site=<s> answer each site's windows
// as a brute-force count over all raw readings of all gateways does.
func TestFleetSketchesByGroup(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	s := newSimSites(12, 3, 30, 2, 3)
	s.siteSketches = true
	e := s.expect("site")
	inst, _ := startInstance(t, brokers, "a")
	out := collect(t, brokers)
	produce(t, brokers, s.records(t))

	totals := map[siteWin]uint64{}
	for sw, per := range e.sitePerDev {
		for _, n := range per {
			totals[sw] += n
		}
	}
	if len(totals) != 6 {
		t.Fatalf("simulation: %d site windows, want 6 (3 sites x 2 windows)", len(totals))
	}
	testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
		got := out.latest(t)
		for sw, want := range totals {
			o := got[s.siteSketchKey(sw.w, sw.site)]
			if o.Sketch == nil || o.Sketch.Readings != want || o.Closed == "" {
				return false, fmt.Sprintf("site window %v: %+v closed %q, want %d readings, closed", sw, o.Sketch, o.Closed, want)
			}
		}
		return true, ""
	})
	got := out.latest(t)
	se := 1.04 / math.Sqrt(16384)
	for sw, per := range e.sitePerDev {
		o := got[s.siteSketchKey(sw.w, sw.site)]
		if o.Group["site"] != sw.site || o.Sketch.GroupKey != simMeas || len(o.Gateways) != 3 {
			t.Errorf("site window %v: group %v, group key %q, gateways %v", sw, o.Group, o.Sketch.GroupKey, o.Gateways)
		}
		want := float64(len(per))
		if math.Abs(float64(o.Sketch.Distinct)-want) > 3*se*want {
			t.Errorf("site window %v: distinct %d, want %v within 3 standard errors", sw, o.Sketch.Distinct, want)
		}
		top, topN := "", uint64(0)
		for dev, n := range per {
			if n > topN || (n == topN && dev < top) {
				top, topN = dev, n
			}
		}
		if len(o.Sketch.TopK) == 0 || o.Sketch.TopK[0].Key != top || o.Sketch.TopK[0].Count < topN {
			t.Errorf("site window %v: top-k %v, want %s first with at least %d (Count-Min overestimates)", sw, o.Sketch.TopK, top, topN)
		}
	}

	// The API: group=site=<s> selects that site's windows, newest first.
	type row struct {
		Group    string
		Tags     map[string]string
		Start    string
		Readings uint64
		Distinct *uint64
		TopK     []TopKItem
	}
	for _, site := range []string{"0", "1", "2"} {
		testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
			var d, k struct{ Windows []row }
			getJSON(t, inst, "/api/v1/fleet/distinct?measurement=vibration&size=1m&group="+url.QueryEscape("site="+site), &d)
			getJSON(t, inst, "/api/v1/fleet/topk?measurement=vibration&size=1m&group="+url.QueryEscape("site="+site), &k)
			if len(d.Windows) != 2 || len(k.Windows) != 2 {
				return false, fmt.Sprintf("site %s: distinct %+v, topk %+v, want 2 windows each", site, d.Windows, k.Windows)
			}
			for i, w := range []int{1, 0} { // newest first
				sw := siteWin{w, site}
				dr, kr := d.Windows[i], k.Windows[i]
				if dr.Group != "devices_per_site" || dr.Tags["site"] != site || dr.Readings != totals[sw] || dr.Distinct == nil ||
					math.Abs(float64(*dr.Distinct)-float64(len(e.sitePerDev[sw]))) > 3*se*float64(len(e.sitePerDev[sw])) {
					return false, fmt.Sprintf("site %s window %d distinct row %+v, want %d readings, %d devices", site, w, dr, totals[sw], len(e.sitePerDev[sw]))
				}
				if kr.Tags["site"] != site || len(kr.TopK) == 0 || !slices.ContainsFunc(kr.TopK, func(it TopKItem) bool { return e.sitePerDev[sw][it.Key] > 100 }) {
					return false, fmt.Sprintf("site %s window %d topk row %+v", site, w, kr)
				}
			}
			return true, ""
		})
	}
	// Without group, the by-measurement windows (no site) are listed too.
	var all struct{ Windows []row }
	getJSON(t, inst, "/api/v1/fleet/distinct?measurement=vibration&size=1m&last=100", &all)
	if len(all.Windows) != 8 {
		t.Errorf("distinct without group: %d windows, want 8 (2 fleet-wide + 6 per site)", len(all.Windows))
	}
}
