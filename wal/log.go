package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	tidwal "github.com/tidwall/wal"
)

// ErrClosed is returned by Append once Close has begun, and by readers of a
// closed log.
var ErrClosed = errors.New("wal: log closed")

// ErrNoRecords is returned by an Append of zero records.
var ErrNoRecords = errors.New("wal: append of no records")

// MaxRecordBytes bounds one record; callers split larger payloads.
const MaxRecordBytes = 64 << 20

// store is what group commit needs of the segment store: tidwall/wal's *Log
// satisfies it, and tests wrap it to inject failures and watch the order of
// writes, syncs and releases.
type store interface {
	WriteBatch(b *tidwal.Batch) error
	Sync() error
	Read(index uint64) ([]byte, error)
	FirstIndex() (uint64, error)
	LastIndex() (uint64, error)
	TruncateFront(index uint64) error
	ClearCache() error
	Close() error
}

type opener func(dir string, cfg Config) (store, error)

func openTidwall(dir string, cfg Config) (store, error) {
	return tidwal.Open(dir, &tidwal.Options{
		NoSync:           true, // group commit syncs, once per group
		SegmentSize:      int(cfg.SegmentBytes),
		SegmentCacheSize: cfg.SegmentCache,
		NoCopy:           true, // readers get views; frames are verified, never modified
		AllowEmpty:       true, // the outbox drains to empty
		DirPerms:         0o750,
		FilePerms:        0o640,
	})
}

// Log is a crash-safe, group-committed log of framed records on top of
// tidwall/wal. See the package documentation for the guarantees.
//
// Lock order: readMu, then stateMu, then mu. The writer goroutine owns the
// store for writes; stateMu guards swapping it (recovery, truncation, close)
// against readers, and readMu serialises reads, which tidwall/wal does not
// make safe among themselves.
type Log struct {
	dir    string
	cfg    Config
	logger *slog.Logger
	open   opener
	now    func() time.Time
	flock  *os.File

	sem *byteSem

	mu      sync.Mutex // guards queue and closing
	queue   []*request
	closing bool
	// syncWaiters are the Sync calls waiting for an fsync.
	syncWaiters []syncWaiter
	wake        chan struct{} // 1-slot, coalescing
	notify      chan struct{} // 1-slot, coalescing: records were acknowledged
	done        chan struct{} // closed when the writer has exited

	readMu  sync.Mutex
	stateMu sync.RWMutex
	st      store     // nil while the log is broken (recovery failed)
	segs    []segInfo // segment files, oldest first; the last is the tail

	// Writer-owned.
	next      uint64 // index of the next record
	dirDirty  bool   // a segment file was created since the last sync
	batch     tidwal.Batch
	released  uint64 // release point at the last retention check
	lastRetry time.Time

	durable atomic.Uint64 // last acknowledged index
	synced  atomic.Uint64 // last index covered by an fsync (the written index in sync mode none)
	release atomic.Uint64 // records below this index are no longer needed by the owner
	// rolledTo is the base of the tail segment while the segment before it
	// is in tidwall/wal's read cache (0: none); see dropRolled.
	rolledTo atomic.Uint64
	// readNext is the index after the last record a reader read (0: none
	// yet): where a follower is.
	readNext atomic.Uint64
	stats    stats
	// failure is the error of the last failed group write, sync or
	// recovery; nil once a later group was written (Health).
	failure atomic.Pointer[string]

	closeOnce sync.Once
	closeErr  error
}

type segInfo struct {
	base  uint64
	size  int64
	mtime time.Time
}

// request is one Append waiting for the writer.
type request struct {
	data        []byte  // frame header room and payload per record, owned by the request; nil once written
	box         *[]byte // data's pool box (getBuf)
	sizes       []int
	n           int   // payload bytes
	cost        int64 // bytes held in the pending semaphore
	first, last uint64
	done        func(first, last uint64, err error) // called once by the writer with the outcome
	bestEffort  bool                                // released once written (TryAppendAsync)
	kind        byte                                // frame kind of every record: kindRecord, or kindSkip (SkipTo)
}

