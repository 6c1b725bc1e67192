package gateway

import (
	"context"
	"errors"
	"sync"

	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/wal"
)

// readings is the ingest.Appender over the readings WAL: each batch is
// encoded (in the caller's goroutine, so encoding runs in parallel across
// clients) and appended as one record.
type readings struct {
	log  *wal.Log
	bufs sync.Pool // *[]byte encode buffers; AppendAsync copies the record
}

func newReadings(log *wal.Log) *readings { return &readings{log: log} }

func (r *readings) encode(b *wal.Batch) *[]byte {
	buf, _ := r.bufs.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	*buf = wal.AppendBatch((*buf)[:0], b)
	return buf
}

// Append implements ingest.Appender.
func (r *readings) Append(ctx context.Context, b *wal.Batch, done func(error)) error {
	buf := r.encode(b)
	defer r.bufs.Put(buf)
	return r.log.AppendAsync(ctx, [][]byte{*buf}, func(_, _ uint64, err error) { done(err) })
}

// TryAppend implements ingest.Appender.
func (r *readings) TryAppend(b *wal.Batch, done func(error)) error {
	buf := r.encode(b)
	defer r.bufs.Put(buf)
	err := r.log.TryAppendAsync([][]byte{*buf}, func(_, _ uint64, err error) { done(err) })
	if errors.Is(err, wal.ErrFull) {
		return ingest.ErrBusy
	}
	return err
}
