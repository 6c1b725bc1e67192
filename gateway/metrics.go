package gateway

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/pipeline"
	"github.com/runnel-iot/runnel/wal"
)

// GET /metrics, in the Prometheus text format.
//
// Runnel's own counters live in each stage as atomics (ingest.Stats,
// wal.Stats, windows.Stats); they are read once per scrape and written
// here with their types and help. The Go runtime and process metrics
// (go_*, process_*: memory, GC, goroutines, CPU seconds, RSS, open files)
// go through the same writer (procmetrics.go). One writer, no metrics
// library: every family is read at scrape time, so there is no registry
// to keep in step with the stages.

// promWriter writes metric families: counter and gauge for plain samples,
// histogram and summary for distributions. Each call writes a whole family
// (HELP, TYPE, samples); a family with labels gets all its samples in one
// call.
type promWriter struct{ w *bufio.Writer }

type sample struct {
	labels string // `listener="mqtt"`, or ""
	v      float64
}

func (p promWriter) family(name, typ, help string, samples ...sample) {
	fmt.Fprintf(p.w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	for _, s := range samples {
		p.w.WriteString(name)
		if s.labels != "" {
			p.w.WriteString("{" + s.labels + "}")
		}
		p.w.WriteByte(' ')
		p.w.WriteString(strconv.FormatFloat(s.v, 'g', -1, 64))
		p.w.WriteByte('\n')
	}
}

func (p promWriter) counter(name, help string, s ...sample) { p.family(name, "counter", help, s...) }
func (p promWriter) gauge(name, help string, s ...sample)   { p.family(name, "gauge", help, s...) }

func one(v float64) sample { return sample{v: v} }

// histSample is one labelled histogram: counts per bucket, not cumulative,
// for the upper bounds and a last one for +Inf (len(bounds)+1), and the
// sum of the observations (NaN: unknown, not written).
type histSample struct {
	labels string
	bounds []float64
	counts []uint64
	sum    float64
}

func (p promWriter) histogram(name, help string, hs ...histSample) {
	fmt.Fprintf(p.w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	for _, h := range hs {
		sep := ""
		if h.labels != "" {
			sep = ","
		}
		var cum uint64
		for i, n := range h.counts {
			cum += n
			le := "+Inf"
			if i < len(h.bounds) {
				le = strconv.FormatFloat(h.bounds[i], 'g', -1, 64)
			}
			fmt.Fprintf(p.w, "%s_bucket{%s%sle=%q} %d\n", name, h.labels, sep, le, cum)
		}
		labels := ""
		if h.labels != "" {
			labels = "{" + h.labels + "}"
		}
		if !math.IsNaN(h.sum) {
			fmt.Fprintf(p.w, "%s_sum%s %s\n", name, labels, strconv.FormatFloat(h.sum, 'g', -1, 64))
		}
		fmt.Fprintf(p.w, "%s_count%s %d\n", name, labels, cum)
	}
}

// summary writes an unlabelled summary: quantiles carry `quantile="q"`.
func (p promWriter) summary(name, help string, quantiles []sample, sum float64, count uint64) {
	p.family(name, "summary", help, quantiles...)
	fmt.Fprintf(p.w, "%s_sum %s\n%s_count %d\n", name, strconv.FormatFloat(sum, 'g', -1, 64), name, count)
}

func (g *Gateway) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	g.writeMetrics(promWriter{bw})
	writeProcessMetrics(promWriter{bw})
	bw.Flush()
}

func (g *Gateway) writeMetrics(p promWriter) {
	p.gauge("runnel_build_info", "Version of the running gateway.",
		sample{fmt.Sprintf("version=%q,commit=%q,goversion=%q,gateway_id=%q", Version, Commit, runtime.Version(), g.cfg.Gateway.ID), 1})
	ready := 0.0
	if g.readiness().Ready {
		ready = 1
	}
	p.gauge("runnel_ready", "1 when /readyz answers 200.", one(ready))
	held := 0.0
	if g.storageHeld() != "" {
		held = 1
	}
	p.gauge("runnel_storage_held", "1 while a storage error holds the gateway (the WAL or an outbox cannot write, or the stream retries a storage error); /readyz says which.", one(held))
	g.writeIngestMetrics(p)
	g.writeWALMetrics(p)
	g.writeWindowsMetrics(p)
	g.writeAlertsMetrics(p)
	g.writeForwardMetrics(p)
}

func (g *Gateway) writeAlertsMetrics(p promWriter) {
	if g.pipeline == nil {
		return
	}
	st := g.pipeline.Alerts().Stats()
	p.gauge("runnel_alerts_rules", "Alert rules in force.", one(float64(st.Rules)))
	p.gauge("runnel_alerts_states", "Rule states kept (rule, series, field).", one(float64(st.States)))
	p.gauge("runnel_alerts_firing", "Alerts firing.", one(float64(st.Firing)))
	p.gauge("runnel_alerts_pending", "Alerts pending (condition met, for not yet passed).", one(float64(st.Pending)))
	p.counter("runnel_alerts_fired_total", "Firing events.", one(float64(st.Fired)))
	p.counter("runnel_alerts_resolved_total", "Resolved events.", one(float64(st.Resolved)))
	p.counter("runnel_alerts_overflow_total", "Values not evaluated: no room for a new rule state (alerts.max_states).", one(float64(st.Overflow)))
	p.counter("runnel_alerts_out_of_order_total", "Values older than their state's newest, ignored.", one(float64(st.OutOfOrder)))
}

func (g *Gateway) writeForwardMetrics(p promWriter) {
	if len(g.outboxes) == 0 {
		return
	}
	var depth, bytes, age, appended, acked, dropped, failing []sample
	for _, box := range g.outboxes {
		st := box.Stats()
		l := fmt.Sprintf("kind=%q", st.Kind)
		depth = append(depth, sample{l, float64(st.Depth)})
		bytes = append(bytes, sample{l, float64(st.Bytes)})
		age = append(age, sample{l, st.OldestUnsentAge.Seconds()})
		appended = append(appended, sample{l, float64(st.Appended)})
		acked = append(acked, sample{l, float64(st.Acked)})
		dropped = append(dropped, sample{l, float64(st.Dropped)})
		failing = append(failing, sample{l, b2f(st.Failing)})
	}
	p.gauge("runnel_forward_outbox_depth", "Records in the outbox not yet acknowledged by Kafka.", depth...)
	p.gauge("runnel_forward_outbox_bytes", "Outbox disk use.", bytes...)
	p.gauge("runnel_forward_outbox_oldest_unsent_seconds", "Age of the oldest unacknowledged record (forward lag).", age...)
	p.counter("runnel_forward_appended_total", "Records made durable in the outbox.", appended...)
	p.counter("runnel_forward_acked_total", "Records Kafka acknowledged.", acked...)
	p.counter("runnel_forward_dropped_total", "Unsent records dropped by a full outbox (drop_oldest).", dropped...)
	p.gauge("runnel_forward_outbox_failing", "1 while the outbox cannot accept appends: its last write failed (full disk) and none succeeded since.", failing...)
	enabled := 0.0
	if g.forwarder != nil {
		enabled = 1
	}
	p.gauge("runnel_forward_enabled", "1 when Kafka brokers are configured.", one(enabled))
	if g.forwarder == nil {
		return
	}
	st := g.forwarder.Status()
	up := 0.0
	if st.Connected {
		up = 1
	}
	p.gauge("runnel_forward_up", "1 when the last delivery or probe reached Kafka.", one(up))
	p.counter("runnel_forward_sent_total", "Records handed to the producer, resends included.", one(float64(st.Sent)))
	p.counter("runnel_forward_retries_total", "Delivery attempts after a failed one.", one(float64(st.Retries)))
	p.counter("runnel_forward_probes_total", "Uplink probes (a metadata request once Kafka was not heard from for 3s).", one(float64(st.Probes)))
	p.counter("runnel_forward_probe_failures_total", "Uplink probes that failed or got no answer within 5s (uplink reported down).", one(float64(st.ProbeFailures)))
	var errs []sample
	for k, n := range st.Errors {
		errs = append(errs, sample{fmt.Sprintf("kind=%q", k), float64(n)})
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].labels < errs[j].labels })
	p.counter("runnel_forward_errors_total", "Failed delivery attempts, by kind.", errs...)
	last := 0.0
	if !st.LastSuccess.IsZero() {
		last = float64(st.LastSuccess.UnixNano()) / 1e9
	}
	p.gauge("runnel_forward_last_success_timestamp_seconds", "When Kafka last acknowledged a record.", one(last))
	p.counter("runnel_forward_wire_bytes_total", "Compressed record batch bytes written to Kafka.", one(float64(st.WireBytes)))
	p.counter("runnel_forward_wire_records_total", "Records in the batches written to Kafka.", one(float64(st.WireRecords)))
	if st.Delivery != forward.DeliveryExactlyOnce {
		return
	}
	p.counter("runnel_forward_transactions_committed_total", "Kafka transactions committed (exactly_once).", one(float64(st.TxnCommitted)))
	p.counter("runnel_forward_transactions_aborted_total", "Kafka transactions aborted and redone (exactly_once).", one(float64(st.TxnAborted)))
	p.counter("runnel_forward_transactions_fenced_total", "Outbox producers fenced by another with the same transactional id (a second gateway with this id).", one(float64(st.TxnFenced)))
	p.counter("runnel_forward_transaction_records_total", "Records carried by committed transactions.", one(float64(st.TxnRecords)))
	perRecord := 0.0
	if st.TxnRecords > 0 {
		perRecord = float64(st.TxnCommitted+st.TxnAborted) / float64(st.TxnRecords)
	}
	p.gauge("runnel_forward_transactions_per_record", "Cost per record of exactly_once: transactions (each a position record, an AddPartitionsToTxn, an EndTxn and its markers) per record delivered.", one(perRecord))
	var committed []sample
	for k, n := range st.Committed {
		committed = append(committed, sample{fmt.Sprintf("kind=%q", k), float64(n)})
	}
	sort.Slice(committed, func(i, j int) bool { return committed[i].labels < committed[j].labels })
	p.gauge("runnel_forward_committed_position", "Outbox index up to which Kafka committed (exactly_once).", committed...)
}

