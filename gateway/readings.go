package gateway

import (
	"context"
	"errors"
	"sync"

	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/pipeline"
	"github.com/runnel-iot/runnel/wal"
)

// readings is the ingest.Appender over the readings WAL: each batch is
// encoded (in the caller's goroutine, so encoding runs in parallel across
// clients) and appended as one record.
type readings struct {
	log  *wal.Log
	pipe *pipeline.Pipeline // nil: no stream to wait for
	encs sync.Pool          // *encoder; AppendAsync copies the record, so both are reused at once
}

type encoder struct {
	enc  wal.BatchEncoder
	buf  []byte
	recs [1][]byte // the records argument, without an allocation per append
}

func newReadings(log *wal.Log, pipe *pipeline.Pipeline) *readings {
	return &readings{log: log, pipe: pipe}
}

func (r *readings) encode(b *wal.Batch) *encoder {
	e, _ := r.encs.Get().(*encoder)
	if e == nil {
		e = new(encoder)
	}
	e.buf = e.enc.Append(e.buf[:0], b)
	e.recs[0] = e.buf
	return e
}

// Append implements ingest.Appender. It first waits (briefly) while the
// pipeline is far behind the WAL (pipeline.Admit), so a saturating client
// slows to the pace the windows keep.
func (r *readings) Append(ctx context.Context, b *wal.Batch, done func(error)) error {
	if r.pipe != nil {
		r.pipe.Admit(ctx)
	}
	e := r.encode(b)
	defer r.encs.Put(e)
	return r.log.AppendAsync(ctx, e.recs[:], func(_, _ uint64, err error) { done(err) })
}

// TryAppend implements ingest.Appender.
func (r *readings) TryAppend(b *wal.Batch, done func(error)) error {
	e := r.encode(b)
	defer r.encs.Put(e)
	err := r.log.TryAppendAsync(e.recs[:], func(_, _ uint64, err error) { done(err) })
	if errors.Is(err, wal.ErrFull) {
		return ingest.ErrBusy
	}
	return err
}