// Open opens the log in dir, creating it if needed. It takes an exclusive
// lock on the directory, finishes interrupted truncations, repairs a torn
// or damaged tail (logged and counted, never a refusal to start), opens the
// segments and starts the writer goroutine, which Close stops.
func Open(dir string, cfg Config, logger *slog.Logger) (*Log, error) {
	return openLog(dir, cfg, logger, openOpts{})
}

// openOpts are the seams tests use: the segment store and the clock that
// retention ages segments by.
type openOpts struct {
	open opener
	now  func() time.Time
}

func openLog(dir string, cfg Config, logger *slog.Logger, o openOpts) (*Log, error) {
	if o.open == nil {
		o.open = openTidwall
	}
	if o.now == nil {
		o.now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open wal %s: invalid config: %w", dir, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open wal: create dir: %w", err)
	}
	flock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open wal %s: %w", dir, err)
	}
	l := &Log{
		dir: dir, cfg: cfg, logger: logger.With("wal", dir), open: o.open, now: o.now, flock: flock,
		sem:    newByteSem(int64(cfg.MaxPendingBytes)),
		wake:   make(chan struct{}, 1),
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	res, err := repairTail(dir, noLimit)
	if err != nil {
		unlockDir(flock)
		return nil, fmt.Errorf("open wal %s: repair: %w", dir, err)
	}
	logRepair(l.logger, dir, res)
	l.stats.noteRepair(res)
	if err := l.reopen(); err != nil {
		unlockDir(flock)
		return nil, fmt.Errorf("open wal %s: %w", dir, err)
	}
	go l.run()
	return l, nil
}

// reopen opens the store and loads the segment list; the caller holds
// stateMu or is the only user.
func (l *Log) reopen() error {
	st, err := l.open(l.dir, l.cfg)
	if err != nil {
		return fmt.Errorf("open segments: %w", err)
	}
	last, err := st.LastIndex()
	if err != nil {
		st.Close()
		return fmt.Errorf("read last index: %w", err)
	}
	files, err := listSegments(l.dir)
	if err != nil {
		st.Close()
		return err
	}
	segs := make([]segInfo, len(files))
	for i, f := range files {
		segs[i] = segInfo{base: f.base, size: f.size, mtime: f.mtime}
	}
	if d := l.durable.Load(); d > last {
		// Repair only ever cuts what was never acknowledged; say so loudly if
		// the disk lost more than that.
		l.logger.Error("wal holds fewer records than were acknowledged", "acknowledged", d, "last_index", last)
	}
	l.st, l.segs = st, segs
	l.next = last + 1
	l.durable.Store(last)
	l.synced.Store(last)
	return nil
}

// ErrFull is returned by TryAppendAsync when the pending budget is full.
var ErrFull = errors.New("wal: pending appends full")

