package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/runnel-iot/runnel/windows"
)

// Checkpoints are streamed: encoding the whole state at once stalled the
// stream (about 60 ms for 10,000 pairs on a small machine, plus the file's
// two fsyncs, windows and alerts waiting meanwhile) and allocated several
// times the state. So:
//
//   - At a checkpoint moment (the interval's tick, none in flight) the
//     pipeline flushes the outboxes, begins a windows checkpoint
//     (windows.Checkpoint: copy-on-write per series, as of the applied
//     index), encodes the alerts state and the rules (small), creates the
//     checkpoint file and writes the state header (version 3, config.go).
//   - After each applied batch, and while nothing arrives, it writes the
//     next chunk of the windows state (ckptChunk bytes): each step on the
//     stream goroutine is short, and the memory is a chunk plus the series
//     Apply saves before changing them (at most the state's size).
//   - At the end a goroutine waits for the WAL's sync barrier up to the
//     checkpoint's index (Log.Sync) and commits the file (its fsyncs); the
//     stream then counts it and releases the WAL behind the older kept
//     checkpoint. One checkpoint is in flight at a time.
//   - An error aborts it (the previous checkpoint stands, the error is
//     logged); the next tick tries again.
//   - At shutdown and right after a reload the checkpoint is written before
//     going on (the stream waits): the final one must cover everything
//     applied, and no replay may cross a reload. One in flight that covers
//     less is aborted first.
const (
	// syncTimeout bounds the wait for the WAL's fsync barrier before a
	// checkpoint is committed (past it the checkpoint is dropped, the
	// previous one stands, and the next tick tries again), and the final
	// checkpoint at shutdown.
	syncTimeout = 10 * time.Second
	// ckptChunk is the windows state written per step: about half a
	// millisecond of encoding on a 2-core VM (1-2 ms loaded), a few on a
	// Raspberry Pi.
	ckptChunk = 64 << 10
)

// streamed is the checkpoint the stream is writing.
type streamed struct {
	wc    *windows.Checkpoint
	w     CheckpointWriter
	index uint64
	size  int64 // state bytes written
	began time.Time
	stall time.Duration // its longest step on the stream goroutine
}

// commitResult is what the commit of a streamed checkpoint gave.
type commitResult struct {
	s      *streamed
	oldest uint64
	err    error
}

// checkpoint begins a checkpoint on the interval's tick, unless one is in
// flight or nothing was applied since the last.
func (p *Pipeline) checkpoint(ctx context.Context) {
	if p.ck != nil || p.commits != nil {
		return
	}
	p.beginCheckpoint(ctx, false)
}

// beginCheckpoint starts a streamed checkpoint of the state as of the
// applied index, once every output up to it is durable in its outbox
// (flush); force begins one even if no record was applied since the last
// (a reload changed the state). It reports whether one began.
func (p *Pipeline) beginCheckpoint(ctx context.Context, force bool) bool {
	applied := p.engine.AppliedIndex()
	if applied == 0 || applied == p.lastCkpt && !force {
		return false
	}
	if err := p.flush(); err != nil {
		p.logger.Error("checkpoint skipped: outbox not durable", "err", err)
		return false
	}
	start := time.Now()
	wc, err := p.engine.BeginCheckpoint()
	if err != nil {
		p.logger.Error("checkpoint skipped: begin windows state", "index", applied, "err", err)
		return false
	}
	a, err := p.alerts.MarshalBinary()
	if err != nil {
		wc.Abort()
		p.logger.Error("checkpoint skipped: encode alerts state", "index", applied, "err", err)
		return false
	}
	head := encodeStateHead(a, encodeAlertsConfig(p.alertsCfg))
	w, err := p.ckpts.Create(applied)
	if err == nil {
		if _, err = w.Write(head); err != nil {
			w.Abort()
		}
	}
	if err != nil {
		wc.Abort()
		p.logger.Error("checkpoint failed; the previous one stands", "index", applied, "err", err)
		return false
	}
	p.ck = &streamed{wc: wc, w: w, index: applied, size: int64(len(head)), began: start, stall: time.Since(start)}
	return true
}

