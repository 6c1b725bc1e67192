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
// The records between the stream and the outboxes are bounded in bytes:
// the stream hands over every handOffBytes (within a batch too), and the
// writer takes every hand-over waiting when it starts an append, so one
// append (one fsync per outbox) covers whatever queued during the last
// one. At most writerQueue+1 hand-overs are in the writer and writerQueue
// more wait, besides the one the stream fills: about 1.5 MiB of records
// at worst. Hand-overs used to be a batch's records once 1,024 were pending,
// and a batch closing windows for 10,000 series handed over all 10,000:
// in make bench's forward phase, 5-9 MB of the live heap were records
// waiting for the writer.
//
// Once the writer gives up on an append (Run's ctx ended while it was
// failing), it fails every later hand-over too: appending them would put
// newer origins in the outbox than records it lacks, and the replay would
// then skip those records as already held.
const writerQueue = 2

// handOffBytes is the size (recordSize) at which pending records are
// handed to the writer: large enough that an append's fsync is shared by
// hundreds of records (the forward phase's summaries are ~600 bytes),
// small enough that what is in flight stays under the outbox's 1 MiB
// encoding buffer and the log's pooled request buffers (one append of the
// writer is at most writerQueue+1 hand-overs), which larger appends
// allocate afresh. 512 KiB measured the same CPU and 5 MiB more peak RSS.
const handOffBytes = 256 << 10

type outWriter struct {
	p      *Pipeline
	jobs   chan writeJob
	spare  chan [NumKinds][]forward.Record // emptied record slices back to the stream
	done   chan struct{}
	hold   hold
	err    error // the append given up on; sticky (writer goroutine only)
	cancel context.CancelFunc
	// Writer goroutine only: the hand-overs of one append, and the chunk
	// being appended (records copied across hand-overs).
	taken []writeJob
	chunk []forward.Record
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
		w.taken = append(w.taken[:0], j)
	more: // every hand-over already waiting joins this append
		for len(w.taken) <= writerQueue {
			select {
			case j, ok := <-w.jobs:
				if !ok {
					break more
				}
				w.taken = append(w.taken, j)
			default:
				break more
			}
		}
		if w.err == nil {
			w.err = w.write(ctx, w.taken)
		}
		for i := range w.taken {
			j := &w.taken[i]
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
		clear(w.taken)
	}
}

// write appends the records of jobs, kind by kind, in order, in chunks of
// at most the outlet's limit. A failed append is retried with backoff
// until it succeeds or ctx ends; a record an outbox refuses as invalid is
// logged and dropped (retrying cannot fix it).
func (w *outWriter) write(ctx context.Context, jobs []writeJob) error {
	defer func() { clear(w.chunk[:cap(w.chunk)]) }() // keeps no record alive
	for k := range NumKinds {
		o := &w.p.outs[k]
		ji, ri := 0, 0 // the next record: jobs[ji].recs[k][ri]
		for {
			chunk, size := w.chunk[:0], 0
			for ji < len(jobs) {
				recs := jobs[ji].recs[k]
				if ri == len(recs) {
					ji, ri = ji+1, 0
					continue
				}
				n := recordSize(&recs[ri])
				if len(chunk) > 0 && size+n > o.limit {
					break
				}
				chunk = append(chunk, recs[ri])
				size += n
				ri++
			}
			w.chunk = chunk
			if len(chunk) == 0 {
				break
			}
			if err := w.appendChunk(ctx, o, chunk); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendChunk appends recs to o's outbox, retrying as write says.
func (w *outWriter) appendChunk(ctx context.Context, o *outlet, recs []forward.Record) error {
	p := w.p
	for len(recs) > 0 {
		err := o.box.Append(context.WithoutCancel(ctx), recs)
		var rerr *forward.RecordError
		switch {
		case err == nil:
			w.hold.resumed(p.logger)
			return nil
		case errors.As(err, &rerr) && rerr.Index >= 0 && rerr.Index < len(recs):
			p.logger.Error("outbox refused a record; dropped", "kind", o.box.Kind(), "err", err)
			recs = append(recs[:rerr.Index], recs[rerr.Index+1:]...)
		default:
			op := fmt.Sprintf("append %d records to the %s outbox", len(recs), o.box.Kind())
			if err := w.hold.retryAfter(ctx, p, op, err); err != nil {
				return fmt.Errorf("%s: %w", op, err)
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
	p.pendingBytes = 0
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
