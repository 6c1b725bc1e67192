package windows

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/sketches"
	"github.com/runnel-iot/runnel/wal"
)

const sec = int64(time.Second)

// testConfig is a small config without groups and sliding windows.
func testConfig() Config {
	c := DefaultConfig()
	c.Tumbling = []time.Duration{4 * time.Second}
	c.Sliding = nil
	c.Groups = nil
	c.AllowedLateness = 0
	c.ClosedHistory = 4
	return c
}

func mustNew(t testing.TB, c Config) *Engine {
	t.Helper()
	e, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestSeedVector(t *testing.T) {
	vals := []float64{9, 6, 8, 4, 7, 3, 8, 4, 2, 1, 3, 2}
	cases := []struct {
		name  string
		drive func(e *Engine, out []Emission) []Emission
		last  string
	}{
		{"later reading", func(e *Engine, out []Emission) []Emission {
			return e.Apply(100, &wal.Batch{IngestNs: 13 * sec, Readings: []wal.Reading{{Series: "s", Field: "v", Value: 0, TimeNs: 12 * sec}}}, out)
		}, "watermark"},
		{"idle", func(e *Engine, out []Emission) []Emission {
			return e.Apply(100, &wal.Batch{IngestNs: 12*sec + int64(2*time.Minute)}, out)
		}, "idle"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := mustNew(t, testConfig())
			var out []Emission
			for i, v := range vals {
				out = e.Apply(uint64(i+1), &wal.Batch{IngestNs: int64(i) * sec, Readings: []wal.Reading{{Series: "s", Field: "v", Value: v, TimeNs: int64(i) * sec}}}, out)
			}
			out = tc.drive(e, out)
			var sums []float64
			for _, em := range out {
				sums = append(sums, em.Window.Sum)
			}
			if want := []float64{27, 22, 8}; !reflect.DeepEqual(sums, want) {
				t.Fatalf("sums %v, want %v", sums, want)
			}
			if got := out[2].Window.Closed; got != tc.last {
				t.Errorf("last window closed by %q, want %q", got, tc.last)
			}
			w := out[0].Window
			if w.StartNs != 0 || w.EndNs != 4*sec || w.Count != 4 || w.Min != 4 || w.Max != 9 || w.First != 9 || w.Last != 4 || w.Mean != 6.75 {
				t.Errorf("first window %+v", w)
			}
			if want := math.Sqrt((2.25*2.25 + 0.75*0.75 + 1.25*1.25 + 2.75*2.75) / 3); math.Abs(w.Stddev-want) > 1e-12 {
				t.Errorf("stddev %v, want %v", w.Stddev, want)
			}
			if w.Spec != "tumbling:4s" || out[0].Kind != KindTumbling || out[0].Index != 5 || out[0].Seq != 0 {
				t.Errorf("emission %+v", out[0])
			}
		})
	}
}

type sinkRec struct {
	r  wal.Reading
	wm int64
}

type testSink struct{ got []sinkRec }

func (s *testSink) Late(r wal.Reading, wm int64) { s.got = append(s.got, sinkRec{r, wm}) }

func TestLateSink(t *testing.T) {
	c := testConfig()
	c.AllowedLateness = 2 * time.Second
	e := mustNew(t, c)
	sink := &testSink{}
	e.SetLateSink(sink)
	rs := []wal.Reading{
		{Series: "m,device=a", Field: "v", Value: 1, TimeNs: 10 * sec},
		{Series: "m,device=a,x=1", Field: "v", Value: 2, TimeNs: 7 * sec}, // late: wm(a) = 8s
		{Series: "m,device=a", Field: "v", Value: 3, TimeNs: 8 * sec},     // on time
		{Series: "m,device=b", Field: "v", Value: 4, TimeNs: 1 * sec},     // other device
		{Series: "m,device=a", Field: "w", Value: 5, TimeNs: 5 * sec},     // late, new field
	}
	e.Apply(1, &wal.Batch{IngestNs: 1, Readings: rs}, nil)
	want := []sinkRec{{rs[1], 8 * sec}, {rs[4], 8 * sec}}
	if !reflect.DeepEqual(sink.got, want) {
		t.Fatalf("late sink got %+v, want %+v", sink.got, want)
	}
	st := e.Stats()
	if st.LateReadings != 2 || st.Pairs != 2 || st.IdleCloses != 0 {
		t.Errorf("stats %+v", st)
	}
	if _, _, ok := e.Windows("m,device=a,x=1", "v", "", 0); ok {
		t.Error("late reading created a series")
	}
}

