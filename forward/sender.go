package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/runnel-iot/runnel/wal"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Entry states in a sender's window.
const (
	stInflight = iota // handed to the producer, no outcome yet
	stAcked           // Kafka acknowledged it
	stFailed          // its attempt failed; to be sent again
	stSkipped         // gone: dropped from disk meanwhile, or undeliverable
)

type entry struct {
	index uint64
	size  int64
	state uint8
	err   error
	topic string
}

// sender is the delivery loop of one outbox, with its own producer client
// in manual-flushing mode. It works in rounds: read entries from the
// outbox and hand them to the producer (which buffers them, sending
// nothing), then flush and wait until every one has an outcome, then move
// the acknowledged position to the longest prefix of entries that are
// acknowledged (or skipped).
//
// When a record fails, the next round comes after a backoff and sends
// again, in outbox order, every entry after the prefix that was not
// acknowledged. Per-key order holds because of two facts. Within a round,
// everything is buffered before anything is sent, and kgo fails every
// record buffered behind a failed one in the same partition (finishBatch
// and failAllRecords in kgo's sink.go; documented on Produce), so the
// acknowledged records of each partition, hence of each key, are a prefix
// of the round's. And nothing more is produced on this client until the
// round's outcomes are in. (With one shared, continuously fed client, a
// record produced between kgo failing a partition and the failure's
// promise reaching us could be written before the failed ones are resent:
// TestForwardThroughFaults caught exactly that.)
type sender struct {
	f      *Forwarder
	cl     *kgo.Client
	o      *Outbox
	topic  string
	logger *slog.Logger
	wake   chan struct{} // 1-slot, coalescing: an outcome arrived
	dec    recordDecoder // owned by the loop goroutine

	maxBytes int64
	timeout  time.Duration // one attempt, counted from the first record of a round
	linger   time.Duration

	mu       sync.Mutex // guards win and inflight (promises run on kgo's goroutine)
	win      []entry    // entries after the acknowledged prefix, by index
	inflight int
	failed   bool

	// Owned by the loop goroutine.
	next     uint64 // next index to read
	hwm      uint64 // every index below it was read once: if not in the window, it was skipped
	reader   *wal.Reader
	failures int    // consecutive failed rounds
	probe    uint64 // an entry refused for a record-level reason, sent alone once more
}

func newSender(f *Forwarder, cl *kgo.Client, o *Outbox, topic string) *sender {
	return &sender{
		f: f, cl: cl, o: o, topic: topic,
		logger:   f.logger.With("outbox", o.kind),
		wake:     make(chan struct{}, 1),
		dec:      recordDecoder{topic: topic},
		maxBytes: inflightBatches * int64(f.cfg.BatchMaxBytes),
		timeout:  f.cfg.RequestTimeout + f.cfg.Linger,
		linger:   f.cfg.Linger,
	}
}

// find returns the window position of index, or -1. s.mu held.
func (s *sender) find(index uint64) int {
	i := sort.Search(len(s.win), func(i int) bool { return s.win[i].index >= index })
	if i < len(s.win) && s.win[i].index == index {
		return i
	}
	return -1
}