func (g *Gateway) writeIngestMetrics(p promWriter) {
	st := &g.ingestStats
	perListener := func(f func(l ingest.Listener) uint64) []sample {
		out := make([]sample, 0, ingest.NumListeners)
		for l := range ingest.NumListeners {
			out = append(out, sample{fmt.Sprintf("listener=%q", l), float64(f(l))})
		}
		return out
	}
	p.counter("runnel_ingest_messages_total", "MQTT publishes, UDP datagrams and HTTP write requests received on telemetry paths.",
		perListener(func(l ingest.Listener) uint64 { return st.Messages[l].Load() })...)
	p.counter("runnel_ingest_bytes_total", "Payload bytes received.",
		perListener(func(l ingest.Listener) uint64 { return st.Bytes[l].Load() })...)
	p.counter("runnel_ingest_readings_total", "Readings stored durably in the WAL.",
		perListener(func(l ingest.Listener) uint64 { return st.Readings[l].Load() })...)
	p.counter("runnel_ingest_skipped_fields_total", "String fields skipped (they are not readings).",
		perListener(func(l ingest.Listener) uint64 { return st.SkippedFields[l].Load() })...)
	p.counter("runnel_ingest_precision_loss_total", "Integer values beyond 2^53 stored as rounded float64.",
		perListener(func(l ingest.Listener) uint64 { return st.PrecisionLoss[l].Load() })...)
	var rej, drop []sample
	for l := range ingest.NumListeners {
		for r := range ingest.NumReasons {
			rej = append(rej, sample{fmt.Sprintf("listener=%q,reason=%q", l, ingest.Reason(r)), float64(st.Rejected[l][r].Load())})
		}
		for d := range ingest.NumDrops {
			drop = append(drop, sample{fmt.Sprintf("listener=%q,reason=%q", l, d), float64(st.Dropped[l][d].Load())})
		}
	}
	p.counter("runnel_ingest_rejected_total", "Rejected lines, objects, fields or samples, by reason.", rej...)
	p.counter("runnel_ingest_dropped_readings_total", "Readings that decoded but were not stored, by reason.", drop...)
	if g.udp != nil {
		p.counter("runnel_udp_kernel_drops_total", "Datagrams the kernel dropped for a full socket buffer.", one(float64(g.udp.KernelDrops())))
	}
	if g.broker != nil {
		p.gauge("runnel_mqtt_clients", "Connected MQTT clients.", one(float64(g.broker.Clients())))
		p.counter("runnel_mqtt_auth_failures_total", "MQTT logins refused for a bad username or password.", one(float64(st.AuthFailures.Load())))
		p.counter("runnel_mqtt_auth_throttled_total", "MQTT logins refused unchecked: the source was backing off after failures.", one(float64(st.AuthThrottled.Load())))
	}
	if g.deadLetters != nil {
		p.counter("runnel_dead_letters_total", "Rejected payloads sent to the dead-letter log.", one(float64(g.deadLetters.Count())))
		p.counter("runnel_dead_letters_dropped_total", "Dead letters not kept (queue full).", one(float64(g.deadLetters.Dropped())))
	}
}

