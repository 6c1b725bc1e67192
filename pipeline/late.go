package pipeline

import "github.com/runnel-iot/runnel/wal"

// LateLog keeps the readings older than their device's watermark (the
// gateway's late log). Each carries its origin: the WAL index of its batch
// and its position among that batch's late readings. Replay regenerates
// the late readings after the checkpoint exactly (the engine is
// deterministic); those at or before the newest origin the log holds were
// kept before a crash or a stop, and are not added again.
type LateLog interface {
	// Late stores a late reading; it must not block.
	Late(index uint64, seq int, r wal.Reading, watermarkNs int64)
	// LastOrigin returns the origin of the newest late reading the log
	// holds (ok false: none, or one without an origin).
	LastOrigin() (index uint64, seq int, ok bool, err error)
}

// lateTap is the windows engine's late sink: it numbers the late readings
// of the batch being applied and hands on those the late log does not
// hold yet.
type lateTap struct {
	log   LateLog
	index uint64    // WAL index of the batch being applied
	seq   int       // late readings of it so far
	held  outboxPos // newest origin the late log held at start
}

// at starts a batch.
func (t *lateTap) at(index uint64) { t.index, t.seq = index, 0 }

func (t *lateTap) Late(r wal.Reading, watermarkNs int64) {
	pos := outboxPos{t.index, t.seq}
	t.seq++
	if !pos.after(t.held) {
		return // kept before the restart
	}
	t.log.Late(pos.Index, pos.Seq, r, watermarkNs)
}
