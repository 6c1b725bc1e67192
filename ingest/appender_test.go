package ingest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/runnel-iot/runnel/wal"
)

// walAppender is the test stand-in for the gateway's appender: it encodes
// batches into a real WAL on disk, as the gateway does, without windows.
type walAppender struct {
	log *wal.Log
	enc sync.Pool
}

type testEncoder struct {
	enc wal.BatchEncoder
	buf []byte
}

func (a *walAppender) record(b *wal.Batch) ([][]byte, func()) {
	e, _ := a.enc.Get().(*testEncoder)
	if e == nil {
		e = new(testEncoder)
	}
	e.buf = e.enc.Append(e.buf[:0], b)
	return [][]byte{e.buf}, func() { a.enc.Put(e) }
}

func (a *walAppender) Append(ctx context.Context, b *wal.Batch, done func(error)) error {
	recs, put := a.record(b)
	defer put()
	return a.log.AppendAsync(ctx, recs, func(_, _ uint64, err error) { done(err) })
}

func (a *walAppender) TryAppend(b *wal.Batch, done func(error)) error {
	recs, put := a.record(b)
	defer put()
	err := a.log.TryAppendAsync(recs, func(_, _ uint64, err error) { done(err) })
	if errors.Is(err, wal.ErrFull) {
		return ErrBusy
	}
	return err
}

// openTestWAL opens a WAL in a temp dir (batch sync) and closes it at the
// end of the test.
func openTestWAL(t testing.TB) *walAppender {
	t.Helper()
	l, err := wal.Open(t.TempDir(), wal.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &walAppender{log: l}
}

// walReadings decodes every reading the WAL holds, in order.
func walReadings(t testing.TB, l *wal.Log) []wal.Reading {
	t.Helper()
	var out []wal.Reading
	r := l.NewReader(1)
	var b wal.Batch
	for r.Next() {
		if err := wal.DecodeBatch(r.Record(), &b); err != nil {
			t.Fatalf("record %d: %v", r.Index(), err)
		}
		out = append(out, b.Readings...)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
