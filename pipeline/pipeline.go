package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// Config is what a Pipeline is built from.
type Config struct {
	Windows   windows.Config
	Alerts    alerts.Config
	GatewayID string
	// Interval is how often the state is checkpointed (and at shutdown).
	Interval    time.Duration
	Log         Log
	Checkpoints Checkpoints
	// Outboxes holds one outbox per record kind, indexed by Kind, and
	// Quotas their disk quotas in bytes (an append takes at most an eighth).
	Outboxes [NumKinds]Outbox
	Quotas   [NumKinds]int64
	// Late keeps the readings older than their device's watermark
	// (optional).
	Late   LateLog
	Logger *slog.Logger
}

// Pipeline feeds the windows and alerts engines from the readings WAL, the
// one place where readings become windows and alerts:
//
//   - On start it loads the newest checkpoint that verifies (state and the
//     WAL index it covers) and replays the WAL from the next index, logging
//     its progress; Replayed says false until it caught up, while ingest
//     already accepts new readings (they land after the replay target).
//   - Then it follows the WAL as appends become durable (Log.Notify): live
//     batches go through exactly the code replay uses.
//   - Each batch goes to the windows engine, then with the windows it
//     closed to the alerts engine. Every output becomes a Kafka record in
//     the outbox of its kind (Kinds), durable before any checkpoint may
//     cover the readings it came from. Each record's origin is the WAL
//     index and sequence that produced it; after a crash, replay
//     regenerates the outputs after the checkpoint identically (both
//     engines are deterministic, fed by the WAL's ingest stamps), and those
//     an outbox already holds are skipped: nothing lost, nothing repeated.
//   - Alert events are published (OnAlert) as they are emitted, and
//     appended to their outbox off the stream (writer.go); after the
//     replay, the newest event of each alert topic is handed to OnRestore.
//   - A checkpoint covering index i is committed only once i is fsynced in
//     the WAL (Log.Sync, a barrier that forces the fsync) and every
//     emission up to i is durable in its outbox. It is streamed, a chunk
//     between batches, so it never stalls the stream for long
//     (checkpoint.go). The WAL is then released behind the older of the
//     two kept checkpoints.
//   - A storage error holds it (hold.go, Health); a configuration change
//     neither loses nor invents outputs (config.go); a WAL tail lost below
//     what the state covers is skipped, never reused (skipLost).
type Pipeline struct {
	appliedLat latencyHist // ingest-to-applied latency of live batches (latency.go)
	alertLat   latencyHist // ingest-to-published latency of live alert events

	cfg       windows.Config
	log       Log
	engine    *windows.Engine
	alerts    *alerts.Engine
	alertsCfg alerts.Config // the rules in force
	gatewayID string
	// configured are the rules of the configuration; pending is set while
	// the replay runs under the checkpoint's rules: they are applied,
	// as a reload, when it caught up.
	configured alerts.Config
	pending    *alerts.Config
	fps        [NumKinds]uint64 // configuration fingerprint per record kind
	lastIngest int64            // ingest time of the last batch applied
	reloadAt   uint64           // applied index of the last reload's events
	reloadN    int              // events the reloads at reloadAt emitted
	ckpts      Checkpoints
	interval   time.Duration
	logger     *slog.Logger
	late       *lateTap // nil without a late log

	// One outlet per record kind, each with its own outbox (and quota).
	outs [NumKinds]outlet
	// Buffers emit lends the record builders (stream goroutine only).
	scratch, originBuf []byte
	// pendingBytes is about the outbox bytes of the records not yet handed
	// to the writer, all kinds (recordSize).
	pendingBytes int

	replayTarget atomic.Uint64
	replayed     atomic.Bool

	lastCkpt    uint64 // index of the last checkpoint written
	checkpoints atomic.Uint64
	ckptNs      atomic.Int64 // duration of the last checkpoint
	ckptAt      atomic.Int64 // when it was written, unix ns
	ckptBytes   atomic.Int64
	ckptStall   atomic.Int64      // the last checkpoint's longest step on the stream goroutine
	ck          *streamed         // the checkpoint being written (checkpoint.go)
	commits     chan commitResult // the commit in progress reports here (nil: none)
	lost        atomic.Uint64     // WAL indexes found lost at start (skipped)
	drainFrom   time.Time         // when Run first saw its ctx end (drainOver)
	lostLogged  uint64            // the covered index the loss was logged for

	// A storage error the stream is held by (hold.go), and the count of
	// storage errors of the stream and the writer.
	hold       hold
	holdErrors atomic.Uint64

	adm admission // ingest's wait for a stream that fell behind (admit.go)

	// The outbox writer (writer.go), started by Run; atomic for Health.
	writer atomic.Pointer[outWriter]

	reloads chan reloadRequest

	// Hooks, set before Run.
	OnEmit    func(windows.Emission) // live stream; must not block
	OnAlert   func(alerts.Event)     // when emitted: MQTT, live stream; must not block
	OnRestore func(alerts.Event)     // after replay: the retained state of each alert topic
}

