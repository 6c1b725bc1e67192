package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
)

// buildBenchBinaries builds runnel and firmware-sim from the module root
// into a temp dir, as `make build` would (in parallel: the two builds
// share the cache).
func buildBenchBinaries(t *testing.T) (runnel, fwsim string) {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	dir := t.TempDir()
	runnel, fwsim = filepath.Join(dir, "runnel"), filepath.Join(dir, "firmware-sim")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, b := range [][2]string{{runnel, "./gateway/cmd/runnel"}, {fwsim, "./firmware-sim/cmd/firmware-sim"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("go", "build", "-o", b[0], b[1])
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return runnel, fwsim
}

// mustPositive lists, per phase, the figures a working run cannot leave
// at zero (f: figures, b: baseline, r: ratio).
var mustPositive = map[string][]string{
	"mqtt-qos1":           {"f:acked_per_s", "f:stored_per_s", "f:cpu_us_per_msg", "f:peak_rss_mib", "b:acked_per_s", "b:cpu_us_per_msg", "b:peak_rss_mib", "r:acked_per_s", "r:cpu_us_per_msg"},
	"mqtt-qos0":           {"f:received_per_s", "f:sent_per_s", "b:received_per_s", "r:received_per_s"},
	"udp":                 {"f:sent_per_s", "f:stored_per_s", "f:peak_rss_mib", "b:stored_per_s", "r:stored_per_s", "r:cpu_s_per_100k_points"},
	"http":                {"f:acked_per_s", "f:stored_per_s", "f:requests_per_s", "b:acked_per_s", "r:acked_per_s", "r:cpu_us_per_point"},
	"query-latency":       {"f:p50_ms", "f:p99_ms", "f:probes", "f:background_acked_per_s"},
	"query-latency-paced": {"f:p50_ms", "f:p99_ms", "f:probes", "f:paced_rate_per_s", "f:background_acked_per_s"},
	"alert-latency":       {"f:fire_p50_ms", "f:fire_p99_ms", "f:resolve_p50_ms", "f:alerts", "f:background_readings_per_s", "f:qos1load_fire_p99_ms", "f:qos1load_background_acked_per_s"},
	"forward":             {"f:summaries_acked_per_s", "f:summaries_appended_per_s", "f:kafka_summaries_per_s", "f:readings_per_s"},
	"mixed":               {"f:acked_per_s", "f:cpu_us_per_msg", "f:peak_rss_mib", "f:acked_total", "f:window_count_total", "f:summaries_10s", "b:acked_per_s", "r:cpu_us_per_msg", "f:bare_same_rate_acked_per_s", "f:cpu_vs_bare_same_rate"},
}

func TestRunBench(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs every bench phase (about 25 s)")
	}
	runnel, fwsim := buildBenchBinaries(t)
	t.Run("all-phases", func(t *testing.T) { testBenchAllPhases(t, runnel, fwsim) })
	t.Run("interrupted", func(t *testing.T) { testBenchInterrupted(t, runnel, fwsim) })
}

// testBenchInterrupted ends ctx in the middle of a phase: RunBench must
// return soon with ctx's error, write what it has, and leave no gateway
// running.
func testBenchInterrupted(t *testing.T, runnel, fwsim string) {
	out := filepath.Join(t.TempDir(), "latest.json")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(2*time.Second, cancel) // the gateway starts in well under that
	start := time.Now()
	res, err := RunBench(ctx, BenchOptions{Runnel: runnel, FirmwareSim: fwsim, Out: out, PhaseDuration: time.Minute,
		Phases: []string{"udp"}, WorkDir: t.TempDir()}, io.Discard)
	if !errors.Is(err, context.Canceled) || res.Error == "" || len(res.Phases) != 0 {
		t.Fatalf("RunBench after cancel: %v, result error %q, %d phases", err, res.Error, len(res.Phases))
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v after the interrupt", d)
	}
	if _, err := os.Stat(out); err != nil {
		t.Errorf("results not written after an interrupt: %v", err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if cmd, err := os.ReadFile(p); err == nil && bytes.HasPrefix(cmd, []byte(runnel+"\x00")) {
			t.Errorf("a gateway is still running: %s", p)
		}
	}
}

// testBenchAllPhases runs every phase against the built binaries with 1 s
// phases and checks the JSON results: parseable, every phase there, its
// figures positive, nothing acknowledged missing from the windows, the
// targets judged, the table printed, and a CPU and heap profile of every
// gateway phase written.
func testBenchAllPhases(t *testing.T, runnel, fwsim string) {
	out := filepath.Join(t.TempDir(), "results", "latest.json")
	profiles := filepath.Join(t.TempDir(), "profiles")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var table, progress bytes.Buffer
	o := BenchOptions{Runnel: runnel, FirmwareSim: fwsim, Out: out, PhaseDuration: time.Second,
		WorkDir: filepath.Join(t.TempDir(), "work"), Keep: true, Log: &progress, MinProbes: 20, ProfileDir: profiles}
	start := time.Now()
	_, err := RunBench(ctx, o, &table)
	t.Logf("bench took %v\n%s", time.Since(start).Round(time.Millisecond), table.String())
	if err != nil {
		t.Fatalf("RunBench: %v\nprogress:\n%s", err, progress.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res BenchResult
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("results do not parse: %v\n%s", err, data)
	}
	if res.Machine.CPUs < 1 || res.Machine.GoVersion == "" || res.Date == "" || res.Error != "" {
		t.Errorf("machine %+v, date %q, error %q", res.Machine, res.Date, res.Error)
	}
	var names []string
	for _, p := range res.Phases {
		names = append(names, p.Name)
		if p.Skipped {
			if p.Name != "telegraf" || o.Telegraf != "" {
				t.Errorf("phase %s skipped: %s", p.Name, p.Note)
			}
			continue
		}
		if p.DurationS < 0.9 {
			t.Errorf("%s: measured %.2fs, want the phase duration (1s)", p.Name, p.DurationS)
		}
		for _, want := range mustPositive[p.Name] {
			m := map[string]map[string]float64{"f": p.Figures, "b": p.Baseline, "r": p.Ratio}[want[:1]]
			if v, ok := m[want[2:]]; !ok || !(v > 0) {
				t.Errorf("%s: %s = %v (present %v), want > 0", p.Name, want, v, ok)
			}
		}
	}
	if got, want := strings.Join(names, ","), strings.Join(BenchPhases(), ","); got != want {
		t.Fatalf("phases %s, want %s", got, want)
	}
	mixed := res.Phases[len(res.Phases)-1].Figures
	if mixed["missing"] != 0 || mixed["window_count_total"] < mixed["acked_total"] {
		t.Errorf("mixed: %v acknowledged, %v counted in closed windows, missing %v",
			mixed["acked_total"], mixed["window_count_total"], mixed["missing"])
	}
	if len(res.Targets) != 18 {
		t.Errorf("%d targets judged, want 18: %+v", len(res.Targets), res.Targets)
	}
	for _, s := range []string{"mqtt-qos1 (1s)", "acked_per_s", "targets (from the issues)", "results: " + out} {
		if !strings.Contains(table.String(), s) {
			t.Errorf("table lacks %q", s)
		}
	}
	for _, p := range res.Phases {
		if p.Skipped || p.Name == "telegraf" { // no gateway in it
			continue
		}
		for _, kind := range []string{"cpu", "heap"} {
			f := filepath.Join(profiles, p.Name+"."+kind+".pprof")
			if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
				t.Errorf("phase %s: no %s profile (%v)", p.Name, kind, err)
			}
		}
	}
}

func TestBenchOptionsValidate(t *testing.T) {
	err := BenchOptions{PhaseDuration: time.Millisecond, Phases: []string{"mqtt-qos1", "nope"}, Publishers: 2, Devices: 1, MaxInFlight: 5000,
		GatewayEnv: []string{"RUNNEL_WAL_SYNC=none", "GOGC=50"}}.Validate()
	for _, want := range []string{"-phase-duration 1ms", "-phases nope: unknown phase", "-max-inflight 5000", "-devices 1", "-gateway-env GOGC=50: want RUNNEL_<KEY>=<value>"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want it to name %q", err, want)
		}
	}
	if err := (BenchOptions{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestBenchCmdUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := firmwaresim.Main(context.Background(), []string{"bench", "-phases", "mqtt-qos1,bogus"}, &stdout, &stderr, Command); code != firmwaresim.ExitUsage {
		t.Fatalf("exit %d, want %d; stderr: %s", code, firmwaresim.ExitUsage, stderr.String())
	}
	if !strings.Contains(stderr.String(), "-phases bogus: unknown phase") {
		t.Errorf("stderr: %s", stderr.String())
	}
	stderr.Reset()
	code := firmwaresim.Main(context.Background(), []string{"bench", "-runnel", filepath.Join(t.TempDir(), "none"), "-firmware-sim", os.Args[0]}, &stdout, &stderr, Command)
	if code != firmwaresim.ExitFailure || !strings.Contains(stderr.String(), "not an executable file") {
		t.Errorf("missing binary: exit %d, stderr %s", code, stderr.String())
	}
}

func TestParseProcStatCPU(t *testing.T) {
	f := func(stat string, want float64, wantErr bool) {
		t.Helper()
		got, err := parseProcStatCPU(stat)
		if (err != nil) != wantErr || (!wantErr && math.Abs(got-want) > 1e-9) {
			t.Errorf("parseProcStatCPU(%q) = %v, %v; want %v (error %v)", stat, got, err, want, wantErr)
		}
	}
	// utime 250 and stime 50 ticks: 3 s. A command name may hold spaces
	// and parentheses; the last ')' ends it.
	f("42 (runnel) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 1000 300", 3, false)
	f("42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0", 0.1, false)
	f("42 runnel S 1", 0, true)
	f("42 (runnel) S 1 2 3", 0, true)
	f("42 (runnel) S 1 42 42 0 -1 4194560 100 0 0 0 x 50", 0, true)
}

func TestReadProcUsageSelf(t *testing.T) {
	u, err := readProcUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.hwmBytes <= 0 || u.rssBytes <= 0 || u.hwmBytes < u.rssBytes || u.cpuS < 0 {
		t.Errorf("usage of the test process: %+v", u)
	}
}

func TestParseProm(t *testing.T) {
	in := "# HELP a x\n# TYPE a counter\nrunnel_ingest_readings_total{listener=\"mqtt\"} 12\nrunnel_ready 1\n\nup 1e+06\n"
	got, err := parseProm(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := promSamples{`runnel_ingest_readings_total{listener="mqtt"}`: 12, "runnel_ready": 1, "up": 1e6}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"novalue\n", "a b\n", " 1\n"} {
		if _, err := parseProm(strings.NewReader(bad)); err == nil {
			t.Errorf("parseProm(%q): no error", bad)
		}
	}
}

func TestSpanDeltaAndPercentiles(t *testing.T) {
	sp := span{dur: 2 * time.Second,
		m0: promSamples{`d{listener="udp",reason="busy"}`: 1, `d{listener="udp",reason="full"}`: 0, `d{listener="mqtt",reason="busy"}`: 5},
		m1: promSamples{`d{listener="udp",reason="busy"}`: 4, `d{listener="udp",reason="full"}`: 2, `d{listener="mqtt",reason="busy"}`: 50}}
	if got := sp.delta(`d{listener="udp"`); got != 5 {
		t.Errorf("delta over the udp reasons = %v, want 5", got)
	}
	if got := sp.perS(10); got != 5 {
		t.Errorf("perS = %v", got)
	}
	var r PhaseResult
	r.Figures = map[string]float64{}
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	percentiles(r.set, "x_", lat)
	if r.Figures["x_p50_ms"] != 50 || r.Figures["x_p99_ms"] != 99 || r.Figures["x_max_ms"] != 100 {
		t.Errorf("percentiles: %v", r.Figures)
	}
	percentiles(r.set, "y_", nil)
	if _, ok := r.Figures["y_p50_ms"]; ok {
		t.Errorf("no samples must leave the figure out (JSON has no NaN): %v", r.Figures)
	}
}

func TestJudgeTargets(t *testing.T) {
	phases := []PhaseResult{
		{Name: "mqtt-qos1", Figures: map[string]float64{"cpu_s_per_100k_msgs": 1.2}, Ratio: map[string]float64{"acked_per_s": 0.8}},
		{Name: "alert-latency", Figures: map[string]float64{"fire_p99_ms": 20}},
	}
	got := judgeTargets(phases)
	if len(got) != 3 {
		t.Fatalf("%d targets, want the 3 whose phases ran: %+v", len(got), got)
	}
	for i, met := range []bool{false, true, false} { // 0.8x < 0.85x; 1.2 s <= 1.3 s; 20 ms is not < 20 ms
		if got[i].Met != met {
			t.Errorf("%s = %v: met %v, want %v", got[i].Name, got[i].Value, got[i].Met, met)
		}
	}
}

func TestFmtFig(t *testing.T) {
	for v, want := range map[float64]string{1234567: "1,234,567", -12345: "-12,345", 250: "250", 12.34: "12.3", 0.678: "0.678", 3: "3", 0: "0"} {
		if got := fmtFig(v); got != want {
			t.Errorf("fmtFig(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestForwardBodies(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	body := forwardBodies(now)
	last := map[string]int64{} // device -> last event time, per writer order
	lines := 0
	for w := range httpWriters {
		var buf []byte
		for k := range 10 { // 100 devices of the writer's 25, four rounds
			b, n, ok := body(w, k, buf[:0])
			if !ok || n != fwdPerRequest*fwdSensors {
				t.Fatalf("writer %d request %d: %d lines, ok %v", w, k, n, ok)
			}
			lines += n
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var d, s, v int
				var ts int64
				if _, err := fmt.Sscanf(l, "fwd,device=fd-%03d,sensor=s-%03d v=%d %d", &d, &s, &v, &ts); err != nil {
					t.Fatalf("line %q: %v", l, err)
				}
				if d%httpWriters != w {
					t.Fatalf("writer %d sent device %d", w, d)
				}
				key := fmt.Sprint(d, "/", s)
				if ts < last[key] || ts%int64(10*time.Second) != 0 || ts > now.UnixNano() {
					t.Fatalf("series %s: event time %d after %d (want increasing, aligned, past)", key, ts, last[key])
				}
				last[key] = ts
			}
			buf = b
		}
	}
	if len(last) != httpWriters*25*fwdSensors || lines != httpWriters*10*1000 {
		t.Errorf("%d series, %d lines", len(last), lines)
	}
}

// FuzzParseProm: any input parses or fails without panic, and what
// parses re-parses from its own rendering to the same samples.
func FuzzParseProm(f *testing.F) {
	f.Add([]byte("# HELP a b\na{x=\"1\"} 2\nb 3.5\n"))
	f.Add([]byte("a 1\r\nb NaN\nc +Inf\n"))
	f.Add([]byte("#\n\n x 1\n"))
	f.Add([]byte("a b c"))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := parseProm(bytes.NewReader(in))
		if err != nil {
			return
		}
		var b strings.Builder
		for k, v := range got {
			fmt.Fprintf(&b, "%s %v\n", k, v)
		}
		again, err := parseProm(strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", b.String(), err)
		}
		if len(again) != len(got) {
			t.Fatalf("re-parse: %d samples, want %d", len(again), len(got))
		}
		for k, v := range got {
			if w, ok := again[k]; !ok || (w != v && !(math.IsNaN(v) && math.IsNaN(w))) {
				t.Fatalf("sample %q: %v, then %v", k, v, w)
			}
		}
	})
}

// FuzzParseProcStatCPU: no panic, and never a negative CPU time.
func FuzzParseProcStatCPU(f *testing.F) {
	f.Add("42 (runnel) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 1000 300")
	f.Add("1 ()) R 0 0 0 0 0 0 0 0 0 0 18446744073709551615 1")
	f.Add(")")
	f.Fuzz(func(t *testing.T, in string) {
		if v, err := parseProcStatCPU(in); err == nil && (v < 0 || math.IsNaN(v)) {
			t.Fatalf("parseProcStatCPU(%q) = %v", in, v)
		}
	})
}

func TestHistQuantile(t *testing.T) {
	// 100 observations over the span: 50 at <= 1 ms, 40 in (1, 2] ms, 10
	// in (2, 5] ms; the start scrape already held 7 older ones.
	m0 := promSamples{`h_bucket{log="r",le="0.001"}`: 7, `h_bucket{log="r",le="0.002"}`: 7, `h_bucket{log="r",le="0.005"}`: 7, `h_bucket{log="r",le="+Inf"}`: 7}
	m1 := promSamples{`h_bucket{log="r",le="0.001"}`: 57, `h_bucket{log="r",le="0.002"}`: 97, `h_bucket{log="r",le="0.005"}`: 107, `h_bucket{log="r",le="+Inf"}`: 107,
		`h_bucket{log="other",le="0.001"}`: 1000, `h_bucket{log="other",le="+Inf"}`: 1000}
	sp := span{m0: m0, m1: m1}
	for _, c := range []struct{ q, want float64 }{{0.5, 1}, {0.25, 0.5}, {0.7, 1.5}, {0.95, 3.5}, {1, 5}} {
		if got := sp.histQuantile("h", `log="r"`, c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("q%v = %v ms, want %v", c.q, got, c.want)
		}
	}
	if got := sp.histQuantile("h", `log="none"`, 0.5); !math.IsNaN(got) {
		t.Errorf("no observations: %v, want NaN", got)
	}
	inf := span{m0: promSamples{}, m1: promSamples{`h_bucket{le="0.001"}`: 1, `h_bucket{le="+Inf"}`: 10}}
	if got := inf.histQuantile("h", "", 0.99); got != 1 {
		t.Errorf("q in +Inf = %v, want the top finite bound 1 ms", got)
	}
}
