package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// stream feeds the windows engine from the readings WAL, the one place
// where readings become windows:
//
//   - On start it loads the newest checkpoint that verifies (state and the
//     WAL index it covers) and replays the WAL from the next index, logging
//     its progress; /readyz says "replaying" until it caught up, while ingest
//     already accepts new readings (they land after the replay target).
//   - Then it follows the WAL as appends become durable (Log.Notify): live
//     batches go through exactly the code replay uses.
//   - Every emission (a closed window) is appended to the summaries outbox,
//     a durable log that forward reads, before any checkpoint may cover the
//     readings it came from. Each outbox record carries the WAL index and
//     sequence that produced it; after a crash, replay regenerates the
//     emissions after the checkpoint identically (the engine is
//     deterministic, fed by the WAL's ingest stamps), and those the outbox
//     already holds are skipped: nothing is lost, nothing repeated.
//   - A checkpoint covering index i is written only once i is fsynced in the
//     WAL (best-effort records may lag) and every emission up to i is
//     durable in the outbox. The WAL is then released behind the older of
//     the two kept checkpoints.
type stream struct {
	cfg      windows.Config
	log      *wal.Log
	engine   *windows.Engine
	outbox   *wal.Log
	ckpts    *wal.Checkpoints
	interval time.Duration
	logger   *slog.Logger

	replayTarget atomic.Uint64
	replayed     atomic.Bool

	lastOut     outboxPos // the newest emission the outbox holds
	pending     [][]byte  // emissions not yet appended to the outbox
	pendingLast uint64    // WAL index the pending emissions reach
	lastCkpt    uint64    // index of the last checkpoint written
	checkpoints atomic.Uint64
	ckptNs      atomic.Int64 // duration of the last checkpoint
	ckptAt      atomic.Int64 // when it was written, unix ns
	ckptBytes   atomic.Int64

	onEmit func(windows.Emission) // live stream; must not block
}

// outboxPos identifies an emission: the WAL index whose batch produced it
// and its position among that batch's emissions.
type outboxPos struct {
	Index uint64
	Seq   int
}

func (p outboxPos) after(q outboxPos) bool {
	return p.Index > q.Index || p.Index == q.Index && p.Seq > q.Seq
}

// summaryRecord is one outbox record: a closed window as JSON, with its
// origin. Forward turns these into Kafka records.
type summaryRecord struct {
	Index  uint64                 `json:"wal_index"`
	Seq    int                    `json:"seq"`
	Kind   string                 `json:"kind"`
	Window *windows.WindowSummary `json:"window,omitempty"`
	Group  *windows.GroupSummary  `json:"group,omitempty"`
}

// lastOutboxPos reads the newest record of the outbox.
func lastOutboxPos(outbox *wal.Log) (outboxPos, error) {
	last := outbox.LastIndex()
	if last == 0 {
		return outboxPos{}, nil
	}
	r := outbox.NewReader(last)
	if !r.Next() {
		if err := r.Err(); err != nil {
			return outboxPos{}, fmt.Errorf("read the outbox tail: %w", err)
		}
		return outboxPos{}, nil // the last record was damaged: re-emit from the checkpoint
	}
	var rec struct {
		Index uint64 `json:"wal_index"`
		Seq   int    `json:"seq"`
	}
	if err := json.Unmarshal(r.Record(), &rec); err != nil {
		return outboxPos{}, fmt.Errorf("decode the outbox tail record %d: %w", last, err)
	}
	return outboxPos{rec.Index, rec.Seq}, nil
}

// start loads the checkpoint and positions the engine; run does the rest.
func (s *stream) start() error {
	pos, err := lastOutboxPos(s.outbox)
	if err != nil {
		return err
	}
	s.lastOut = pos
	idx, data, fellBack, err := s.ckpts.Load()
	switch {
	case errors.Is(err, wal.ErrNoCheckpoint):
		if fellBack {
			s.logger.Warn("no checkpoint verifies; replaying everything the WAL holds")
		}
	case err != nil:
		return err
	default:
		if err := s.engine.UnmarshalBinary(data); err != nil {
			// A checkpoint of another windows config, or damaged beyond its
			// checksum: start empty and replay what the WAL holds.
			s.logger.Warn("checkpoint not usable; replaying everything the WAL holds", "index", idx, "err", err)
			fresh, nerr := windows.New(s.cfg)
			if nerr != nil {
				return nerr
			}
			s.engine = fresh
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
		out     []windows.Emission
		started = time.Now()
		lastLog = started
		applied uint64
		ticker  = time.NewTicker(s.interval)
	)
	defer ticker.Stop()
	for {
		for r.Next() {
			idx := r.Index()
			if err := wal.DecodeBatch(r.Record(), &b); err != nil {
				s.logger.Warn("wal record is not a reading batch; skipped", "index", idx, "err", err)
				continue
			}
			out = s.engine.Apply(idx, &b, out[:0])
			s.queue(out)
			s.pendingLast = idx
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
			if len(s.pending) >= 1024 {
				if err := s.flush(ctx); err != nil {
					return err
				}
			}
			select {
			case <-ticker.C:
				s.checkpoint(ctx)
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
		}
	}
}

func (s *stream) finishReplay(applied uint64, started time.Time) {
	s.replayed.Store(true)
	s.logger.Info("wal replay done", "records", applied, "took", time.Since(started).Round(time.Millisecond).String())
}

// queue encodes the emissions that the outbox does not hold yet.
func (s *stream) queue(out []windows.Emission) {
	for i := range out {
		e := &out[i]
		if !(outboxPos{e.Index, e.Seq}).after(s.lastOut) {
			continue // emitted and made durable before a crash
		}
		rec := summaryRecord{Index: e.Index, Seq: e.Seq, Kind: e.Kind.String()}
		if e.Kind == windows.KindGroup {
			rec.Group = e.Group
		} else {
			w := e.Window
			rec.Window = &w
		}
		b, err := json.Marshal(rec)
		if err != nil {
			panic("BUG: marshal emission: " + err.Error())
		}
		s.pending = append(s.pending, b)
		s.lastOut = outboxPos{e.Index, e.Seq}
		if s.onEmit != nil {
			s.onEmit(*e)
		}
	}
}

// flush appends the pending emissions to the outbox and waits until they
// are durable.
func (s *stream) flush(ctx context.Context) error {
	if len(s.pending) == 0 {
		return nil
	}
	if _, _, err := s.outbox.Append(context.WithoutCancel(ctx), s.pending); err != nil {
		return fmt.Errorf("append %d window summaries to the outbox: %w", len(s.pending), err)
	}
	s.pending = s.pending[:0]
	return nil
}

// checkpoint writes the engine state if it moved, is fsynced in the WAL,
// and its emissions are durable; then lets the WAL go behind the older
// kept checkpoint. A failure is logged: the previous checkpoint stands.
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
	data, err := s.engine.MarshalBinary()
	if err != nil {
		s.logger.Error("checkpoint skipped: encode windows state", "err", err)
		return
	}
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
