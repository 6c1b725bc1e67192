package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/sketches"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// newCluster starts kfake with three brokers and the gateway topics at six
// partitions; group session timeouts may be short so a killed instance's
// partitions move quickly.
func newCluster(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, "runnel.summaries", "runnel.sketches"),
		kfake.GroupMinSessionTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testConfig(brokers []string, instance string) Config {
	cfg := DefaultConfig()
	cfg.Fleet.Brokers = brokers
	cfg.Fleet.Instance = instance
	cfg.Fleet.GroupBy = []string{"site"}
	cfg.Fleet.Grace = 2 * time.Second
	cfg.Fleet.HTTP = ""
	return cfg
}

// startInstance runs a fleet instance until the returned stop is called
// (or the test ends). stop cancels it as a crash would not: see kill tests.
func startInstance(t testing.TB, brokers []string, instance string) (*Service, func()) {
	t.Helper()
	return startInstanceWith(t, brokers, instance, nil)
}

// startInstanceWith is startInstance with the test config changed by edit.
func startInstanceWith(t testing.TB, brokers []string, instance string, edit func(*Config)) (*Service, func()) {
	t.Helper()
	cfg := testConfig(brokers, instance)
	if edit != nil {
		edit(&cfg)
	}
	s := New(cfg, slog.New(slog.NewTextHandler(testLogOut(), nil)))
	s.sessionTimeout, s.txnTimeout, s.tick = 1500*time.Millisecond, 10*time.Second, 100*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("instance %s: %v", instance, err)
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// reading is one raw reading of the simulated fleet.
type reading struct {
	gateway, device, site string
	window                int
	v                     float64
}

// sim is three gateways' raw readings over a few one-minute windows, and
// the records the gateways would send for them.
type sim struct {
	base     int64
	readings []reading
	// siteSketches adds a third group sketch per gateway, window and
	// site: devices_per_site, by measurement and site (key
	// "vibration,site=<site>"), with an HLL and a top-k of devices.
	siteSketches bool
}

const (
	simWindow = int64(time.Minute)
	simMeas   = "vibration"
	simField  = "rms"
	simSpec   = "tumbling:1m"
)

// newSim draws readings: values are multiples of 1/64, so every sum is
// exact in float64 whatever the order; a few devices are heavy hitters,
// and some device names appear at several gateways (a moved device).
func newSim(seed uint64, gateways, devices, windows int) *sim {
	return newSimSites(seed, gateways, devices, windows, 2)
}

// newSimSites spreads the devices over sites: each site is a fleet window
// lineage, and lineages are what spreads the work over partitions.
func newSimSites(seed uint64, gateways, devices, windows, sites int) *sim {
	r := rand.New(rand.NewPCG(seed, 7))
	s := &sim{base: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).UnixNano()}
	for g := range gateways {
		gw := fmt.Sprintf("gw-%d", g)
		for d := range devices {
			dev := fmt.Sprintf("%s-d%03d", gw, d)
			if d < devices/5 {
				dev = fmt.Sprintf("shared-d%03d", d)
			}
			site := strconv.Itoa(d % sites)
			for w := range windows {
				n := 1 + r.IntN(20)
				if d < 3 {
					n = 150 + 20*d + r.IntN(5) // heavy hitters, distinct totals
				}
				for range n {
					s.readings = append(s.readings, reading{gw, dev, site, w, float64(r.IntN(64*40)) / 64})
				}
			}
		}
	}
	return s
}

func (s *sim) start(w int) int64 { return s.base + int64(w)*simWindow }

func escapeTag(v string) string { return v } // simulated names need no escaping

