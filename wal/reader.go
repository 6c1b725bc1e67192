package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	tidwal "github.com/tidwall/wal"
)

// Reader iterates over the acknowledged records of a log in index order,
// as bufio.Scanner does over lines:
//
//	r := log.NewReader(from)
//	for r.Next() {
//		use(r.Index(), r.Record())
//	}
//	if err := r.Err(); err != nil { ... }
//
// A record that fails verification (bit rot, a hole left by repair) is
// skipped, counted in Stats.CorruptRecords and logged; iteration goes on.
// A segment whose length framing is damaged is read by scanning its file for
// frames that verify. Next reads up to the last index acknowledged at the
// time of the call, so a reader can follow a growing log.
//
// A Reader is not safe for concurrent use; several Readers may be used
// concurrently (their reads are serialised inside the log).
type Reader struct {
	l    *Log
	next uint64
	idx  uint64
	rec  []byte
	err  error

	// Records of a segment tidwall/wal could not parse, found by scanning.
	fbEnd  uint64 // first index past the scanned segment; 0 when none
	fbRecs map[uint64][]byte
}

// NewReader returns a reader starting at index from (or at the oldest
// record the log still holds, if that is later).
func (l *Log) NewReader(from uint64) *Reader { return &Reader{l: l, next: from} }

// Index returns the index of the current record.
func (r *Reader) Index() uint64 { return r.idx }

// Record returns the payload of the current record. It is a view into the
// log's buffers, which the log never modifies (segments are only appended
// to, and a segment reloaded, truncated or recovered gets new buffers): it
// stays valid for as long as the caller holds it, keeping the buffer of
// its whole segment in memory meanwhile. The caller must not modify it;
// copy what is kept long, so as not to hold a segment for a few bytes.
func (r *Reader) Record() []byte { return r.rec }

// Err returns the error that ended iteration, if any; a corrupt record is
// not an error.
func (r *Reader) Err() error { return r.err }

// Next advances to the next record that verifies and reports whether there
// is one.
func (r *Reader) Next() bool {
	if r.err != nil {
		return false
	}
	for {
		if r.next > r.l.durable.Load() {
			return false
		}
		if r.fbEnd != 0 && r.next < r.fbEnd {
			rec, ok := r.fbRecs[r.next]
			r.next++
			if ok && rec == nil {
				continue // a skip frame
			}
			if !ok {
				r.l.noteCorrupt(r.next-1, errors.New("record not found in damaged segment"))
				continue
			}
			r.idx, r.rec = r.next-1, rec
			return true
		}
		r.fbEnd, r.fbRecs = 0, nil
		data, err := r.read()
		if err == nil {
			payload, ferr := checkFrame(data, r.next)
			if ferr == nil {
				r.idx, r.rec = r.next, payload
				r.next++
				return true
			}
			if errors.Is(ferr, errSkip) {
				r.next++
				continue
			}
			if errors.Is(ferr, errHole) {
				r.l.noteCorrupt(r.next, ferr)
				r.next++
				continue
			}
		} else if !errors.Is(err, tidwal.ErrCorrupt) {
			r.err = err
			return false
		}
		// tidwall/wal could not parse the segment, or delimited an entry
		// that does not verify (a damaged length prefix misaligns the rest
		// of the segment): find its records by their own frames.
		if err := r.scanDamaged(); err != nil {
			r.err = err
			return false
		}
	}
}

// read reads r.next from the store, moving r.next to the oldest record when
// it lies before it.
func (r *Reader) read() ([]byte, error) {
	l := r.l
	l.readMu.Lock()
	defer l.readMu.Unlock()
	l.stateMu.RLock()
	defer l.stateMu.RUnlock()
	if l.st == nil {
		l.mu.Lock()
		closing := l.closing
		l.mu.Unlock()
		if closing {
			return nil, ErrClosed
		}
		return nil, errors.New("wal unavailable: recovering from a write failure")
	}
	first, err := l.st.FirstIndex()
	if err != nil {
		return nil, fmt.Errorf("wal read: %w", err)
	}
	if r.next < first {
		r.next = first
	}
	data, err := safeRead(l.st, r.next)
	if err != nil && !errors.Is(err, tidwal.ErrCorrupt) {
		return nil, fmt.Errorf("wal read of record %d: %w", r.next, err)
	}
	l.readNext.Store(r.next + 1)
	if rt := l.rolledTo.Load(); rt != 0 && r.next >= rt {
		l.dropRolled()
	}
	return data, err
}

// safeRead reads one entry. tidwall/wal indexes its entry table without a
// bounds check, so a damaged older segment that parses to fewer entries
// than its file name promises panics; that is corruption, not a crash.
func safeRead(st store, index uint64) (data []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			data, err = nil, fmt.Errorf("%w: read of %d panicked: %v", tidwal.ErrCorrupt, index, v)
		}
	}()
	return st.Read(index)
}

// scanDamaged reads the segment holding r.next straight from its file and
// collects the frames that verify, by the index each frame carries.
func (r *Reader) scanDamaged() error {
	l := r.l
	l.stateMu.RLock()
	var base, end uint64
	for i, s := range l.segs {
		if s.base <= r.next {
			base, end = s.base, l.durable.Load()+1
			if i+1 < len(l.segs) {
				end = l.segs[i+1].base
			}
		}
	}
	l.stateMu.RUnlock()
	if base == 0 || end <= r.next {
		return fmt.Errorf("wal read of record %d: damaged segment not found", r.next)
	}
	data, err := os.ReadFile(filepath.Join(l.dir, segmentName(base)))
	if err != nil {
		return fmt.Errorf("wal read of damaged segment: %w", err)
	}
	l.logger.Warn("wal segment damaged; scanning it for intact records", "segment", segmentName(base))
	recs := make(map[uint64][]byte)
	for _, f := range resync(data, 0, base-1) {
		if f.index >= end {
			break
		}
		switch f.kind {
		case kindRecord:
			recs[f.index] = f.frame[frameHeader:len(f.frame):len(f.frame)] // never nil
		case kindSkip:
			recs[f.index] = nil
		}
	}
	r.fbEnd, r.fbRecs = end, recs
	return nil
}

func (l *Log) noteCorrupt(index uint64, err error) {
	l.stats.corrupt.Add(1)
	l.logger.Warn("wal record failed verification; skipped", "index", index, "err", err)
}