// outlet is one output kind of the pipeline: its outbox, the records not
// yet appended, and the newest output the outbox holds (records at or
// before it are skipped on replay).
type outlet struct {
	box     Outbox
	limit   int // bytes per append: an eighth of the quota (at most 4 MiB), so one append never fills an outbox
	pending []forward.Record
	last    outboxPos
	covers  uint64 // the WAL index of the newest record the outbox held at start
	// emitted holds the ids of the records the outbox got from a WAL tail
	// that was lost since (see skipLost): the replay may regenerate them
	// from what survived, and they must not be appended twice.
	emitted map[string]struct{}
}

func newOutlet(box Outbox, quota int64) outlet {
	return outlet{box: box, limit: int(min(4<<20, quota/8))}
}

// reloadRequest asks the pipeline goroutine, the alerts engine's only
// user, to replace the rules.
type reloadRequest struct {
	cfg  alerts.Config
	done chan error
}

// New builds the engines and loads the newest checkpoint; Run does the
// rest. A storage error on the way (an outbox's newest record unreadable,
// no room to skip a lost WAL tail) is retried with backoff until ctx ends:
// a gateway restarted on a full disk waits, it does not exit.
func New(ctx context.Context, c Config) (*Pipeline, error) {
	logger := c.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{
		cfg: c.Windows, alertsCfg: c.Alerts, configured: c.Alerts, gatewayID: c.GatewayID, log: c.Log, ckpts: c.Checkpoints,
		interval: c.Interval, logger: logger, reloads: make(chan reloadRequest),
	}
	if c.Late != nil {
		p.late = &lateTap{log: c.Late}
	}
	for k := range NumKinds {
		if c.Outboxes[k] == nil {
			return nil, fmt.Errorf("new pipeline: no %s outbox", Kinds[k].Outbox)
		}
		p.outs[k] = newOutlet(c.Outboxes[k], c.Quotas[k])
	}
	if err := p.fresh(); err != nil {
		return nil, err
	}
	if err := p.start(ctx); err != nil {
		return nil, fmt.Errorf("start pipeline: %w", err)
	}
	return p, nil
}

// Windows is the windows engine (for queries).
func (p *Pipeline) Windows() *windows.Engine { return p.engine }

// Alerts is the alerts engine (for queries).
func (p *Pipeline) Alerts() *alerts.Engine { return p.alerts }

// Replayed reports whether the replay at start has caught up.
func (p *Pipeline) Replayed() bool { return p.replayed.Load() }

// ReplayTarget is the last WAL index the replay at start goes to.
func (p *Pipeline) ReplayTarget() uint64 { return p.replayTarget.Load() }

// Stats is a snapshot of the pipeline's counters.
type Stats struct {
	Checkpoints     uint64        // written by this process
	CheckpointAt    time.Time     // when the last one was written (zero: none)
	CheckpointTook  time.Duration // how long the last one took
	CheckpointBytes int64         // its size
	// CheckpointStall is the longest the last checkpoint held the stream
	// in one step (it is written in chunks between batches).
	CheckpointStall time.Duration
	// LostRecords counts the WAL indexes found missing at start below
	// what the checkpoint or an outbox covered (skipped, never reused).
	LostRecords uint64
	// StorageErrors counts failed outbox appends and WAL reads (each
	// retried; see Health).
	StorageErrors uint64
	// AdmitWaits counts the appends ingest held back while the stream
	// was behind (Admit).
	AdmitWaits uint64
}

