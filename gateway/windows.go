package gateway

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"time"

	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// CheckpointConfig is the `checkpoint` section.
type CheckpointConfig struct {
	// Interval is how often the windows state is checkpointed (and at
	// shutdown). A crash replays at most this much of the WAL.
	Interval time.Duration `yaml:"interval"`
}

// Validate checks the bounds.
func (c CheckpointConfig) Validate() error {
	var errs sectionErrors
	if c.Interval < 10*time.Millisecond || c.Interval > time.Hour {
		errs.add("interval", "%s is out of range 10ms to 1h", formatDuration(c.Interval))
	}
	return errs.join()
}

// outboxConfig is the summaries outbox's log: bounded on disk until forward
// (which releases what Kafka acknowledged) takes it over.
func outboxConfig() wal.Config {
	c := wal.DefaultConfig()
	c.SegmentBytes = 1 * wal.MiB
	c.RetentionBytes = 64 * wal.MiB
	c.RetentionAge = 0
	return c
}

// lateSink keeps late readings in the late log, a dead-letter log of its
// own, readable at GET /api/v1/late.
type lateSink struct{ log *ingest.DeadLetters }

func (s lateSink) Late(r wal.Reading, watermarkNs int64) {
	s.log.Add(ingest.Reject{
		TimeNs: r.TimeNs, Source: r.Series, Topic: r.Field, Reason: "late",
		Error: fmt.Sprintf("value %g at %s is before the watermark %s",
			r.Value, time.Unix(0, r.TimeNs).UTC().Format(time.RFC3339Nano), time.Unix(0, watermarkNs).UTC().Format(time.RFC3339Nano)),
	})
}

// startWindows opens the late log, the summaries outbox and the
// checkpoints, loads the newest checkpoint into the windows engine, and
// adds the stream (replay, then follow) and the silence ticker to the
// group.
func (g *Gateway) startWindows(ctx context.Context, grp *group) error {
	dataDir := g.cfg.Gateway.DataDir
	late, err := ingest.OpenDeadLetters(filepath.Join(dataDir, "late"), g.cfg.DeadLetters, g.logger.With("component", "late"))
	if err != nil {
		return fmt.Errorf("open late log: %w", err)
	}
	grp.add(actor{name: "late log", stop: func(ctx context.Context) error { return closeWithin(ctx, late.Close) }})
	g.late = late
	outbox, err := wal.Open(filepath.Join(dataDir, "outbox", "summaries"), outboxConfig(), g.logger.With("component", "outbox"))
	if err != nil {
		return fmt.Errorf("open summaries outbox: %w", err)
	}
	outbox.Release(math.MaxUint64) // nothing reads it yet: retention alone bounds it
	grp.add(actor{name: "outbox", stop: func(ctx context.Context) error { return closeWithin(ctx, outbox.Close) }})
	ckpts, err := wal.OpenCheckpoints(filepath.Join(dataDir, "checkpoints"), g.logger.With("component", "checkpoint"))
	if err != nil {
		return err
	}
	engine, err := windows.New(g.cfg.Windows)
	if err != nil {
		return err
	}
	engine.SetLateSink(lateSink{late})
	s := &stream{
		cfg: g.cfg.Windows, log: g.wal, engine: engine, outbox: outbox, ckpts: ckpts,
		interval: g.cfg.Checkpoint.Interval, logger: g.logger.With("component", "windows"),
	}
	if err := s.start(); err != nil {
		return fmt.Errorf("start windows: %w", err)
	}
	s.engine.SetLateSink(lateSink{late}) // start may have rebuilt the engine
	g.stream = s
	grp.add(goActor("windows", ctx, s.run, nil))
	g.startTicker(ctx, grp)
	return nil
}

// startTicker appends an empty batch to the WAL when ingest has been
// silent for a while, so processing time moves on (a silent device is
// judged idle, its windows close) and a replay sees exactly the same
// ticks. Best effort: a tick never forces an fsync.
func (g *Gateway) startTicker(ctx context.Context, grp *group) {
	every := max(time.Second, g.cfg.Windows.IdleTimeout/4)
	grp.add(goActor("ticker", ctx, func(ctx context.Context) error {
		t := time.NewTicker(every)
		defer t.Stop()
		last := g.wal.LastIndex()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if cur := g.wal.LastIndex(); cur != last {
				last = cur
				continue
			}
			_ = g.wal.TryAppendAsync([][]byte{tickBatch(time.Now().UnixNano())}, func(uint64, uint64, error) {})
			last = g.wal.LastIndex()
		}
	}, nil))
}
