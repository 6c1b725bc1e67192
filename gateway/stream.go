package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
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

// stream feeds the windows and alerts engines from the readings WAL, the
// one place where readings become windows and alerts:
//
//   - On start it loads the newest checkpoint that verifies (state and the
//     WAL index it covers) and replays the WAL from the next index, logging
//     its progress; /readyz says "replaying" until it caught up, while ingest
//     already accepts new readings (they land after the replay target).
//   - Then it follows the WAL as appends become durable (Log.Notify): live
//     batches go through exactly the code replay uses.
//   - Each batch goes to the windows engine, then with the windows it
//     closed to the alerts engine. Every output becomes a Kafka record in
//     the outbox of its kind (closed windows: summaries; group windows:
//     sketches; alert events: alerts), durable before any checkpoint may
//     cover the readings it came from. Each record's origin is the WAL
//     index and sequence that produced it; after a crash, replay
//     regenerates the outputs after the checkpoint identically (both
//     engines are deterministic, fed by the WAL's ingest stamps), and those
//     an outbox already holds are skipped: nothing lost, nothing repeated.
//   - Alert events are published (MQTT, live stream) once durable in their
//     outbox; after the replay, the newest event of each alert topic is
//     set again as its retained message.
//   - A checkpoint covering index i is written only once i is fsynced in the
//     WAL (best-effort records may lag) and every emission up to i is
//     durable in the outbox. The WAL is then released behind the older of
//     the two kept checkpoints.
type stream struct {
	cfg       windows.Config
	log       *wal.Log
	engine    *windows.Engine
	alerts    *alerts.Engine
	alertsCfg alerts.Config
	gatewayID string
	ckpts     *wal.Checkpoints
	interval  time.Duration
	logger    *slog.Logger

	// One outlet per record kind, each with its own outbox (and quota).
	summaries, sketches, alertsOut outlet

	replayTarget atomic.Uint64
	replayed     atomic.Bool

	published   []alerts.Event // alert events to publish once the next flush made them durable
	lastCkpt    uint64         // index of the last checkpoint written
	checkpoints atomic.Uint64
	ckptNs      atomic.Int64 // duration of the last checkpoint
	ckptAt      atomic.Int64 // when it was written, unix ns
	ckptBytes   atomic.Int64

	reloads chan reloadRequest

	onEmit    func(windows.Emission) // live stream; must not block
	onAlert   func(alerts.Event)     // once durable: MQTT, live stream; must not block
	onRestore func(alerts.Event)     // after replay: the retained state of each alert topic
}

// outlet is one output kind of the stream: its outbox, the records not yet
// appended, and the newest output the outbox holds (records at or before
// it are skipped on replay).
type outlet struct {
	box     *forward.Outbox
	limit   int // bytes per append: an outbox takes at most a quarter of its quota at once
	pending []forward.Record
	last    outboxPos
}

func newOutlet(box *forward.Outbox, quota int64) outlet {
	return outlet{box: box, limit: int(min(4<<20, quota/8))}
}

// reloadRequest asks the stream goroutine, the alerts engine's only user,
// to replace the rules.
type reloadRequest struct {
	cfg  alerts.Config
	done chan error
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

// lastOutboxPos reads the origin of the newest record of an outbox.
func lastOutboxPos(box *forward.Outbox) (outboxPos, error) {
	rec, ok, err := box.Last()
	if err != nil || !ok {
		return outboxPos{}, err // empty, or the last record was damaged: re-emit from the checkpoint
	}
	pos, ok := decodeOrigin(rec.Origin)
	if !ok {
		// Not written by this stream (or damaged): outputs after the
		// checkpoint are appended again; consumers drop duplicates by id.
		return outboxPos{}, nil
	}
	return pos, nil
}

// State is checkpointed as one blob: the windows state, then the alerts
// state, each length-prefixed, after a magic and version.
const stateMagic = "RNST\x01"

func encodeState(w, a []byte) []byte {
	b := append([]byte(stateMagic), binary.AppendUvarint(nil, uint64(len(w)))...)
	b = append(b, w...)
	b = binary.AppendUvarint(b, uint64(len(a)))
	return append(b, a...)
}

func decodeState(b []byte) (w, a []byte, err error) {
	rest, ok := bytes.CutPrefix(b, []byte(stateMagic))
	if !ok {
		return nil, nil, errors.New("not a gateway state checkpoint")
	}
	part := func() []byte {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			ok = false
			return nil
		}
		p := rest[k : k+int(n)]
		rest = rest[k+int(n):]
		return p
	}
	w, a = part(), part()
	if !ok || len(rest) != 0 {
		return nil, nil, errors.New("gateway state checkpoint: bad part lengths")
	}
	return w, a, nil
}