// Stats returns a snapshot. Safe for concurrent use.
func (p *Pipeline) Stats() Stats {
	s := Stats{Checkpoints: p.checkpoints.Load(), CheckpointTook: time.Duration(p.ckptNs.Load()), CheckpointBytes: p.ckptBytes.Load(),
		CheckpointStall: time.Duration(p.ckptStall.Load()), LostRecords: p.lost.Load(), StorageErrors: p.holdErrors.Load(), AdmitWaits: p.adm.waits.Load()}
	if at := p.ckptAt.Load(); at != 0 {
		s.CheckpointAt = time.Unix(0, at)
	}
	return s
}

// Reload replaces the alert rules, keeping the state of unchanged rules;
// on error the old rules stay in force. It waits for the pipeline
// goroutine (between two batches) up to ctx.
func (p *Pipeline) Reload(ctx context.Context, cfg alerts.Config) error {
	req := reloadRequest{cfg: cfg, done: make(chan error, 1)}
	select {
	case p.reloads <- req:
	case <-ctx.Done():
		return fmt.Errorf("reload alerts: %w", ctx.Err())
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("reload alerts: %w", ctx.Err())
	}
}

// outboxPos identifies an output: the WAL index whose batch produced it
// and its position among that batch's outputs (of the windows engine or of
// the alerts engine).
type outboxPos struct {
	Index uint64
	Seq   int
}

func (p outboxPos) after(q outboxPos) bool {
	return p.Index > q.Index || p.Index == q.Index && p.Seq > q.Seq
}

// start loads the checkpoint and positions the engines; run does the rest.
func (p *Pipeline) start(ctx context.Context) error {
	idx, data, fellBack, err := p.ckpts.Load()
	switch {
	case errors.Is(err, wal.ErrNoCheckpoint):
		if fellBack {
			p.logger.Warn("no checkpoint verifies; replaying everything the WAL holds")
		}
	case err != nil:
		return err
	default:
		if err := p.restore(data); err != nil {
			// A checkpoint of another windows config, or damaged beyond its
			// checksum: start empty and replay what the WAL holds.
			p.logger.Warn("checkpoint not usable; replaying everything the WAL holds", "index", idx, "err", err)
			p.alertsCfg, p.pending = p.configured, nil
			if err := p.fresh(); err != nil {
				return err
			}
		} else {
			p.lastCkpt = idx
			if fellBack {
				p.logger.Warn("newest checkpoint did not verify; using the previous one", "index", idx)
			}
		}
	}
	// The replay runs under the configuration the checkpoint was taken
	// with; the outputs each outbox holds count as emitted only if they
	// came from that same configuration.
	p.fingerprint()
	for k, o := range p.outlets() {
		var pos outboxPos
		var fp uint64
		var hasFP bool
		for {
			pos, fp, hasFP, err = lastOutboxPos(o.box)
			if err == nil {
				break
			}
			if err := p.retryAfter(ctx, "read the newest record of the "+o.box.Kind()+" outbox", err); err != nil {
				return err
			}
		}
		p.resumed()
		if hasFP && fp != p.fps[k] {
			p.logger.Warn("outbox written under another configuration; replayed outputs are appended, not matched by position",
				"kind", o.box.Kind(), "last_index", pos.Index)
			o.last = outboxPos{}
			o.covers = pos.Index
			continue
		}
		o.last, o.covers = pos, pos.Index
	}
	if p.late != nil {
		i, seq, ok, err := p.late.log.LastOrigin()
		switch {
		case err != nil:
			// Replay may add late readings the log already holds: a
			// duplicate in a diagnostic log, not a reason to stay down.
			p.logger.Warn("late log: newest entry unreadable; replayed late readings may repeat", "err", err)
		case ok:
			p.late.held = outboxPos{i, seq}
		}
	}
	// What the state on disk covers: the checkpoint (files are ordered by
	// the index they cover, usable or not) and every outbox's newest
	// origin.
	covered := idx
	for _, o := range p.outlets() {
		covered = max(covered, o.covers)
	}
	if last := p.log.LastIndex(); last < covered {
		p.collectEmitted(last)
	}
	for {
		err := p.skipLost(ctx, covered)
		if err == nil {
			break
		}
		if err := p.retryAfter(ctx, "skip a lost wal tail", err); err != nil {
			return err
		}
	}
	p.resumed()
	p.replayTarget.Store(p.log.LastIndex())
	return nil
}