// Append writes records as one group, assigning them consecutive indexes,
// and returns the index range once they are durable under the configured
// sync mode: after the fsync that covers them (batch, interval) or after the
// write (none). Append copies the records; the caller may reuse them once it
// returns.
//
// Append blocks while the pending budget (Config.MaxPendingBytes) is full,
// so a disk slower than its producers slows the producers. ctx cancels the
// wait: if it ends first, Append returns ctx's error at once, and the
// records may still become durable. A failed write or sync fails every
// append of the group with the I/O error: none of them is acknowledged, and
// the log cuts itself back to what was acknowledged before it accepts
// again. Safe for concurrent use.
func (l *Log) Append(ctx context.Context, records [][]byte) (first, last uint64, err error) {
	type result struct {
		first, last uint64
		err         error
	}
	ch := make(chan result, 1)
	if err := l.AppendAsync(ctx, records, func(f, la uint64, err error) { ch <- result{f, la, err} }); err != nil {
		return 0, 0, err
	}
	select {
	case r := <-ch:
		return r.first, r.last, r.err
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

// AppendAsync queues records as one group and returns once they are queued;
// done is then called exactly once, with the index range once the records
// are durable, or with the error that failed them. done runs on the log's
// writer goroutine, in index order across all appends: it must be quick
// and must not block (hand the result to a channel or another goroutine).
//
// AppendAsync copies the records. It blocks while the pending budget is
// full; ctx cancels that wait, and then done is never called. An error
// return (ctx's, ErrClosed, ErrNoRecords, a record too large) means the
// records were not queued and done will not be called.
func (l *Log) AppendAsync(ctx context.Context, records [][]byte, done func(first, last uint64, err error)) error {
	total, err := checkRecords(records)
	if err != nil {
		return err
	}
	cost, err := l.sem.acquire(ctx, int64(total+len(records)*frameHeader))
	if err != nil {
		return err
	}
	return l.enqueue(records, total, cost, done, false)
}

// TryAppendAsync is AppendAsync for best-effort paths that must never wait
// (UDP, MQTT QoS 0): when the pending budget is full it returns ErrFull at
// once instead of blocking. done is called once the records are written,
// without waiting for an fsync: they become durable with the next fsync,
// which an acknowledged append or, at the latest, a timer one second after
// the write provides. A crash of the process loses none of them; a power
// cut may lose the last second of best-effort records (and only those).
func (l *Log) TryAppendAsync(records [][]byte, done func(first, last uint64, err error)) error {
	total, err := checkRecords(records)
	if err != nil {
		return err
	}
	cost, err := l.sem.tryAcquire(int64(total + len(records)*frameHeader))
	if err != nil {
		return err
	}
	return l.enqueue(records, total, cost, done, true)
}

func checkRecords(records [][]byte) (int, error) {
	if len(records) == 0 {
		return 0, ErrNoRecords
	}
	total := 0
	for _, r := range records {
		if len(r) > MaxRecordBytes {
			return 0, fmt.Errorf("wal append: record of %d bytes exceeds the %d-byte limit", len(r), MaxRecordBytes)
		}
		total += len(r)
	}
	return total, nil
}

func (l *Log) enqueue(records [][]byte, total int, cost int64, done func(first, last uint64, err error), bestEffort bool) error {
	return l.enqueueKind(records, total, cost, done, bestEffort, kindRecord)
}

func (l *Log) enqueueKind(records [][]byte, total int, cost int64, done func(first, last uint64, err error), bestEffort bool, kind byte) error {
	// Each record is copied behind room for its frame header, which the
	// writer fills in place once it knows the index: no second copy.
	req, _ := requests.Get().(*request)
	if req == nil {
		req = new(request)
	}
	req.box = getBuf(total + len(records)*frameHeader)
	req.data, req.n, req.cost, req.done, req.bestEffort, req.kind = *req.box, total, cost, done, bestEffort, kind
	for _, r := range records {
		req.data = append(req.data, make([]byte, frameHeader)...)
		req.data = append(req.data, r...)
		req.sizes = append(req.sizes, len(r))
	}
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		l.sem.release(cost)
		putBuf(req.box, req.data)
		recycle(req)
		return ErrClosed
	}
	l.queue = append(l.queue, req)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// take returns the queued requests and whether the log is closing.
func (l *Log) take() ([]*request, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queue
	l.queue = nil
	return q, l.closing
}

// bestEffortSync bounds how long records appended best effort
// (TryAppendAsync) stay written but not fsynced when no acknowledged append
// comes along to sync them.
const bestEffortSync = time.Second

// run is the writer goroutine: it drains the queue, writes each group with
// one WriteBatch, syncs once, and releases the group. A group of only
// best-effort appends is released once written: nobody waits for its fsync,
// which the next acknowledged group (or bestEffortSync later) provides, so
// a UDP flood costs no fsync storm.
func (l *Log) run() {
	defer close(l.done)
	defer l.releaseSyncWaiters(ErrClosed)
	var unsynced []*request // written, waiting for the fsync that covers them
	var lastSync time.Time
	timer := time.NewTimer(time.Hour) // interval mode: the next fsync
	timer.Stop()
	backstop := time.NewTimer(time.Hour) // best-effort records written, not yet synced
	backstop.Stop()
	dirty := false
	prevGroup := 0 // appends in the last group written
	maint := time.NewTicker(time.Minute)
	defer maint.Stop()
	draining := false
	for {
		var timerC, backstopC <-chan time.Time
		if len(unsynced) > 0 {
			timerC = timer.C
		}
		if dirty {
			backstopC = backstop.C
		}
		forceSync := false
		if !draining {
			select {
			case <-l.wake:
			case <-timerC:
			case <-backstopC:
				forceSync = true
			case <-maint.C:
				l.enforceRetention(l.now())
			}
		}
		// A release applies before the group taken next: an append made
		// after Release returns finds retention done.
		if l.released != l.release.Load() {
			l.enforceRetention(l.now())
		}
		if l.cfg.Sync == SyncBatch && !draining {
			l.gather(prevGroup)
		}
		// After gather, which may take the wake of a Sync registered
		// meanwhile: checked before it, such a barrier waited for the
		// best-effort backstop (a second) instead of an fsync now.
		if l.syncWanted() {
			forceSync = true // a Sync barrier waits: no best-effort grace
		}
		reqs, closing := l.take()
		if len(reqs) > 0 {
			prevGroup = len(reqs)
			if err := l.write(reqs); err != nil {
				l.fail(append(unsynced, reqs...), err)
				unsynced = nil
			} else {
				unsynced = append(unsynced, reqs...)
			}
		}
		if len(unsynced) > 0 && allBestEffort(unsynced) && l.cfg.Sync != SyncNone && !closing && !forceSync {
			l.acknowledge(unsynced)
			unsynced = nil
			if !dirty {
				dirty = true
				backstop.Reset(bestEffortSync)
			}
		}
		if len(unsynced) > 0 || ((forceSync || closing) && dirty) {
			wait := time.Duration(0)
			if l.cfg.Sync == SyncInterval && !closing && !forceSync {
				wait = l.cfg.SyncInterval - time.Since(lastSync)
			}
			if wait > 0 {
				timer.Reset(wait)
			} else {
				if err := l.sync(); err != nil {
					l.fail(unsynced, err)
				} else {
					lastSync = time.Now()
					// Before the release: a released caller may read it.
					l.synced.Store(l.next - 1)
					if len(unsynced) > 0 {
						l.acknowledge(unsynced)
					}
				}
				unsynced = nil
				dirty = false
			}
		}
		if forceSync {
			l.releaseSyncWaiters(nil)
		}
		if closing {
			l.mu.Lock()
			draining = len(l.queue) > 0
			l.mu.Unlock()
			if !draining && len(unsynced) == 0 && !dirty {
				return
			}
		}
	}
}

// Commit delay, as PostgreSQL's commit_delay and commit_siblings: when the
// last group was large (many producers, each waiting for its fsync), the
// producers it released are about to append again; waiting a moment for
// them puts them in one group and one fsync instead of splitting them over
// two. A light load (a group under gatherSiblings) never waits.
const (
	gatherSiblings = 8
	gatherDelay    = 200 * time.Microsecond
)

// gather waits up to gatherDelay for the queue to reach the size of the
// previous group, when that group had at least gatherSiblings appends.
func (l *Log) gather(prev int) {
	if prev < gatherSiblings {
		return
	}
	deadline := time.Now().Add(gatherDelay)
	for {
		l.mu.Lock()
		n, closing := len(l.queue), l.closing
		l.mu.Unlock()
		left := time.Until(deadline)
		if n >= prev || closing || left <= 0 {
			return
		}
		t := time.NewTimer(left)
		select {
		case <-l.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func allBestEffort(reqs []*request) bool {
	for _, r := range reqs {
		if !r.bestEffort {
			return false
		}
	}
	return true
}

// write frames every record of reqs and writes them as one batch.
func (l *Log) write(reqs []*request) error {
	defer func() {
		// The payloads are in the store's buffer now (or failed): let the
		// producers queue more while this group syncs.
		for _, r := range reqs {
			l.sem.release(r.cost)
			putBuf(r.box, r.data)
			r.data, r.box = nil, nil
		}
	}()
	if l.st == nil {
		if err := l.recover(); err != nil {
			return err
		}
	}
	l.batch.Clear()
	idx := l.next
	for _, r := range reqs {
		r.first = idx
		off := 0
		for _, n := range r.sizes {
			frame := r.data[off : off+frameHeader+n]
			putFrameHeader(frame, idx, r.kind)
			l.batch.Write(idx, frame)
			off += len(frame)
			idx++
		}
		r.last = idx - 1
	}
	if err := l.st.WriteBatch(&l.batch); err != nil {
		return fmt.Errorf("wal write of records %d-%d: %w", l.next, idx-1, err)
	}
	l.trackSegments(reqs)
	l.next = idx
	l.stats.groups.Add(1)
	return nil
}

// trackSegments follows tidwall/wal's segment cycling (writeBatch in
// tidwall v1.2.1: a new segment before a batch when the tail is over the
// target size, and after any entry that brings it to the target), so the
// log knows when a new segment file needs a directory fsync and what
// retention may remove. A test checks it against the directory.
func (l *Log) trackSegments(reqs []*request) {
	seg := int64(l.cfg.SegmentBytes)
	now := l.now()
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	rolled := false
	cycle := func(base uint64) {
		l.segs[len(l.segs)-1].mtime = now
		l.segs = append(l.segs, segInfo{base: base, mtime: now})
		rolled = true
		l.dirDirty = l.cfg.Sync != SyncNone // sync mode none never fsyncs, the directory neither
	}
	if l.segs[len(l.segs)-1].size > seg {
		cycle(l.next)
	}
	idx := l.next
	for _, r := range reqs {
		for _, n := range r.sizes {
			fl := uint64(frameHeader + n)
			l.segs[len(l.segs)-1].size += int64(uvarintLen(fl)) + int64(fl)
			idx++
			if l.segs[len(l.segs)-1].size >= seg {
				cycle(idx)
			}
		}
	}
	tail := &l.segs[len(l.segs)-1]
	tail.mtime = now
	switch {
	case rolled:
		l.rolledTo.Store(tail.base)
		if rn := l.readNext.Load(); rn == 0 || rn < l.segs[len(l.segs)-2].base {
			l.dropRolled() // no reader is about to read the rolled segment
		}
	case tail.size > seg/2:
		// The reader that was about to read it did not get across: an
		// appending log holds one segment in memory, not two.
		l.dropRolled()
	}
}

// dropRolled empties tidwall/wal's read cache, which holds the segment
// rolled last. A reader following the log still reads the end of that
// segment after the roll (the group that filled it); emptying the cache at
// the roll made tidwall load the whole segment back from disk for it, once
// per segment. So when a reader has reached the rolled segment, the cache
// is emptied once it reaches the tail, or by the writer when the tail is
// half full and it did not; otherwise at the roll.
func (l *Log) dropRolled() {
	if l.rolledTo.Swap(0) == 0 {
		return
	}
	if err := l.st.ClearCache(); err != nil {
		l.logger.Warn("wal clear cache", "err", err)
	}
}

func uvarintLen(x uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], x)
}

// sync makes every written record durable: an fsync of the tail segment,
// and of the directory when a segment file was created since the last one.
func (l *Log) sync() error {
	if l.cfg.Sync == SyncNone {
		return nil
	}
	if l.st == nil {
		return errors.New("wal unavailable: recovering from a write failure")
	}
	start := time.Now()
	if err := l.st.Sync(); err != nil {
		return fmt.Errorf("wal fsync of records up to %d: %w", l.next-1, err)
	}
	if l.dirDirty {
		if err := syncDir(l.dir); err != nil {
			return fmt.Errorf("wal fsync after segment roll: %w", err)
		}
		l.dirDirty = false
	}
	l.stats.observeFsync(time.Since(start))
	return nil
}

// acknowledge releases written and synced requests. The follower is
// woken first: the done callbacks of a large group (a PUBACK each, under a
// saturating QoS 1 load thousands) then run while it applies the group on
// the other core, instead of before it can start.
func (l *Log) acknowledge(reqs []*request) {
	var recs, bytes uint64
	for _, r := range reqs {
		recs += r.last - r.first + 1
		bytes += uint64(r.n)
	}
	l.durable.Store(reqs[len(reqs)-1].last)
	l.failure.Store(nil)
	l.stats.appends.Add(uint64(len(reqs)))
	l.stats.records.Add(recs)
	l.stats.bytes.Add(bytes)
	select {
	case l.notify <- struct{}{}:
	default:
	}
	for _, r := range reqs {
		r.done(r.first, r.last, nil)
		recycle(r)
	}
}

// Health reports whether the log accepts appends: false, with the error,
// from a failed group write or sync (a full disk, an I/O error) until a
// later group is written again. The log retries on every append (see
// Append), so Health turns true once space returns and someone appends.
// Safe for concurrent use.
func (l *Log) Health() (ok bool, reason string) {
	if p := l.failure.Load(); p != nil {
		return false, *p
	}
	return true, ""
}

// Notify returns a channel that receives a value (coalesced: one for any
// number of appends) once records are durable, before their appenders are
// called back, so one reader can follow the log: drain a Reader, then
// wait on Notify. For one consumer.
func (l *Log) Notify() <-chan struct{} { return l.notify }

// fail fails reqs with err and recovers: the log is closed, cut back to the
// last acknowledged record, and reopened, because after a failed write
// tidwall/wal's memory no longer matches its files.
func (l *Log) fail(reqs []*request, err error) {
	l.stats.writeErrors.Add(1)
	msg := "write failed: " + err.Error()
	l.failure.Store(&msg)
	l.logger.Error("wal write failed; records not acknowledged", "err", err, "appends", len(reqs))
	for _, r := range reqs {
		r.done(0, 0, err)
		recycle(r)
	}
	if rerr := l.recover(); rerr != nil {
		msg := msg + "; " + rerr.Error()
		l.failure.Store(&msg)
		l.logger.Error("wal recovery failed; appends fail until it succeeds", "err", rerr)
	}
}

// recover closes the store, repairs the directory keeping exactly the
// acknowledged records, and reopens it. While it fails the log is broken
// and each later group tries again (at most every 100ms, failing at once in
// between).
func (l *Log) recover() error {
	if l.st == nil && time.Since(l.lastRetry) < 100*time.Millisecond {
		return errors.New("wal unavailable: recovering from a write failure")
	}
	l.lastRetry = time.Now()
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	if l.st != nil {
		if err := l.st.Close(); err != nil {
			l.logger.Warn("wal close after failure", "err", err)
		}
		l.st = nil
	}
	l.dirDirty = false
	res, err := repairTail(l.dir, l.durable.Load())
	if err != nil {
		return fmt.Errorf("wal repair after write failure: %w", err)
	}
	logRepair(l.logger, l.dir, res)
	l.stats.noteRepair(res)
	if err := l.reopen(); err != nil {
		return fmt.Errorf("wal reopen after write failure: %w", err)
	}
	l.stats.recoveries.Add(1)
	l.logger.Info("wal recovered after write failure", "next_index", l.next)
	return nil
}

// Release tells the log that its owner no longer needs the records before
// index (for the readings WAL: the older kept checkpoint covers them).
// Segments wholly before it become subject to retention. It never moves
// backwards. Safe for concurrent use; it does not block.
func (l *Log) Release(index uint64) {
	for {
		cur := l.release.Load()
		if index <= cur || l.release.CompareAndSwap(cur, index) {
			break
		}
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// enforceRetention removes whole segments from the front that the owner
// released and that retention lets go: the log is over RetentionBytes, or
// the segment was last written more than RetentionAge ago.
func (l *Log) enforceRetention(now time.Time) {
	rel := l.release.Load()
	l.released = rel
	if l.st == nil {
		return
	}
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	k := 0
	for k < len(l.segs)-1 && l.segs[k+1].base <= rel {
		s := l.segs[k]
		over := l.cfg.RetentionBytes == 0 || total > int64(l.cfg.RetentionBytes) ||
			(l.cfg.RetentionAge > 0 && now.Sub(s.mtime) > l.cfg.RetentionAge)
		if !over {
			break
		}
		total -= s.size
		k++
	}
	if k == 0 {
		return
	}
	if err := l.st.TruncateFront(l.segs[k].base); err != nil {
		l.logger.Warn("wal retention: truncate front", "index", l.segs[k].base, "err", err)
		return
	}
	if err := syncDir(l.dir); err != nil {
		l.logger.Warn("wal retention", "err", err)
	}
	l.stats.removedSegments.Add(uint64(k))
	l.segs = append(l.segs[:0], l.segs[k:]...)
}

// FirstIndex returns the index of the oldest record the log holds, or
// LastIndex()+1 when it holds none.
func (l *Log) FirstIndex() uint64 {
	l.stateMu.RLock()
	defer l.stateMu.RUnlock()
	if l.st == nil {
		return l.segs[0].base
	}
	i, err := l.st.FirstIndex()
	if err != nil {
		return l.segs[0].base
	}
	return i
}

// LastIndex returns the index of the last acknowledged record (0 if none
// ever was).
func (l *Log) LastIndex() uint64 { return l.durable.Load() }

// SyncedIndex returns the last index an fsync covers: every record up to it
// survives a power cut. It trails LastIndex only by best-effort records
// (TryAppendAsync) not yet synced. A checkpoint of state derived from the
// log must not claim to cover more than this.
func (l *Log) SyncedIndex() uint64 { return l.synced.Load() }

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// Close stops accepting appends (they fail with ErrClosed), writes and
// syncs every append already queued, stops the writer and closes the files.
// It waits for the writer, is safe to call more than once, and returns the
// same result each time.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closing = true
		l.mu.Unlock()
		l.sem.close()
		select {
		case l.wake <- struct{}{}:
		default:
		}
		<-l.done
		l.stateMu.Lock()
		if l.st != nil {
			if err := l.st.Close(); err != nil {
				l.closeErr = fmt.Errorf("close wal %s: %w", l.dir, err)
			}
			l.st = nil
		}
		l.stateMu.Unlock()
		unlockDir(l.flock)
	})
	return l.closeErr
}

// Request buffers are pooled by power-of-two size class, 128 B to 1 MiB:
// the store copies every batch (tidwall's WriteBatch), so a request's copy
// is garbage right after the write, and at high rates the allocator and GC
// cost of fresh ones showed (HTTP write path: 16 % of bytes allocated).
// The small classes matter for memory: one MQTT message is one request of
// about a hundred bytes, and thousands wait at once under QoS 1 load (a
// 1 KiB floor held ~3.5 MB of them).
const (
	minBufClass = 7  // 128 B
	maxBufClass = 20 // 1 MiB
)

var bufPools [maxBufClass + 1]sync.Pool

func bufClass(n int) int {
	c := minBufClass
	for c <= maxBufClass && 1<<c < n {
		c++
	}
	return c
}

// getBuf returns a box holding an empty slice with room for n bytes. The
// pools keep the boxes, so a round trip allocates nothing.
func getBuf(n int) *[]byte {
	c := bufClass(n)
	if c > maxBufClass {
		b := make([]byte, 0, n)
		return &b
	}
	if b, ok := bufPools[c].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 1<<c)
	return &b
}

// putBuf returns box from getBuf to its pool, holding b (its slice, maybe
// appended to).
func putBuf(box *[]byte, b []byte) {
	c := bufClass(cap(b))
	if c > maxBufClass || 1<<c != cap(b) {
		return // not one of ours (or too large to keep)
	}
	*box = b[:0]
	bufPools[c].Put(box)
}

// requests recycles requests once their done has been called.
var requests sync.Pool

// maxPooledSizes bounds the record count whose sizes slice a pooled
// request keeps.
const maxPooledSizes = 256

func recycle(r *request) {
	sizes := r.sizes[:0]
	if cap(sizes) > maxPooledSizes {
		sizes = nil
	}
	*r = request{sizes: sizes}
	requests.Put(r)
}
