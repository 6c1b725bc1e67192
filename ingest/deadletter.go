package ingest

// The dead-letter log: rejected payloads kept, bounded, on disk for the
// HTTP API. It is an instance of the project's one log type (wal.Log) on its
// own directory, with size retention as its only bound.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// rejectRawLimit is how much of a payload the UDP and HTTP listeners pass
// to the reject sink in Reject.Raw; DeadLetterConfig.MaxRawBytes may keep
// less of it.
const rejectRawLimit = 4 << 10

// cutRaw returns a copy of the first rejectRawLimit bytes of b: listeners
// reuse their buffers, so a Reject owns its Raw.
func cutRaw(b []byte) []byte {
	return append([]byte(nil), b[:min(len(b), rejectRawLimit)]...)
}

// resultReject describes a payload with rejected lines as one Reject: the
// reason and message (with line and column) of the first problem, and how
// many more there were.
func resultReject(l Listener, nowNs int64, source, topic string, res *Result, body []byte) Reject {
	r := Reject{
		TimeNs: nowNs, Listener: l.String(), Source: source, Topic: topic,
		Raw: cutRaw(body), RawBytes: len(body),
	}
	if len(res.Errors) > 0 {
		r.Reason, r.Error = res.Errors[0].Reason.String(), res.Errors[0].Error()
	} else {
		for reason, n := range res.Rejected {
			if n > 0 {
				r.Reason = Reason(reason).String()
				break
			}
		}
		r.Error = "rejected"
	}
	if more := res.Problems() - 1; more > 0 {
		r.Error += " (and " + strconv.Itoa(more) + " more rejected)"
	}
	return r
}

// DeadLetterConfig configures the dead-letter log (section `dead_letters`).
type DeadLetterConfig struct {
	// RetentionBytes bounds the log on disk: the oldest segments are removed
	// once it is larger.
	RetentionBytes wal.ByteSize `yaml:"retention_bytes"`
	// MaxRawBytes is how much of each rejected payload is kept (Reject.Raw);
	// Reject.RawBytes keeps the full length. The listeners pass at most
	// 4KiB.
	MaxRawBytes wal.ByteSize `yaml:"max_raw_bytes"`
	// Queue is how many rejects may wait for the disk; past it Add drops
	// and counts.
	Queue int `yaml:"queue"`
}

// DefaultDeadLetterConfig returns the defaults: 16 MiB on disk, 1 KiB of
// each payload, 1024 queued rejects.
func DefaultDeadLetterConfig() DeadLetterConfig {
	return DeadLetterConfig{RetentionBytes: 16 * wal.MiB, MaxRawBytes: wal.KiB, Queue: 1024}
}

// Validate reports every invalid setting at once, joined with errors.Join;
// each is a *ConfigError with the key relative to the section.
func (c DeadLetterConfig) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.RetentionBytes < 256*wal.KiB || c.RetentionBytes > wal.GiB {
		bad("retention_bytes", "%s is out of range 256KiB to 1GiB (the log keeps whole segments of up to 1MiB)", c.RetentionBytes)
	}
	if c.MaxRawBytes < 0 || c.MaxRawBytes > rejectRawLimit {
		bad("max_raw_bytes", "%s is out of range 0 to 4KiB (the listeners pass at most 4KiB)", c.MaxRawBytes)
	}
	if c.Queue < 1 || c.Queue > 1<<20 {
		bad("queue", "%d is out of range 1 to 1048576 (each queued reject holds up to 4KiB)", c.Queue)
	}
	return errors.Join(errs...)
}

// DeadLetters is the bounded on-disk log of rejected payloads: a RejectSink
// for the listeners and the source of the dead letters the HTTP API shows.
//
// Add never blocks: rejects wait in a bounded queue that one goroutine
// drains to the log; when the queue is full the reject is dropped and
// counted (Dropped), so a flood of bad input costs a bounded queue and the
// disk's pace, never a stalled listener.
//
// On disk it is a wal.Log in its own directory: 1 MiB segments (smaller
// when RetentionBytes is small), one cached, and sync mode none. Dead
// letters are diagnostics: after a gateway crash they are in the OS's page
// cache and survive; only a power cut loses the last seconds of them, and
// in exchange bad input never adds fsyncs that compete with the readings
// WAL on the same flash. Each record is one Reject as a JSON object (its
// json tags); a later format will start with a byte other than '{'. The
// owner releases every record as soon as it is written, so RetentionBytes
// alone bounds the log, enforced after each append of at most 64 KiB: the
// disk holds at most RetentionBytes plus one segment and one append.
//
// The record is the generic Reject (listener, source, topic, reason,
// error, raw), so the late-readings log can be a second DeadLetters in its
// own directory, with Reason "late" and the reading as Raw.
//
// All methods are safe for concurrent use.
type DeadLetters struct {
	log    *wal.Log
	cfg    DeadLetterConfig
	logger *slog.Logger
	queue  chan Reject
	stop   chan struct{}
	done   chan struct{}
	hook   func() // tests: runs before each write, on the writer goroutine

	mu     sync.RWMutex // guards closed against Add's send
	closed bool

	added, dropped, written atomic.Uint64
	dropping                atomic.Bool // a drop was logged and the queue has not drained since

	closeOnce sync.Once
	closeErr  error
}