func (s *sender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run delivers until ctx ends. The round in progress then gets up to
// shutdownGrace to finish.
func (s *sender) run(ctx context.Context) {
	s.next = s.o.position() + 1
	s.hwm = s.next
	s.reader = s.o.log.NewReader(s.next)
	for {
		s.advance()
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		failed := s.failed
		s.mu.Unlock()
		if failed {
			if !s.retry(ctx) {
				return
			}
			continue
		}
		n, err := s.collect(ctx)
		if err != nil && errors.Is(err, wal.ErrClosed) {
			s.logger.Warn("outbox closed while forwarding; stopping its delivery")
			s.flush(ctx)
			return
		}
		if n > 0 {
			s.flush(ctx)
		}
		if err != nil {
			// The log is recovering from a disk error (wal.Log.recover):
			// read again, from here, a little later.
			s.logger.Error("read outbox", "index", s.next, "err", err)
			s.reader = s.o.log.NewReader(s.next)
			t := time.NewTimer(min(s.f.cfg.Backoff.Max, time.Second))
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			continue
		}
		if n > 0 {
			continue
		}
		select {
		case <-s.o.log.Notify():
		case <-ctx.Done():
		}
	}
}

// collect reads entries and hands them to the producer, which buffers them
// until flush, while the round has room. Once it has something it waits
// up to linger for more. All records of a round share an attempt context
// whose deadline is the request timeout: kgo fails a batch by its first
// record's context, and with AllowIdempotentProduceCancellation that also
// aborts a request a silent broker never answers.
func (s *sender) collect(ctx context.Context) (int, error) {
	var at *attempt
	defer func() {
		if at != nil {
			at.release()
		}
	}()
	var bytes int64
	produced := 0
	var lingerEnd time.Time
	for {
		s.mu.Lock()
		room := len(s.win) < maxInflightRecords && bytes < s.maxBytes && (s.probe == 0 || produced == 0)
		s.mu.Unlock()
		if !room {
			return produced, nil
		}
		if !s.reader.Next() {
			if err := s.reader.Err(); err != nil || produced == 0 || !s.lingerMore(ctx, &lingerEnd) {
				return produced, err
			}
			continue
		}
		idx := s.reader.Index()
		pos, ok := s.admit(idx)
		if !ok {
			continue
		}
		kr, err := s.dec.decode(s.reader.Record())
		if err != nil {
			s.undeliverable(idx, pos, ErrKindDecode, err)
			continue
		}
		size := int64(len(s.reader.Record()))
		s.mu.Lock()
		if pos >= 0 {
			e := &s.win[pos]
			e.state, e.err, e.size, e.topic = stInflight, nil, size, kr.Topic
		} else {
			s.win = append(s.win, entry{index: idx, size: size, state: stInflight, topic: kr.Topic})
		}
		s.inflight++
		s.mu.Unlock()

		if at == nil {
			at = newAttempt(context.WithoutCancel(ctx), s.timeout)
		}
		at.add()
		s.f.sent.Add(1)
		bytes += size
		produced++
		a := at
		s.cl.Produce(a.ctx, kr, func(_ *kgo.Record, err error) {
			s.resolve(idx, a.outcome(err))
			a.done()
		})
	}
}

// lingerMore waits, until *end (set on first use to now+linger), for more
// entries. It reports whether to read again.
func (s *sender) lingerMore(ctx context.Context, end *time.Time) bool {
	if s.linger <= 0 {
		return false
	}
	if end.IsZero() {
		*end = time.Now().Add(s.linger)
	}
	left := time.Until(*end)
	if left <= 0 {
		return false
	}
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-s.o.log.Notify():
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	return true
}

// admit decides whether the entry the reader is at goes into this round:
// not if an earlier round got it acknowledged or skipped it. pos is its
// window position when it is a resend, else -1. Window entries the reader
// jumped over were dropped from disk meanwhile and are skipped.
func (s *sender) admit(idx uint64) (pos int, ok bool) {
	if idx < s.next {
		return -1, false
	}
	gapFrom := s.next
	s.next = idx + 1
	s.mu.Lock()
	if idx > gapFrom {
		s.skipGone(gapFrom, idx)
	}
	pos = s.find(idx)
	resend := pos >= 0
	skip := (resend && s.win[pos].state != stFailed) || (!resend && idx < s.hwm)
	s.mu.Unlock()
	if skip {
		return pos, false
	}
	s.hwm = max(s.hwm, idx+1)
	return pos, true
}

// flush sends the round and waits for every outcome. Once ctx ends the
// round gets shutdownGrace; Run then closes the client, which fails what
// is left. kgo drains a manual-flushing client only while a Flush runs,
// so Flush is kept running until the outcomes are in.
func (s *sender) flush(ctx context.Context) {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	grace := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(min(shutdownGrace, s.timeout), cancel)
		context.AfterFunc(fctx, func() { t.Stop() })
	})
	defer grace()
	for warned := false; ; {
		wctx, wcancel := context.WithTimeout(fctx, 2*s.timeout+10*time.Second)
		err := s.cl.Flush(wctx)
		wcancel()
		if err == nil || fctx.Err() != nil {
			break
		}
		if !warned {
			// Every record carries the attempt's deadline, so this means kgo
			// holds records past it; keep flushing so its sinks keep going.
			s.logger.Warn("kafka producer still holds records past their attempt deadline")
			warned = true
		}
	}
	// Records refused before buffering (too large) are not counted by
	// Flush; their outcomes may still be on their way.
	for {
		s.mu.Lock()
		inflight := s.inflight
		s.mu.Unlock()
		if inflight == 0 || fctx.Err() != nil {
			return
		}
		select {
		case <-s.wake:
		case <-fctx.Done():
		}
	}
}