// start loads the checkpoint and positions the engines; run does the rest.
func (s *stream) start() error {
	for _, o := range s.outlets() {
		pos, err := lastOutboxPos(o.box)
		if err != nil {
			return err
		}
		o.last = pos
	}
	idx, data, fellBack, err := s.ckpts.Load()
	switch {
	case errors.Is(err, wal.ErrNoCheckpoint):
		if fellBack {
			s.logger.Warn("no checkpoint verifies; replaying everything the WAL holds")
		}
	case err != nil:
		return err
	default:
		if err := s.restore(data); err != nil {
			// A checkpoint of another windows config, or damaged beyond its
			// checksum: start empty and replay what the WAL holds.
			s.logger.Warn("checkpoint not usable; replaying everything the WAL holds", "index", idx, "err", err)
			if err := s.fresh(); err != nil {
				return err
			}
		} else {
			s.lastCkpt = idx
			if fellBack {
				s.logger.Warn("newest checkpoint did not verify; using the previous one", "index", idx)
			}
		}
	}
	s.replayTarget.Store(s.log.LastIndex())
	return nil
}

func (s *stream) outlets() []*outlet { return []*outlet{&s.summaries, &s.sketches, &s.alertsOut} }

// fresh gives the stream new, empty engines.
func (s *stream) fresh() error {
	engine, err := windows.New(s.cfg)
	if err != nil {
		return err
	}
	al, err := alerts.New(s.alertsCfg, s.gatewayID)
	if err != nil {
		return err
	}
	s.engine, s.alerts = engine, al
	return nil
}

// restore loads a checkpoint into the (fresh) engines.
func (s *stream) restore(data []byte) error {
	w, a, err := decodeState(data)
	if err != nil {
		return err
	}
	if err := s.engine.UnmarshalBinary(w); err != nil {
		return err
	}
	if err := s.alerts.UnmarshalBinary(a); err != nil {
		return fmt.Errorf("alerts state: %w", err)
	}
	return nil
}

// run replays, then follows the WAL until ctx ends; it then writes a last
// checkpoint. It returns nil on ctx end.
func (s *stream) run(ctx context.Context) error {
	from := s.engine.AppliedIndex() + 1
	target := s.replayTarget.Load()
	if target >= from {
		s.logger.Info("replaying wal", "from", from, "to", target, "records", target-from+1)
	}
	r := s.log.NewReader(from)
	var (
		b       wal.Batch
		dec     wal.BatchDecoder // one string per series across records
		out     []windows.Emission
		events  []alerts.Event
		started = time.Now()
		lastLog = started
		applied uint64
		ticker  = time.NewTicker(s.interval)
	)
	defer ticker.Stop()
	for {
		for r.Next() {
			idx := r.Index()
			if err := dec.Decode(r.Record(), &b); err != nil {
				s.logger.Warn("wal record is not a reading batch; skipped", "index", idx, "err", err)
				continue
			}
			out = s.engine.Apply(idx, &b, out[:0])
			events = s.alerts.Apply(idx, &b, out, events[:0])
			s.queue(out, events)
			applied++
			if !s.replayed.Load() {
				if idx >= target {
					s.finishReplay(applied, started)
				} else if time.Since(lastLog) > 2*time.Second {
					lastLog = time.Now()
					s.logger.Info("replaying wal", "index", idx, "target", target,
						"percent", fmt.Sprintf("%.1f", 100*float64(idx-from+1)/float64(target-from+1)),
						"records_per_s", int(float64(applied)/time.Since(started).Seconds()))
				}
			}
			// Alert events go out at once (their latency is the point);
			// summaries in batches.
			if len(s.alertsOut.pending) > 0 || len(s.summaries.pending)+len(s.sketches.pending) >= 1024 {
				if err := s.flush(ctx); err != nil {
					return err
				}
			}
			select {
			case <-ticker.C:
				s.checkpoint(ctx)
			case req := <-s.reloads:
				req.done <- s.reload(req.cfg)
			default:
			}
			if ctx.Err() != nil {
				break
			}
		}
		if err := r.Err(); err != nil && ctx.Err() == nil {
			return fmt.Errorf("read wal: %w", err)
		}
		if !s.replayed.Load() {
			s.finishReplay(applied, started)
		}
		if err := s.flush(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			s.checkpoint(context.WithoutCancel(ctx))
			return nil
		case <-s.log.Notify():
		case <-ticker.C:
			s.checkpoint(ctx)
		case req := <-s.reloads:
			req.done <- s.reload(req.cfg)
		}
	}
}

