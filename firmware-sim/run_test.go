package firmwaresim

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runOpt returns options for a short run against broker addr.
func runOpt(addr string) Options {
	o := DefaultOptions()
	o.Broker = addr
	o.Devices = 2
	o.Rate = 10
	o.Duration = time.Second
	o.DrainTimeout = 2 * time.Second
	o.Start = testStart
	return o
}

func mustRun(t *testing.T, ctx context.Context, o Options) Report {
	t.Helper()
	rep, err := Run(ctx, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestRunRate(t *testing.T) {
	b, h := startBroker(t, nil)
	o := runOpt(b.Addr())
	o.Scenario, o.Devices, o.Rate, o.Duration = ScenarioEnv, 4, 20, 2*time.Second
	start := time.Now()
	rep := mustRun(t, context.Background(), o)
	elapsed := time.Since(start)
	// Tick k of device i goes out at (i/4 + k)/20 s for k ≥ 1: 39 or 40
	// ticks each within 2 s.
	want := 4 * 20 * 2
	t.Logf("sent %d (want about %d) in %v; ack p50 %.2f ms p99 %.2f ms", rep.Sent, want, elapsed, rep.AckLatencyMs.P50, rep.AckLatencyMs.P99)
	if rep.Sent < int64(want)*9/10 || rep.Sent > int64(want) {
		t.Fatalf("sent %d messages at 4 devices × 20/s × 2 s, want %d - 10 %%", rep.Sent, want)
	}
	if got := len(h.received()); int64(got) != rep.Sent || rep.Acknowledged != rep.Sent {
		t.Fatalf("broker received %d, report sent %d, acknowledged %d", got, rep.Sent, rep.Acknowledged)
	}
	if elapsed > 4*time.Second || rep.DurationS < 1.9 {
		t.Fatalf("a 2 s run took %v (report %.2f s)", elapsed, rep.DurationS)
	}
	if rep.AckLatencyMs.Count != rep.Acknowledged || rep.AckLatencyMs.P50 <= 0 || rep.AckLatencyMs.Max < rep.AckLatencyMs.P99 {
		t.Fatalf("latency %+v", rep.AckLatencyMs)
	}
	// Devices keep their own client ids and topics.
	perClient := map[string]int{}
	for _, m := range h.received() {
		dev := strings.Split(m.topic, "/")[1]
		if m.client != o.ClientIDPrefix+dev {
			t.Fatalf("client %s published on %s", m.client, m.topic)
		}
		perClient[m.client]++
	}
	if len(perClient) != 4 {
		t.Fatalf("clients %v", perClient)
	}
}

func TestRunCount(t *testing.T) {
	b, h := startBroker(t, nil)
	o := runOpt(b.Addr())
	o.Scenario, o.Rate, o.Duration, o.Count, o.QoS = ScenarioEnv, 200, 0, 25, 2
	rep := mustRun(t, context.Background(), o)
	if rep.Sent != 50 || rep.Acknowledged != 50 || len(h.received()) != 50 {
		t.Fatalf("count 25 × 2 devices: sent %d, acked %d, broker got %d", rep.Sent, rep.Acknowledged, len(h.received()))
	}
}

// TestRunFaultsOnTheWire checks what reaches the broker: malformed payloads
// fail the gateway's decoders exactly as often as the report says.
func TestRunFaultsOnTheWire(t *testing.T) {
	b, h := startBroker(t, nil)
	o := runOpt(b.Addr())
	o.Devices, o.Rate, o.Duration = 10, 20, 1500*time.Millisecond
	o.Faults = Faults{MalformedPct: 10, LatePct: 10, LateBy: time.Hour, HighCardinality: 0.2}
	rep := mustRun(t, context.Background(), o)
	dec := newDecoders(t)
	failed, old := 0, 0
	devices := map[string]bool{}
	for _, m := range h.received() {
		rs, res := dec.decode(formatOfTopic(m.topic), m.topic, m.payload)
		if res.Problems() > 0 {
			failed++
		}
		devices[strings.Split(m.topic, "/")[1]] = true
		if len(rs) > 0 && rs[0].TimeNs < testStart.Add(-50*time.Minute).UnixNano() {
			old++
		}
	}
	t.Logf("%d messages: %d fail to decode, %d stamped an hour ago, %d device ids; report faults %+v",
		len(h.received()), failed, old, len(devices), rep.Faults)
	if int64(failed) != rep.Faults.Malformed || failed == 0 {
		t.Fatalf("%d payloads fail to decode, report says %d malformed", failed, rep.Faults.Malformed)
	}
	if frac := float64(failed) / float64(rep.Sent); frac < 0.05 || frac > 0.15 {
		t.Fatalf("%.1f %% malformed, want about 10 %%", 100*frac)
	}
	if old == 0 || rep.Faults.Late == 0 {
		t.Fatalf("no late message arrived (report %d)", rep.Faults.Late)
	}
	if len(devices) < 10+int(rep.Faults.HighCardinality)*9/10 || rep.Faults.HighCardinality == 0 {
		t.Fatalf("%d device ids for 10 devices and %d fresh ids", len(devices), rep.Faults.HighCardinality)
	}
}

func TestReconnectStorm(t *testing.T) {
	b, h := startBroker(t, nil)
	o := runOpt(b.Addr())
	o.Devices, o.Duration = 3, 1700*time.Millisecond
	o.Faults.ReconnectEvery = 400 * time.Millisecond
	rep := mustRun(t, context.Background(), o)
	connects := h.connects.Load()
	t.Logf("broker saw %d connects; report: %d connects, %d storm reconnects, errors %v", connects, rep.Connects, rep.Faults.StormReconnects, rep.Errors)
	// 3 initial connects plus 3 per storm; storms at 0.4, 0.8, 1.2, 1.6 s.
	if connects < 3+3*3 || rep.Faults.StormReconnects < 3*3 {
		t.Fatalf("broker saw %d connects, report %d storm reconnects; want at least 12 and 9", connects, rep.Faults.StormReconnects)
	}
	if rep.Connects != connects {
		t.Fatalf("report counts %d connects, broker %d", rep.Connects, connects)
	}
	if rep.Sent == 0 || rep.Acknowledged == 0 {
		t.Fatalf("nothing sent through the storms: %+v", rep)
	}
}

// TestMaxInFlight holds every publish in the broker: a device may have
// exactly MaxInFlight messages out, then it must wait.
func TestMaxInFlight(t *testing.T) {
	for _, n := range []int{1, 4} {
		gate := make(chan struct{})
		var once sync.Once
		release := func() { once.Do(func() { close(gate) }) }
		b, _ := startBroker(t, gate)
		t.Cleanup(release) // runs before the broker's Close: a held hook would hang it
		o := runOpt(b.Addr())
		o.Scenario, o.Devices, o.Rate, o.Duration = ScenarioEnv, 1, 1000, 300*time.Millisecond
		o.MaxInFlight, o.DrainTimeout = n, 100*time.Millisecond
		rep := mustRun(t, context.Background(), o)
		release()
		if rep.Sent != int64(n) || rep.Acknowledged != 0 || rep.Errors["unacked_at_end"] != int64(n) {
			t.Fatalf("max in flight %d: sent %d, acked %d, errors %v", n, rep.Sent, rep.Acknowledged, rep.Errors)
		}
	}
}

func TestRunPipelined(t *testing.T) {
	b, h := startBroker(t, nil)
	o := runOpt(b.Addr())
	o.Scenario, o.Devices, o.Rate, o.Count, o.Duration = ScenarioEnv, 1, 5000, 2000, 0
	o.MaxInFlight = 64
	start := time.Now()
	rep := mustRun(t, context.Background(), o)
	t.Logf("2000 QoS 1 messages, 64 in flight: %v, %.0f msg/s, p50 %.2f ms, p99 %.2f ms",
		time.Since(start), rep.Rate, rep.AckLatencyMs.P50, rep.AckLatencyMs.P99)
	if rep.Acknowledged != 2000 || len(h.received()) != 2000 {
		t.Fatalf("acked %d, broker got %d", rep.Acknowledged, len(h.received()))
	}
}

func TestRunInterrupted(t *testing.T) {
	b, h := startBroker(t, nil)
	o := runOpt(b.Addr())
	o.Duration = 0 // until ctx ends
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Report, 1)
	go func() {
		rep, _ := Run(ctx, o, nil)
		done <- rep
	}()
	waitFor(t, 5*time.Second, func() (bool, string) {
		n := len(h.received())
		return n >= 10, strings.Repeat("|", n)
	})
	cancel()
	select {
	case rep := <-done:
		if !rep.Interrupted || rep.Sent < 10 || rep.Acknowledged != rep.Sent {
			t.Fatalf("report after interrupt: %+v", rep)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
}

func TestRunNoBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	o := runOpt(addr)
	_, err = Run(context.Background(), o, nil)
	if err == nil || !strings.Contains(err.Error(), "no device could connect") {
		t.Fatalf("err = %v", err)
	}
}

// TestReportJSON checks every field of the report is present in its JSON.
func TestReportJSON(t *testing.T) {
	b, _ := startBroker(t, nil)
	o := runOpt(b.Addr())
	o.Duration = 300 * time.Millisecond
	var progress syncBuffer
	o.ProgressInterval = 100 * time.Millisecond
	rep, err := Run(context.Background(), o, &progress)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "transport", "format", "qos", "devices", "seed", "sent", "readings_sent",
		"bytes_sent", "acknowledged", "rejected", "errors", "faults", "connects", "duration_s", "rate",
		"ack_latency_ms", "interrupted", "note"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report JSON lacks %q: %s", k, raw)
		}
	}
	lat, _ := m["ack_latency_ms"].(map[string]any)
	for _, k := range []string{"count", "p50", "p90", "p99", "max"} {
		if _, ok := lat[k]; !ok {
			t.Errorf("ack_latency_ms lacks %q", k)
		}
	}
	faults, _ := m["faults"].(map[string]any)
	for _, k := range []string{"malformed", "out_of_order", "late", "high_cardinality", "burst", "storm_reconnects"} {
		if _, ok := faults[k]; !ok {
			t.Errorf("faults lacks %q", k)
		}
	}
	if m["scenario"] != "mix" || m["sent"].(float64) == 0 || m["rate"].(float64) <= 0 {
		t.Errorf("report %s", raw)
	}
	// Not a terminal: periodic lines, the last with the average.
	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "sent ") || !strings.Contains(lines[len(lines)-1], "(average)") ||
		strings.Contains(progress.String(), "\r") {
		t.Errorf("progress output %q", progress.String())
	}
}

func TestRunUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		grams [][]byte
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			grams = append(grams, append([]byte(nil), buf[:n]...))
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	got := func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return append([][]byte(nil), grams...)
	}

	o := runOpt("")
	o.Transport, o.UDPAddr, o.Scenario = TransportUDP, pc.LocalAddr().String(), ScenarioBiosignal
	o.Rate, o.Count, o.Duration = 50, 10, 0 // 5 ticks × 2 messages per device
	run := func() []string {
		before := len(got())
		rep := mustRun(t, context.Background(), o)
		if rep.Sent != 20 || rep.Acknowledged != 0 || len(rep.Errors) != 0 {
			t.Fatalf("UDP report: %+v", rep)
		}
		waitFor(t, 2*time.Second, func() (bool, string) {
			return len(got())-before == 20, strings.Repeat("|", len(got())-before)
		})
		var out []string
		for _, g := range got()[before:] {
			out = append(out, string(g))
		}
		slices.Sort(out)
		return out
	}
	a := run()
	dec := newDecoders(t)
	for _, g := range a {
		if _, res := dec.decode(FormatLineProtocol, "", []byte(g)); res.Problems() > 0 {
			t.Fatalf("datagram does not decode: %v", res.Err())
		}
	}
	// Same seed and start: the very same datagrams.
	if b := run(); !slices.Equal(a, b) {
		t.Fatal("two runs with the same seed sent different datagrams")
	}
}