// stepCheckpoint writes the next chunk of the checkpoint in flight; after
// the last it hands the file to commit.
func (p *Pipeline) stepCheckpoint(ctx context.Context) {
	s := p.ck
	if s == nil {
		return
	}
	t := time.Now()
	chunk, err := s.wc.Next(ckptChunk)
	if err == nil {
		_, err = s.w.Write(chunk)
		s.size += int64(len(chunk))
	}
	s.stall = max(s.stall, time.Since(t))
	switch {
	case errors.Is(err, io.EOF):
		p.ck = nil
		p.commit(ctx, s)
	case err != nil:
		p.abortCheckpoint(err)
	}
}

// commit makes s durable off the stream goroutine: the WAL's sync barrier
// up to its index (a checkpoint never covers a record the WAL could lose),
// then the file's fsyncs and rename. The result comes on p.commits.
func (p *Pipeline) commit(ctx context.Context, s *streamed) {
	done := make(chan commitResult, 1)
	p.commits = done
	cctx := context.WithoutCancel(ctx) // the final checkpoint commits after Run's ctx ended
	go func() {
		sctx, cancel := context.WithTimeout(cctx, syncTimeout)
		err := p.log.Sync(sctx, s.index)
		cancel()
		if err != nil {
			s.w.Abort()
			done <- commitResult{s: s, err: fmt.Errorf("wal not synced up to index %d: %w", s.index, err)}
			return
		}
		oldest, err := s.w.Commit()
		done <- commitResult{s: s, oldest: oldest, err: err}
	}()
}

// committed takes the result of a commit (on the stream goroutine).
func (p *Pipeline) committed(r commitResult) {
	p.commits = nil
	s := r.s
	if r.err != nil {
		p.logger.Error("checkpoint failed; the previous one stands", "index", s.index, "err", r.err)
		return
	}
	p.lastCkpt = s.index
	p.ckptNs.Store(int64(time.Since(s.began)))
	p.ckptStall.Store(int64(s.stall))
	p.ckptAt.Store(time.Now().UnixNano())
	p.ckptBytes.Store(s.size)
	p.checkpoints.Add(1) // last: who sees the count sees the figures
	p.log.Release(r.oldest + 1)
}

// abortCheckpoint abandons the checkpoint in flight (err, if any, is
// logged).
func (p *Pipeline) abortCheckpoint(err error) {
	s := p.ck
	p.ck = nil
	s.wc.Abort()
	s.w.Abort()
	if err != nil {
		p.logger.Error("checkpoint failed; the previous one stands", "index", s.index, "err", err)
	}
}

// waitCommit waits for the commit in progress, if any, and takes its
// result.
func (p *Pipeline) waitCommit() {
	if p.commits != nil {
		p.committed(<-p.commits)
	}
}

// checkpointNow writes a checkpoint of everything applied and returns once
// it is committed (or failed): at shutdown, and after a reload (force: the
// state changed though no record was applied). One in flight is finished
// if it covers the same state, else aborted.
func (p *Pipeline) checkpointNow(ctx context.Context, force bool) {
	p.waitCommit()
	if s := p.ck; s != nil && (force || s.index != p.engine.AppliedIndex()) {
		p.abortCheckpoint(nil)
	}
	if p.ck == nil && !p.beginCheckpoint(ctx, force) {
		return
	}
	for p.ck != nil {
		p.stepCheckpoint(ctx)
	}
	p.waitCommit()
}

// endCheckpoints abandons the checkpoint in flight and waits for a commit
// in progress: Run returns with no goroutine or temp file of its own left.
func (p *Pipeline) endCheckpoints() {
	if p.ck != nil {
		p.abortCheckpoint(nil)
	}
	p.waitCommit()
}
