package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// ErrAppendTooLarge is returned by Append when one append is larger than a
// quarter of the outbox quota: making room for it would throw away most of
// the outbox (drop_oldest) or could never succeed (block). Split it.
var ErrAppendTooLarge = errors.New("outbox append larger than a quarter of the outbox quota")

// ackPersistEvery is the least time between two writes of the
// acknowledged position of one outbox while it moves. Each write is an
// atomic file write with two fsyncs (file and directory); at this rate the
// three outboxes of a gateway write at most 3 positions (6 fsyncs) a
// second, whatever the traffic, instead of one per delivery round: an SD
// card wears by writes. What it costs: after a crash, up to this much of
// what Kafka acknowledged is sent again (at-least-once; the position never
// leads what Kafka acknowledged).
const ackPersistEvery = time.Second

// ackPersistUrgent is the least time between two writes while an append
// waits for room (block policy, full outbox): only a persisted position
// frees segments, so then the position is written sooner.
const ackPersistUrgent = 50 * time.Millisecond

// Outbox is a durable queue of Records for one kind (summaries, alerts,
// sketches): a wal.Log of encoded records plus the persisted position up
// to which Kafka acknowledged them. Append is safe for concurrent use and
// never touches the network; a Forwarder drains the outbox.
//
// Lock order: appendSem (a 1-slot channel, held across the quota decision
// and the enqueue), then mu.
type Outbox struct {
	kind     string
	cfg      OutboxConfig
	dir      string
	logger   *slog.Logger
	log      *wal.Log
	ckpts    *wal.Checkpoints
	maxBytes int64
	now      func() time.Time

	appendSem chan struct{} // 1 slot: quota decisions and enqueues in order
	reserved  atomic.Int64  // bytes queued in the log, not yet durable
	space     chan struct{} // 1-slot, coalescing: room may have been freed
	moved     chan struct{} // 1-slot, coalescing: the acknowledged position moved
	urgent    chan struct{} // 1-slot, coalescing: an append waits for room

	// Guarded by appendSem: the encoding of the append being enqueued,
	// kept for the next one.
	encBuf     []byte
	encEntries [][]byte

	mu        sync.Mutex
	done      uint64 // every index up to it is acknowledged, dropped or undeliverable
	persisted uint64 // done as last written to the ack file
	released  uint64 // release point handed to the log
	oldestIdx uint64 // cache for OldestUnsentAge: entry index ...
	oldestAt  time.Time

	attached atomic.Bool // a Forwarder drains it

	appended, acked, dropped, undeliverable, invalid atomic.Uint64
	blocked, ackWrites, ackWriteErrors               atomic.Uint64

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// OutboxStats is a snapshot of an outbox, for metrics and status.
type OutboxStats struct {
	Kind   string
	Policy string
	// Depth is the number of entries not yet acknowledged by Kafka (nor
	// dropped).
	Depth    uint64
	Bytes    int64 // segment files on disk
	MaxBytes int64
	// OldestUnsentAge is how long the oldest unacknowledged entry has
	// waited; 0 when the outbox is drained.
	OldestUnsentAge time.Duration
	// Counters since open.
	Appended       uint64 // records appended (durable)
	Acked          uint64 // records Kafka acknowledged
	Dropped        uint64 // unsent records removed by drop_oldest
	Undeliverable  uint64 // records Kafka refused for good, or that did not decode: skipped
	Invalid        uint64 // records refused by Append (bad ID, topic, header, size)
	BlockedAppends uint64 // appends that waited for room (block policy)
	AckWrites      uint64 // writes of the acknowledged position (each two fsyncs: file and directory)
	// Failing: the last write to the outbox's log failed (a full disk, an
	// I/O error) and none succeeded since; appends fail meanwhile (Health).
	Failing        bool
	AckWriteErrors uint64 // failed writes of the acknowledged position (retried)
	// Positions in the log.
	FirstIndex uint64 // oldest entry on disk
	LastIndex  uint64 // newest entry
	AckedIndex uint64 // every entry up to it is done (acknowledged, dropped or skipped)
}

// OpenOutbox opens (creating if needed) the outbox of kind under dir: its
// log in dir/<kind>/log and its acknowledged position in dir/<kind>/ack.
// Sending resumes after the persisted position. It starts one goroutine,
// which persists the position (at most once a second) and releases
// acknowledged segments; Close stops it.
func OpenOutbox(dir string, kind string, cfg OutboxConfig, logger *slog.Logger) (*Outbox, error) {
	if err := checkKind(kind); err != nil {
		return nil, fmt.Errorf("open outbox %q: %w", kind, err)
	}
	if cfg.Policy == "" {
		cfg.Policy = PolicyDropOldest
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open outbox %s: invalid config: %w", kind, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("outbox", kind)
	base := filepath.Join(dir, kind)
	log, err := wal.Open(filepath.Join(base, "log"), logConfig(cfg), logger)
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", kind, err)
	}
	ckpts, err := wal.OpenCheckpoints(filepath.Join(base, "ack"), logger)
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("open outbox %s: %w", kind, err)
	}
	o := &Outbox{
		kind: kind, cfg: cfg, dir: base, logger: logger, log: log, ckpts: ckpts,
		maxBytes:  int64(cfg.MaxBytes),
		now:       time.Now,
		appendSem: make(chan struct{}, 1),
		space:     make(chan struct{}, 1),
		moved:     make(chan struct{}, 1),
		urgent:    make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	if err := o.loadAck(); err != nil {
		log.Close()
		return nil, fmt.Errorf("open outbox %s: %w", kind, err)
	}
	o.wg.Add(1)
	go o.persistLoop()
	return o, nil
}

// logConfig sizes the outbox's log: segments of a sixteenth of the quota
// (64 KiB to 1 MiB), because the tail segment is held in memory and the
// quota is enforced in whole segments; no history kept once released.
func logConfig(cfg OutboxConfig) wal.Config {
	c := wal.DefaultConfig()
	c.SegmentBytes = min(max(cfg.MaxBytes/16, 64*wal.KiB), 1*wal.MiB)
	c.SegmentCache = 1
	c.MaxPendingBytes = min(max(cfg.MaxBytes/4, 64*wal.KiB), 4*wal.MiB)
	c.RetentionBytes = 0
	c.RetentionAge = 0
	return c
}

func checkKind(kind string) error {
	if kind == "" || len(kind) > 64 {
		return errors.New("kind must be 1 to 64 characters")
	}
	for i := 0; i < len(kind); i++ {
		c := kind[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("kind %q: only a-z, 0-9, '_' and '-' (it names a directory)", kind)
		}
	}
	return nil
}

// loadAck restores the acknowledged position.
func (o *Outbox) loadAck() error {
	first, last := o.log.FirstIndex(), o.log.LastIndex()
	idx, _, fellBack, err := o.ckpts.Load()
	switch {
	case errors.Is(err, wal.ErrNoCheckpoint):
		idx = 0
	case err != nil:
		return fmt.Errorf("load acknowledged position: %w", err)
	}
	if fellBack {
		o.logger.Warn("newest acknowledged position unreadable; resending from the one before", "index", idx)
	}
	if idx > last {
		o.logger.Error("acknowledged position is past the outbox's last entry", "acked_index", idx, "last_index", last)
		idx = last
	}
	if first > 0 && idx < first-1 {
		idx = first - 1 // entries dropped or released before a crash
	}
	o.done, o.persisted = idx, idx
	o.releaseLocked()
	return nil
}

// Kind returns the outbox's kind.
func (o *Outbox) Kind() string { return o.kind }

// Append stores recs durably, in order, and returns once they are fsynced.
// It never waits for Kafka, except under the block policy when the outbox
// is full: then it waits until enough was acknowledged (ctx cancels the
// wait). Under drop_oldest a full outbox drops its oldest unsent segments
// instead (counted and logged). An invalid record refuses the whole append
// with a *RecordError and stores nothing. If ctx ends after the records
// were queued, Append returns ctx's error and they may still be stored.
// Append copies recs. Safe for concurrent use; concurrent appends are
// ordered by their turn at the quota check.
func (o *Outbox) Append(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	total := 0
	for i := range recs {
		size := recs[i].encodedLen()
		if err := validateRecord(i, &recs[i], size); err != nil {
			o.invalid.Add(1)
			return err
		}
		total += size
	}
	// The log frames each entry (20 bytes) behind a uvarint length.
	need := int64(total + len(recs)*(20+3))
	if need > o.maxBytes/4 {
		return fmt.Errorf("outbox %s: append of %d records, %d bytes: %w (%s)", o.kind, len(recs), need, ErrAppendTooLarge, o.cfg.MaxBytes)
	}

	select {
	case o.appendSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := o.makeRoom(ctx, need); err != nil {
		<-o.appendSem
		return err
	}
	// Encoded under appendSem into the outbox's own buffer: the log copies
	// what it queues, so the encoding is free again once AppendAsync
	// returns.
	now := o.now()
	buf, entries := o.encBuf[:0], o.encEntries[:0]
	if cap(buf) < total {
		buf = make([]byte, 0, total) // sized once, not grown by doubling
	}
	for i := range recs {
		start := len(buf)
		buf = appendRecord(buf, &recs[i], now)
		entries = append(entries, buf[start:])
	}
	o.reserved.Add(need)
	ch := make(chan error, 1)
	n := uint64(len(recs))
	err := o.log.AppendAsync(ctx, entries, func(_, _ uint64, err error) {
		o.reserved.Add(-need)
		if err == nil {
			o.appended.Add(n)
		}
		ch <- err
		o.signalSpace()
	})
	o.keepEncoding(buf, entries)
	<-o.appendSem
	if err != nil {
		o.reserved.Add(-need)
		return fmt.Errorf("outbox %s append: %w", o.kind, err)
	}
	select {
	case err := <-ch:
		if err != nil {
			return fmt.Errorf("outbox %s append: %w", o.kind, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keepEncoding keeps the encoding buffers of an append for the next one,
// unless an unusually large append grew them past keepEncodedBytes. The
// caller holds appendSem.
func (o *Outbox) keepEncoding(buf []byte, entries [][]byte) {
	if cap(buf) > keepEncodedBytes {
		buf, entries = nil, nil
	}
	clear(entries[:cap(entries)]) // no views into a buffer dropped later
	o.encBuf, o.encEntries = buf[:0], entries[:0]
}

// keepEncodedBytes bounds the encoding buffer an outbox keeps between
// appends. The pipeline appends a batch's emissions: tens of KiB at a
// steady pace, megabytes when windows close for 10,000 series at once;
// those get a buffer of their own size, dropped after.
const keepEncodedBytes = 1 << 20

// makeRoom applies the full-outbox policy until need more bytes fit. The
// caller holds appendSem.
func (o *Outbox) makeRoom(ctx context.Context, need int64) error {
	var tick *time.Ticker
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		segs := o.log.Segments()
		o.mu.Lock()
		used := liveBytes(segs, o.released) + o.reserved.Load()
		if used+need <= o.maxBytes {
			o.mu.Unlock()
			return nil
		}
		if o.cfg.Policy == PolicyDropOldest {
			o.dropLocked(segs, used, need)
			o.mu.Unlock()
			return nil
		}
		o.mu.Unlock()
		// Block: the forwarder's acknowledgements free whole segments once
		// the position is persisted (soon: signalUrgent). The ticker is a
		// backstop for removals the log makes on its own goroutine.
		if tick == nil {
			o.blocked.Add(1)
			o.logger.Debug("outbox full; append waits for kafka", "used_bytes", used, "need_bytes", need)
			tick = time.NewTicker(25 * time.Millisecond)
		}
		o.signalUrgent()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-o.space:
		case <-tick.C:
		case <-o.stop:
			return fmt.Errorf("outbox %s: %w", o.kind, wal.ErrClosed)
		}
	}
}

// liveBytes is what the segments will hold once the log applied the
// release point rel: with no history kept (RetentionBytes 0), every
// segment wholly before rel goes.
func liveBytes(segs []wal.Segment, rel uint64) int64 {
	var n int64
	for i, s := range segs {
		if i < len(segs)-1 && segs[i+1].First <= rel {
			continue
		}
		n += s.Bytes
	}
	return n
}

// dropLocked removes the oldest segments, unsent or not, until need fits;
// never the segment holding the newest entry (Last reads it). o.mu held.
func (o *Outbox) dropLocked(segs []wal.Segment, used, need int64) {
	last := o.log.LastIndex()
	i := 0
	for i < len(segs)-1 && segs[i+1].First <= o.released {
		i++ // already released, counted out of used
	}
	start := i
	for i < len(segs)-1 && segs[i+1].First <= last && used+need > o.maxBytes {
		used -= segs[i].Bytes
		i++
	}
	if i == start {
		return // only the newest segment is left: overshoot by less than one segment
	}
	cut := segs[i].First // the new first entry
	var n uint64
	if cut-1 > o.done {
		n = cut - 1 - o.done
		o.done = cut - 1
	}
	o.dropped.Add(n)
	o.released = cut
	o.log.Release(cut)
	o.logger.Warn("outbox full; dropped the oldest unsent entries", "records", n, "through_index", cut-1, "max_bytes", o.maxBytes)
}

// releaseLocked hands the log the release point behind the persisted
// position, keeping the segment of the newest entry so Last can read it.
// o.mu held.
func (o *Outbox) releaseLocked() {
	rel := min(o.persisted+1, o.log.LastIndex())
	if rel > o.released {
		o.released = rel
		o.log.Release(rel)
	}
}

func (o *Outbox) signalSpace() {
	select {
	case o.space <- struct{}{}:
	default:
	}
}

// persistLoop writes the acknowledged position when it moved, at most
// once per ackPersistEvery (acknowledgements arriving meanwhile gather into
// the next write), or once per ackPersistUrgent while an append waits for
// room; then lets the log remove what it covers.
func (o *Outbox) persistLoop() {
	defer o.wg.Done()
	gap := time.NewTimer(0)
	defer gap.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-o.moved:
		case <-o.urgent:
		}
		// Wait out the gap since the last write; an append waiting for
		// room shortens it.
		select {
		case <-o.stop:
			return
		case <-gap.C:
		case <-o.urgent:
			select {
			case <-o.stop:
				return
			case <-gap.C:
			case <-time.After(ackPersistUrgent):
			}
		}
		if !o.persist() {
			o.signalMoved() // retried after the gap: a full disk may clear
		}
		gap.Reset(ackPersistEvery)
	}
}

func (o *Outbox) signalMoved() {
	select {
	case o.moved <- struct{}{}:
	default:
	}
}

func (o *Outbox) signalUrgent() {
	select {
	case o.urgent <- struct{}{}:
	default:
	}
}

// persist writes the acknowledged position if it moved; false when the
// write failed (counted, logged at a bounded rate). Called by the persist
// goroutine, and by Close after it stopped.
func (o *Outbox) persist() bool {
	o.mu.Lock()
	d := o.done
	if d == o.persisted {
		o.mu.Unlock()
		return true
	}
	o.mu.Unlock()
	if _, err := o.ckpts.Write(d, []byte{ackFileVersion}); err != nil {
		if o.ackWriteErrors.Add(1) == 1 || o.ackWriteErrors.Load()%100 == 0 {
			o.logger.Error("persist acknowledged position", "index", d, "err", err)
		}
		return false
	}
	o.ackWrites.Add(1)
	o.mu.Lock()
	if d > o.persisted {
		o.persisted = d
	}
	o.releaseLocked()
	o.mu.Unlock()
	o.signalSpace()
	return true
}

// ackFileVersion is the payload of the ack file (FORMAT.md): the position
// itself is the checkpoint's index.
const ackFileVersion = 1

// Last returns the newest record the outbox holds, whether or not it was
// sent, so the gateway can tell after a crash what it had already
// appended. ok is false when the outbox holds no entry (or the newest
// one is damaged).
func (o *Outbox) Last() (rec Record, ok bool, err error) {
	last := o.log.LastIndex()
	if last == 0 || last < o.log.FirstIndex() {
		return Record{}, false, nil
	}
	r := o.log.NewReader(last)
	if !r.Next() {
		if err := r.Err(); err != nil {
			return Record{}, false, fmt.Errorf("outbox %s: read last entry %d: %w", o.kind, last, err)
		}
		return Record{}, false, nil
	}
	if r.Index() != last {
		return Record{}, false, nil
	}
	rec, _, err = DecodeRecord(r.Record())
	if err != nil {
		return Record{}, false, fmt.Errorf("outbox %s: last entry %d: %w", o.kind, last, err)
	}
	return rec, true, nil
}

// Recent calls fn with the records the outbox holds, newest first, until
// fn returns false or the oldest record held was passed. Each entry is read
// on its own: it is for a short walk back from the tail (the pipeline's
// look at what a lost WAL tail had emitted), not for draining. Entries that
// cannot be read are passed over.
func (o *Outbox) Recent(fn func(rec Record) bool) error {
	first, last := o.log.FirstIndex(), o.log.LastIndex()
	for i := last; i >= max(first, 1); i-- {
		r := o.log.NewReader(i)
		if !r.Next() {
			if err := r.Err(); err != nil {
				return fmt.Errorf("outbox %s: read entry %d: %w", o.kind, i, err)
			}
			continue
		}
		if r.Index() != i {
			continue
		}
		rec, _, err := DecodeRecord(r.Record())
		if err != nil {
			continue
		}
		if !fn(rec) {
			return nil
		}
	}
	return nil
}

// Health reports whether the outbox accepts appends: false, with the
// error, from a failed write of its log (a full disk) until an append is
// written again. A failed append stores nothing and may be retried: the
// log cuts itself back to what it acknowledged and reopens (wal.Log), so
// the outbox works again once space returns. Safe for concurrent use.
func (o *Outbox) Health() (ok bool, reason string) {
	ok, reason = o.log.Health()
	if !ok {
		reason = "outbox " + o.kind + ": " + reason
	}
	return ok, reason
}

// Stats returns a snapshot. Safe for concurrent use; it may read one entry
// from disk (for OldestUnsentAge).
func (o *Outbox) Stats() OutboxStats {
	ws := o.log.Stats()
	o.mu.Lock()
	done := o.done
	o.mu.Unlock()
	s := OutboxStats{
		Kind: o.kind, Policy: o.cfg.Policy,
		Bytes: ws.DiskBytes, MaxBytes: o.maxBytes,
		Appended: o.appended.Load(), Acked: o.acked.Load(), Dropped: o.dropped.Load(),
		Undeliverable: o.undeliverable.Load(), Invalid: o.invalid.Load(),
		BlockedAppends: o.blocked.Load(), AckWrites: o.ackWrites.Load(), AckWriteErrors: o.ackWriteErrors.Load(),
		FirstIndex: ws.FirstIndex, LastIndex: ws.LastIndex, AckedIndex: done,
		Failing: ws.Failing,
	}
	if ws.LastIndex > done {
		s.Depth = ws.LastIndex - done
		if at, ok := o.oldestUnsent(done + 1); ok {
			s.OldestUnsentAge = max(o.now().Sub(at), 0)
		}
	}
	return s
}

// oldestUnsent returns the append time of the first entry at or after
// index, reading the log only when that entry changed.
func (o *Outbox) oldestUnsent(index uint64) (time.Time, bool) {
	o.mu.Lock()
	if o.oldestIdx == index && !o.oldestAt.IsZero() {
		at := o.oldestAt
		o.mu.Unlock()
		return at, true
	}
	o.mu.Unlock()
	r := o.log.NewReader(index)
	if !r.Next() {
		return time.Time{}, false
	}
	at, ok := entryAppended(r.Record())
	if !ok {
		return time.Time{}, false
	}
	o.mu.Lock()
	o.oldestIdx, o.oldestAt = index, at
	o.mu.Unlock()
	return at, true
}

// Close persists the acknowledged position, stops the persist goroutine
// and closes the log; appends waiting for room fail. Stop the Forwarder
// first: what it sends after Close is not recorded. Idempotent.
func (o *Outbox) Close() error {
	o.closeOnce.Do(func() {
		close(o.stop)
		o.wg.Wait()
		o.persist()
		o.closeErr = o.log.Close()
	})
	return o.closeErr
}

// Interface for the Forwarder (same package).

func (o *Outbox) attach() bool { return o.attached.CompareAndSwap(false, true) }
func (o *Outbox) detach()      { o.attached.Store(false) }

// position returns the index after which sending starts.
func (o *Outbox) position() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.done
}

// markDone records that every entry up to index is done; acked of them
// were acknowledged by Kafka.
func (o *Outbox) markDone(index uint64) {
	o.mu.Lock()
	moved := index > o.done
	if moved {
		o.done = index
	}
	o.mu.Unlock()
	if moved {
		o.signalMoved()
	}
}
