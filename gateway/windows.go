package gateway

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/pipeline"
	"github.com/runnel-iot/runnel/wal"
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

// lateSink keeps late readings in the late log, a dead-letter log of its
// own, readable at GET /api/v1/late. Each entry carries its WAL origin
// (pipeline.LateLog), so a replay adds nothing twice.
type lateSink struct{ log *ingest.DeadLetters }

func (s lateSink) Late(index uint64, seq int, r wal.Reading, watermarkNs int64) {
	s.log.Add(ingest.Reject{
		TimeNs: r.TimeNs, Source: r.Series, Topic: r.Field, Reason: "late",
		Error: fmt.Sprintf("value %g at %s is before the watermark %s",
			r.Value, time.Unix(0, r.TimeNs).UTC().Format(time.RFC3339Nano), time.Unix(0, watermarkNs).UTC().Format(time.RFC3339Nano)),
		WALIndex: index, WALSeq: seq,
	})
}

func (s lateSink) LastOrigin() (uint64, int, bool, error) {
	last, err := s.log.Recent(1, ingest.RejectFilter{})
	if err != nil || len(last) == 0 || last[0].WALIndex == 0 {
		return 0, 0, false, err
	}
	return last[0].WALIndex, last[0].WALSeq, true, nil
}

// startWindows opens the late log, the outboxes (and the forwarder when
// brokers are set) and the checkpoints, loads the newest checkpoint into
// the windows and alerts engines, and adds the stream (replay, then
// follow) and the silence ticker to the group.
func (g *Gateway) startWindows(ctx context.Context, grp *group) error {
	dataDir := g.cfg.Gateway.DataDir
	late, err := ingest.OpenDeadLetters(filepath.Join(dataDir, "late"), g.cfg.DeadLetters, g.logger.With("component", "late"))
	if err != nil {
		return fmt.Errorf("open late log: %w", err)
	}
	grp.add(actor{name: "late log", stop: func(ctx context.Context) error { return closeWithin(ctx, late.Close) }})
	g.late = late
	var boxes []*forward.Outbox
	for _, info := range pipeline.Kinds { // boxes[k] is the outbox of Kind k
		kind := info.Outbox
		cfg, _ := g.cfg.Kafka.Outbox.For(kind)
		box, err := forward.OpenOutbox(filepath.Join(dataDir, "outbox"), kind, cfg, g.logger.With("component", "outbox", "kind", kind))
		if err != nil {
			return fmt.Errorf("open %s outbox: %w", kind, err)
		}
		grp.add(actor{name: kind + " outbox", stop: func(ctx context.Context) error { return closeWithin(ctx, box.Close) }})
		boxes = append(boxes, box)
	}
	g.outboxes = boxes
	ckpts, err := wal.OpenCheckpoints(filepath.Join(dataDir, "checkpoints"), g.logger.With("component", "checkpoint"))
	if err != nil {
		return err
	}
	ob := g.cfg.Kafka.Outbox
	pc := pipeline.Config{
		Windows: g.cfg.Windows, Alerts: g.cfg.Alerts, GatewayID: g.cfg.Gateway.ID,
		Interval: g.cfg.Checkpoint.Interval, Log: pipeline.FromWAL(g.wal), Checkpoints: pipeline.FromCheckpoints(ckpts),
		Late: lateSink{late}, Logger: g.logger.With("component", "windows"),
	}
	for k, info := range pipeline.Kinds {
		cfg, _ := ob.For(info.Outbox)
		pc.Outboxes[k], pc.Quotas[k] = boxes[k], int64(cfg.MaxBytes)
	}
	p, err := pipeline.New(ctx, pc)
	if err != nil {
		return err
	}
	g.pipeline = p
	grp.add(goActor("windows", ctx, p.Run, nil))
	g.startTicker(ctx, grp)
	return g.startForward(ctx, grp)
}