func TestRunHTTP(t *testing.T) {
	dec := newDecoders(t)
	var mu sync.Mutex
	var auth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/write" || r.URL.Query().Get("precision") != "ns" {
			http.Error(w, "wrong endpoint", http.StatusNotFound)
			return
		}
		auth.Store(r.Header.Get("Authorization"))
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		_, res := dec.decode(FormatLineProtocol, "", body)
		mu.Unlock()
		if res.Problems() > 0 {
			http.Error(w, res.Err().Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	o := runOpt("")
	o.Transport, o.HTTPURL, o.HTTPToken = TransportHTTP, srv.URL, "s3cret-token"
	o.Devices, o.Rate, o.Duration, o.MaxInFlight = 4, 20, time.Second, 4
	o.Faults.MalformedPct = 20
	rep := mustRun(t, context.Background(), o)
	t.Logf("HTTP: %+v", rep)
	if rep.Sent == 0 || rep.Acknowledged+rep.Rejected != rep.Sent || rep.Rejected != rep.Faults.Malformed ||
		rep.Errors["http_400"] != rep.Rejected {
		t.Fatalf("HTTP report: sent %d, acked %d, rejected %d, malformed %d, errors %v",
			rep.Sent, rep.Acknowledged, rep.Rejected, rep.Faults.Malformed, rep.Errors)
	}
	if a, _ := auth.Load().(string); a != "Token s3cret-token" {
		t.Fatalf("Authorization %q", a)
	}
}

func TestProgressTerminal(t *testing.T) {
	r := &runner{opt: DefaultOptions(), start: time.Now()}
	r.st.sent.Store(42)
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go r.progress(ctx, &out, true, done)
	waitFor(t, 5*time.Second, func() (bool, string) { return strings.Contains(out.String(), "\r"), out.String() })
	cancel()
	<-done
	s := out.String()
	if !strings.HasPrefix(s, "\rsent 42  acknowledged 0  errors 0") || !strings.Contains(s, "\x1b[K") ||
		strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "(average)\x1b[K\n") {
		t.Fatalf("terminal progress %q", s)
	}
	// A pipe is not a terminal; a character device is.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if isTerminal(pw) || isTerminal(&out) {
		t.Fatal("a pipe or a buffer taken for a terminal")
	}
	if f, err := os.OpenFile("/dev/null", os.O_WRONLY, 0); err == nil {
		defer f.Close()
		if !isTerminal(f) {
			t.Fatal("/dev/null is a character device")
		}
	}
}
