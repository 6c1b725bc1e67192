package forward

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/runnel-iot/runnel/wal"
)

// Exactly-once delivery (kafka.delivery: exactly_once).
//
// Each outbox is sent by a transactional producer with the transactional id
// runnel-<client_id>-<kind>. A transaction carries a round of records and
// one position record: the outbox index the round advances to, keyed
// <client_id>|<kind> in the positions topic. Kafka commits both or
// neither, so the position in Kafka is exactly what read_committed
// consumers can see.
//
// On start (and after any failed round) the sender synchronises: a
// transaction holding only a sync record (keyed <client_id>|<kind>|sync,
// same partition) is committed. Its InitProducerID fenced any older
// producer with the same transactional id and aborted its open
// transaction; its commit gives an offset every earlier commit of ours lies
// before. The sender then reads the partition read_committed up to that
// offset and resumes after the last position found there: not from the
// local ack file, which lags Kafka by up to a second (it is written after
// the commit) and is used only when Kafka has no position yet. The local
// outbox is released only behind what Kafka committed.
//
// Per-key order: a round is one transaction; a failed round is aborted
// whole and sent again from the committed position, so committed records
// follow outbox order.

// isFenced reports an error that may mean a producer fenced by a newer one
// with the same transactional id (another gateway process with the same
// id), or a transaction Kafka timed out (kgo recovers from that one when
// the next transaction begins; see txnSender.fail).
func isFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.TransactionalIDAuthorizationFailed) ||
		errors.Is(err, kerr.InvalidProducerEpoch)
}

// positionValue is the value of a position record (JSON, so an operator can
// read the topic with kcat).
type positionValue struct {
	Index uint64 `json:"index"`
	Kind  string `json:"kind,omitempty"`
}

// decodePosition parses a position record's value.
func decodePosition(b []byte) (uint64, error) {
	var v positionValue
	if err := json.Unmarshal(b, &v); err != nil {
		return 0, fmt.Errorf("decode position record: %w", err)
	}
	return v.Index, nil
}

func encodePosition(index uint64, kind string) []byte {
	b, _ := json.Marshal(positionValue{Index: index, Kind: kind})
	return b
}

// txnPartitioner places position and sync records in the partition chosen
// by the sender (Record.Partition), every other record as the default
// producer does (murmur2 of the key, as in at_least_once mode).
type txnPartitioner struct {
	positions string
	def       kgo.Partitioner
}

func (p txnPartitioner) ForTopic(t string) kgo.TopicPartitioner {
	if t == p.positions {
		return kgo.ManualPartitioner().ForTopic(t)
	}
	return p.def.ForTopic(t)
}

// txnStats are the exactly-once counters of a Forwarder.
type txnStats struct {
	committed, aborted, fenced, records atomic.Uint64
}

// txnSender is the delivery loop of one outbox in exactly_once mode.
type txnSender struct {
	f       *Forwarder
	o       *Outbox
	topic   string
	txnID   string
	key     string // position record key
	logger  *slog.Logger
	timeout time.Duration // one round: produce to commit

	cl        *kgo.Client
	partition int32 // of the positions topic holding our key
	committed uint64
	synced    bool
	pending   pendingCommit // the last round whose commit failed: it may have landed
	stale     bool          // a flush gave up with records in flight: the client is replaced
	reader    *wal.Reader
	next      uint64
	failures  int
	probe     uint64          // an entry refused for a record-level reason, sent alone once more
	skip      map[uint64]bool // entries refused alone: skipped, counted
	dec       recordDecoder   // owned by the loop goroutine

	committedPos atomic.Uint64
	fenced       atomic.Pointer[string]
}

func newTxnSender(f *Forwarder, o *Outbox, topic string) *txnSender {
	id := "runnel-" + f.cfg.ClientID + "-" + o.kind
	return &txnSender{
		f: f, o: o, topic: topic, txnID: id,
		key:     f.cfg.ClientID + "|" + o.kind,
		logger:  f.logger.With("outbox", o.kind, "transactional_id", id),
		timeout: f.cfg.RequestTimeout + f.cfg.Linger,
		skip:    make(map[uint64]bool),
		dec:     recordDecoder{topic: topic},
	}
}

