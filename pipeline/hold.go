package pipeline

import (
	"context"
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

// Health reports whether the pipeline runs, or the storage error it is
// held by ("held by storage error: <op>: <err>"), for the readiness probe.
// Safe for concurrent use.
func (p *Pipeline) Health() (ok bool, reason string) {
	if r := p.held.Load(); r != nil {
		return false, "held by storage error: " + *r
	}
	return true, ""
}

// retryAfter holds the pipeline after a storage error: it records the
// reason, logs (at most every holdLogEvery), and waits the backoff. It
// returns ctx's error if ctx ends.
func (p *Pipeline) retryAfter(ctx context.Context, op string, err error) error {
	reason := op + ": " + err.Error()
	p.held.Store(&reason)
	p.holdErrors.Add(1)
	p.retries++
	if now := time.Now(); now.Sub(p.holdLogAt) >= holdLogEvery {
		p.logger.Error("pipeline held by a storage error; retrying until it clears", "op", op, "err", err,
			"retries", p.retries)
		p.holdLogAt = now
	}
	d := retryMin << min(p.retries-1, 6)
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
func (p *Pipeline) resumed() {
	if p.held.Load() == nil {
		return
	}
	p.logger.Info("storage error cleared; pipeline resumed", "retries", p.retries)
	p.held.Store(nil)
	p.retries = 0
	p.holdLogAt = time.Time{}
}
