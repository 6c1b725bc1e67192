package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The latency phases put the QoS 1 load of mqtt-qos1 on the gateway and,
// in its measured span, send a probe series of their own on a fifth
// connection: a low rate, so the probe measures the path through a busy
// gateway, not its own queueing.

const (
	probeDevice   = "bench-probe"
	probeSeries   = "probe,device=" + probeDevice // measurement from the topic
	probeTopic    = "telemetry/" + probeDevice + "/probe"
	probeWindow   = 10 * time.Second
	probeInterval = 10 * time.Millisecond // query probes: at most 100/s, one at a time
	alertCycle    = 20 * time.Millisecond // alert probes: a crossing and a clearing reading per cycle
	probeTimeout  = 5 * time.Second
	// minProbes is the fewest samples a latency percentile is taken
	// over: the probes go on past the span's end until there are that
	// many (at most probeOverrun longer), so a p99 rests on 10 samples
	// or more above it.
	minProbes        = 1000
	probeOverrun     = 60 * time.Second
	alertLoadRate    = 50_000 // readings/s of the alert-latency phase's line-protocol load
	benchAlertRule   = "bench_probe_high"
	benchAlertsRules = `# firmware-sim bench, phase alert-latency: fires on every crossing reading.
rules:
  - name: ` + benchAlertRule + `
    match: {measurement: probe, field: value}
    op: ">"
    threshold: 100
    clear: 50
    for: 0s
    severity: warning
`
)

// probeClock hands out strictly increasing millisecond event times, so
// no probe reading is older than the one before (rules ignore those).
type probeClock struct{ last int64 }

func (c *probeClock) next() int64 {
	c.last = max(time.Now().UnixMilli(), c.last+1)
	return c.last
}

func connectProbe(ctx context.Context, addr, id string, lost *atomic.Int64) (paho.Client, error) {
	c := newBenchClient(addr, id, lost)
	if err := waitToken(ctx, c.Connect(), 10*time.Second); err != nil {
		return nil, fmt.Errorf("connect %s to %s: %w", id, addr, err)
	}
	return c, nil
}

// latencyFigures records what both latency phases report of their span.
func latencyFigures(r *PhaseResult, sp span, l *mqttLoad, timeouts int) {
	r.DurationS = sp.dur.Seconds()
	r.set("timeouts", float64(timeouts))
	r.set("background_acked_per_s", sp.perS(float64(sp.acked)))
	r.set("cpu_s_per_100k_msgs", sp.cpuPer(float64(sp.acked), 1e5))
	r.set("peak_rss_mib", mib(sp.peakRSS))
	r.set("publish_errors", float64(l.failed.Load()+l.unacked.Load()+l.lost.Load()))
	internalLatency(r, sp)
}

// internalLatency adds the gateway's own view of where a reading waits,
// from its histograms over the span (bucket-interpolated, so coarse): the
// group-commit fsync, and ingest (before the fsync) to applied in the
// windows and alerts. The probe's latency minus applied is the read path.
// Two figures say how much of it is waiting for a CPU rather than work:
// the Go scheduler's latency (a runnable goroutine to running, from
// go_sched_latencies_seconds) and the milliseconds per second the
// gateway's threads were runnable while the kernel ran something else
// (the load generator shares the machine).
func internalLatency(r *PhaseResult, sp span) {
	r.set("gw_sched_p50_ms", sp.histQuantile("go_sched_latencies_seconds", "", 0.5))
	r.set("gw_sched_p99_ms", sp.histQuantile("go_sched_latencies_seconds", "", 0.99))
	r.set("gw_runq_wait_ms_per_s", 1000*sp.runqWaitS/sp.dur.Seconds())
	r.set("gw_fsync_p50_ms", sp.histQuantile("runnel_wal_fsync_seconds", `log="readings"`, 0.5))
	r.set("gw_fsync_p99_ms", sp.histQuantile("runnel_wal_fsync_seconds", `log="readings"`, 0.99))
	r.set("gw_applied_p50_ms", sp.histQuantile("runnel_pipeline_ingest_to_applied_seconds", "", 0.5))
	r.set("gw_applied_p99_ms", sp.histQuantile("runnel_pipeline_ingest_to_applied_seconds", "", 0.99))
}

