package pipeline

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// A storage error (an outbox append that fails, a WAL read that fails)
// never stops the pipeline: it holds where it is, retries with backoff and
// resumes on its own once the error clears (a full disk gets space again).
// While it holds it reads no further, so the WAL, which keeps accepting
// within its own bounds, is the backpressure ingest sees; nothing is lost,
// since everything the pipeline has not emitted is still in the WAL.
// Errors are logged at a bounded rate; Health reports the hold.
const (
	retryMin     = 100 * time.Millisecond
	retryMax     = 5 * time.Second
	holdLogEvery = 30 * time.Second
)

// hold is the state of one goroutine held by a storage error: the
// stream's (a WAL read) and the outbox writer's (an append).
type hold struct {
	held    atomic.Pointer[string]
	retries int       // since the hold began
	logAt   time.Time // last hold log line
}

// Health reports whether the pipeline runs, or the storage error it is
// held by ("held by storage error: <op>: <err>"), for the readiness probe.
// Safe for concurrent use.
func (p *Pipeline) Health() (ok bool, reason string) {
	for _, h := range []*hold{&p.hold, p.writerHold()} {
		if h == nil {
			continue
		}
		if r := h.held.Load(); r != nil {
			return false, "held by storage error: " + *r
		}
	}
	return true, ""
}

// writerHold is the outbox writer's hold (nil before Run started it).
func (p *Pipeline) writerHold() *hold {
	if w := p.writer.Load(); w != nil {
		return &w.hold
	}
	return nil
}

// retryAfter holds the stream after a storage error (see hold.retryAfter).
func (p *Pipeline) retryAfter(ctx context.Context, op string, err error) error {
	return p.hold.retryAfter(ctx, p, op, err)
}

// resumed clears the stream's hold once the operation that failed
// succeeded.
func (p *Pipeline) resumed() { p.hold.resumed(p.logger) }

// retryAfter records the reason, logs (at most every holdLogEvery), and
// waits the backoff. It returns ctx's error if ctx ends.
func (h *hold) retryAfter(ctx context.Context, p *Pipeline, op string, err error) error {
	reason := op + ": " + err.Error()
	h.held.Store(&reason)
	p.admitAll() // held: ingest does not wait for the stream
	p.holdErrors.Add(1)
	h.retries++
	if now := time.Now(); now.Sub(h.logAt) >= holdLogEvery {
		p.logger.Error("pipeline held by a storage error; retrying until it clears", "op", op, "err", err,
			"retries", h.retries)
		h.logAt = now
	}
	d := retryMin << min(h.retries-1, 6)
	t := time.NewTimer(min(d, retryMax))
	defer t.Stop()
	// Alert reloads wait meanwhile (a reload flushes and checkpoints,
	// which the storage error holds too); their callers have a deadline.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// resumed clears a hold once the operation that failed succeeded.
func (h *hold) resumed(logger *slog.Logger) {
	if h.held.Load() == nil {
		return
	}
	logger.Info("storage error cleared; pipeline resumed", "retries", h.retries)
	h.held.Store(nil)
	h.retries = 0
	h.logAt = time.Time{}
}