// skipLost handles a WAL that ends below what the checkpoint or an outbox
// covers: its tail was lost (a torn or damaged tail cut at open, a power
// cut under wal.sync none), whether or not the cut fell on a record
// boundary. New readings must not get the indexes the engines and the
// outboxes have already passed, or they would be taken for applied and
// emitted ones and ignored; so the WAL skips its next index past covered.
// The lost range is logged and counted.
func (p *Pipeline) skipLost(ctx context.Context, covered uint64) error {
	last := p.log.LastIndex()
	if last >= covered {
		return nil
	}
	if p.lostLogged != covered {
		p.logger.Error("wal ends below what the checkpoint and outboxes cover: its tail was lost; new readings start after it",
			"wal_last_index", last, "covered_index", covered, "lost_from", last+1, "lost_to", covered, "lost_records", covered-last)
		p.lost.Add(covered - last)
		p.lostLogged = covered
	}
	if _, err := p.log.SkipTo(ctx, covered); err != nil {
		return fmt.Errorf("skip the wal past index %d: %w", covered, err)
	}
	return nil
}

// maxEmitted bounds the ids collectEmitted keeps per outbox.
const maxEmitted = 1 << 16

// collectEmitted notes the ids of the records each outbox holds from WAL
// indexes past last, the end of a WAL whose tail was lost. The engines
// restart from an older state and replay what survived: a window or alert
// those lost readings had already closed and emitted would be emitted
// again under its deterministic id (with the surviving content, or the
// same). emit drops those instead; readings that arrive for such a window
// since are as late as they would have been had nothing been lost.
func (p *Pipeline) collectEmitted(last uint64) {
	for _, o := range p.outlets() {
		if o.covers <= last {
			continue
		}
		ids := map[string]struct{}{}
		err := o.box.Recent(func(rec forward.Record) bool {
			pos, _, _, ok := decodeOrigin(rec.Origin)
			if !ok || pos.Index <= last || len(ids) >= maxEmitted {
				return !ok || pos.Index > last
			}
			ids[rec.ID] = struct{}{}
			return true
		})
		if err != nil {
			p.logger.Warn("outbox: cannot read what a lost wal tail emitted; those outputs may be appended again",
				"kind", o.box.Kind(), "err", err)
		}
		if len(ids) > 0 {
			o.emitted = ids
		}
	}
}

func (p *Pipeline) outlets() [NumKinds]*outlet {
	var out [NumKinds]*outlet
	for k := range p.outs {
		out[k] = &p.outs[k]
	}
	return out
}

// fresh gives the stream new, empty engines.
func (p *Pipeline) fresh() error {
	engine, err := windows.New(p.cfg)
	if err != nil {
		return err
	}
	al, err := alerts.New(p.alertsCfg, p.gatewayID)
	if err != nil {
		return err
	}
	if p.late != nil {
		engine.SetLateSink(p.late)
	}
	p.engine, p.alerts = engine, al
	return nil
}

// restore loads a checkpoint into the (fresh) engines. The alerts engine
// gets the rules the checkpoint was taken with, if they differ from the
// configured ones: the replay judges the readings after the checkpoint by
// the rules in force when they first were; the configured rules are
// applied once it caught up, as a reload.
func (p *Pipeline) restore(data []byte) error {
	w, a, acfg, err := decodeState(data)
	if err != nil {
		return err
	}
	if err := p.engine.UnmarshalBinary(w); err != nil {
		return err
	}
	if acfg != nil {
		old, err := decodeAlertsConfig(acfg)
		if err != nil {
			p.logger.Warn("checkpoint's alert rules unreadable; replaying under the configured rules", "err", err)
		} else if fingerprintAlerts(old) != fingerprintAlerts(p.configured) {
			al, err := alerts.New(old, p.gatewayID)
			if err != nil {
				p.logger.Warn("checkpoint's alert rules not usable; replaying under the configured rules", "err", err)
			} else {
				p.alerts, p.alertsCfg = al, old
				configured := p.configured
				p.pending = &configured
			}
		}
	}
	if err := p.alerts.UnmarshalBinary(a); err != nil {
		return fmt.Errorf("alerts state: %w", err)
	}
	return nil
}