func (b *bench) phaseQueryLatency(ctx context.Context, r *PhaseResult) error {
	r.Note = fmt.Sprintf("under the mqtt-qos1 load; a probe reading every %v, GET /api/v1/windows polled from its PUBACK until its window's count moves", probeInterval)
	gw, err := b.startGateway(ctx, b.targetDir(r.Name, "runnel"), "")
	return withChild(gw, err, func(gw *child) error {
		var po probeOut
		sp, l, err := b.runMQTT(ctx, gw, 1, func(end time.Time) error {
			po, err = b.runProbes(ctx, gw, "query", end)
			return err
		})
		if err != nil {
			return err
		}
		percentiles(r.set, "", po.Lat)
		r.set("probes", float64(len(po.Lat)))
		r.set("polls_per_probe", float64(po.Polls)/float64(max(len(po.Lat)+po.Timeouts, 1)))
		latencyFigures(r, sp, l, po.Timeouts)
		return nil
	})
}

// phaseQueryLatencyPaced is query-latency with the QoS 1 load paced at
// half the gateway's saturating rate: the latency a reading sees on a
// busy but not overloaded gateway. The rate is mqtt-qos1's of this run;
// without that phase, a saturating span on this phase's gateway measures
// it first.
func (b *bench) phaseQueryLatencyPaced(ctx context.Context, r *PhaseResult) error {
	gw, err := b.startGateway(ctx, b.targetDir(r.Name, "runnel"), "")
	return withChild(gw, err, func(gw *child) error {
		rate := b.qos1Rate
		if rate <= 0 {
			sp, _, err := b.runMQTT(ctx, gw, 1, nil)
			if err != nil {
				return err
			}
			rate = sp.perS(float64(sp.acked))
			r.set("saturating_acked_per_s_measured_here", rate)
		}
		if rate <= 0 {
			return fmt.Errorf("query-latency-paced: no saturating QoS 1 rate measured")
		}
		r.Note = fmt.Sprintf("QoS 1 load paced at %.0f msgs/s (half the saturating rate); one probe reading at a time, GET /api/v1/windows polled from its PUBACK until its window's count moves", rate/2)
		cfg := b.mqttConfig(gw.mqtt, 1)
		cfg.rate = rate / 2
		l, err := startMQTTLoad(ctx, cfg)
		if err != nil {
			return err
		}
		var po probeOut
		sp, err := b.sustain(ctx, gw, l, func(end time.Time) error {
			po, err = b.runProbes(ctx, gw, "query", end)
			return err
		})
		l.finish()
		if err != nil {
			return err
		}
		percentiles(r.set, "", po.Lat)
		r.set("probes", float64(len(po.Lat)))
		r.set("polls_per_probe", float64(po.Polls)/float64(max(len(po.Lat)+po.Timeouts, 1)))
		r.set("paced_rate_per_s", rate/2)
		latencyFigures(r, sp, l, po.Timeouts)
		return gw.alive()
	})
}

// queryProbes publishes a probe reading every probeInterval until end and
// measures, for each, the time from its publish until the count of its
// 10 s window, read over HTTP, includes it. The polls start when the
// PUBACK arrives: a reading is applied after the fsync its PUBACK waits
// for, so polls before it only take CPU from the gateway.
func queryProbes(ctx context.Context, hc *http.Client, base string, minN int, probe paho.Client, end time.Time) (lat []time.Duration, timeouts, polls int, err error) {
	q := url.Values{"series": {probeSeries}, "field": {"v"}, "size": {"10s"}, "last": {"1"}}
	u := base + "/api/v1/windows?" + q.Encode()
	sent := map[int64]uint64{} // readings sent per window start
	var clock probeClock
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for i := 0; time.Now().Before(end) || (len(lat) < minN && time.Now().Before(end.Add(probeOverrun))); i++ {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return lat, timeouts, polls, ctx.Err()
		}
		ms := clock.next()
		start := alignDownNs(ms*int64(time.Millisecond), int64(probeWindow))
		sent[start]++
		t0 := time.Now()
		tok := probe.Publish(probeTopic, 1, false, fmt.Sprintf(`{"ts":%d,"v":%d}`, ms, i))
		if !tok.WaitTimeout(probeTimeout) {
			timeouts++
			continue
		}
		if err := tok.Error(); err != nil {
			return lat, timeouts, polls, fmt.Errorf("probe publish: %w", err)
		}
		ok, n, err := pollWindow(ctx, hc, u, start, sent[start], t0.Add(probeTimeout))
		polls += n
		if err != nil {
			return lat, timeouts, polls, err
		}
		if ok {
			lat = append(lat, time.Since(t0))
		} else {
			timeouts++
		}
	}
	return lat, timeouts, polls, nil
}