// startForward runs the forwarder when Kafka brokers are configured. It
// stops before the outboxes close (the group stops in reverse order).
func (g *Gateway) startForward(ctx context.Context, grp *group) error {
	if len(g.cfg.Kafka.Brokers) == 0 {
		g.logger.Info("forwarding to Kafka is off (no kafka.brokers); summaries stay in the outboxes within their quotas")
		return nil
	}
	kc := g.cfg.Kafka
	if kc.ClientID == "" {
		kc.ClientID = g.cfg.Gateway.ID
	}
	f, err := forward.New(kc, g.outboxes, g.logger.With("component", "forward"))
	if err != nil {
		return err
	}
	g.forwarder = f
	grp.add(goActor("forward", ctx, f.Run, nil))
	return nil
}

// ReloadAlerts replaces the alert rules, keeping the state of unchanged
// rules; on error the old rules stay in force. It waits for the pipeline
// (between two batches) up to ctx.
func (g *Gateway) ReloadAlerts(ctx context.Context, cfg alerts.Config) error {
	if g.pipeline == nil {
		return errors.New("reload alerts: the gateway is not running")
	}
	return g.pipeline.Reload(ctx, cfg)
}

// startTicker appends an empty batch to the WAL when ingest has been
// silent for a while, so processing time moves on (a silent device is
// judged idle, its windows close) and a replay sees exactly the same
// ticks. Best effort: a tick never forces an fsync.
func (g *Gateway) startTicker(ctx context.Context, grp *group) {
	every := max(time.Second, g.cfg.Windows.IdleTimeout/4)
	grp.add(goActor("ticker", ctx, func(ctx context.Context) error {
		tickWhenSilent(ctx, g.wal, every)
		return nil
	}, nil))
}

// tickLog is what the ticker uses of the WAL.
type tickLog interface {
	LastIndex() uint64
	TryAppendAsync(records [][]byte, done func(first, last uint64, err error)) error
}

// tickWhenSilent appends a tick batch at the end of every interval of
// `every` in which nothing else was appended, until ctx ends. A silent
// device therefore goes idle within one interval of its timeout. The
// tick's own append must not count as activity: it lands after
// TryAppendAsync returns, so its index is learnt from the callback, and
// seeing it at the next interval means silence.
func tickWhenSilent(ctx context.Context, log tickLog, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var ticked atomic.Uint64 // the index of the last tick written
	last := log.LastIndex()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := log.LastIndex()
		if cur != last && cur != ticked.Load() {
			last = cur // something else was appended: not silent
			continue
		}
		last = cur
		_ = log.TryAppendAsync([][]byte{tickBatch(time.Now().UnixNano())}, func(_, idx uint64, err error) {
			if err == nil {
				ticked.Store(idx)
			}
		})
	}
}

// alertTopic is the MQTT topic of an alert's events:
// alerts/<rule>/<series escaped into one topic level>.
func alertTopic(ev *alerts.Event) string {
	return "alerts/" + ev.Rule + "/" + alerts.TopicLevel(ev.Series)
}

func alertPayload(ev *alerts.Event) []byte { return pipeline.AlertPayload(ev) }

// tickBatch is the WAL record of an empty batch: the gateway appends one
// when ingest is silent, so processing time (and with it idle devices)
// advances through the WAL and a replay sees the same ticks.
func tickBatch(nowNs int64) []byte {
	return wal.AppendBatch(nil, &wal.Batch{IngestNs: nowNs})
}

// publishAlert sends a durable alert event to MQTT subscribers (QoS 1,
// retained: the latest event of each alert topic is its state) and to the
// live stream. Runs on the stream goroutine; neither blocks.
func (g *Gateway) publishAlert(ev alerts.Event) {
	payload := alertPayload(&ev)
	if err := g.broker.Publish(alertTopic(&ev), payload, true, 1); err != nil {
		g.logger.Warn("publish alert on mqtt", "rule", ev.Rule, "series", ev.Series, "err", err)
	}
	if g.hub != nil {
		g.hub.PublishAlert(ev, payload)
	}
}

// restoreAlert sets an alert topic's retained message after a restart
// (the broker keeps retained messages in memory only), without delivering
// it again to live subscribers.
func (g *Gateway) restoreAlert(ev alerts.Event) {
	g.broker.Retain(alertTopic(&ev), alertPayload(&ev), 1)
}