// Run replays, then follows the WAL until ctx ends; it then writes a last
// checkpoint. It returns nil on ctx end.
func (p *Pipeline) Run(ctx context.Context) error {
	from := p.engine.AppliedIndex() + 1
	target := p.replayTarget.Load()
	if target >= from {
		p.logger.Info("replaying wal", "from", from, "to", target, "records", target-from+1)
	}
	r := p.log.NewReader(from)
	var (
		b       wal.Batch
		dec     wal.BatchDecoder // one string per series across records
		out     []windows.Emission
		events  []alerts.Event
		started = time.Now()
		lastLog = started
		applied uint64
		ticker  = time.NewTicker(p.interval)
	)
	defer ticker.Stop()
	p.adm.applied.Store(from - 1)
	p.startWriter(ctx)
	defer p.stopWriter() // after the final checkpoint's flush

	var readTo uint64 // the reader has passed every index up to here
	defer p.endCheckpoints()
	for {
		end := p.log.LastIndex()
		for r.Next() {
			p.resumed()
			idx := r.Index()
			if err := dec.Decode(r.Record(), &b); err != nil {
				p.logger.Warn("wal record is not a reading batch; skipped", "index", idx, "err", err)
				continue
			}
			if p.late != nil {
				p.late.at(idx)
			}
			p.lastIngest = max(p.lastIngest, b.IngestNs)
			out = p.engine.Apply(idx, &b, out[:0])
			events = p.alerts.Apply(idx, &b, out, events[:0])
			p.queue(out, events)
			p.admitApplied(idx)
			if p.replayed.Load() {
				p.appliedLat.observe(time.Duration(time.Now().UnixNano() - b.IngestNs))
			}
			applied++
			if !p.replayed.Load() {
				if idx >= target {
					p.finishReplay(ctx, applied, started)
				} else if time.Since(lastLog) > 2*time.Second {
					lastLog = time.Now()
					p.logger.Info("replaying wal", "index", idx, "target", target,
						"percent", fmt.Sprintf("%.1f", 100*float64(idx-from+1)/float64(target-from+1)),
						"records_per_s", int(float64(applied)/time.Since(started).Seconds()))
				}
			}
			// Alert events go out at once (their latency is the point);
			// summaries in hand-overs of handOffBytes, which queue makes.
			if len(p.outs[KindAlerts].pending) > 0 {
				p.handOff(nil)
			}
			p.stepCheckpoint(ctx)
			select {
			case <-ticker.C:
				p.checkpoint(ctx)
			case res := <-p.commits:
				p.committed(res)
			case req := <-p.reloads:
				req.done <- p.reload(ctx, req.cfg)
			default:
			}
			if ctx.Err() != nil && p.drainOver() {
				break
			}
		}
		if err := r.Err(); err != nil && ctx.Err() == nil {
			if err := p.retryAfter(ctx, fmt.Sprintf("read the wal after index %d", p.engine.AppliedIndex()), err); err != nil {
				return p.stopped(ctx, err)
			}
			r = p.log.NewReader(p.engine.AppliedIndex() + 1)
			continue
		}
		p.resumed() // the reader got to the end: a read error cleared
		if ctx.Err() == nil || !p.drainOver() {
			readTo = max(readTo, end)
		}
		p.admitApplied(max(readTo, p.adm.applied.Load())) // skipped records count as read
		if !p.replayed.Load() && ctx.Err() == nil {
			p.finishReplay(ctx, applied, started)
		}
		p.handOff(nil)
		if p.ck != nil {
			// Nothing to apply: the checkpoint in flight goes on.
			select {
			case <-ctx.Done():
				if p.log.LastIndex() > readTo && !p.drainOver() {
					continue // the backlog first (drainOver)
				}
				return p.stopped(ctx, nil)
			case <-p.log.Notify():
			case req := <-p.reloads:
				req.done <- p.reload(ctx, req.cfg)
			default:
				p.stepCheckpoint(ctx)
			}
			continue
		}
		select {
		case <-ctx.Done():
			if p.log.LastIndex() > readTo && !p.drainOver() {
				continue // the backlog first (drainOver)
			}
			return p.stopped(ctx, nil)
		case <-p.log.Notify():
		case <-ticker.C:
			p.checkpoint(ctx)
		case res := <-p.commits:
			p.committed(res)
		case req := <-p.reloads:
			req.done <- p.reload(ctx, req.cfg)
		}
	}
}