func (g *Gateway) writeWALMetrics(p promWriter) {
	type named struct {
		name string
		st   wal.Stats
	}
	var logs []named
	if g.wal != nil {
		logs = append(logs, named{"readings", g.wal.Stats()})
	}
	if g.deadLetters != nil {
		logs = append(logs, named{"dead_letters", g.deadLetters.Stats()})
	}
	if g.late != nil {
		logs = append(logs, named{"late", g.late.Stats()})
	}
	each := func(f func(wal.Stats) float64) []sample {
		out := make([]sample, len(logs))
		for i, l := range logs {
			out[i] = sample{fmt.Sprintf("log=%q", l.name), f(l.st)}
		}
		return out
	}
	p.counter("runnel_wal_appends_total", "Acknowledged appends.", each(func(s wal.Stats) float64 { return float64(s.Appends) })...)
	p.counter("runnel_wal_records_total", "Acknowledged records.", each(func(s wal.Stats) float64 { return float64(s.Records) })...)
	p.counter("runnel_wal_bytes_total", "Acknowledged payload bytes.", each(func(s wal.Stats) float64 { return float64(s.Bytes) })...)
	p.counter("runnel_wal_groups_total", "Group commits (one write each).", each(func(s wal.Stats) float64 { return float64(s.Groups) })...)
	p.gauge("runnel_wal_failing", "1 while the log cannot accept appends: its last write or fsync failed (full disk, I/O error) and none succeeded since.", each(func(s wal.Stats) float64 { return b2f(s.Failing) })...)
	p.counter("runnel_wal_write_errors_total", "Failed group writes or fsyncs (nothing of them acknowledged).", each(func(s wal.Stats) float64 { return float64(s.WriteErrors) })...)
	p.counter("runnel_wal_recoveries_total", "Close-repair-reopen cycles after a failure.", each(func(s wal.Stats) float64 { return float64(s.Recoveries) })...)
	p.counter("runnel_wal_repairs_total", "Repairs that changed the files (torn tails cut, damaged segments rewritten).", each(func(s wal.Stats) float64 { return float64(s.Repairs) })...)
	p.counter("runnel_wal_corrupt_records_total", "Records skipped because they failed verification.", each(func(s wal.Stats) float64 { return float64(s.CorruptRecords) })...)
	p.counter("runnel_wal_removed_segments_total", "Segments removed by retention.", each(func(s wal.Stats) float64 { return float64(s.RemovedSegments) })...)
	p.gauge("runnel_wal_segments", "Segment files.", each(func(s wal.Stats) float64 { return float64(s.Segments) })...)
	p.gauge("runnel_wal_disk_bytes", "Bytes in segment files.", each(func(s wal.Stats) float64 { return float64(s.DiskBytes) })...)
	p.gauge("runnel_wal_last_index", "Index of the last acknowledged record.", each(func(s wal.Stats) float64 { return float64(s.LastIndex) })...)
	bounds := make([]float64, len(wal.FsyncBuckets))
	for i, b := range wal.FsyncBuckets {
		bounds[i] = b.Seconds()
	}
	fsyncs := make([]histSample, len(logs))
	for i, l := range logs {
		fsyncs[i] = histSample{fmt.Sprintf("log=%q", l.name), bounds, l.st.FsyncHist[:], l.st.FsyncTotal.Seconds()}
	}
	p.histogram("runnel_wal_fsync_seconds", "Latency of group-commit fsyncs.", fsyncs...)
}

