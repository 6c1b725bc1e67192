package alerts

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

type pt struct{ t, v float64 } // event time in seconds, value

// runRule feeds one reading per batch of series "m,device=d" field "f" to
// an engine with rule r, and returns the events.
func runRule(t *testing.T, r Rule, pts []pt) []Event {
	t.Helper()
	e := newEngine(t, r)
	var evs []Event
	for i, p := range pts {
		evs = e.Apply(uint64(i+1), batch(sec(float64(i)), rd("m,device=d", "f", p.v, p.t)), nil, evs)
	}
	checkPairs(t, evs)
	return evs
}

func gt(th float64, forD time.Duration) Rule {
	return Rule{Name: "r", Match: Match{Field: "f"}, Op: ">", Threshold: fp(th), For: forD}
}

func TestForAndOps(t *testing.T) {
	outside := Rule{Name: "r", Op: "outside", Low: fp(40), High: fp(140), For: 10 * time.Second}
	cases := []struct {
		name string
		r    Rule
		pts  []pt
		want []string
	}{
		{"for 0 fires on the first crossing", gt(10, 0), []pt{{0, 5}, {1, 11}, {2, 12}},
			[]string{"firing@1s v=11 th=10 start=1s"}},
		{"for 10s fires once held 10s", gt(10, 10*time.Second), []pt{{0, 11}, {5, 12}, {9.999, 13}, {10, 14}, {11, 15}},
			[]string{"firing@10s v=14 th=10 start=0s"}},
		{"pending is reset by a clear reading", gt(10, 10*time.Second), []pt{{0, 11}, {5, 9}, {6, 11}, {15, 11}, {16, 11}},
			[]string{"firing@16s v=11 th=10 start=6s"}},
		{"pending never fires without a reading", gt(10, 10*time.Second), []pt{{0, 11}, {9, 11}}, nil},
		{"value equal to the threshold does not cross >", gt(10, 0), []pt{{0, 10}}, nil},
		{"resolve has the same id", gt(10, 0), []pt{{0, 11}, {1, 10}, {2, 11}},
			[]string{"firing@0s v=11 th=10 start=0s", "resolved@1s v=10 th=10 start=0s", "firing@2s v=11 th=10 start=2s"}},
		{">=", Rule{Name: "r", Op: ">=", Threshold: fp(10)}, []pt{{0, 10}, {1, 9.5}},
			[]string{"firing@0s v=10 th=10 start=0s", "resolved@1s v=9.5 th=10 start=0s"}},
		{"<", Rule{Name: "r", Op: "<", Threshold: fp(90), For: 15 * time.Second}, []pt{{0, 89}, {15, 88}, {16, 90}},
			[]string{"firing@15s v=88 th=90 start=0s", "resolved@16s v=90 th=90 start=0s"}},
		{"<=", Rule{Name: "r", Op: "<=", Threshold: fp(90)}, []pt{{0, 90}, {1, 90.5}},
			[]string{"firing@0s v=90 th=90 start=0s", "resolved@1s v=90.5 th=90 start=0s"}},
		{"outside high edge", outside, []pt{{0, 150}, {10, 141}, {11, 140}},
			[]string{"firing@10s v=141 th=140 start=0s", "resolved@11s v=140 th=140 start=0s"}},
		{"outside low edge", outside, []pt{{0, 30}, {10, 39}, {11, 40}},
			[]string{"firing@10s v=39 th=40 start=0s", "resolved@11s v=40 th=40 start=0s"}},
		{"outside crossing sides keeps pending", outside, []pt{{0, 30}, {5, 150}, {10, 160}},
			[]string{"firing@10s v=160 th=140 start=0s"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := brief(runRule(t, c.r, c.pts))
			if !slices.Equal(got, c.want) {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestHysteresis(t *testing.T) {
	cases := []struct {
		name string
		r    Rule
		pts  []pt
		want []string
	}{
		{"> resolves strictly below clear", Rule{Name: "r", Op: ">", Threshold: fp(10), Clear: fp(8)},
			[]pt{{0, 11}, {1, 9}, {2, 10.5}, {3, 8}, {4, 7.9}, {5, 9}, {6, 10.1}},
			[]string{"firing@0s v=11 th=10 start=0s", "resolved@4s v=7.9 th=10 start=0s", "firing@6s v=10.1 th=10 start=6s"}},
		{"> without clear resolves at the threshold", Rule{Name: "r", Op: ">", Threshold: fp(10)},
			[]pt{{0, 10.1}, {1, 10}},
			[]string{"firing@0s v=10.1 th=10 start=0s", "resolved@1s v=10 th=10 start=0s"}},
		{">= with clear equal to threshold", Rule{Name: "r", Op: ">=", Threshold: fp(10), Clear: fp(10)},
			[]pt{{0, 10}, {1, 10}, {2, 9.99}},
			[]string{"firing@0s v=10 th=10 start=0s", "resolved@2s v=9.99 th=10 start=0s"}},
		{"< resolves strictly above clear", Rule{Name: "r", Op: "<", Threshold: fp(90), Clear: fp(92), For: 15 * time.Second},
			[]pt{{0, 89}, {15, 89}, {16, 91}, {17, 92}, {18, 92.1}},
			[]string{"firing@15s v=89 th=90 start=0s", "resolved@18s v=92.1 th=90 start=0s"}},
		{"<= with clear", Rule{Name: "r", Op: "<=", Threshold: fp(0), Clear: fp(1)},
			[]pt{{0, 0}, {1, 0.5}, {2, 1}, {3, 1.5}},
			[]string{"firing@0s v=0 th=0 start=0s", "resolved@3s v=1.5 th=0 start=0s"}},
		{"outside resolves inside the clear band", Rule{Name: "r", Op: "outside", Low: fp(40), High: fp(140), ClearLow: fp(50), ClearHigh: fp(130)},
			[]pt{{0, 150}, {1, 135}, {2, 130}, {3, 30}, {4, 45}, {5, 49.9}, {6, 50}},
			[]string{"firing@0s v=150 th=140 start=0s", "resolved@2s v=130 th=140 start=0s",
				"firing@3s v=30 th=40 start=3s", "resolved@6s v=50 th=40 start=3s"}},
		{"outside with only clear_high", Rule{Name: "r", Op: "outside", Low: fp(40), High: fp(140), ClearHigh: fp(130)},
			[]pt{{0, 30}, {1, 40}, {2, 141}, {3, 131}, {4, 130}},
			[]string{"firing@0s v=30 th=40 start=0s", "resolved@1s v=40 th=40 start=0s",
				"firing@2s v=141 th=140 start=2s", "resolved@4s v=130 th=140 start=2s"}},
		{"pending uses the threshold, not clear", Rule{Name: "r", Op: ">", Threshold: fp(10), Clear: fp(8), For: 5 * time.Second},
			[]pt{{0, 11}, {1, 9}, {5, 11}},
			nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := brief(runRule(t, c.r, c.pts))
			if !slices.Equal(got, c.want) {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}
}

// TestFlapping feeds a slow oscillation across the threshold with noise
// and checks that hysteresis (and for) turn each crossing into exactly one
// firing and one resolved event, while the bare threshold flaps.
func TestFlapping(t *testing.T) {
	const periods, period = 5, 600 // seconds
	signal := func(noise float64, seed uint64) []pt {
		rng := rand.New(rand.NewPCG(seed, 1))
		var pts []pt
		for s := range periods * period {
			v := 10 - 5*math.Cos(2*math.Pi*float64(s)/period) + noise*(2*rng.Float64()-1)
			pts = append(pts, pt{float64(s), v})
		}
		return pts
	}
	hover := func(seed uint64) []pt {
		rng := rand.New(rand.NewPCG(seed, 2))
		var pts []pt
		for s := range 2000 {
			pts = append(pts, pt{float64(s), 10.2 + 0.5*math.Sin(float64(s)/7) + 0.3*(2*rng.Float64()-1)})
		}
		return pts
	}
	cases := []struct {
		name           string
		r              Rule
		pts            []pt
		minFired       int
		maxFired       int
		wantLastFiring bool
	}{
		{"no hysteresis flaps", gt(10, 0), signal(1, 1), 3 * periods, 1 << 30, false},
		{"clear 2.5 below: once per period", Rule{Name: "r", Op: ">", Threshold: fp(10), Clear: fp(7.5)}, signal(1, 1), periods, periods, false},
		{"clear and for: once per period", Rule{Name: "r", Op: ">", Threshold: fp(10), Clear: fp(7.5), For: 20 * time.Second}, signal(1, 2), periods, periods, false},
		{"for alone does not stop flapping at the edge", gt(10, 3*time.Second), signal(1, 3), periods + 1, 1 << 30, false},
		{"hovering above, clear 9: fires once, never resolves", Rule{Name: "r", Op: ">", Threshold: fp(10), Clear: fp(9)}, hover(4), 1, 1, true},
		{"outside band with clear band", Rule{Name: "r", Op: "outside", Low: fp(-100), High: fp(10), ClearHigh: fp(7.5)}, signal(1, 5), periods, periods, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			evs := runRule(t, c.r, c.pts)
			fired := 0
			for _, ev := range evs {
				if ev.Type == Firing {
					fired++
				}
			}
			t.Logf("%d firing events", fired)
			if fired < c.minFired || fired > c.maxFired {
				t.Fatalf("%d firing events, want %d..%d", fired, c.minFired, c.maxFired)
			}
			if last := evs[len(evs)-1].Type; (last == Firing) != c.wantLastFiring {
				t.Fatalf("last event %s", last)
			}
		})
	}
}

func TestMissingData(t *testing.T) {
	r := Rule{Name: "lead_off", Match: Match{Field: "ecg"}, Op: "missing", For: 5 * time.Second, Labels: map[string]string{"k": "v"}}
	e := newEngine(t, r)
	const s1, s2 = "ecg,device=a", "ecg,device=b"
	var evs []Event
	steps := []struct {
		ingest float64
		rs     []wal.Reading
		want   []string
	}{
		{0, []wal.Reading{rd(s1, "ecg", 1, 100)}, nil},
		{1, []wal.Reading{rd(s2, "ecg", 1, 100), rd(s1, "other", 1, 101)}, nil}, // other field: not proof of life
		{4.999, nil, nil},
		{5, nil, []string{"firing@5s v=5 th=5 start=0s"}},
		{5.5, nil, nil}, // fires once
		{6, nil, []string{"firing@6s v=5 th=5 start=1s"}},
		{3, nil, nil}, // the clock never goes back
		{7, []wal.Reading{rd(s1, "ecg", 1, 50)}, []string{"resolved@7s v=7 th=5 start=0s"}}, // event time is irrelevant
		{11.9, nil, nil},
		{12, nil, []string{"firing@12s v=5 th=5 start=7s"}},
	}
	for i, st := range steps {
		n := len(evs)
		evs = e.Apply(uint64(i+1), batch(sec(st.ingest), st.rs...), nil, evs)
		if got := brief(evs[n:]); !slices.Equal(got, st.want) {
			t.Fatalf("step %d (ingest %gs): got %q, want %q", i, st.ingest, got, st.want)
		}
	}
	checkPairs(t, evs)
	if evs[0].Series != s1 || evs[1].Series != s2 || evs[0].Labels["k"] != "v" || evs[0].Op != "missing" || evs[0].Severity != "warning" {
		t.Fatalf("events %+v", evs[:2])
	}
	// A nil batch is no tick.
	if got := e.Apply(20, nil, nil, nil); len(got) != 0 {
		t.Fatalf("nil batch gave %v", got)
	}
	act := e.Active()
	if len(act) != 2 || act[0].State != "firing" || act[0].Series != s1 || act[0].Value != 5 || act[1].Value != 11 {
		t.Fatalf("Active %+v", act)
	}
	st := e.Stats()
	if st.Firing != 2 || st.Fired != 3 || st.Resolved != 1 || st.States != 2 {
		t.Fatalf("Stats %+v", st)
	}
}

func TestOutOfOrder(t *testing.T) {
	t.Run("raw", func(t *testing.T) {
		r := gt(10, 10*time.Second)
		e := newEngine(t, r)
		pts := []struct {
			p    pt
			want []string
		}{
			{pt{0, 11}, nil},  // pending from 0
			{pt{20, 5}, nil},  // back to inactive
			{pt{15, 11}, nil}, // late: would restart pending at 15
			{pt{21, 11}, nil}, // pending from 21
			{pt{30, 11}, nil}, // 9s
			{pt{-5, 11}, nil}, // late
			{pt{31, 11}, []string{"firing@31s v=11 th=10 start=21s"}},
			{pt{29, 5}, nil}, // late: would resolve
			{pt{31, 5}, []string{"resolved@31s v=5 th=10 start=21s"}}, // equal time is in order
			{pt{100, 5}, nil},
			{pt{50, 50}, nil},  // late: for 10s not met anyway, but it would start pending
			{pt{101, 50}, nil}, // pending from 101, not from 50
			{pt{110, 50}, nil},
		}
		var evs []Event
		for i, p := range pts {
			n := len(evs)
			evs = e.Apply(uint64(i), batch(int64(i), rd("m", "f", p.p.v, p.p.t)), nil, evs)
			if got := brief(evs[n:]); !slices.Equal(got, p.want) {
				t.Fatalf("step %d %v: got %q, want %q", i, p.p, got, p.want)
			}
		}
		if st := e.Stats(); st.OutOfOrder != 4 || st.Pending != 1 {
			t.Fatalf("Stats %+v", st)
		}
	})
	t.Run("late reading never fires retroactively with for 0", func(t *testing.T) {
		e := newEngine(t, gt(10, 0))
		evs := e.Apply(1, batch(0, rd("m", "f", 1, 100), rd("m", "f", 50, 99), rd("m", "f", 50, 100)), nil, nil)
		if got := brief(evs); !slices.Equal(got, []string{"firing@100s v=50 th=10 start=100s"}) {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("windows", func(t *testing.T) {
		r := Rule{Name: "w", Op: ">", Threshold: fp(1), Value: "max", Window: "tumbling:1m"}
		e := newEngine(t, r)
		em := func(end, v float64) windows.Emission {
			return emission("m", "f", "tumbling:1m", end, func(w *wsum) { w.Max = v })
		}
		evs := e.Apply(1, batch(0), []windows.Emission{em(120, 0), em(60, 5)}, nil)
		if len(evs) != 0 || e.Stats().OutOfOrder != 1 {
			t.Fatalf("late window evaluated: %v %+v", evs, e.Stats())
		}
	})
}

func TestAggregateRules(t *testing.T) {
	vib := Rule{Name: "vib", Match: Match{Field: "rms"}, Value: "mean", Window: "tumbling:60s", Op: ">", Threshold: fp(7.1), Clear: fp(6), For: 2 * time.Minute}
	cnt := Rule{Name: "cnt", Match: Match{Field: "rms"}, Value: "count", Window: "sliding:5m/10s", Op: "<", Threshold: fp(3)}
	p99 := Rule{Name: "p99", Match: Match{Measurement: "mach*"}, Value: "p99", Window: "tumbling:1m", Op: ">=", Threshold: fp(100)}
	e := newEngine(t, vib, cnt, p99)
	const s = "machine,device=m1"
	mean := func(end, v float64) windows.Emission {
		return emission(s, "rms", "tumbling:1m", end, func(w *wsum) { w.Mean = v })
	}
	steps := []struct {
		closed []windows.Emission
		raw    []wal.Reading
		want   []string
	}{
		{[]windows.Emission{mean(60, 7.5)}, nil, nil}, // pending from 60
		{[]windows.Emission{
			emission(s, "rms", "tumbling:10s", 70, func(w *wsum) { w.Mean = 1 }), // another spec
			{Kind: windows.KindGroup, Group: &windows.GroupSummary{Group: "g", Key: "machine", EndNs: sec(70)}},
			emission(s, "temp", "tumbling:1m", 70, func(w *wsum) { w.Mean = 1 }), // another field
		}, []wal.Reading{rd(s, "rms", 1, 70)}, nil}, // raw readings do not feed aggregate rules
		{[]windows.Emission{mean(120, 7.2)}, nil, nil},
		{[]windows.Emission{mean(180, 8)}, nil, []string{"firing@180s v=8 th=7.1 start=60s"}},
		{[]windows.Emission{mean(240, 6.5)}, nil, nil},
		{[]windows.Emission{mean(300, 5.9)}, nil, []string{"resolved@300s v=5.9 th=7.1 start=60s"}},
		{[]windows.Emission{emission(s, "rms", "sliding:5m/10s", 310, func(w *wsum) { w.Count = 2 })}, nil,
			[]string{"firing@310s v=2 th=3 start=310s"}},
		{[]windows.Emission{emission(s, "rms", "sliding:5m/10s", 320, func(w *wsum) { w.Count = 3 })}, nil,
			[]string{"resolved@320s v=3 th=3 start=310s"}},
		{[]windows.Emission{emission(s, "x", "tumbling:1m", 360, func(w *wsum) { w.P99 = 100 })}, nil,
			[]string{"firing@360s v=100 th=100 start=360s"}},
	}
	var evs []Event
	for i, st := range steps {
		n := len(evs)
		evs = e.Apply(uint64(i), batch(int64(i), st.raw...), st.closed, evs)
		if got := brief(evs[n:]); !slices.Equal(got, st.want) {
			t.Fatalf("step %d: got %q, want %q", i, got, st.want)
		}
	}
	checkPairs(t, evs)
	if evs[0].Rule != "vib" || evs[2].Rule != "cnt" || evs[4].Rule != "p99" || evs[4].Field != "x" {
		t.Fatalf("events %+v", evs)
	}
}

func TestMatching(t *testing.T) {
	rules := []Rule{
		{Name: "glob", Match: Match{Measurement: "env*", Tags: map[string]string{"site": "plant[12]"}, Field: "t*"}, Op: ">", Threshold: fp(0)},
		{Name: "exact", Match: Match{Measurement: "a b,c", Tags: map[string]string{"k=1": "v 1,x"}, Field: "f"}, Op: ">", Threshold: fp(0)},
		{Name: "any", Op: "<", Threshold: fp(-1000)},
		{Name: "needs_tag", Match: Match{Tags: map[string]string{"device": "*"}}, Op: "<", Threshold: fp(-2000)},
	}
	cases := []struct {
		series, field string
		want          []string
	}{
		{"env,device=d,site=plant1", "temp", []string{"glob", "any", "needs_tag"}},
		{"env2,site=plant2", "t", []string{"glob", "any"}},
		{"env,site=plant3", "temp", []string{"any"}},
		{"env,device=d", "temp", []string{"any", "needs_tag"}},
		{"env,site=plant1", "hum", []string{"any"}},
		{`a\ b\,c,k\=1=v\ 1\,x`, "f", []string{"exact", "any"}},
		{`a\ b\,c,k\=1=v\ 1`, "f", []string{"any"}},
		{"bad,=x", "f", nil},    // empty tag key: matches nothing, counted
		{"bad,k", "f", nil},     // no '='
		{",k=v", "f", nil},      // empty measurement
		{"bad,k=v=w", "f", nil}, // unescaped '='
	}
	e := newEngine(t, rules...)
	for _, c := range cases {
		m := e.match(c.series, c.field)
		var got []string
		for _, r := range m.raw {
			got = append(got, r.name)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%q %q: matched %q, want %q", c.series, c.field, got, c.want)
		}
		if m.bad != (c.want == nil) {
			t.Errorf("%q: bad = %v", c.series, m.bad)
		}
	}
	e.Apply(1, batch(0, rd("bad,k", "f", -5000, 0), rd("bad,k", "f", -5000, 1)), nil, nil)
	if st := e.Stats(); st.BadSeries != 2 || st.Fired != 0 {
		t.Fatalf("Stats %+v", st)
	}
}

func TestNonFinite(t *testing.T) {
	e := newEngine(t, gt(10, 0), Rule{Name: "m", Op: "missing", For: time.Second})
	evs := e.Apply(1, batch(0, rd("m", "f", math.Inf(1), 0), rd("m", "f", math.NaN(), 1)), nil, nil)
	evs = e.Apply(2, batch(sec(0.5), rd("m", "f", math.NaN(), 2)), nil, evs) // a NaN is still proof of life
	evs = e.Apply(3, batch(sec(1.2)), nil, evs)
	if len(evs) != 0 {
		t.Fatalf("events %q", brief(evs))
	}
	if st := e.Stats(); st.NonFinite != 3 {
		t.Fatalf("Stats %+v", st)
	}
}

func TestEventFields(t *testing.T) {
	r := Rule{Name: "temp_high", Match: Match{Field: "temp"}, Op: ">", Threshold: fp(85), Severity: "critical", Labels: map[string]string{"team": "ops"}}
	e := newEngine(t, r)
	evs := e.Apply(7, batch(0, rd("machine,device=a", "temp", 90, 1), rd("machine,device=b", "temp", 91, 1)), nil, nil)
	evs = e.Apply(8, batch(0, rd("machine,device=a", "temp", 80, 2)), nil, evs)
	if len(evs) != 3 {
		t.Fatalf("%d events", len(evs))
	}
	ev := evs[0]
	wantID, _ := alertID(nil, "gw-1", "temp_high", "machine,device=a", "temp", sec(1))
	if ev.ID != wantID || len(ev.ID) != 16 || ev.Gateway != "gw-1" || ev.Severity != "critical" || ev.Op != ">" ||
		ev.Index != 7 || ev.Seq != 0 || evs[1].Seq != 1 || evs[2].Index != 8 || evs[2].Seq != 0 || evs[2].ID != ev.ID || evs[1].ID == ev.ID {
		t.Fatalf("events %+v", evs)
	}
	// Another gateway gives other ids.
	if other, _ := alertID(nil, "gw-2", "temp_high", "machine,device=a", "temp", sec(1)); other == ev.ID {
		t.Fatal("id ignores the gateway")
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"id":`, `"type":"firing"`, `"labels":{"team":"ops"}`, `"wal_index":7`, `"start_ns":1000000000`, `"at_ns":1000000000`, `"threshold":85`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("%s lacks %s", b, k)
		}
	}
	// Labels are copies: changing them changes neither the rule nor Recent.
	evs[0].Labels["team"] = "x"
	rec := e.Recent(0)
	if len(rec) != 3 || rec[0].Type != Resolved || rec[2].Labels["team"] != "ops" {
		t.Fatalf("Recent %+v", rec)
	}
	rec[2].Labels["team"] = "y"
	if e.Recent(1)[0].Labels["team"] != "ops" || e.Rules()[0].Labels["team"] != "ops" || len(e.Recent(2)) != 2 {
		t.Fatal("labels shared")
	}
	act := e.Active()
	if len(act) != 1 || act[0].Series != "machine,device=b" || act[0].ID != evs[1].ID || act[0].SinceNs != sec(1) {
		t.Fatalf("Active %+v", act)
	}
}

func TestActiveSortedAndPending(t *testing.T) {
	e := newEngine(t, Rule{Name: "b", Op: ">", Threshold: fp(0), For: time.Minute}, Rule{Name: "a", Op: ">", Threshold: fp(0)})
	e.Apply(1, batch(0, rd("s2", "f", 1, 5), rd("s1", "f", 1, 6), rd("s1", "f", 2, 7)), nil, nil)
	act := e.Active()
	var got []string
	for _, a := range act {
		got = append(got, a.Rule+" "+a.Series+" "+a.State)
	}
	want := []string{"a s1 firing", "a s2 firing", "b s1 pending", "b s2 pending"}
	if !slices.Equal(got, want) {
		t.Fatalf("Active %q, want %q", got, want)
	}
	if p := act[2]; p.StartNs != sec(6) || p.SinceNs != sec(6) || p.LastNs != sec(7) || p.Value != 2 || p.ID == "" {
		t.Fatalf("pending %+v", p)
	}
	if st := e.Stats(); st.Pending != 2 || st.Firing != 2 || st.States != 4 || st.Rules != 2 {
		t.Fatalf("Stats %+v", st)
	}
}

func TestRecentBound(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Recent = 3
	cfg.Rules = []Rule{gt(0, 0)}
	e, err := New(cfg, "gw")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		e.Apply(uint64(i), batch(0, rd("m", "f", float64(1-2*(i%2)), float64(i))), nil, nil)
	}
	rec := e.Recent(0)
	if len(rec) != 3 || rec[0].Index != 9 || rec[2].Index != 7 {
		t.Fatalf("Recent %+v", rec)
	}
	cfg.Recent = 2
	if err := e.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if rec := e.Recent(10); len(rec) != 2 || rec[0].Index != 9 {
		t.Fatalf("after shrink %+v", rec)
	}
	cfg.Recent = 0
	if err := e.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	e.Apply(11, batch(0, rd("m", "f", 1, 20)), nil, nil)
	if rec := e.Recent(10); len(rec) != 0 {
		t.Fatalf("recent 0 keeps %+v", rec)
	}
}

func TestReload(t *testing.T) {
	a := Rule{Name: "a", Match: Match{Field: "f"}, Op: ">", Threshold: fp(10)}
	b := Rule{Name: "b", Match: Match{Field: "f"}, Op: "<", Threshold: fp(0)}
	c := Rule{Name: "c", Match: Match{Field: "f"}, Op: "missing", For: time.Second}
	p := Rule{Name: "p", Match: Match{Field: "g"}, Op: ">", Threshold: fp(10), For: time.Minute}
	cfg := DefaultConfig()
	cfg.Rules = []Rule{a, b, c, p}
	e, err := New(cfg, "gw")
	if err != nil {
		t.Fatal(err)
	}
	evs := e.Apply(1, batch(0, rd("s1", "f", 11, 0), rd("s2", "f", -1, 0), rd("s3", "g", 11, 0)), nil, nil)
	if len(evs) != 2 {
		t.Fatalf("events %q", brief(evs))
	}
	aID := evs[0].ID

	// An invalid config changes nothing.
	bad := cfg
	bad.Rules = []Rule{a, {Name: "a"}}
	if err := e.Reload(bad); err == nil {
		t.Fatal("invalid config accepted")
	}
	if len(e.Rules()) != 4 || len(e.Active()) != 3 {
		t.Fatalf("after failed reload: %d rules, %d active", len(e.Rules()), len(e.Active()))
	}

	// a: same definition, new position, spelled-out defaults: kept.
	// b: threshold changed: dropped. c: removed. p: severity changed: dropped.
	a2 := a
	a2.Severity, a2.Value = "warning", "reading"
	b2 := b
	b2.Threshold = fp(1)
	p2 := p
	p2.Severity = "critical"
	d := Rule{Name: "d", Match: Match{Field: "f"}, Op: ">", Threshold: fp(100)}
	cfg.Rules = []Rule{d, b2, a2, p2}
	if err := e.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	act := e.Active()
	if len(act) != 1 || act[0].Rule != "a" || act[0].ID != aID {
		t.Fatalf("Active after reload %+v", act)
	}
	// a keeps its firing s1 and inactive s2 states.
	if st := e.Stats(); st.States != 2 || st.Firing != 1 || st.Pending != 0 || st.Rules != 4 {
		t.Fatalf("Stats %+v", st)
	}
	if names := e.Rules(); names[0].Name != "d" || names[2].Name != "a" {
		t.Fatalf("Rules %+v", names)
	}
	// a resolves with its old id; b starts from inactive and fires anew;
	// p's pending period restarts.
	evs = e.Apply(2, batch(sec(10), rd("s1", "f", 5, 70), rd("s2", "f", -1, 70), rd("s3", "g", 11, 70)), nil, nil)
	want := []string{"resolved@70s v=5 th=10 start=0s", "firing@70s v=-1 th=1 start=70s"}
	if got := brief(evs); !slices.Equal(got, want) || evs[0].ID != aID {
		t.Fatalf("got %q, want %q", got, want)
	}
	if act := e.Active(); len(act) != 2 || act[1].Rule != "p" || act[1].StartNs != sec(70) {
		t.Fatalf("Active %+v", act)
	}
}

func TestMaxStates(t *testing.T) {
	t.Run("threshold states", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.MaxStates = 3
		cfg.Rules = []Rule{gt(10, 0)}
		e, _ := New(cfg, "gw")
		var evs []Event
		evs = e.Apply(1, batch(0, rd("s1", "f", 11, 0), rd("s2", "f", 11, 0), rd("s3", "f", 11, 0), rd("s4", "f", 11, 0)), nil, evs)
		if len(evs) != 3 || e.Stats().Overflow != 1 || e.Stats().States != 3 {
			t.Fatalf("events %d, %+v", len(evs), e.Stats())
		}
		// s1 resolves: its inactive state is forgotten to make room for s4.
		evs = e.Apply(2, batch(0, rd("s1", "f", 1, 1), rd("s4", "f", 11, 1)), nil, evs)
		st := e.Stats()
		if len(evs) != 5 || evs[4].Series != "s4" || st.Forgotten != 1 || st.States != 3 || st.Firing != 3 {
			t.Fatalf("events %q, %+v", brief(evs), st)
		}
		// The LRU inactive state goes first.
		evs = e.Apply(3, batch(0, rd("s2", "f", 1, 2), rd("s3", "f", 1, 2), rd("s2", "f", 1, 3), rd("s5", "f", 1, 3)), nil, evs)
		e.mu.Lock()
		_, has2 := e.states[stateKey{e.rules[0], "s2", "f"}]
		_, has3 := e.states[stateKey{e.rules[0], "s3", "f"}]
		e.mu.Unlock()
		if !has2 || has3 {
			t.Fatalf("evicted the wrong state: s2 %v s3 %v", has2, has3)
		}
	})
	t.Run("missing states", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.MaxStates = 3
		cfg.Rules = []Rule{gt(10, 0), {Name: "m", Match: Match{Field: "g"}, Op: "missing", For: 5 * time.Second}}
		e, _ := New(cfg, "gw")
		e.Apply(1, batch(0, rd("s1", "g", 0, 0), rd("s2", "g", 0, 0), rd("s9", "f", 1, 0)), nil, nil)
		// A new watched state: the inactive threshold state goes first...
		e.Apply(2, batch(sec(1), rd("s3", "g", 0, 1)), nil, nil)
		if st := e.Stats(); st.Forgotten != 1 || st.Evicted != 0 || st.States != 3 {
			t.Fatalf("Stats %+v", st)
		}
		// ...then the watched state seen longest ago.
		e.Apply(3, batch(sec(2), rd("s4", "g", 0, 2)), nil, nil)
		if st := e.Stats(); st.Evicted != 1 || st.States != 3 {
			t.Fatalf("Stats %+v", st)
		}
		evs := e.Apply(4, batch(sec(10)), nil, nil)
		if got := brief(evs); !slices.Equal(got, []string{"firing@10s v=10 th=5 start=0s", "firing@10s v=9 th=5 start=1s", "firing@10s v=8 th=5 start=2s"}) ||
			evs[0].Series != "s2" || evs[1].Series != "s3" || evs[2].Series != "s4" {
			t.Fatalf("fired %q %+v", got, evs)
		}
		// All states firing: a new series overflows; a known one resolves.
		evs = e.Apply(5, batch(sec(11), rd("s5", "g", 0, 1), rd("s2", "g", 0, 1)), nil, nil)
		if st := e.Stats(); st.Overflow != 1 || st.States != 3 || st.Firing != 2 || len(evs) != 1 || evs[0].Type != Resolved {
			t.Fatalf("Stats %+v, events %q", st, brief(evs))
		}
	})
	t.Run("reload to fewer", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Rules = []Rule{gt(10, 0)}
		e, _ := New(cfg, "gw")
		e.Apply(1, batch(0, rd("s1", "f", 1, 0), rd("s2", "f", 1, 0), rd("s3", "f", 11, 0)), nil, nil)
		cfg.MaxStates = 1
		if err := e.Reload(cfg); err != nil {
			t.Fatal(err)
		}
		if st := e.Stats(); st.States != 1 || st.Firing != 1 || st.Forgotten != 2 {
			t.Fatalf("Stats %+v", st)
		}
	})
	t.Run("cardinality does not grow memory", func(t *testing.T) {
		e := newEngine(t, Rule{Name: "r", Match: Match{Measurement: "hot"}, Op: ">", Threshold: fp(0)})
		b := &wal.Batch{}
		for i := range 3 * cacheGen {
			b.Readings = append(b.Readings, wal.Reading{Series: "cold,device=" + itoa(i), Field: "f", Value: 1})
			if len(b.Readings) == 1000 {
				e.Apply(uint64(i), b, nil, nil)
				b.Readings = b.Readings[:0]
			}
		}
		st := e.Stats()
		if st.MatchCache > 2*cacheGen || st.MatchCache < cacheGen || st.States != 0 {
			t.Fatalf("Stats %+v", st)
		}
	})
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}

func TestNoAllocWithoutMatch(t *testing.T) {
	e := newEngine(t, Rule{Name: "r", Match: Match{Measurement: "hot"}, Op: ">", Threshold: fp(0)},
		Rule{Name: "m", Match: Match{Measurement: "hot"}, Op: "missing", For: time.Second})
	b := batch(0)
	for i := range 100 {
		b.Readings = append(b.Readings, wal.Reading{Series: "cold,device=" + itoa(i), Field: "f", Value: 1})
	}
	e.Apply(0, b, nil, nil) // warm the cache
	allocs := testing.AllocsPerRun(100, func() { e.Apply(1, b, nil, nil) })
	if allocs != 0 {
		t.Fatalf("%v allocations per batch of non-matching readings", allocs)
	}
	// Matching readings that change nothing do not allocate either.
	hot := batch(0, rd("hot,device=a", "f", -1, 1), rd("hot,device=b", "f", -1, 1))
	e.Apply(2, hot, nil, nil)
	if allocs := testing.AllocsPerRun(100, func() { e.Apply(3, hot, nil, nil) }); allocs != 0 {
		t.Fatalf("%v allocations per batch of quiet matching readings", allocs)
	}
}

// TestConcurrentQueries runs the query API against Apply under -race.
func TestConcurrentQueries(t *testing.T) {
	e := newEngine(t, gt(0, 0), Rule{Name: "m", Op: "missing", For: time.Second})
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				for _, a := range e.Active() {
					_ = a.Labels
				}
				_ = e.Recent(10)
				_ = e.Stats()
				_ = e.Rules()
			}
		})
	}
	var evs []Event
	for i := range 2000 {
		evs = e.Apply(uint64(i), batch(sec(float64(i)), rd("m,device="+itoa(i%7), "f", float64(i%3-1), float64(i))), nil, evs[:0])
	}
	close(done)
	wg.Wait()
	if st := e.Stats(); st.Fired == 0 || st.Resolved == 0 {
		t.Fatalf("Stats %+v", st)
	}
}
