package wal

// Segment describes one segment file of a log.
type Segment struct {
	First uint64 // index of its first record (the file's name)
	Bytes int64  // bytes in the file
}

// Segments returns the log's segment files, oldest first; the last is the
// tail, which retention never removes. Together with Release it lets an
// owner with a disk quota (the forward outbox) pick the release point that
// frees just enough whole segments. The result is a snapshot owned by the
// caller. Safe for concurrent use.
func (l *Log) Segments() []Segment {
	l.stateMu.RLock()
	defer l.stateMu.RUnlock()
	out := make([]Segment, len(l.segs))
	for i, s := range l.segs {
		out[i] = Segment{First: s.base, Bytes: s.size}
	}
	return out
}