func (g *Gateway) writeWindowsMetrics(p promWriter) {
	pl := g.pipeline
	if pl == nil {
		return
	}
	st := pl.Windows().Stats()
	ps := pl.Stats()
	counts, sum := pl.AppliedLatency()
	bounds := make([]float64, len(pipeline.AppliedBuckets))
	for i, b := range pipeline.AppliedBuckets {
		bounds[i] = b.Seconds()
	}
	p.histogram("runnel_pipeline_ingest_to_applied_seconds", "From a batch's ingest (before its fsync) to its windows and alerts applied, live batches only.",
		histSample{bounds: bounds, counts: counts, sum: sum.Seconds()})
	counts, sum = pl.AlertLatency()
	p.histogram("runnel_pipeline_ingest_to_alert_seconds", "From the ingest of the batch that raised an alert event (before its fsync) to its publication on MQTT and the live stream, live events only.",
		histSample{bounds: bounds, counts: counts, sum: sum.Seconds()})
	p.gauge("runnel_windows_series", "Series with window state.", one(float64(st.Series)))
	p.gauge("runnel_windows_pairs", "Series and field pairs with window state.", one(float64(st.Pairs)))
	p.gauge("runnel_windows_devices", "Devices with a watermark.", one(float64(st.Devices)))
	p.gauge("runnel_windows_memory_bytes", "Accounted window and sketch state.", one(float64(st.MemoryBytes)))
	p.gauge("runnel_windows_budget_bytes", "The windows memory budget.", one(float64(st.BudgetBytes)))
	p.counter("runnel_windows_overflow_readings_total", "Readings of series beyond the memory budget, aggregated in _overflow.", one(float64(st.OverflowReadings)))
	p.gauge("runnel_windows_overflow_series", "Distinct series sent to _overflow (HyperLogLog estimate).", one(float64(st.OverflowSeries)))
	p.counter("runnel_windows_evictions_total", "Series evicted after windows.series_ttl of silence.", one(float64(st.Evictions)))
	p.counter("runnel_windows_late_readings_total", "Readings older than their device's watermark (kept in the late log).", one(float64(st.LateReadings)))
	p.counter("runnel_windows_idle_closes_total", "Devices that went idle, closing their windows.", one(float64(st.IdleCloses)))
	p.counter("runnel_windows_bad_time_readings_total", "Readings applied nowhere: event time beyond ±2^62 ns (ingest rejects them; WAL records written before it did).", one(float64(st.BadTimeReadings)))
	p.counter("runnel_windows_group_late_readings_total", "Readings applied to their series but not to their group, whose window had closed.", one(float64(st.GroupLateReadings)))
	p.gauge("runnel_windows_applied_index", "Last WAL index the windows applied.", one(float64(st.AppliedIndex)))
	lag := float64(0)
	if last := g.wal.LastIndex(); last > st.AppliedIndex {
		lag = float64(last - st.AppliedIndex)
	}
	p.gauge("runnel_windows_lag_records", "WAL records not yet applied to the windows (replay or backlog).", one(lag))
	p.counter("runnel_checkpoints_total", "Checkpoints written.", one(float64(ps.Checkpoints)))
	age := float64(-1)
	if !ps.CheckpointAt.IsZero() {
		age = time.Since(ps.CheckpointAt).Seconds()
	}
	p.gauge("runnel_checkpoint_age_seconds", "Seconds since the last checkpoint written by this process (-1: none yet).", one(age))
	p.gauge("runnel_checkpoint_duration_seconds", "Time the last checkpoint took.", one(ps.CheckpointTook.Seconds()))
	p.gauge("runnel_checkpoint_bytes", "Size of the last checkpoint.", one(float64(ps.CheckpointBytes)))
	held := 0.0
	if ok, _ := pl.Health(); !ok {
		held = 1
	}
	p.gauge("runnel_pipeline_held", "1 while the pipeline is held by a storage error (retried with backoff; see /readyz).", one(held))
	p.counter("runnel_pipeline_storage_errors_total", "Failed outbox appends and WAL reads of the pipeline (each retried).", one(float64(ps.StorageErrors)))
	p.counter("runnel_pipeline_admit_waits_total", "Appends ingest held back (at most 100 ms each) while the pipeline was over 128 WAL records behind.", one(float64(ps.AdmitWaits)))
	p.counter("runnel_wal_lost_records_total", "WAL indexes found missing at start below what the checkpoint or an outbox covered (a lost tail); skipped, never reused.", one(float64(ps.LostRecords)))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