// txnTimeout is the transaction timeout asked of the coordinator: a round
// commits or aborts within about two request timeouts; past this Kafka
// aborts it (an uplink lost mid-round) and the round is redone.
func (f *Forwarder) txnTimeout() time.Duration {
	if f.txnTimeoutOverride > 0 {
		return f.txnTimeoutOverride
	}
	return max(2*(f.cfg.RequestTimeout+f.cfg.Linger)+5*time.Second, 10*time.Second)
}

func (s *txnSender) clientOpts() []kgo.Opt {
	return append(slices.Clone(s.f.opts),
		kgo.TransactionalID(s.txnID),
		kgo.TransactionTimeout(s.f.txnTimeout()),
		kgo.RecordPartitioner(txnPartitioner{positions: s.f.cfg.PositionsTopic, def: kgo.StickyKeyPartitioner(nil)}),
	)
}

// run delivers until ctx ends or the producer is fenced.
func (s *txnSender) run(ctx context.Context) {
	defer func() {
		if s.cl != nil {
			s.cl.Close()
		}
	}()
	cl, err := kgo.NewClient(s.clientOpts()...)
	if err != nil {
		s.logger.Error("create transactional kafka producer", "err", err)
		return
	}
	s.cl = cl
	for ctx.Err() == nil {
		if !s.synced {
			if err := s.sync(ctx); err != nil {
				if s.fail(ctx, "sync", err) {
					return
				}
				continue
			}
			s.synced = true
			s.failures = 0
		}
		n, err := s.round(ctx)
		if errors.Is(err, wal.ErrClosed) {
			s.logger.Warn("outbox closed while forwarding; stopping its delivery")
			return
		}
		if err != nil {
			s.synced = false
			if s.fail(ctx, "round", err) {
				return
			}
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

// fail handles a failed sync or round: the transaction is aborted, the
// failure counted and logged, and the backoff waited out. It returns true
// when the sender must stop: fenced, or ctx ended.
func (s *txnSender) fail(ctx context.Context, what string, err error) bool {
	var aerr error
	if s.stale {
		// Records were still in flight when the round gave up (a silent
		// broker): kgo would send them later, in whatever transaction the
		// client is then in. A new client gets a new producer epoch
		// (InitProducerID), which aborts the open transaction and makes
		// Kafka refuse those late requests. It would also fence a newer
		// gateway with the same id started meanwhile, which then stops.
		s.cl.Close()
		cl, cerr := kgo.NewClient(s.clientOpts()...)
		if cerr != nil {
			s.logger.Error("create transactional kafka producer", "err", cerr)
			return true
		}
		s.cl, s.stale = cl, false
	} else {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
		_ = s.cl.AbortBufferedRecords(actx)
		aerr = s.cl.EndTransaction(actx, kgo.TryAbort)
		cancel()
	}
	s.f.txn.aborted.Add(1)
	if isFenced(err) || isFenced(aerr) {
		// kgo recovers a producer whose transaction Kafka timed out
		// (KIP-360) when the next transaction begins; a producer fenced by
		// a newer one fails again there. Only a fenced sync is final: the
		// sync begins a transaction on a fresh producer id.
		if what == "sync" {
			reason := fmt.Sprintf("outbox %s: fenced by another producer with transactional id %s (a second gateway with the same id?): %v", s.o.kind, s.txnID, err)
			s.fenced.Store(&reason)
			s.f.txn.fenced.Add(1)
			s.f.setLastError(errors.New(reason))
			s.logger.Error("kafka producer fenced; this gateway stops forwarding the outbox", "err", err)
			return true
		}
	}
	if ctx.Err() != nil {
		return true
	}
	kind := classify(err)
	if isRecordLevel(kind) {
		var re *recordErr
		if errors.As(err, &re) {
			if s.probe == re.index {
				s.probe = 0
				s.skip[re.index] = true
				s.o.undeliverable.Add(1)
				s.f.noteError(kind, err)
				s.logger.Error("outbox entry cannot be delivered; skipped", "index", re.index, "reason", kind, "err", err)
			} else {
				s.probe = re.index
				s.f.noteError(kind, err)
				s.logger.Warn("kafka refused a record; sending it alone once more", "index", re.index, "reason", kind, "err", err)
			}
			return false
		}
	}
	s.failures++
	s.f.retries.Add(1)
	s.f.connected.Store(false)
	s.f.noteError(kind, err)
	wait := backoffDelay(s.f.cfg.Backoff, s.failures, s.f.rnd)
	s.logger.Warn("kafka transaction failed; aborted, retrying", "step", what, "reason", kind, "err", err, "abort_err", aerr,
		"attempt", s.failures, "retry_in", wait)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-ctx.Done():
		return true
	}
}

// pendingCommit is a round whose EndTransaction failed: Kafka may have
// committed it (the next sync tells, by the position it reads back).
type pendingCommit struct {
	last, produced uint64
}

type recordErr struct {
	index uint64
	err   error
}

func (e *recordErr) Error() string { return fmt.Sprintf("outbox entry %d: %v", e.index, e.err) }
func (e *recordErr) Unwrap() error { return e.err }

// sync fences older producers, commits a sync record and reads back the
// committed position (see the comment at the top of this file).
func (s *txnSender) sync(ctx context.Context) error {
	if err := s.ensureTopic(ctx); err != nil {
		return err
	}
	if err := s.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin sync transaction: %w", err)
	}
	// Sync values differ per attempt, so each commit is a new record.
	val := strconv.FormatInt(time.Now().UnixNano(), 10)
	at := newAttempt(context.WithoutCancel(ctx), s.timeout)
	defer at.release()
	var off int64
	var perr error
	done := make(chan struct{})
	at.add()
	s.cl.Produce(at.ctx, &kgo.Record{Topic: s.f.cfg.PositionsTopic, Partition: s.partition, Key: []byte(s.key + "|sync"), Value: []byte(val)},
		func(r *kgo.Record, err error) {
			off, perr = r.Offset, at.outcome(err)
			at.done()
			close(done)
		})
	if err := s.flush(ctx); err != nil {
		return err
	}
	<-done
	if perr != nil {
		return fmt.Errorf("produce sync record: %w", perr)
	}
	if err := s.commit(ctx); err != nil {
		return err
	}
	pos, found, err := s.readPosition(ctx, off)
	if err != nil {
		return err
	}
	local := s.o.position()
	switch {
	case found && pos > s.o.log.LastIndex():
		// Entries are durable before they are sent, so this outbox never
		// had them: a new data directory under an old gateway id. Its
		// entries are new; skipping them would lose them.
		s.logger.Warn("kafka's committed position is past the outbox's newest entry (a new data directory with a reused gateway id?); resuming from the local position",
			"kafka_index", pos, "last_index", s.o.log.LastIndex(), "local_index", local)
		pos = local
	case !found:
		pos = local
		s.logger.Info("no committed position in kafka yet; starting from the local one", "index", local)
	case pos < local:
		// The ack file is written only after a commit, so it cannot lead
		// Kafka unless the positions topic lost data (deleted, recreated).
		// What is up to the local position was committed: do not send it
		// again.
		s.logger.Warn("kafka's committed position is behind the local one (positions topic lost or recreated?); resuming from the local one",
			"kafka_index", pos, "local_index", local)
		pos = local
	case pos > local:
		s.logger.Info("resuming from kafka's committed position, ahead of the local one (a crash after a commit)", "kafka_index", pos, "local_index", local)
	}
	if p := s.pending; p.last != 0 && pos == p.last {
		// The commit whose outcome was unknown (the uplink failed during
		// EndTransaction) had landed: its records count as acknowledged.
		s.o.acked.Add(p.produced)
		s.f.acked.Add(p.produced)
		s.f.txn.committed.Add(1)
		s.f.txn.records.Add(p.produced)
	}
	s.pending = pendingCommit{}
	s.setCommitted(pos)
	s.next = pos + 1
	s.reader = s.o.log.NewReader(s.next)
	s.f.noteSuccess()
	return nil
}

func (s *txnSender) setCommitted(pos uint64) {
	s.committed = pos
	s.committedPos.Store(pos)
	s.o.markDone(pos)
}

// ensureTopic creates the positions topic if missing and picks the
// partition of our key.
func (s *txnSender) ensureTopic(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	topic := s.f.cfg.PositionsTopic
	for attempt := 0; attempt < 2; attempt++ {
		mreq := kmsg.NewPtrMetadataRequest()
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr(topic)
		mreq.Topics = append(mreq.Topics, mt)
		mresp, err := mreq.RequestWith(rctx, s.cl)
		if err != nil {
			return fmt.Errorf("metadata of positions topic %s: %w", topic, err)
		}
		if len(mresp.Topics) == 1 && mresp.Topics[0].ErrorCode == 0 && len(mresp.Topics[0].Partitions) > 0 {
			h := fnv.New32a()
			h.Write([]byte(s.key))
			s.partition = int32(h.Sum32() % uint32(len(mresp.Topics[0].Partitions)))
			return nil
		}
		if attempt > 0 {
			break
		}
		creq := kmsg.NewPtrCreateTopicsRequest()
		ct := kmsg.NewCreateTopicsRequestTopic()
		ct.Topic, ct.NumPartitions, ct.ReplicationFactor = topic, 1, -1
		cc := kmsg.NewCreateTopicsRequestTopicConfig()
		cc.Name, cc.Value = "cleanup.policy", kmsg.StringPtr("compact")
		ct.Configs = append(ct.Configs, cc)
		creq.Topics = append(creq.Topics, ct)
		creq.TimeoutMillis = int32(s.timeout.Milliseconds())
		cresp, err := creq.RequestWith(rctx, s.cl)
		if err != nil {
			return fmt.Errorf("create positions topic %s: %w", topic, err)
		}
		if len(cresp.Topics) == 1 {
			if err := kerr.ErrorForCode(cresp.Topics[0].ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
				return fmt.Errorf("create positions topic %s: %w", topic, err)
			}
		}
		s.logger.Info("created the kafka positions topic", "topic", topic)
	}
	return fmt.Errorf("positions topic %s: no partitions in metadata after creating it", topic)
}

// readPosition reads the positions partition read_committed up to the
// committed sync record at offset end, and returns the last position of
// our key before it.
func (s *txnSender) readPosition(ctx context.Context, end int64) (uint64, bool, error) {
	topic := s.f.cfg.PositionsTopic
	cl, err := kgo.NewClient(append(slices.Clone(s.f.opts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {s.partition: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return 0, false, fmt.Errorf("create positions reader: %w", err)
	}
	defer cl.Close()
	// Open transactions of other producers hold the partition's last
	// stable offset back, at most for their transaction timeout.
	rctx, cancel := context.WithTimeout(ctx, s.timeout+2*s.f.txnTimeout())
	defer cancel()
	var pos uint64
	found := false
	for {
		fs := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			return 0, false, fmt.Errorf("read positions topic %s partition %d up to offset %d: %w", topic, s.partition, end, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil && !kerr.IsRetriable(ferr) {
			return 0, false, fmt.Errorf("read positions topic %s: %w", topic, ferr)
		}
		reached := false
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end {
				reached = true
				return
			}
			if string(r.Key) != s.key {
				return
			}
			p, err := decodePosition(r.Value)
			if err != nil {
				s.logger.Warn("undecodable position record; ignored", "offset", r.Offset, "err", err)
				return
			}
			pos, found = p, true
		})
		if reached {
			return pos, found, nil
		}
	}
}

// flush sends what the producer buffered, bounded by one round's timeout
// (records carry their attempt's deadline as well).
func (s *txnSender) flush(ctx context.Context) error {
	fctx, cancel := s.graceCtx(ctx, s.timeout+5*time.Second)
	defer cancel()
	if err := s.cl.Flush(fctx); err != nil {
		s.stale = true
		return fmt.Errorf("flush transaction: %w", err)
	}
	return nil
}

// graceCtx bounds a step by timeout, and once ctx ended (shutdown) by
// shutdownGrace: the round in progress may finish, a stuck one does not
// hold the shutdown (its open transaction is aborted by the next start's
// InitProducerID, or by Kafka's transaction timeout).
func (s *txnSender) graceCtx(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(shutdownGrace, cancel)
		context.AfterFunc(gctx, func() { t.Stop() })
	})
	return gctx, func() { stop(); cancel() }
}

func (s *txnSender) commit(ctx context.Context) error {
	cctx, cancel := s.graceCtx(ctx, s.timeout)
	defer cancel()
	if err := s.cl.EndTransaction(cctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// round sends one transaction: entries after the committed position (up to
// the in-flight bounds, lingering for more), then the position record;
// commits if every record was written, else returns the first error (the
// caller aborts). n is the number of entries the round covered.
func (s *txnSender) round(ctx context.Context) (int, error) {
	var (
		mu       sync.Mutex
		firstErr error
		n        int
		bytes    int64
		last     = s.committed
		lingerAt time.Time
		at       *attempt
		produced int
	)
	defer func() {
		if at != nil {
			at.release()
		}
	}()
	begun := false
	for n < maxInflightRecords && bytes < inflightBatches*int64(s.f.cfg.BatchMaxBytes) {
		if !s.reader.Next() {
			if err := s.reader.Err(); err != nil {
				if errors.Is(err, wal.ErrClosed) {
					return 0, err
				}
				s.reader = s.o.log.NewReader(s.committed + 1)
				return 0, fmt.Errorf("read outbox %s at %d: %w", s.o.kind, s.next, err)
			}
			if n == 0 || !s.lingerMore(ctx, &lingerAt) {
				break
			}
			continue
		}
		idx := s.reader.Index()
		if idx <= last {
			continue
		}
		if s.probe != 0 {
			if idx == s.probe && n > 0 {
				// The entries before the probed one commit on their own.
				s.reader = s.o.log.NewReader(idx)
				break
			}
			if idx > s.probe && n == 0 {
				s.probe = 0 // dropped from disk meanwhile
			}
		}
		last = idx
		n++
		if s.skip[idx] {
			delete(s.skip, idx)
			continue
		}
		kr, err := s.dec.decode(s.reader.Record())
		if err != nil {
			s.o.undeliverable.Add(1)
			s.f.noteError(ErrKindDecode, err)
			s.logger.Error("outbox entry cannot be delivered; skipped", "index", idx, "reason", ErrKindDecode, "err", err)
			continue
		}
		if !begun {
			if err := s.cl.BeginTransaction(); err != nil {
				return 0, fmt.Errorf("begin transaction: %w", err)
			}
			begun = true
			at = newAttempt(context.WithoutCancel(ctx), s.timeout)
		}
		bytes += int64(len(s.reader.Record()))
		at.add()
		produced++
		s.f.sent.Add(1)
		a, i := at, idx
		s.cl.Produce(a.ctx, kr, func(_ *kgo.Record, err error) {
			if err = a.outcome(err); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = &recordErr{index: i, err: err}
				}
				mu.Unlock()
			}
			a.done()
		})
		if idx == s.probe {
			break // sent alone
		}
	}
	if n == 0 {
		return 0, nil
	}
	if !begun {
		// Only skipped entries: the position still moves, in a transaction
		// of its own.
		if err := s.cl.BeginTransaction(); err != nil {
			return 0, fmt.Errorf("begin transaction: %w", err)
		}
		at = newAttempt(context.WithoutCancel(ctx), s.timeout)
	}
	at.add()
	s.cl.Produce(at.ctx, &kgo.Record{Topic: s.f.cfg.PositionsTopic, Partition: s.partition, Key: []byte(s.key), Value: encodePosition(last, s.o.kind)},
		func(_ *kgo.Record, err error) {
			if err = at.outcome(err); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("produce position record: %w", err)
				}
				mu.Unlock()
			}
			at.done()
		})
	if err := s.flush(ctx); err != nil {
		return 0, err
	}
	mu.Lock()
	err := firstErr
	mu.Unlock()
	if err != nil {
		return 0, err
	}
	if err := s.commit(ctx); err != nil {
		s.pending = pendingCommit{last: last, produced: uint64(produced)}
		return 0, err
	}
	s.pending = pendingCommit{}
	s.f.txn.committed.Add(1)
	s.f.txn.records.Add(uint64(produced))
	s.o.acked.Add(uint64(produced))
	s.f.acked.Add(uint64(produced))
	if s.probe != 0 && last >= s.probe {
		s.probe = 0
	}
	s.failures = 0
	s.setCommitted(last)
	s.next = last + 1
	s.f.noteSuccess()
	return n, nil
}

func (s *txnSender) lingerMore(ctx context.Context, end *time.Time) bool {
	return (&sender{o: s.o, linger: s.f.cfg.Linger}).lingerMore(ctx, end)
}