// recordDecoder turns outbox entries into the Kafka records a round
// holds until its outcomes are in, which is most of a round's memory. The
// record's key, value and header values are views of the entry the
// outbox's reader returned, which the log never modifies
// (wal.Reader.Record): a round holds the segments it reads from, not a
// copy of every entry besides (a round of 4 MiB read from segments that
// had left the log's cache held both: 4 MiB of copies on top of the
// segments, and 8-9 % of the bytes the forward phase of make bench
// allocated). Decoding a Record and building a Kafka record from it
// copied the id and every header again. Topics and header keys, a
// handful of distinct strings, are shared. Not safe for concurrent use
// (one per sender).
type recordDecoder struct {
	topic string // the outbox's
	hs    []viewHeader
	names map[string]string
}

// maxNames bounds the distinct topics and header keys shared; past it
// they are allocated per record.
const maxNames = 64

// decode returns entry b as a Kafka record: its own topic, else the
// outbox's; the id header first. The record aliases b, which must not be
// modified while the record is in use. An entry that does not decode gets
// a *DecodeError.
func (d *recordDecoder) decode(b []byte) (*kgo.Record, error) {
	v, _, err := decodeView(b, &d.hs)
	if err != nil {
		return nil, err
	}
	topic := d.topic
	if len(v.topic) > 0 {
		topic = d.name(v.topic)
	}
	hs := make([]kgo.RecordHeader, 1+len(d.hs))
	hs[0] = kgo.RecordHeader{Key: IDHeader, Value: v.id}
	for i, h := range d.hs {
		hs[1+i] = kgo.RecordHeader{Key: d.name(h.key), Value: h.value}
	}
	return &kgo.Record{Topic: topic, Key: v.key, Value: v.value, Headers: hs}, nil
}

func (d *recordDecoder) name(b []byte) string {
	if s, ok := d.names[string(b)]; ok {
		return s
	}
	s := string(b)
	if d.names == nil {
		d.names = make(map[string]string)
	}
	if len(d.names) < maxNames {
		d.names[s] = s
	}
	return s
}

func (s *sender) kafkaRecord(rec *Record) *kgo.Record { return kafkaRecord(rec, s.topic) }

