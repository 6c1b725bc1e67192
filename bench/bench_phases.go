package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// span is one load measured on one target over PhaseDuration, after a
// warm-up: counter deltas, the target's CPU time over the span and its
// peak RSS, and (gateway only) /metrics at both ends.
type span struct {
	dur         time.Duration
	sent, acked int64
	cpuS        float64
	runqWaitS   float64 // the gateway's threads waiting for a CPU (procUsage.runqWaitS)
	peakRSS     int64
	m0, m1      promSamples
}

func (s span) perS(n float64) float64 { return n / s.dur.Seconds() }

// delta sums, over the span, every sample whose key starts with prefix
// (a metric name, or a name and its first labels).
func (s span) delta(prefix string) float64 {
	var d float64
	for k, v := range s.m1 {
		if strings.HasPrefix(k, prefix) {
			d += v - s.m0[k]
		}
	}
	return d
}

// cpuPer returns CPU seconds per n items (math.NaN with none).
func (s span) cpuPer(items, n float64) float64 {
	if items <= 0 {
		return math.NaN()
	}
	return s.cpuS / items * n
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

type snapshot struct {
	at          time.Time
	sent, acked int64
	use         procUsage
	m           promSamples
}

func (b *bench) snap(t *child, l loadCounters) (snapshot, error) {
	s := snapshot{at: time.Now()}
	s.sent, s.acked = l.counts()
	var err error
	if s.use, err = t.usage(); err != nil {
		return s, err
	}
	if t.base != "" {
		if s.m, err = b.scrape(t); err != nil {
			return s, fmt.Errorf("scrape %s: %w", t.name, err)
		}
	}
	return s, nil
}

// pause waits d, failing early when ctx ends or t exits.
func pause(ctx context.Context, t *child, d time.Duration) error {
	if d <= 0 {
		return t.alive()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return t.alive()
	case <-t.exited:
		return t.alive()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sustain lets l warm up (a fifth of the phase, at most 2 s: connections
// and caches settle), then measures it on t for PhaseDuration. during,
// when set, runs in the measured span (the probes of the latency phases)
// until the end time it is given.
func (b *bench) sustain(ctx context.Context, t *child, l loadCounters, during func(end time.Time) error) (span, error) {
	if err := pause(ctx, t, min(2*time.Second, b.o.PhaseDuration/5)); err != nil {
		return span{}, err
	}
	s0, err := b.snap(t, l)
	if err != nil {
		return span{}, err
	}
	end := s0.at.Add(b.o.PhaseDuration)
	stopProfile := b.profile(ctx, t)
	defer stopProfile()
	if during != nil {
		if err := during(end); err != nil {
			return span{}, err
		}
	}
	if err := pause(ctx, t, time.Until(end)); err != nil {
		return span{}, err
	}
	stopProfile()
	s1, err := b.snap(t, l)
	if err != nil {
		return span{}, err
	}
	return span{
		dur: s1.at.Sub(s0.at), sent: s1.sent - s0.sent, acked: s1.acked - s0.acked,
		cpuS: s1.use.cpuS - s0.use.cpuS, runqWaitS: s1.use.runqWaitS - s0.use.runqWaitS, peakRSS: s1.use.hwmBytes, m0: s0.m, m1: s1.m,
	}, nil
}

// targetDir is the data dir (and log dir) of one target of a phase.
func (b *bench) targetDir(phase, target string) string { return filepath.Join(b.dir, phase, target) }

func (b *bench) mqttConfig(addr string, qos byte) mqttLoadConfig {
	return mqttLoadConfig{addr: addr, clientID: "bench-pub-", publishers: b.o.Publishers,
		inflight: b.o.MaxInFlight, devices: b.o.Devices, qos: qos, drain: 15 * time.Second}
}

// runMQTT puts the MQTT load on t for a span, then drains it. The peak RSS
// is read after the drain.
func (b *bench) runMQTT(ctx context.Context, t *child, qos byte, during func(time.Time) error) (span, *mqttLoad, error) {
	return b.runMQTTAt(ctx, t, qos, 0, during)
}

// runMQTTAt is runMQTT with QoS 1 publishing paced at rate messages/s in
// all (0: unpaced).
func (b *bench) runMQTTAt(ctx context.Context, t *child, qos byte, rate float64, during func(time.Time) error) (span, *mqttLoad, error) {
	cfg := b.mqttConfig(t.mqtt, qos)
	cfg.rate = rate
	l, err := startMQTTLoad(ctx, cfg)
	if err != nil {
		return span{}, nil, err
	}
	sp, err := b.sustain(ctx, t, l, during)
	l.finish()
	if err != nil {
		return sp, l, err
	}
	if u, err := t.usage(); err == nil {
		sp.peakRSS = max(sp.peakRSS, u.hwmBytes)
	}
	return sp, l, t.alive()
}

// withChild runs f on a started child and stops it after, reporting the
// first error.
func withChild(t *child, err error, f func(t *child) error) error {
	if err != nil {
		return err
	}
	ferr := f(t)
	serr := t.stop()
	if ferr != nil {
		return ferr
	}
	return serr
}

// mqttFigures records the figures of an MQTT span; set is r.set or
// r.setBase.
func mqttFigures(set func(string, float64), sp span, l *mqttLoad, qos byte, gateway bool) {
	var done float64
	if qos == 0 {
		set("sent_per_s", sp.perS(float64(sp.sent)))
		done = float64(sp.sent) // bare: what TCP flow control let through
		if gateway {
			done = sp.delta(`runnel_ingest_readings_total{listener="mqtt"}`)
			set("dropped_per_s", sp.perS(sp.delta(`runnel_ingest_dropped_readings_total{listener="mqtt"`)))
		}
		set("received_per_s", sp.perS(done))
	} else {
		done = float64(sp.acked)
		set("acked_per_s", sp.perS(done))
		if gateway {
			set("stored_per_s", sp.perS(sp.delta(`runnel_ingest_readings_total{listener="mqtt"}`)))
		}
	}
	set("cpu_s_per_100k_msgs", sp.cpuPer(done, 1e5))
	set("cpu_us_per_msg", sp.cpuPer(done, 1e6))
	set("peak_rss_mib", mib(sp.peakRSS))
	set("publish_errors", float64(l.failed.Load()+l.unacked.Load()+l.lost.Load()))
}

// mqttVersusBare runs the MQTT load on a fresh gateway (gwEnv added to
// its environment), then the same load on a fresh bare broker.
func (b *bench) mqttVersusBare(ctx context.Context, r *PhaseResult, qos byte, gwEnv ...string) error {
	gw, err := b.startGateway(ctx, b.targetDir(r.Name, "runnel"), "", gwEnv...)
	err = withChild(gw, err, func(gw *child) error {
		sp, l, err := b.runMQTT(ctx, gw, qos, nil)
		if err != nil {
			return err
		}
		r.DurationS = sp.dur.Seconds()
		mqttFigures(r.set, sp, l, qos, true)
		b.logf("  runnel: %d sent, %d acked", l.sent.Load(), l.acked.Load())
		return nil
	})
	if err != nil {
		return err
	}
	return b.bareBaseline(ctx, r, qos)
}

func (b *bench) bareBaseline(ctx context.Context, r *PhaseResult, qos byte) error {
	bare, err := b.startBare(ctx, b.targetDir(r.Name, "bare"))
	return withChild(bare, err, func(bare *child) error {
		sp, l, err := b.runMQTT(ctx, bare, qos, nil)
		if err != nil {
			return err
		}
		mqttFigures(r.setBase, sp, l, qos, false)
		b.logf("  bare: %d sent, %d acked", l.sent.Load(), l.acked.Load())
		return nil
	})
}

// bareAtSameRate runs the QoS 1 load on a fresh bare broker paced at the
// rate the gateway acknowledged in r, and records the gateway's CPU per
// message against the bare broker's at that same rate. CPU per message
// falls as the rate rises (more messages per read and write syscall), and
// the unpaced bare broker runs 10-25 % faster than the gateway: at its own
// rate its per-message CPU is that much cheaper, and the ratio moves with
// how fast it happened to run. At the same rate the ratio is the gateway's
// own cost per message.
func (b *bench) bareAtSameRate(ctx context.Context, r *PhaseResult) error {
	rate, gwCPU := r.Figures["acked_per_s"], r.Figures["cpu_us_per_msg"]
	if rate <= 0 || gwCPU <= 0 {
		return fmt.Errorf("%s: no gateway rate to pace the bare broker at", r.Name)
	}
	bare, err := b.startBare(ctx, b.targetDir(r.Name, "bare-same-rate"))
	return withChild(bare, err, func(bare *child) error {
		sp, _, err := b.runMQTTAt(ctx, bare, 1, rate, nil)
		if err != nil {
			return err
		}
		bareCPU := sp.cpuPer(float64(sp.acked), 1e6)
		r.set("bare_same_rate_acked_per_s", sp.perS(float64(sp.acked)))
		r.set("bare_same_rate_cpu_us_per_msg", bareCPU)
		if bareCPU > 0 {
			r.set("cpu_vs_bare_same_rate", gwCPU/bareCPU)
		}
		return nil
	})
}

func (b *bench) phaseQoS1(ctx context.Context, r *PhaseResult) error {
	if err := b.mqttVersusBare(ctx, r, 1); err != nil {
		return err
	}
	b.qos1Rate = r.Figures["acked_per_s"]
	return nil
}

func (b *bench) phaseQoS0(ctx context.Context, r *PhaseResult) error {
	r.Note = "bare: received = sent (TCP flow control paces the publishers; mochi drops nothing inbound)"
	return b.mqttVersusBare(ctx, r, 0)
}

const udpLinesPerDatagram = 100

func (b *bench) phaseUDP(ctx context.Context, r *PhaseResult) error {
	r.Note = "baseline: firmware-sim bare-decoder (read datagrams, decode with ingest's line-protocol decoder, store nothing); one sender, unpaced"
	gw, err := b.startGateway(ctx, b.targetDir(r.Name, "runnel"), "")
	if err := withChild(gw, err, func(gw *child) error { return b.udpSpan(ctx, r, r.set, gw, true) }); err != nil {
		return err
	}
	bare, err := b.startBareDecoder(ctx, b.targetDir(r.Name, "bare"))
	return withChild(bare, err, func(bare *child) error { return b.udpSpan(ctx, r, r.setBase, bare, false) })
}

// udpSpan puts the UDP load on t for a span and records its figures with
// set; gateway says whether t is the gateway (else the decode-only
// baseline).
func (b *bench) udpSpan(ctx context.Context, r *PhaseResult, set func(string, float64), t *child, gateway bool) error {
	u, err := startUDPLoad(ctx, t.udp, 1, udpLinesPerDatagram, b.o.Devices)
	if err != nil {
		return err
	}
	sp, err := b.sustain(ctx, t, u, nil)
	u.finish()
	if err != nil {
		return err
	}
	stored := sp.delta(`runnel_ingest_readings_total{listener="udp"}`)
	if gateway {
		r.DurationS = sp.dur.Seconds()
	}
	set("sent_per_s", sp.perS(float64(sp.sent)))
	set("stored_per_s", sp.perS(stored))
	if gateway {
		set("kernel_drops", sp.delta("runnel_udp_kernel_drops_total"))
		set("dropped_readings", sp.delta(`runnel_ingest_dropped_readings_total{listener="udp"`))
	}
	set("send_errors", float64(u.errs.Load()))
	set("cpu_s_per_100k_points", sp.cpuPer(stored, 1e5))
	set("peak_rss_mib", mib(sp.peakRSS))
	return t.alive()
}

const (
	httpWriters   = 4
	httpBatchSize = 1000
)

func (b *bench) phaseHTTP(ctx context.Context, r *PhaseResult) error {
	r.Note = fmt.Sprintf("baseline: firmware-sim bare-decoder (a handler that decodes with ingest's line-protocol decoder and answers 204, storing nothing); %d writers, %d lines per request", httpWriters, httpBatchSize)
	gw, err := b.startGateway(ctx, b.targetDir(r.Name, "runnel"), "")
	if err := withChild(gw, err, func(gw *child) error { return b.httpSpan(ctx, r, r.set, gw, true) }); err != nil {
		return err
	}
	bare, err := b.startBareDecoder(ctx, b.targetDir(r.Name, "bare"))
	return withChild(bare, err, func(bare *child) error { return b.httpSpan(ctx, r, r.setBase, bare, false) })
}

// httpSpan puts the HTTP write load on t for a span and records its
// figures with set.
func (b *bench) httpSpan(ctx context.Context, r *PhaseResult, set func(string, float64), t *child, gateway bool) error {
	body := func(w, k int, buf []byte) ([]byte, int, bool) {
		ts := time.Now().UnixNano()
		for i := range httpBatchSize {
			// Writer w carries the devices d with d % writers == w.
			d := (w + httpWriters*(k*httpBatchSize+i)) % b.o.Devices
			buf = appendBenchLine(buf, benchDevice(d), float64(i%200)/10, ts)
		}
		return buf, httpBatchSize, true
	}
	h := b.startHTTPLoad(ctx, t.base, httpWriters, body)
	sp, err := b.sustain(ctx, t, h, nil)
	h.finish(15 * time.Second)
	if err != nil {
		return err
	}
	if f := h.failed.Load(); f > 0 {
		b.logf("  http %s: %d failed requests, first: %v", t.name, f, h.firstErr.Load())
	}
	if gateway {
		r.DurationS = sp.dur.Seconds()
	}
	set("acked_per_s", sp.perS(float64(sp.acked)))
	set("stored_per_s", sp.perS(sp.delta(`runnel_ingest_readings_total{listener="http"}`)))
	set("requests_per_s", sp.perS(float64(sp.acked)/httpBatchSize))
	set("failed_requests", float64(h.failed.Load()))
	set("cpu_s_per_100k_points", sp.cpuPer(float64(sp.acked), 1e5))
	set("cpu_us_per_point", sp.cpuPer(float64(sp.acked), 1e6))
	set("peak_rss_mib", mib(sp.peakRSS))
	return t.alive()
}

// percentiles sets <prefix>p50_ms, p99_ms and max_ms (nearest rank).
func percentiles(set func(string, float64), prefix string, lat []time.Duration) {
	if len(lat) == 0 {
		for _, q := range []string{"p50_ms", "p99_ms", "max_ms"} {
			set(prefix+q, math.NaN())
		}
		return
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return float64(s[max(i, 0)]) / float64(time.Millisecond)
	}
	set(prefix+"p50_ms", at(0.50))
	set(prefix+"p99_ms", at(0.99))
	set(prefix+"max_ms", at(1))
}

// histQuantile estimates the q quantile, in ms, of a gateway histogram
// over the span: the delta of each `name_bucket{...le="X"}` sample whose
// labels contain match, linearly interpolated inside the bucket, as
// Prometheus's histogram_quantile does. NaN without observations; the
// top finite bound when q falls in +Inf.
func (s span) histQuantile(name, match string, q float64) float64 {
	type bucket struct{ le, cum float64 }
	var bs []bucket
	for k, v := range s.m1 {
		if !strings.HasPrefix(k, name+"_bucket{") || !strings.Contains(k, match) {
			continue
		}
		i := strings.Index(k, `le="`)
		if i < 0 {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(k[i+4:], `"}`), 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{le, v - s.m0[k]})
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	if len(bs) == 0 || bs[len(bs)-1].cum <= 0 {
		return math.NaN()
	}
	rank := q * bs[len(bs)-1].cum
	lo, below := 0.0, 0.0
	for _, b := range bs {
		if b.cum >= rank {
			if math.IsInf(b.le, 1) {
				return lo * 1000
			}
			if b.cum == below {
				return b.le * 1000
			}
			return (lo + (b.le-lo)*(rank-below)/(b.cum-below)) * 1000
		}
		lo, below = b.le, b.cum
	}
	return lo * 1000
}

// profile starts, with ProfileDir set and t a gateway, a CPU profile of t
// for the span (PhaseDuration, whole seconds); the function it returns
// waits for that profile (once; later calls return at once) and then
// takes a heap profile. Files are named by phase, with .2, .3... for a
// phase's later spans. A profile that fails is logged, not fatal: the
// figures do not depend on it.
func (b *bench) profile(ctx context.Context, t *child) func() {
	if b.o.ProfileDir == "" || t.name != "runnel" {
		return func() {}
	}
	phase := filepath.Base(filepath.Dir(t.dir))
	name := filepath.Join(b.o.ProfileDir, phase)
	for i := 2; ; i++ {
		if _, err := os.Stat(name + ".cpu.pprof"); err != nil {
			break
		}
		name = filepath.Join(b.o.ProfileDir, fmt.Sprintf("%s.%d", phase, i))
	}
	fetch := func(path, file string) {
		if err := b.fetchTo(ctx, t.base+path, file); err != nil {
			b.logf("  profile %s: %v", file, err)
		}
	}
	secs := max(1, int(b.o.PhaseDuration/time.Second))
	done := make(chan struct{})
	go func() {
		defer close(done)
		fetch(fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), name+".cpu.pprof")
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			<-done
			fetch("/debug/pprof/heap", name+".heap.pprof")
		})
	}
}

// fetchTo GETs u into file.
func (b *bench) fetchTo(ctx context.Context, u, file string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