// OpenDeadLetters opens (or creates) the dead-letter log in dir and starts
// its writer goroutine, which Close stops.
func OpenDeadLetters(dir string, cfg DeadLetterConfig, logger *slog.Logger) (*DeadLetters, error) {
	return openDeadLetters(dir, cfg, logger, nil)
}

func openDeadLetters(dir string, cfg DeadLetterConfig, logger *slog.Logger, hook func()) (*DeadLetters, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dead letters config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l, err := wal.Open(dir, deadLetterWALConfig(cfg), logger)
	if err != nil {
		return nil, fmt.Errorf("open dead letters: %w", err)
	}
	d := &DeadLetters{
		log: l, cfg: cfg, logger: logger.With("log", "dead_letters"), hook: hook,
		queue: make(chan Reject, cfg.Queue),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	// Everything already on disk is released, so retention applies at once.
	l.Release(l.LastIndex() + 1)
	go d.run()
	return d, nil
}

// deadLetterWALConfig is the log's configuration: small segments so that
// retention removes little at a time, size retention only.
func deadLetterWALConfig(cfg DeadLetterConfig) wal.Config {
	c := wal.DefaultConfig()
	c.Sync = wal.SyncNone
	c.SegmentBytes = max(64*wal.KiB, min(wal.MiB, cfg.RetentionBytes/4))
	c.SegmentCache = 1
	c.MaxPendingBytes = wal.MiB
	c.RetentionBytes = cfg.RetentionBytes
	c.RetentionAge = 0
	return c
}

// Add queues r for the log and returns at once; when the queue is full r is
// dropped and counted. It copies r.Raw, cut to MaxRawBytes (RawBytes keeps
// the full length), and the strings, so the caller may reuse its buffer
// (an MQTT topic aliases the whole packet's). A zero TimeNs is set to now.
// After Close, Add drops.
func (d *DeadLetters) Add(r Reject) {
	d.added.Add(1)
	r.Topic, r.Source = strings.Clone(r.Topic), strings.Clone(r.Source)
	if r.RawBytes < len(r.Raw) {
		r.RawBytes = len(r.Raw)
	}
	r.Raw = append([]byte(nil), r.Raw[:min(len(r.Raw), int(d.cfg.MaxRawBytes))]...)
	if len(r.Raw) == 0 {
		r.Raw = nil
	}
	if r.TimeNs == 0 {
		r.TimeNs = time.Now().UnixNano()
	}
	d.mu.RLock()
	ok := false
	if !d.closed {
		select {
		case d.queue <- r:
			ok = true
		default:
		}
	}
	d.mu.RUnlock()
	if !ok {
		d.dropped.Add(1)
		if d.dropping.CompareAndSwap(false, true) {
			d.logger.Warn("dead-letter queue full; dropping rejects until it drains", "queue", d.cfg.Queue)
		}
	}
}

// Count returns how many rejects Add was given, dropped ones included.
func (d *DeadLetters) Count() uint64 { return d.added.Load() }

// Dropped returns how many rejects were lost: the queue was full, the log
// was closed, or the write failed.
func (d *DeadLetters) Dropped() uint64 { return d.dropped.Load() }

// Stats returns the underlying log's counters (segments, disk bytes).
func (d *DeadLetters) Stats() wal.Stats { return d.log.Stats() }

// deadLetterBatch bounds how many queued rejects one log append carries.
const deadLetterBatch = 256

// run is the writer goroutine.
func (d *DeadLetters) run() {
	defer close(d.done)
	batch := make([]Reject, 0, deadLetterBatch)
	var recs [][]byte
	for {
		select {
		case r := <-d.queue:
			batch = append(batch[:0], r)
			batch = d.fill(batch)
			recs = d.write(batch, recs)
		case <-d.stop:
			for {
				batch = d.fill(batch[:0])
				if len(batch) == 0 {
					return
				}
				recs = d.write(batch, recs)
			}
		}
	}
}

// fill takes what is queued, without waiting, up to deadLetterBatch.
func (d *DeadLetters) fill(batch []Reject) []Reject {
	for len(batch) < deadLetterBatch {
		select {
		case r := <-d.queue:
			batch = append(batch, r)
		default:
			if len(batch) > 0 {
				d.dropping.Store(false)
			}
			return batch
		}
	}
	return batch
}

// deadLetterGroupBytes bounds one log append, so that the log outgrows
// RetentionBytes by at most one segment and one group before retention,
// which runs after each group, trims it.
const deadLetterGroupBytes = 64 << 10

// write appends one record per reject, in groups of up to
// deadLetterGroupBytes, and releases them to retention.
func (d *DeadLetters) write(batch []Reject, recs [][]byte) [][]byte {
	if d.hook != nil {
		d.hook()
	}
	recs = recs[:0]
	size := 0
	for i := range batch {
		b, err := json.Marshal(&batch[i])
		if err != nil {
			panic("BUG: marshal reject: " + err.Error())
		}
		batch[i] = Reject{}
		recs = append(recs, b)
		size += len(b)
		if size >= deadLetterGroupBytes || i == len(batch)-1 {
			d.appendGroup(recs)
			clear(recs)
			recs, size = recs[:0], 0
		}
	}
	return recs
}

func (d *DeadLetters) appendGroup(recs [][]byte) {
	_, last, err := d.log.Append(context.Background(), recs)
	if err != nil {
		d.dropped.Add(uint64(len(recs)))
		d.logger.Warn("write dead letters failed; dropped", "records", len(recs), "err", err)
		return
	}
	d.written.Add(uint64(len(recs)))
	d.log.Release(last + 1)
}

// RejectFilter selects dead letters; a zero field matches everything.
type RejectFilter struct {
	Listener string    // mqtt, udp or http
	Reason   string    // a Reason or Drop name
	Source   string    // exact client id or peer address
	Since    time.Time // receive time at or after
}

func (f *RejectFilter) match(r *Reject) bool {
	return (f.Listener == "" || r.Listener == f.Listener) &&
		(f.Reason == "" || r.Reason == f.Reason) &&
		(f.Source == "" || r.Source == f.Source) &&
		(f.Since.IsZero() || r.TimeNs >= f.Since.UnixNano())
}

// Recent bounds.
const (
	// MaxRecentRejects is the largest limit Recent honours.
	MaxRecentRejects = 1000
	// recentScanBudget bounds the records one Recent call reads, so a
	// filter that matches little costs a bounded amount of work.
	recentScanBudget = 16384
)

// Recent returns up to limit dead letters matching f, newest first. It
// reads the log backwards in growing windows and stops when it has limit
// matches, reaches the oldest record, has read recentScanBudget records, or
// (with f.Since) reaches a window holding older records: the log is in
// arrival order, so older letters lie before it (receive times of
// concurrent listeners may interleave by a few microseconds). A limit
// above MaxRecentRejects is lowered to it. Rejects still in the queue are not
// seen. It does not block on writers; the returned Rejects are the
// caller's.
func (d *DeadLetters) Recent(limit int, f RejectFilter) ([]Reject, error) {
	limit = min(limit, MaxRecentRejects)
	if limit <= 0 {
		return nil, nil
	}
	first, last := d.log.FirstIndex(), d.log.LastIndex()
	if last < first {
		return nil, nil
	}
	out := make([]Reject, 0, limit)
	step := uint64(limit)
	if f != (RejectFilter{}) {
		step = max(step*4, 256)
	}
	var chunk []Reject
	scanned := uint64(0)
	for hi := last; len(out) < limit && scanned < recentScanBudget; {
		lo := first
		if hi-first+1 > step {
			lo = hi - step + 1
		}
		var older bool
		var err error
		chunk, older, err = d.scan(lo, hi, &f, chunk[:0])
		if err != nil {
			return out, err
		}
		for i := len(chunk) - 1; i >= 0 && len(out) < limit; i-- {
			out = append(out, chunk[i])
		}
		scanned += hi - lo + 1
		if older || lo <= first {
			break
		}
		hi = lo - 1
		step = min(step*2, recentScanBudget)
	}
	return out, nil
}

// scan appends the records in [lo, hi] that match f, in index order, and
// reports whether it saw one received before f.Since.
func (d *DeadLetters) scan(lo, hi uint64, f *RejectFilter, dst []Reject) ([]Reject, bool, error) {
	older := false
	r := d.log.NewReader(lo)
	for r.Next() && r.Index() <= hi {
		var rj Reject
		if err := json.Unmarshal(r.Record(), &rj); err != nil {
			d.logger.Warn("dead letter unreadable; skipped", "index", r.Index(), "err", err)
			continue
		}
		if !f.Since.IsZero() && rj.TimeNs < f.Since.UnixNano() {
			older = true
		}
		if f.match(&rj) {
			dst = append(dst, rj)
		}
	}
	if err := r.Err(); err != nil {
		return dst, older, fmt.Errorf("read dead letters: %w", err)
	}
	return dst, older, nil
}

// Close stops accepting rejects, writes what is queued, stops the writer
// goroutine and closes the log. It waits for all of that, is safe to call
// more than once, and returns the same result each time.
func (d *DeadLetters) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		close(d.stop)
		<-d.done
		if err := d.log.Close(); err != nil {
			d.closeErr = fmt.Errorf("close dead letters: %w", err)
		}
	})
	return d.closeErr
}