// kafkaRecord turns an outbox record into a Kafka record: its own topic,
// else the outbox's; the id header first.
func kafkaRecord(rec *Record, outboxTopic string) *kgo.Record {
	topic := rec.Topic
	if topic == "" {
		topic = outboxTopic
	}
	hs := make([]kgo.RecordHeader, 0, 1+len(rec.Headers))
	hs = append(hs, kgo.RecordHeader{Key: IDHeader, Value: []byte(rec.ID)})
	for _, h := range rec.Headers {
		hs = append(hs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return &kgo.Record{Topic: topic, Key: rec.Key, Value: rec.Value, Headers: hs}
}

// skipGone marks failed window entries in [from, to) skipped: the reader
// passed over them, so drop_oldest removed them from disk. s.mu held.
func (s *sender) skipGone(from, to uint64) {
	for i := range s.win {
		e := &s.win[i]
		if e.index >= to {
			break
		}
		if e.index >= from && e.state == stFailed {
			e.state = stSkipped
		}
	}
}

// undeliverable skips an entry that can never be delivered, counted.
func (s *sender) undeliverable(idx uint64, pos int, kind string, err error) {
	s.mu.Lock()
	if pos >= 0 {
		s.win[pos].state = stSkipped
	}
	s.mu.Unlock()
	s.o.undeliverable.Add(1)
	s.f.noteError(kind, err)
	s.logger.Error("outbox entry cannot be delivered; skipped", "index", idx, "reason", kind, "err", err)
}

// resolve records the outcome of one record. It runs on kgo's promise
// goroutine: quick, no blocking.
func (s *sender) resolve(idx uint64, err error) {
	s.mu.Lock()
	pos := s.find(idx)
	if pos < 0 || s.win[pos].state != stInflight {
		s.mu.Unlock()
		panic("BUG: forward: outcome for an entry not in flight")
	}
	e := &s.win[pos]
	s.inflight--
	if err == nil {
		e.state = stAcked
	} else {
		e.state, e.err = stFailed, err
		s.failed = true
	}
	s.mu.Unlock()
	if err == nil {
		s.o.acked.Add(1)
		s.f.acked.Add(1)
	}
	s.signal()
}

// advance drops the acknowledged prefix of the window and moves the
// outbox's acknowledged position.
func (s *sender) advance() {
	s.mu.Lock()
	k, acked := 0, false
	done := s.next - 1
	for k < len(s.win) && (s.win[k].state == stAcked || s.win[k].state == stSkipped) {
		if s.win[k].index == s.probe {
			s.probe = 0
		}
		acked = acked || s.win[k].state == stAcked
		// After a lone resend the reader may be behind entries that an
		// earlier round got acknowledged.
		done = max(done, s.win[k].index)
		k++
	}
	if k > 0 {
		n := copy(s.win, s.win[k:])
		clear(s.win[n:])
		s.win = s.win[:n]
	}
	if len(s.win) > 0 {
		done = s.win[0].index - 1
	}
	s.mu.Unlock()
	if acked {
		s.failures = 0
		s.f.noteSuccess()
	}
	s.o.markDone(done)
}

// retry handles a failed round: it counts and logs the failure, waits out
// the backoff (record-level failures skip it), and rewinds the reader to
// the first unacknowledged entry. It returns false if ctx ended.
func (s *sender) retry(ctx context.Context) bool {
	s.mu.Lock()
	s.failed = false
	var first entry
	pos := -1
	for i := range s.win {
		if s.win[i].state == stFailed {
			first, pos = s.win[i], i
			break
		}
	}
	unacked := len(s.win)
	s.mu.Unlock()
	if pos < 0 {
		return true
	}
	kind, cause := classify(first.err), first.err
	if kind == ErrKindTimeout {
		kind, cause = s.diagnose(ctx, cause)
	}
	s.f.retries.Add(1)
	switch {
	case isRecordLevel(kind) && s.probe == first.index:
		// Refused again when sent alone: the record itself is the problem.
		s.probe = 0
		s.undeliverable(first.index, pos, kind, first.err)
	case isRecordLevel(kind):
		// The batch may be what is too large: send the record alone once.
		s.probe = first.index
		s.f.noteError(kind, first.err)
		s.logger.Warn("kafka refused a record; sending it alone once more", "index", first.index, "reason", kind, "err", first.err)
	default:
		if errors.Is(first.err, kerr.UnknownTopicID) {
			// The topic was deleted and recreated (or the cluster rebuilt):
			// kgo never adopts the new topic id on its own (metadata.go,
			// "we do not adopt the new ID"); forgetting the topic makes the
			// next round load it afresh.
			s.logger.Warn("kafka topic id changed (topic recreated?); reloading it", "topic", first.topic)
			s.cl.PurgeTopicsFromProducing(first.topic)
		}
		s.probe = 0
		s.failures++
		s.f.connected.Store(false)
		s.f.noteError(kind, cause)
		wait := backoffDelay(s.f.cfg.Backoff, s.failures, s.f.rnd)
		s.logger.Warn("kafka delivery failed; retrying", "reason", kind, "err", cause,
			"attempt", s.failures, "retry_in", wait, "unacked_in_window", unacked)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
	s.advance()
	s.mu.Lock()
	s.next = s.o.position() + 1
	if len(s.win) > 0 {
		s.next = s.win[0].index
	}
	s.mu.Unlock()
	s.reader = s.o.log.NewReader(s.next)
	return true
}

// diagnose looks behind a timed-out attempt: kgo retries failed
// connections (refused, SASL or TLS refusals) inside the attempt, so its
// records only report the deadline. A metadata request tells an
// unreachable or refusing cluster from a silent or slow one.
func (s *sender) diagnose(ctx context.Context, timeoutErr error) (string, error) {
	pctx, cancel := context.WithTimeout(ctx, min(s.timeout, 5*time.Second))
	defer cancel()
	err := s.cl.Ping(pctx)
	if err == nil || ctx.Err() != nil {
		return ErrKindTimeout, timeoutErr // reachable: the broker is slow or silent on produce
	}
	if kind := classify(err); kind != ErrKindTimeout && kind != ErrKindOther {
		return kind, fmt.Errorf("%w; cluster probe: %w", timeoutErr, err)
	}
	return ErrKindTimeout, fmt.Errorf("%w; cluster probe: %w", timeoutErr, err)
}

// finish records the outcomes that arrived while the client closed (it
// fails what is still buffered).
func (s *sender) finish() {
	deadline := time.NewTimer(time.Second)
	defer deadline.Stop()
	for {
		s.advance()
		s.mu.Lock()
		inflight := s.inflight
		s.mu.Unlock()
		if inflight == 0 {
			return
		}
		select {
		case <-s.wake:
		case <-deadline.C:
			return
		}
	}
}

// attempt is the context shared by the records of one fill. Its deadline
// cancels it (context.Canceled, not DeadlineExceeded: kgo recognises a
// cancelled head-of-line record while it (re)loads the producer id only
// by context.Canceled, sink.go produce, and would otherwise keep the
// records through its own load retries). It is also cancelled once all its
// records have an outcome, so its timer does not outlive them.
type attempt struct {
	ctx     context.Context
	cancel  context.CancelFunc
	timer   *time.Timer
	expired atomic.Bool
	refs    atomic.Int64
	timeout time.Duration
}

func newAttempt(parent context.Context, timeout time.Duration) *attempt {
	ctx, cancel := context.WithCancel(parent)
	a := &attempt{ctx: ctx, cancel: cancel, timeout: timeout}
	a.timer = time.AfterFunc(timeout, func() {
		a.expired.Store(true)
		cancel()
	})
	a.refs.Store(1) // held by fill until it stops adding records
	return a
}

func (a *attempt) add() { a.refs.Add(1) }

func (a *attempt) done() {
	if a.refs.Add(-1) == 0 {
		a.timer.Stop()
		a.cancel()
	}
}

func (a *attempt) release() { a.done() }

// outcome turns the cancellation by the attempt's deadline back into a
// timeout.
func (a *attempt) outcome(err error) error {
	if err != nil && errors.Is(err, context.Canceled) && a.expired.Load() {
		return fmt.Errorf("%w: no acknowledgement within %s (%v)", errAttemptTimeout, a.timeout, err)
	}
	return err
}

var errAttemptTimeout = fmt.Errorf("delivery attempt timed out: %w", context.DeadlineExceeded)
