package pipeline

import (
	"context"

	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/wal"
)

// The pipeline declares what it needs of the stages around it; the gateway
// passes the real ones (FromWAL, *forward.Outbox, FromCheckpoints), tests
// pass fakes that inject faults.

// Log is the readings WAL as the pipeline uses it.
type Log interface {
	// NewReader iterates over the acknowledged records from index from.
	NewReader(from uint64) Reader
	// Notify receives a value (coalesced) after records were acknowledged.
	Notify() <-chan struct{}
	// LastIndex is the index of the last acknowledged record.
	LastIndex() uint64
	// Sync is a barrier: it returns once every record up to index is
	// fsynced, forcing an fsync if none is due (wal.Log.Sync).
	Sync(ctx context.Context, index uint64) error
	// SkipTo makes the next record appended get index+1 when the log
	// ends below index (wal.Log.SkipTo).
	SkipTo(ctx context.Context, index uint64) (skipped uint64, err error)
	// Release says the records before index are no longer needed.
	Release(index uint64)
}

// Reader iterates over WAL records in index order (wal.Reader).
type Reader interface {
	Next() bool
	Index() uint64
	Record() []byte
	Err() error
}

// Outbox is one durable outbox of records (forward.Outbox).
type Outbox interface {
	// Append stores recs durably, in order, or fails.
	Append(ctx context.Context, recs []forward.Record) error
	// Last returns the newest record held (ok false: none, or damaged).
	Last() (rec forward.Record, ok bool, err error)
	// Recent calls fn with the records held, newest first, until fn
	// returns false.
	Recent(fn func(rec forward.Record) bool) error
	// Kind names the outbox (summaries, sketches, alerts).
	Kind() string
}

// Checkpoints stores the pipeline's state with the WAL index it covers
// (wal.Checkpoints, through FromCheckpoints).
type Checkpoints interface {
	// Load returns the newest checkpoint that verifies, or
	// wal.ErrNoCheckpoint.
	Load() (index uint64, data []byte, fellBack bool, err error)
	// Create starts the checkpoint covering index, its data written in
	// pieces; it replaces nothing until committed. At most one is open at
	// a time.
	Create(index uint64) (CheckpointWriter, error)
}

// CheckpointWriter is one checkpoint being written (wal.CheckpointWriter).
type CheckpointWriter interface {
	// Write appends to the data; it need not sync.
	Write(p []byte) (int, error)
	// Commit makes the checkpoint durable and the newest (fsyncs: the
	// pipeline calls it off the stream goroutine) and returns the index of
	// the oldest checkpoint kept.
	Commit() (oldestKept uint64, err error)
	// Abort abandons it, leaving the kept ones as they were. Idempotent.
	Abort()
}

// FromCheckpoints adapts a *wal.Checkpoints to Checkpoints.
func FromCheckpoints(c *wal.Checkpoints) Checkpoints { return walCheckpoints{c} }

type walCheckpoints struct{ c *wal.Checkpoints }

func (w walCheckpoints) Load() (uint64, []byte, bool, error) { return w.c.Load() }

func (w walCheckpoints) Create(index uint64) (CheckpointWriter, error) {
	cw, err := w.c.Create(index)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return cw, nil
}

// FromWAL adapts a *wal.Log to Log.
func FromWAL(l *wal.Log) Log { return walLog{l} }

type walLog struct{ *wal.Log }

func (w walLog) NewReader(from uint64) Reader { return w.Log.NewReader(from) }