// records builds the gateway records exactly as gateway/schema defines
// them: one summary per (gateway, series, window) and two group sketches
// (distinct devices, top devices) per (gateway, window).
func (s *sim) records(t testing.TB) []*kgo.Record {
	t.Helper()
	type sk struct {
		gw, dev, site string
		w             int
	}
	series := map[sk][]float64{}
	for _, r := range s.readings {
		k := sk{r.gateway, r.device, r.site, r.window}
		series[k] = append(series[k], r.v)
	}
	keys := make([]sk, 0, len(series))
	for k := range series {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		return fmt.Sprint(a.w, a.gw, a.dev) < fmt.Sprint(b.w, b.gw, b.dev)
	})
	var out []*kgo.Record
	type gwk struct {
		gw string
		w  int
	}
	hlls, tops := map[gwk]*sketches.HLL{}, map[gwk]*sketches.TopK{}
	readings := map[gwk]uint64{}
	type siteGW struct {
		gw, site string
		w        int
	}
	siteHLLs, siteTops := map[siteGW]*sketches.HLL{}, map[siteGW]*sketches.TopK{}
	siteReadings := map[siteGW]uint64{}
	for _, k := range keys {
		vs := series[k]
		q := sketches.NewQuantile()
		sum, mn, mx := 0.0, math.Inf(1), math.Inf(-1)
		for _, v := range vs {
			q.Add(v)
			sum += v
			mn, mx = min(mn, v), max(mx, v)
		}
		mean := sum / float64(len(vs))
		sd := 0.0
		if len(vs) > 1 {
			for _, v := range vs {
				sd += (v - mean) * (v - mean)
			}
			sd = math.Sqrt(sd / float64(len(vs)-1))
		}
		qb, err := q.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		ser := simMeas + ",device=" + escapeTag(k.dev) + ",site=" + k.site
		st := s.start(k.w)
		v := map[string]any{
			"schema": schemaSummary, "gateway": k.gw, "series": ser, "field": simField, "window": simSpec,
			"start": rfc3339(st), "end": rfc3339(st + simWindow), "start_ns": st, "end_ns": st + simWindow,
			"count": len(vs), "sum": sum, "min": mn, "max": mx, "mean": mean, "stddev": sd,
			"first": vs[0], "last": vs[len(vs)-1], "p50": q.Quantile(0.5), "p90": q.Quantile(0.9), "p99": q.Quantile(0.99),
			"quantiles": qb, "closed": "watermark",
		}
		id := messageID(k.gw, ser, simField, simSpec, strconv.FormatInt(st, 10))
		out = append(out, gatewayRecord("runnel.summaries", schemaSummary, id, k.gw+"|"+ser+"|"+simField+"|"+simSpec, v))
		g := gwk{k.gw, k.w}
		if hlls[g] == nil {
			hlls[g], tops[g] = sketches.NewHLL(), sketches.NewTopKDefault()
		}
		hlls[g].AddString(k.dev)
		tops[g].AddString(k.dev, uint64(len(vs)))
		readings[g] += uint64(len(vs))
		if s.siteSketches {
			sg := siteGW{k.gw, k.site, k.w}
			if siteHLLs[sg] == nil {
				siteHLLs[sg], siteTops[sg] = sketches.NewHLL(), sketches.NewTopKDefault()
			}
			siteHLLs[sg].AddString(k.dev)
			siteTops[sg].AddString(k.dev, uint64(len(vs)))
			siteReadings[sg] += uint64(len(vs))
		}
	}
	sgs := slices.SortedFunc(maps.Keys(siteHLLs), func(a, b siteGW) int {
		return cmp.Or(cmp.Compare(a.w, b.w), cmp.Compare(a.gw, b.gw), cmp.Compare(a.site, b.site))
	})
	for _, sg := range sgs {
		st := s.start(sg.w)
		hb, _ := siteHLLs[sg].MarshalBinary()
		tb, _ := siteTops[sg].MarshalBinary()
		key := simMeas + ",site=" + sg.site
		v := map[string]any{
			"schema": schemaSketch, "gateway": sg.gw, "group": "devices_per_site", "key": key,
			"start": rfc3339(st), "end": rfc3339(st + simWindow), "start_ns": st, "end_ns": st + simWindow,
			"readings": siteReadings[sg], "distinct": siteHLLs[sg].Estimate(), "hll": hb, "countmin": tb,
		}
		id := messageID(sg.gw, "devices_per_site", key, strconv.FormatInt(st, 10))
		out = append(out, gatewayRecord("runnel.sketches", schemaSketch, id, sg.gw+"|devices_per_site|"+key, v))
	}
	gks := make([]gwk, 0, len(hlls))
	for g := range hlls {
		gks = append(gks, g)
	}
	sort.Slice(gks, func(i, j int) bool { return fmt.Sprint(gks[i]) < fmt.Sprint(gks[j]) })
	for _, g := range gks {
		st := s.start(g.w)
		hb, _ := hlls[g].MarshalBinary()
		tb, _ := tops[g].MarshalBinary()
		for _, grp := range []struct {
			name string
			hll  bool
		}{{"devices_per_measurement", true}, {"top_devices", false}} {
			v := map[string]any{
				"schema": schemaSketch, "gateway": g.gw, "group": grp.name, "key": simMeas,
				"start": rfc3339(st), "end": rfc3339(st + simWindow), "start_ns": st, "end_ns": st + simWindow,
				"readings": readings[g], "distinct": 0,
			}
			if grp.hll {
				v["hll"], v["distinct"] = hb, hlls[g].Estimate()
			} else {
				v["countmin"] = tb
				var items []map[string]any
				for _, it := range tops[g].Top() {
					items = append(items, map[string]any{"key": it.Key, "count": it.Count})
				}
				v["topk"] = items
			}
			id := messageID(g.gw, grp.name, simMeas, strconv.FormatInt(st, 10))
			out = append(out, gatewayRecord("runnel.sketches", schemaSketch, id, g.gw+"|"+grp.name+"|"+simMeas, v))
		}
	}
	return out
}

