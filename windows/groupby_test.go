package windows

import (
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// TestGroupByMulti: a group by measurement and a tag keeps a window per
// combination, keyed as a series key with escaping; a series without the
// tag is in none of them.
func TestGroupByMulti(t *testing.T) {
	c := testConfig()
	c.Groups = []GroupSpec{{Name: "per_site", By: "measurement,tag:site", Size: time.Minute, Distinct: "device", TopK: "device", K: 3}}
	e := mustNew(t, c)
	var rs []wal.Reading
	for i := range 10 {
		ts := int64(i) * sec
		rs = append(rs,
			wal.Reading{Series: "env,device=a,site=p1", Field: "temp", Value: 1, TimeNs: ts},
			wal.Reading{Series: "env,device=b,site=p1", Field: "temp", Value: 1, TimeNs: ts},
			wal.Reading{Series: `env,device=c,site=x\,y`, Field: "temp", Value: 1, TimeNs: ts},
			wal.Reading{Series: "env,device=d", Field: "temp", Value: 1, TimeNs: ts},
			wal.Reading{Series: "cpu,device=a,site=p1", Field: "load", Value: 1, TimeNs: ts})
	}
	e.Apply(1, &wal.Batch{IngestNs: 10 * sec, Readings: rs}, nil)
	for _, tc := range []struct {
		key                string
		distinct, readings uint64
	}{
		{"env,site=p1", 2, 20},
		{`env,site=x\,y`, 1, 10},
		{"cpu,site=p1", 1, 10},
	} {
		open, _ := e.Groups("per_site", tc.key)
		if len(open) != 1 || open[0].Distinct != tc.distinct || open[0].Readings != tc.readings {
			t.Errorf("group key %s: %+v, want one window, %d distinct, %d readings", tc.key, open, tc.distinct, tc.readings)
		}
	}
	for _, key := range []string{"env", "env,site=", "env,site=p2"} {
		if open, _ := e.Groups("per_site", key); len(open) != 0 {
			t.Errorf("group key %q: %+v, want none", key, open)
		}
	}
}

func TestParseBy(t *testing.T) {
	for by, ok := range map[string]bool{
		"measurement": true, "tag:site": true, "measurement,tag:site": true, "measurement, tag:site,tag:line": true,
		"tag:site,tag:line": true, "device": false, "series": false, "": false, "tag:site,measurement": false,
		"measurement,measurement": false, "tag:a,tag:a": false, "measurement,device": false, "measurement,": false,
	} {
		if _, got := parseBy(by); got != ok {
			t.Errorf("parseBy(%q) ok = %v, want %v", by, got, ok)
		}
	}
}