// drainLimit bounds how long Run goes on applying after its ctx ended.
const drainLimit = 5 * time.Second

// drainOver reports, once Run's ctx has ended, whether the drain has run
// out of time. Shutdown follows the data: the sources stop first, so what
// the WAL holds beyond the applied index is a bounded backlog of
// acknowledged readings, and applying it before the final checkpoint
// means a damaged WAL tail found at the next start cannot take them. A
// long replay interrupted by a stop still ends within drainLimit.
func (p *Pipeline) drainOver() bool {
	if p.drainFrom.IsZero() {
		p.drainFrom = time.Now()
	}
	return time.Since(p.drainFrom) > drainLimit
}

// stopped ends Run: on ctx's end (err nil or ctx's), with a final
// checkpoint, bounded in time (a storage error may hold it); any other
// error is returned.
func (p *Pipeline) stopped(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	if ok, reason := p.Health(); !ok {
		p.logger.Warn("final checkpoint skipped; the wal is replayed from the last one at the next start", "reason", reason)
		return nil
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), syncTimeout)
	defer cancel()
	p.checkpointNow(fctx, false)
	return nil
}

func (p *Pipeline) finishReplay(ctx context.Context, applied uint64, started time.Time) {
	// The retained alert state first: whoever waits for the replay (the
	// readiness probe, the log line) then finds it in place.
	if p.OnRestore != nil {
		// The newest event of each alert topic, as its retained message.
		seen := map[[2]string]bool{}
		for _, ev := range p.alerts.Recent(0) { // newest first
			k := [2]string{ev.Rule, ev.Series}
			if !seen[k] {
				seen[k] = true
				p.OnRestore(ev)
			}
		}
	}
	p.logger.Info("wal replay done", "records", applied, "took", time.Since(started).Round(time.Millisecond).String())
	if p.pending != nil {
		// The configured rules differ from those of the checkpoint: apply
		// them now, as SIGHUP would.
		if err := p.reload(ctx, *p.pending); err != nil {
			p.logger.Error("configured alert rules not applied after the replay; the checkpoint's stay in force", "err", err)
		}
	}
	p.replayed.Store(true)
}

// queue turns the outputs the outboxes do not hold yet into records,
// handing them to the outbox writer every handOffBytes: one batch can
// close a window for every series at once.
func (p *Pipeline) queue(out []windows.Emission, events []alerts.Event) {
	for i := range out {
		e := &out[i]
		if p.emit(output{em: e}, outboxPos{e.Index, e.Seq}) && p.OnEmit != nil {
			p.OnEmit(*e)
		}
		if p.pendingBytes >= handOffBytes {
			p.handOff(nil)
		}
	}
	for i := range events {
		ev := &events[i]
		if p.emit(output{ev: ev}, outboxPos{ev.Index, ev.Seq}) && p.OnAlert != nil {
			p.OnAlert(*ev)
			if p.replayed.Load() {
				p.alertLat.observe(time.Duration(time.Now().UnixNano() - p.lastIngest))
			}
		}
	}
}

// emit queues the record of o in the outbox of its kind, unless the
// outbox holds it already (emitted and made durable before a crash).
func (p *Pipeline) emit(o output, pos outboxPos) bool {
	for k := range Kinds {
		if !Kinds[k].of(o) {
			continue
		}
		out := &p.outs[k]
		if !out.take(pos) {
			return false
		}
		p.originBuf = appendOriginPos(p.originBuf[:0], pos, p.fps[k])
		rec := Kinds[k].build(&p.scratch, p.gatewayID, o, p.originBuf)
		if _, ok := out.emitted[rec.ID]; ok {
			delete(out.emitted, rec.ID) // emitted from a WAL tail lost since
			return false
		}
		out.pending = append(out.pending, rec)
		p.pendingBytes += recordSize(&rec)
		return true
	}
	return false
}

// recordSize is about the outbox bytes of r.
func recordSize(r *forward.Record) int {
	n := 64 + len(r.Topic) + len(r.Key) + len(r.Value) + len(r.ID) + len(r.Origin)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 4
	}
	return n
}

// take reports whether the output at pos is new to the outbox, and if so
// counts it as held.
func (o *outlet) take(pos outboxPos) bool {
	if !pos.after(o.last) {
		return false
	}
	o.last = pos
	return true
}