func alignDownNs(t, size int64) int64 {
	r := t % size
	if r < 0 {
		r += size
	}
	return t - r
}

// pollWindow GETs u in a tight loop (each request is the wait) until the
// window starting at start counts at least want readings, or deadline.
// 404 means the probe series does not exist yet. polls counts the GETs.
func pollWindow(ctx context.Context, hc *http.Client, u string, start int64, want uint64, deadline time.Time) (ok bool, polls int, err error) {
	var wr struct {
		Windows []struct {
			StartNs int64  `json:"start_ns"`
			Count   uint64 `json:"count"`
		} `json:"windows"`
	}
	for ; time.Now().Before(deadline); polls++ {
		if err := ctx.Err(); err != nil {
			return false, polls, err
		}
		resp, err := hc.Get(u)
		if err != nil {
			return false, polls, fmt.Errorf("GET %s: %w", u, err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			err = json.NewDecoder(resp.Body).Decode(&wr)
		case http.StatusNotFound:
			wr.Windows = nil
		default:
			err = fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return false, polls + 1, err
		}
		for _, w := range wr.Windows {
			if w.StartNs == start && w.Count >= want {
				return true, polls + 1, nil
			}
		}
	}
	return false, polls, nil
}

// alertSeen is an alert event as the subscriber received it.
type alertSeen struct {
	typ  string // firing, resolved
	atNs int64
	at   time.Time
}

func (b *bench) phaseAlertLatency(ctx context.Context, r *PhaseResult) error {
	r.Note = fmt.Sprintf("rule probe value > 100 for 0s, clear 50; latency = publish of the crossing reading -> firing event received on alerts/#; fire_*: under %d readings/s of batched line protocol (the issue's load); qos1load_*: under the saturating mqtt-qos1 load", alertLoadRate)
	rules := filepath.Join(b.dir, r.Name, "bench-rules.yaml")
	if err := os.MkdirAll(filepath.Dir(rules), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(rules, []byte(benchAlertsRules), 0o644); err != nil {
		return err
	}
	gw, err := b.startGateway(ctx, b.targetDir(r.Name, "runnel"), "", "RUNNEL_ALERTS_RULES_FILE="+rules)
	return withChild(gw, err, func(gw *child) error {
		// The target's load first: alertLoadRate readings/s of batched
		// line protocol (POST /api/v2/write, one request of
		// httpBatchSize lines every 1/(rate/batch) s).
		start := time.Now()
		every := time.Duration(float64(time.Second) * httpBatchSize / alertLoadRate)
		paced := func(_, k int, buf []byte) ([]byte, int, bool) {
			if d := time.Until(start.Add(time.Duration(k) * every)); d > 0 {
				time.Sleep(d) // pacing the generator, not synchronisation
			}
			ts := time.Now().UnixNano()
			for i := range httpBatchSize {
				buf = appendBenchLine(buf, benchDevice((k*httpBatchSize+i)%b.o.Devices), float64(i%200)/10, ts)
			}
			return buf, httpBatchSize, true
		}
		h := b.startHTTPLoad(ctx, gw.base, 1, paced)
		var po probeOut
		sp, err := b.sustain(ctx, gw, h, func(end time.Time) error {
			po, err = b.runProbes(ctx, gw, "alert", end)
			return err
		})
		h.finish(15 * time.Second)
		if err != nil {
			return err
		}
		percentiles(r.set, "fire_", po.Lat)
		percentiles(r.set, "resolve_", po.Resolve)
		r.DurationS = sp.dur.Seconds()
		r.set("alerts", float64(len(po.Lat)))
		r.set("timeouts", float64(po.Timeouts))
		overruns := po.Overruns
		r.set("background_readings_per_s", sp.perS(sp.delta(`runnel_ingest_readings_total{listener="http"}`)))
		r.set("peak_rss_mib", mib(sp.peakRSS))

		// Then under the saturating QoS 1 load of mqtt-qos1 (both cores
		// busy: the figure includes queueing behind it).
		sp, l, err := b.runMQTT(ctx, gw, 1, func(end time.Time) error {
			po, err = b.runProbes(ctx, gw, "alert", end)
			return err
		})
		if err != nil {
			return err
		}
		percentiles(r.set, "qos1load_fire_", po.Lat)
		r.set("qos1load_gw_alert_p50_ms", sp.histQuantile("runnel_pipeline_ingest_to_alert_seconds", "", 0.5))
		r.set("qos1load_gw_alert_p99_ms", sp.histQuantile("runnel_pipeline_ingest_to_alert_seconds", "", 0.99))
		r.set("qos1load_gw_applied_p99_ms", sp.histQuantile("runnel_pipeline_ingest_to_applied_seconds", "", 0.99))
		r.set("qos1load_background_acked_per_s", sp.perS(float64(sp.acked)))
		r.set("qos1load_timeouts", float64(po.Timeouts))
		r.set("publish_errors", float64(l.failed.Load()+l.unacked.Load()+l.lost.Load()))
		r.set("peak_rss_mib", max(r.Figures["peak_rss_mib"], mib(sp.peakRSS)))
		r.set("subscriber_overruns", float64(overruns+po.Overruns))
		return nil
	})
}

// alertHandler parses alert events; it runs on paho's goroutine, so it
// never blocks: an event that finds the channel full is counted.
func alertHandler(events chan<- alertSeen, overrun *atomic.Int64) paho.MessageHandler {
	return func(_ paho.Client, m paho.Message) {
		at := time.Now()
		var ev struct {
			Type string `json:"type"`
			Rule string `json:"rule"`
			AtNs int64  `json:"at_ns"`
		}
		if json.Unmarshal(m.Payload(), &ev) != nil || ev.Rule != benchAlertRule {
			return
		}
		select {
		case events <- alertSeen{typ: ev.Type, atNs: ev.AtNs, at: at}:
		default:
			overrun.Add(1)
		}
	}
}

// alertProbes alternates a crossing reading (150) and a clearing one
// (10), one pair per alertCycle, until end and at least minN firing
// samples (at most probeOverrun past end); each latency runs from the
// publish to the receipt of the event it causes.
func alertProbes(ctx context.Context, minN int, probe paho.Client, events <-chan alertSeen, end time.Time) (fire, resolve []time.Duration, timeouts int, err error) {
	var clock probeClock
	send := func(v int, want string) (time.Duration, bool, error) {
		ms := clock.next()
		t0 := time.Now()
		probe.Publish(probeTopic, 1, false, `{"ts":`+strconv.FormatInt(ms, 10)+`,"value":`+strconv.Itoa(v)+`}`)
		return awaitAlert(ctx, events, want, ms*int64(time.Millisecond), t0)
	}
	for time.Now().Before(end) || (len(fire) < minN && time.Now().Before(end.Add(probeOverrun))) {
		cycle := time.Now()
		for _, step := range []struct {
			v    int
			want string
			out  *[]time.Duration
		}{{150, "firing", &fire}, {10, "resolved", &resolve}} {
			d, ok, err := send(step.v, step.want)
			if err != nil {
				return fire, resolve, timeouts, err
			}
			if ok {
				*step.out = append(*step.out, d)
			} else {
				timeouts++
			}
		}
		if err := sleepCtx(ctx, time.Until(cycle.Add(alertCycle))); err != nil {
			return fire, resolve, timeouts, err
		}
	}
	return fire, resolve, timeouts, nil
}

// awaitAlert waits (at most probeTimeout) for an event of type want
// caused by the reading at atNs or later; older events are skipped.
func awaitAlert(ctx context.Context, events <-chan alertSeen, want string, atNs int64, t0 time.Time) (time.Duration, bool, error) {
	tm := time.NewTimer(probeTimeout)
	defer tm.Stop()
	for {
		select {
		case ev := <-events:
			if ev.typ == want && ev.atNs >= atNs {
				return ev.at.Sub(t0), true, nil
			}
		case <-tm.C:
			return 0, false, nil
		case <-ctx.Done():
			return 0, false, ctx.Err()
		}
	}
}