func gatewayRecord(topic, schema, id, key string, v any) *kgo.Record {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: b, Headers: []kgo.RecordHeader{
		{Key: "runnel-id", Value: []byte(id)}, {Key: "runnel-schema", Value: []byte(schema)}}}
}

func produce(t testing.TB, brokers []string, rs []*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// expected is the brute-force answer over all raw readings.
type expected struct {
	values   map[string][]float64 // summary fleet key -> all readings
	devices  map[int]map[string]bool
	perDev   map[int]map[string]uint64
	gateways map[string][]string
	// sitePerDev is the readings per device of each window and site.
	sitePerDev map[siteWin]map[string]uint64
}

type siteWin struct {
	w    int
	site string
}

func (s *sim) expect(groupBy string) expected {
	e := expected{values: map[string][]float64{}, devices: map[int]map[string]bool{}, perDev: map[int]map[string]uint64{},
		gateways: map[string][]string{}, sitePerDev: map[siteWin]map[string]uint64{}}
	for _, r := range s.readings {
		sw := siteWin{r.window, r.site}
		if e.sitePerDev[sw] == nil {
			e.sitePerDev[sw] = map[string]uint64{}
		}
		e.sitePerDev[sw][r.device]++
		k := joinKey("s", simMeas, simField, simSpec, groupBy+"="+r.site) + "|" + strconv.FormatInt(s.start(r.window), 10)
		e.values[k] = append(e.values[k], r.v)
		if !slices.Contains(e.gateways[k], r.gateway) {
			e.gateways[k] = append(e.gateways[k], r.gateway)
		}
		if e.devices[r.window] == nil {
			e.devices[r.window], e.perDev[r.window] = map[string]bool{}, map[string]uint64{}
		}
		e.devices[r.window][r.device] = true
		e.perDev[r.window][r.device]++
	}
	return e
}

// sketchKey is the fleet key of a by-measurement group sketch window:
// its gateway key carries no site, so the group-by part is empty.
func (s *sim) sketchKey(group string, w int) string {
	return joinKey("k", group, simMeas, time.Duration(simWindow).String(), "site=") + "|" + strconv.FormatInt(s.start(w), 10)
}

// siteSketchKey is the fleet key of a devices_per_site window.
func (s *sim) siteSketchKey(w int, site string) string {
	return joinKey("k", "devices_per_site", simMeas, time.Duration(simWindow).String(), "site="+site) + "|" + strconv.FormatInt(s.start(w), 10)
}

// collector reads runnel.fleet read_committed and keeps every record.
type collector struct {
	mu   sync.Mutex
	recs []*kgo.Record
}

func collect(t testing.TB, brokers []string) *collector {
	t.Helper()
	c := &collector{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("runnel.fleet"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			c.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) { c.recs = append(c.recs, r) })
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	return c
}

// latest is the last record per key, decoded.
func (c *collector) latest(t testing.TB) map[string]Output {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]Output{}
	for _, r := range c.recs {
		var o Output
		if err := json.Unmarshal(r.Value, &o); err != nil {
			t.Fatalf("runnel.fleet record %s: %v", r.Key, err)
		}
		out[string(r.Key)] = o
	}
	return out
}

func metricsText(s *Service) string {
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func testLogOut() io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return io.Discard
}

func mustGlob(t testing.TB, pattern string) []string {
	t.Helper()
	fs, err := filepath.Glob(pattern)
	if err != nil || len(fs) == 0 {
		t.Fatalf("glob %s: %v %v", pattern, fs, err)
	}
	return fs
}

var testEpoch = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