func TestConfigValidate(t *testing.T) {
	f := func(name string, mod func(c *Config), keys ...string) {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			mod(&c)
			err := c.Validate()
			var got []string
			for _, e := range unjoin(err) {
				var ke interface{ ConfigKey() string }
				if !errors.As(e, &ke) {
					t.Fatalf("error %v has no ConfigKey", e)
				}
				got = append(got, ke.ConfigKey())
			}
			if !reflect.DeepEqual(got, keys) {
				t.Fatalf("keys %q, want %q (err %v)", got, keys, err)
			}
		})
	}
	f("default", func(c *Config) {})
	f("tumbling", func(c *Config) { c.Tumbling = []time.Duration{time.Second, 0, time.Second} }, "tumbling[1]", "tumbling[2]")
	f("sliding", func(c *Config) {
		c.Sliding = []SlidingSpec{{Size: 7 * time.Second, Slide: 2 * time.Second}, {Size: time.Second}}
	},
		"sliding[0].size", "sliding[1].slide")
	f("times", func(c *Config) { c.AllowedLateness = -1; c.IdleTimeout = 0; c.SeriesTTL = 0 },
		"allowed_lateness", "idle_timeout", "series_ttl")
	f("sizes", func(c *Config) { c.MemoryBudget = 10; c.ClosedHistory = -1; c.ReservoirSize = 0 },
		"memory_budget", "closed_history", "reservoir_size")
	f("groups", func(c *Config) {
		c.Groups = []GroupSpec{
			{Name: "Bad Name", By: "device", Size: 0, Distinct: "x", TopK: "device", K: 99},
			{Name: "ok", By: "tag:site", Size: time.Minute, K: 3},
		}
	}, "groups[0].name", "groups[0].by", "groups[0].size", "groups[0].distinct", "groups[0].k", "groups[1].k")
	if _, err := New(Config{}); err == nil {
		t.Error("New accepted an empty config")
	}
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestSeriesKeyParsing(t *testing.T) {
	cases := []struct {
		key, meas, dev string
		tags           map[string]string
	}{
		{"env,device=pi-042,site=plant1", "env", "pi-042", map[string]string{"device": "pi-042", "site": "plant1"}},
		{"env", "env", "env", nil},
		{`my\,m,device=a\ b,s\=x=y\,z`, "my,m", "a b", map[string]string{"device": "a b", "s=x": "y,z"}},
		{"cpu,host=h1", "cpu", "cpu,host=h1", map[string]string{"host": "h1"}},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			p := parseSeriesKey(tc.key)
			if p.meas != tc.meas || deviceOf(tc.key, &p) != tc.dev {
				t.Errorf("meas %q dev %q", p.meas, deviceOf(tc.key, &p))
			}
			got := map[string]string{}
			for _, kv := range p.tags {
				got[kv[0]] = kv[1]
			}
			if len(got) == 0 {
				got = nil
			}
			if !reflect.DeepEqual(got, tc.tags) {
				t.Errorf("tags %v, want %v", got, tc.tags)
			}
		})
	}
}

func TestReadAPI(t *testing.T) {
	c := DefaultConfig()
	c.MemoryBudget = 256 * wal.MiB
	e := mustNew(t, c)
	var rs []wal.Reading
	for i := range 30 {
		rs = append(rs,
			wal.Reading{Series: "env,device=a,site=p1", Field: "temp", Value: float64(i), TimeNs: int64(i) * sec},
			wal.Reading{Series: "env,device=b,site=p2", Field: "temp", Value: float64(i), TimeNs: int64(i) * sec},
			wal.Reading{Series: "cpu,device=a", Field: "load", Value: 1, TimeNs: int64(i) * sec})
	}
	out := e.Apply(1, &wal.Batch{IngestNs: 30 * sec, Readings: rs}, nil)
	if len(out) == 0 {
		t.Fatal("no emissions")
	}
	items, total := e.Series(SeriesFilter{Measurement: "env", Tags: map[string]string{"site": "p2"}}, 0, 10)
	if total != 1 || items[0].Series != "env,device=b,site=p2" || items[0].Readings != 30 || items[0].LastEventNs != 29*sec || !reflect.DeepEqual(items[0].Fields, []string{"temp"}) {
		t.Errorf("series %+v total %d", items, total)
	}
	// The reserved overflow series is listed only once it holds readings.
	if items, total := e.Series(SeriesFilter{}, 1, 2); total != 3 || len(items) != 2 || items[0].Series != "env,device=a,site=p1" {
		t.Errorf("page %+v total %d", items, total)
	}
	open, closed, ok := e.Windows("env,device=a,site=p1", "temp", "tumbling:10s", 2)
	if !ok || len(open) != 1 || !open[0].Open || open[0].StartNs != 20*sec || len(closed) != 2 || closed[0].StartNs != 10*sec || closed[0].Closed != "watermark" {
		t.Errorf("windows open %+v closed %+v ok %v", open, closed, ok)
	}
	if _, _, ok := e.Windows("env,device=a,site=p1", "temp", "tumbling:7s", 2); ok {
		t.Error("unknown spec accepted")
	}
	open, _, _ = e.Windows("env,device=a,site=p1", "temp", "sliding:5m/10s", 0)
	// Windows start every 10s from -290s; wm 24s closed the two ending at 10s and 20s.
	if len(open) != 30 || open[len(open)-1].Count != 10 || open[0].StartNs != -270*sec {
		t.Errorf("sliding open windows %d", len(open))
	}
	if q, ok := e.Quantiles("env,device=a,site=p1", "temp", "tumbling:1m", []float64{0, 0.5, 1}); !ok || q[0] != 0 || q[2] != 29 || math.Abs(q[1]-14) > 14*0.021 {
		t.Errorf("quantiles %v %v", q, ok)
	}
	if s, ok := e.Samples("cpu,device=a", "load"); !ok || len(s) != 30 {
		t.Errorf("samples %d %v", len(s), ok)
	}
	gopen, _ := e.Groups("devices_per_measurement", "env")
	if len(gopen) != 1 || gopen[0].Distinct != 2 || gopen[0].Readings != 60 {
		t.Errorf("groups %+v", gopen)
	}
	st := e.Stats()
	if st.Series != 3 || st.Pairs != 3 || st.AppliedIndex != 1 || st.MemoryBytes <= 0 || st.ProcessingNs != 30*sec {
		t.Errorf("stats %+v", st)
	}
}