func (s *stream) finishReplay(applied uint64, started time.Time) {
	// The retained alert state first: whoever waits for the replay (the
	// readiness probe, the log line) then finds it in place.
	if s.onRestore != nil {
		// The newest event of each alert topic, as its retained message.
		seen := map[[2]string]bool{}
		for _, ev := range s.alerts.Recent(0) { // newest first
			k := [2]string{ev.Rule, ev.Series}
			if !seen[k] {
				seen[k] = true
				s.onRestore(ev)
			}
		}
	}
	s.replayed.Store(true)
	s.logger.Info("wal replay done", "records", applied, "took", time.Since(started).Round(time.Millisecond).String())
}

// reload replaces the alert rules (between two batches).
func (s *stream) reload(cfg alerts.Config) error {
	if err := s.alerts.Reload(cfg); err != nil {
		return err
	}
	s.alertsCfg = cfg
	return nil
}

// queue turns the outputs the outboxes do not hold yet into records.
func (s *stream) queue(out []windows.Emission, events []alerts.Event) {
	for i := range out {
		e := &out[i]
		pos := outboxPos{e.Index, e.Seq}
		if e.Kind == windows.KindGroup {
			if s.sketches.take(pos) {
				s.sketches.pending = append(s.sketches.pending, sketchRecord(s.gatewayID, e.Group, originPos(pos)))
			}
		} else if s.summaries.take(pos) {
			s.summaries.pending = append(s.summaries.pending, summaryRecord(s.gatewayID, e, originPos(pos)))
		} else {
			continue // emitted and made durable before a crash
		}
		if s.onEmit != nil {
			s.onEmit(*e)
		}
	}
	for i := range events {
		ev := &events[i]
		pos := outboxPos{ev.Index, ev.Seq}
		if s.alertsOut.take(pos) {
			s.alertsOut.pending = append(s.alertsOut.pending, alertRecord(ev, originPos(pos)))
			s.published = append(s.published, *ev)
		}
	}
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

// flush appends the pending records to their outboxes and waits until they
// are durable; then the alert events among them are published.
func (s *stream) flush(ctx context.Context) error {
	for _, o := range s.outlets() {
		// One append per chunk: a batch can close thousands of windows at
		// once (a tick idles every device).
		for rest := o.pending; len(rest) > 0; {
			n, size := 0, 0
			for n < len(rest) && (n == 0 || size+recordSize(&rest[n]) <= o.limit) {
				size += recordSize(&rest[n])
				n++
			}
			if err := o.box.Append(context.WithoutCancel(ctx), rest[:n]); err != nil {
				return fmt.Errorf("append %d records to the %s outbox: %w", n, o.box.Kind(), err)
			}
			rest = rest[n:]
		}
		clear(o.pending)
		o.pending = o.pending[:0]
	}
	if s.onAlert != nil {
		for _, ev := range s.published {
			s.onAlert(ev)
		}
	}
	clear(s.published)
	s.published = s.published[:0]
	return nil
}

// checkpoint writes the engines' state if it moved, is fsynced in the WAL,
// and its outputs are durable; then lets the WAL go behind the older kept
// checkpoint. A failure is logged: the previous checkpoint stands.
func (s *stream) checkpoint(ctx context.Context) {
	applied := s.engine.AppliedIndex()
	if applied == 0 || applied == s.lastCkpt || applied > s.log.SyncedIndex() {
		return
	}
	if err := s.flush(ctx); err != nil {
		s.logger.Error("checkpoint skipped: outbox not durable", "err", err)
		return
	}
	start := time.Now()
	w, err := s.engine.MarshalBinary()
	if err != nil {
		s.logger.Error("checkpoint skipped: encode windows state", "err", err)
		return
	}
	a, err := s.alerts.MarshalBinary()
	if err != nil {
		s.logger.Error("checkpoint skipped: encode alerts state", "err", err)
		return
	}
	data := encodeState(w, a)
	oldest, err := s.ckpts.Write(applied, data)
	if err != nil {
		s.logger.Error("checkpoint failed; the previous one stands", "index", applied, "err", err)
		return
	}
	s.lastCkpt = applied
	s.checkpoints.Add(1)
	s.ckptNs.Store(int64(time.Since(start)))
	s.ckptAt.Store(time.Now().UnixNano())
	s.ckptBytes.Store(int64(len(data)))
	s.log.Release(oldest + 1)
}

// tickBatch is the WAL record of an empty batch: the gateway appends one
// when ingest is silent, so processing time (and with it idle devices)
// advances through the WAL and a replay sees the same ticks.
func tickBatch(nowNs int64) []byte {
	return wal.AppendBatch(nil, &wal.Batch{IngestNs: nowNs})
}
