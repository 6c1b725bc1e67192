package pipeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/runnel-iot/runnel/forward"
)

// The outboxes are written on a goroutine of their own. An outbox append
// returns once its records are fsynced, and on the stream goroutine every
// such wait stalled the windows and alerts behind it: at each catch-up
// with closed windows pending, and at every alert (its record was flushed
// at once). Under load the outbox's fsync queues behind the readings WAL's
// on the same disk, and those stalls were the tail of the ingest-to-
// queryable and reading-to-alert latencies.
//
// So the stream hands its pending records over (handOff) and goes on;
// the writer appends them in the order handed over, one append at a time,
// each durable before the next, which keeps every outbox in origin order
// (the replay's de-duplication depends on it). A storage error holds the
// writer (retried with backoff, Health says why); the stream goes on until
// writerQueue hand-overs wait, then holds too, so memory stays bounded and
// the WAL is the backpressure, as before. flush is the barrier: it hands
// over what is pending and waits until the writer has made everything
// durable (checkpoints, reloads, shutdown).
//
// Once the writer gives up on an append (Run's ctx ended while it was
// failing), it fails every later hand-over too: appending them would put
// newer origins in the outbox than records it lacks, and the replay would
// then skip those records as already held.
const writerQueue = 2

type outWriter struct {
	p      *Pipeline
	jobs   chan writeJob
	spare  chan [NumKinds][]forward.Record // emptied record slices back to the stream
	done   chan struct{}
	hold   hold
	err    error // the append given up on; sticky (writer goroutine only)
	cancel context.CancelFunc
}

// writeJob is one hand-over: records per kind, in order, and a barrier to
// answer once they are durable (nil: nobody waits).
type writeJob struct {
	recs    [NumKinds][]forward.Record
	barrier chan error
}

func (p *Pipeline) startWriter(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	w := &outWriter{p: p, jobs: make(chan writeJob, writerQueue),
		spare: make(chan [NumKinds][]forward.Record, writerQueue+1), done: make(chan struct{}), cancel: cancel}
	p.writer.Store(w)
	go w.run(ctx)
}

// stopWriter ends the writer: Run's last flush has returned, so what it
// still holds is given up on if it fails (the next start replays it).
func (p *Pipeline) stopWriter() {
	w := p.writer.Load()
	close(w.jobs)
	w.cancel()
	<-w.done
}

func (w *outWriter) run(ctx context.Context) {
	defer close(w.done)
	for j := range w.jobs {
		if w.err == nil {
			w.err = w.write(ctx, &j)
		}
		if j.barrier != nil {
			j.barrier <- w.err
		}
		for k := range j.recs {
			clear(j.recs[k])
			j.recs[k] = j.recs[k][:0]
		}
		select {
		case w.spare <- j.recs:
		default:
		}
	}
}

// write appends the records of j, kind by kind, in chunks of at most the
// outlet's limit. A failed append is retried with backoff until it
// succeeds or ctx ends; a record an outbox refuses as invalid is logged
// and dropped (retrying cannot fix it).
func (w *outWriter) write(ctx context.Context, j *writeJob) error {
	p := w.p
	for k, recs := range j.recs {
		o := &p.outs[k]
		// One append per chunk: a batch can close thousands of windows at
		// once (a tick idles every device).
		for rest := recs; len(rest) > 0; {
			n, size := 0, 0
			for n < len(rest) && (n == 0 || size+recordSize(&rest[n]) <= o.limit) {
				size += recordSize(&rest[n])
				n++
			}
			err := o.box.Append(context.WithoutCancel(ctx), rest[:n])
			var rerr *forward.RecordError
			switch {
			case err == nil:
				w.hold.resumed(p.logger)
				rest = rest[n:]
			case errors.As(err, &rerr) && rerr.Index >= 0 && rerr.Index < n:
				p.logger.Error("outbox refused a record; dropped", "kind", o.box.Kind(), "err", err)
				rest = append(rest[:rerr.Index], rest[rerr.Index+1:]...)
			default:
				op := fmt.Sprintf("append %d records to the %s outbox", n, o.box.Kind())
				if err := w.hold.retryAfter(ctx, p, op, err); err != nil {
					return fmt.Errorf("%s: %w", op, err)
				}
			}
		}
	}
	return nil
}

// handOff gives the pending records to the writer without waiting for
// them, unless writerQueue hand-overs wait already; barrier, if not nil,
// gets the writer's answer once they (and all before) are durable.
func (p *Pipeline) handOff(barrier chan error) {
	w := p.writer.Load()
	j := writeJob{barrier: barrier}
	any := false
	var spare [NumKinds][]forward.Record
	select {
	case spare = <-w.spare:
	default:
	}
	for k := range p.outs {
		o := &p.outs[k]
		if len(o.pending) > 0 {
			j.recs[k], o.pending, any = o.pending, spare[k], true
		}
	}
	if !any && barrier == nil {
		return
	}
	w.jobs <- j
}

// flush hands over what is pending and waits until every record handed
// over is durable in its outbox, or the writer gave up (Run's ctx ended
// while an append failed).
func (p *Pipeline) flush() error {
	done := make(chan error, 1)
	p.handOff(done)
	return <-done
}