// TestEmissionQuantileSketch checks that a closed tumbling window carries
// its quantile sketch, decodable and agreeing with the window's p99, so the
// central side can merge windows across gateways.
func TestEmissionQuantileSketch(t *testing.T) {
	e := mustNew(t, testConfig())
	var out []Emission
	for i := range 8 {
		out = e.Apply(uint64(i+1), &wal.Batch{IngestNs: int64(i) * sec, Readings: []wal.Reading{{Series: "s", Field: "v", Value: float64(i + 1), TimeNs: int64(i) * sec}}}, out)
	}
	if len(out) == 0 {
		t.Fatal("no window closed")
	}
	w := out[0].Window
	if len(w.Quantiles) == 0 {
		t.Fatal("closed tumbling window without its quantile sketch")
	}
	q := sketches.NewQuantile()
	if err := q.UnmarshalBinary(w.Quantiles); err != nil {
		t.Fatal(err)
	}
	if got := q.Quantile(0.99); got != w.P99 {
		t.Errorf("decoded sketch p99 %v, window p99 %v", got, w.P99)
	}
	open, closed, _ := e.Windows("s", "v", w.Spec, 10)
	for _, r := range append(open, closed...) {
		if r.Quantiles != nil {
			t.Errorf("query result carries a sketch: %+v", r)
		}
	}
}

// TestSeriesCache checks that the sorted series cache follows creations,
// evictions and a checkpoint restore, and that a prefix selects its run.
func TestSeriesCache(t *testing.T) {
	c := testConfig()
	c.IdleTimeout = 2 * time.Second
	c.SeriesTTL = 3 * time.Second
	e := mustNew(t, c)
	add := func(idx uint64, now int64, keys ...string) {
		b := &wal.Batch{IngestNs: now}
		for _, k := range keys {
			b.Readings = append(b.Readings, wal.Reading{Series: k, Field: "v", Value: 1, TimeNs: now})
		}
		e.Apply(idx, b, nil)
	}
	list := func(f SeriesFilter, off, lim int) (keys []string, total int) {
		items, total := e.Series(f, off, lim)
		for _, it := range items {
			keys = append(keys, it.Series)
		}
		return keys, total
	}
	add(1, 1*sec, "b,device=2", "a,device=1", "c,device=3")
	if got, total := list(SeriesFilter{}, 0, 2); !reflect.DeepEqual(got, []string{"a,device=1", "b,device=2"}) || total != 3 {
		t.Fatalf("first page %v of %d", got, total)
	}
	add(2, 2*sec, "ab,device=4")
	if got, total := list(SeriesFilter{Prefix: "a"}, 0, 0); !reflect.DeepEqual(got, []string{"a,device=1", "ab,device=4"}) || total != 2 {
		t.Fatalf("after a new series, prefix a: %v of %d", got, total)
	}
	if got, total := list(SeriesFilter{}, 3, 10); !reflect.DeepEqual(got, []string{"c,device=3"}) || total != 4 {
		t.Fatalf("last page %v of %d", got, total)
	}
	data, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Only ab keeps sending; the others pass their TTL and are evicted.
	for i := range 10 {
		add(uint64(3+i), int64(3+i)*sec, "ab,device=4")
	}
	if got, total := list(SeriesFilter{}, 0, 0); !reflect.DeepEqual(got, []string{"ab,device=4"}) || total != 1 {
		t.Fatalf("after evictions %v of %d", got, total)
	}
	e2 := mustNew(t, c)
	if err := e2.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	e = e2
	if got, total := list(SeriesFilter{}, 0, 0); len(got) != 4 || total != 4 {
		t.Fatalf("after restore %v of %d", got, total)
	}
}
