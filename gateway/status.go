package gateway

import (
	"time"

	"github.com/runnel-iot/runnel/gateway/httpapi"
	"github.com/runnel-iot/runnel/ingest"
)

// statusSource answers GET /api/v1/status (httpapi.StatusSource) from the
// same counters /metrics reads; it keeps no state of its own but the time
// the HTTP API came up, which the uptime counts from.
type statusSource struct {
	g     *Gateway
	start time.Time
}

// Status takes a snapshot. It runs on HTTP handler goroutines; every
// stage it reads was set before the HTTP server began serving, and every
// counter it reads is an atomic or taken under its stage's lock.
func (s statusSource) Status() httpapi.Status {
	g := s.g
	now := time.Now()
	r := g.readiness()
	st := httpapi.Status{
		GatewayID:     g.cfg.Gateway.ID,
		Version:       Version,
		TimeNs:        now.UnixNano(),
		UptimeSeconds: now.Sub(s.start).Seconds(),
		Ready:         r.Ready,
		Reason:        r.Reason,
		Checkpoint:    httpapi.CheckpointStatus{AgeSeconds: -1},
	}
	g.ingestStatus(&st.Ingest)
	if g.wal != nil {
		ws := g.wal.Stats()
		st.WAL = httpapi.WALStatus{Appends: ws.Appends, Records: ws.Records, Bytes: ws.Bytes,
			DiskBytes: ws.DiskBytes, Segments: ws.Segments, LastIndex: ws.LastIndex}
	}
	if pl := g.pipeline; pl != nil {
		es := pl.Windows().Stats()
		st.Ingest.Late = es.LateReadings
		st.Windows = httpapi.WindowsStatus{Series: es.Series, Pairs: es.Pairs, Devices: es.Devices,
			OverflowReadings: es.OverflowReadings, OverflowSeries: es.OverflowSeries, Evictions: es.Evictions,
			BadTimeReadings: es.BadTimeReadings, GroupLateReadings: es.GroupLateReadings,
			MemoryBytes: es.MemoryBytes, BudgetBytes: es.BudgetBytes}
		if st.WAL.LastIndex > es.AppliedIndex {
			st.WAL.LagRecords = st.WAL.LastIndex - es.AppliedIndex
		}
		ps := pl.Stats()
		st.Checkpoint.Count = ps.Checkpoints
		if !ps.CheckpointAt.IsZero() {
			st.Checkpoint.AgeSeconds = now.Sub(ps.CheckpointAt).Seconds()
		}
		st.AlertsActive = pl.Alerts().Stats().Firing
	}
	if len(g.outboxes) > 0 {
		fs := &httpapi.ForwardStatus{Enabled: g.forwarder != nil}
		for _, box := range g.outboxes {
			fs.PendingRecords += box.Stats().Depth
		}
		if g.forwarder != nil {
			f := g.forwarder.Status()
			fs.SentRecords, fs.LastError = f.Acked, f.LastError
			for _, n := range f.Errors {
				fs.Errors += n
			}
		}
		st.Forward = fs
	}
	return st
}

// ingestStatus sums the listeners' counters, by listener.
func (g *Gateway) ingestStatus(out *httpapi.IngestStatus) {
	st := &g.ingestStats
	add := func(b *httpapi.ByListener, l ingest.Listener, n uint64) {
		switch l {
		case ingest.ListenerMQTT:
			b.MQTT += n
		case ingest.ListenerUDP:
			b.UDP += n
		case ingest.ListenerHTTP:
			b.HTTP += n
		}
		b.Total += n
	}
	for l := range ingest.NumListeners {
		add(&out.Readings, l, st.Readings[l].Load())
		for r := range ingest.NumReasons {
			add(&out.Rejected, l, st.Rejected[l][r].Load())
		}
		for d := range ingest.NumDrops {
			add(&out.Dropped, l, st.Dropped[l][d].Load())
		}
	}
	if g.deadLetters != nil {
		out.DeadLetters = g.deadLetters.Count()
	}
	if g.broker != nil {
		out.MQTTClients = g.broker.Clients()
	}
}
