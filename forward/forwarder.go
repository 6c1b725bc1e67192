package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Bounds of what one outbox keeps in flight (handed to the producer, not
// yet acknowledged): they bound the forwarder's memory, whatever the
// backlog on disk.
const (
	maxInflightRecords = 8192
	// inflightBatches: bytes in flight, this many batch_max_bytes. Their
	// records are held decoded (and as kgo records) until the round's
	// outcomes are in, so this is most of the forwarder's memory; but a
	// round costs a round trip whatever its size, so it also sets the
	// rate. Measured on the 2-core VM: draining 1M summaries to kfake
	// (BenchmarkBacklogDrain1M), 4 batches 31-35 MiB of peak heap at
	// 131-209k records/s, 2 batches 26-27 MiB at 124-198k/s, 1 batch
	// 22 MiB at 78k/s; in make bench's forward phase (kfake beside the
	// load generator), 2 batches acknowledged 53k summaries/s where 4
	// kept up with 87k/s.
	inflightBatches = 4
)

// shutdownGrace bounds how long Run, once its ctx ended, waits for records
// already handed to the producer ("the forwarder ends its current batch");
// what is still unacknowledged then stays in the outbox.
const shutdownGrace = 5 * time.Second

// The uplink probe: a metadata request whenever Kafka has not been heard
// from (an acknowledgement or an answered probe) for probeEvery, given
// probeTimeout (at most request_timeout) to answer. A Kafka that goes
// silent (connections open, no answers: a paused broker, a black-holed
// link) is thus reported down within probeEvery+probeTimeout (8s), long
// before a delivery attempt times out (request_timeout, 30s by default),
// and up again on the first probe it answers. Idle, a gateway sends one
// small metadata request every probeEvery.
const (
	probeEvery   = 3 * time.Second
	probeTimeout = 5 * time.Second
)

// Forwarder drains outboxes to Kafka: one delivery loop per outbox over one
// shared producer client. See the package documentation for the delivery
// guarantees.
type Forwarder struct {
	cfg      KafkaConfig
	logger   *slog.Logger
	outboxes []*Outbox
	topics   []string // per outbox: its kind's topic
	enabled  bool
	opts     []kgo.Opt
	hook     *wireHook
	running  atomic.Bool
	rnd      func(int64) int64

	sent, acked, retries atomic.Uint64
	connected            atomic.Bool
	lastSuccess          atomic.Int64 // unix ns
	lastContact          atomic.Int64 // unix ns: last acknowledgement or answered probe
	probes, probeFails   atomic.Uint64

	// exactly_once mode
	txn                txnStats
	txnSenders         []*txnSender  // set by Run, read by Status
	txnSendersMu       sync.Mutex    // guards txnSenders
	txnTimeoutOverride time.Duration // tests: a shorter transaction timeout

	mu        sync.Mutex // guards the fields below
	lastErr   string
	lastErrAt time.Time
	errs      map[string]uint64
}

// Status is a snapshot of the forwarder, for /metrics, /readyz and the
// dashboard.
type Status struct {
	Enabled bool // brokers are configured
	// Connected: the last delivery or probe reached Kafka. False before
	// the first one and while attempts fail.
	Connected   bool
	LastSuccess time.Time // last acknowledgement from Kafka
	LastError   string
	LastErrorAt time.Time
	Sent        uint64 // records handed to the producer, resends included
	Acked       uint64 // records Kafka acknowledged
	Retries     uint64 // delivery attempts that followed a failed one
	// Probes of the uplink (metadata requests while Kafka was not heard
	// from for a while), and those that failed or got no answer in time.
	Probes, ProbeFailures uint64
	Errors                map[string]uint64 // failed attempts (and dropped records) by kind: ErrKind*
	// What reached Kafka, as the producer wrote it.
	WireBatches, WireRecords uint64
	WireBytes                uint64 // compressed batch bytes
	RawBytes                 uint64 // the same records before compression
	Outboxes                 map[string]OutboxStats

	// Delivery is the kafka.delivery mode: at_least_once or exactly_once.
	Delivery string
	// exactly_once only. Fenced: another producer with the same
	// transactional id (a second gateway process with this gateway's id)
	// took over at least one outbox, which this process no longer
	// forwards; FencedReason says which and why. Restart the gateway once
	// the other one is gone.
	Fenced       bool
	FencedReason string
	// Transactions committed and aborted (each failed round or sync is
	// aborted and redone), and producers fenced; TxnRecords are the
	// records the committed transactions carried.
	TxnCommitted, TxnAborted, TxnFenced, TxnRecords uint64
	// Committed is, per outbox kind, the outbox index up to which Kafka
	// committed (the position record of the last committed transaction).
	Committed map[string]uint64
}

// New validates cfg and prepares a forwarder for the outboxes; one outbox
// per kind (summaries, alerts, sketches). It reads the TLS files but opens
// no connection and starts no goroutine. With no brokers configured the
// forwarder is disabled: Run just waits.
func New(cfg KafkaConfig, outboxes []*Outbox, logger *slog.Logger) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "runnel"
	}
	f := &Forwarder{
		cfg: cfg, logger: logger, enabled: len(cfg.Brokers) > 0,
		hook: &wireHook{}, rnd: randInt64N, errs: make(map[string]uint64),
	}
	seen := make(map[string]bool)
	for _, o := range outboxes {
		if o == nil {
			return nil, errors.New("forward: nil outbox")
		}
		topic, ok := cfg.Topics.For(o.kind)
		if !ok {
			return nil, fmt.Errorf("forward: outbox kind %q has no topic (want %s, %s or %s)", o.kind, KindSummaries, KindAlerts, KindSketches)
		}
		if seen[o.kind] {
			return nil, fmt.Errorf("forward: two outboxes of kind %q", o.kind)
		}
		seen[o.kind] = true
		f.outboxes = append(f.outboxes, o)
		f.topics = append(f.topics, topic)
	}
	if !f.enabled {
		return f, nil
	}
	opts, err := clientOpts(cfg, maxInflightRecords+16, logger, f.hook)
	if err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	f.opts = opts
	if cfg.SASL.Mechanism == SASLPlain && !cfg.TLS.Enabled {
		logger.Warn("kafka sasl PLAIN without tls sends the password in clear text")
	}
	if cfg.Compression == "none" && cfg.BatchMaxBytes > 1000012 {
		logger.Warn("uncompressed batches may exceed the broker's default max.message.bytes (1000012); records would be retried one by one",
			"batch_max_bytes", cfg.BatchMaxBytes)
	}
	return f, nil
}

// ErrRunning is returned by a second concurrent Run.
var ErrRunning = errors.New("forward: already running")

// Run delivers the outboxes until ctx ends, then lets records already in
// flight finish (up to shutdownGrace), closes the producer and returns nil.
// A broken uplink is never an error: it is retried forever with backoff
// while the outboxes keep filling within their quotas. It returns an error
// only when the producer cannot be created from the config. Stop Run
// before closing the outboxes.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer f.running.Store(false)
	if !f.enabled {
		<-ctx.Done()
		return nil
	}
	for i, o := range f.outboxes {
		if !o.attach() {
			for _, p := range f.outboxes[:i] {
				p.detach()
			}
			return fmt.Errorf("forward: outbox %s is already drained by another forwarder", o.kind)
		}
	}
	defer func() {
		for _, o := range f.outboxes {
			o.detach()
		}
	}()
	exactly := f.cfg.Delivery == DeliveryExactlyOnce
	// One client per outbox: a sender's rounds must not be flushed by
	// another's (see sender). In exactly_once mode each txnSender makes
	// its own transactional client.
	clients := make([]*kgo.Client, len(f.outboxes))
	for i := range f.outboxes {
		if exactly {
			break
		}
		cl, err := kgo.NewClient(f.opts...)
		if err != nil {
			for _, c := range clients[:i] {
				c.Close()
			}
			return fmt.Errorf("create kafka producer: %w", err)
		}
		clients[i] = cl
	}
	f.logger.Info("forwarding to kafka", "brokers", f.cfg.Brokers, "client_id", f.cfg.ClientID, "compression", f.cfg.Compression,
		"delivery", f.delivery())
	senders := make([]*sender, len(f.outboxes))
	var wg sync.WaitGroup
	if exactly {
		tss := make([]*txnSender, len(f.outboxes))
		for i, o := range f.outboxes {
			tss[i] = newTxnSender(f, o, f.topics[i])
		}
		f.txnSendersMu.Lock()
		f.txnSenders = tss
		f.txnSendersMu.Unlock()
		for _, ts := range tss {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ts.run(ctx)
			}()
		}
	}
	for i, o := range f.outboxes {
		if exactly {
			break
		}
		senders[i] = newSender(f, clients[i], o, f.topics[i])
		wg.Add(1)
		go func(s *sender) {
			defer wg.Done()
			s.run(ctx)
		}(senders[i])
	}
	// The probe has a client of its own, whose connection setup is bounded
	// by the probe's timeout: kgo does not let a request's context cut
	// short dialing and the version handshake of a new connection (bounded
	// by the dial timeout and the request timeout overhead, 10s each by
	// default), and a silent broker stalls exactly there.
	timeout := min(probeTimeout, f.cfg.RequestTimeout)
	probeCl, err := kgo.NewClient(append(slices.Clone(f.opts), kgo.DialTimeout(timeout), kgo.RequestTimeoutOverhead(timeout))...)
	if err != nil {
		f.logger.Warn("create kafka probe client; the uplink state follows deliveries only", "err", err)
	} else {
		// Closed as soon as ctx ends, so a probe in a connection setup does
		// not hold the shutdown.
		closeProbe := sync.OnceFunc(probeCl.Close)
		defer context.AfterFunc(ctx, closeProbe)()
		defer closeProbe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.probe(ctx, probeCl, timeout)
		}()
	}
	wg.Wait()
	for i, cl := range clients {
		if cl == nil {
			continue
		}
		cl.Close()
		senders[i].finish()
	}
	return nil
}

// probe keeps Connected meaningful while nothing is acknowledged: a
// metadata request (Ping) once Kafka has not been heard from for
// probeEvery, bounded by probeTimeout. A delivery attempt against a silent
// broker only fails at request_timeout; the probe reports it down sooner.
func (f *Forwarder) probe(ctx context.Context, cl *kgo.Client, timeout time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if since := time.Since(time.Unix(0, f.lastContact.Load())); since < probeEvery {
			t.Reset(probeEvery - since) // heard from lately: probe when that gets old
			continue
		}
		f.probes.Add(1)
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := cl.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			f.probeFails.Add(1)
			f.connected.Store(false)
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("kafka did not answer a metadata request within %s (silent broker or link)", timeout)
			}
			f.setLastError(fmt.Errorf("probe: %w", err))
			t.Reset(probeEvery)
			continue
		}
		f.lastContact.Store(time.Now().UnixNano())
		f.connected.Store(true)
		t.Reset(probeEvery)
	}
}

func (f *Forwarder) noteError(kind string, err error) {
	f.mu.Lock()
	f.errs[kind]++
	f.mu.Unlock()
	f.setLastError(err)
}

func (f *Forwarder) setLastError(err error) {
	f.mu.Lock()
	f.lastErr, f.lastErrAt = err.Error(), time.Now()
	f.mu.Unlock()
}

func (f *Forwarder) noteSuccess() {
	now := time.Now().UnixNano()
	f.lastSuccess.Store(now)
	f.lastContact.Store(now)
	f.connected.Store(true)
}

// Status returns a snapshot. Safe for concurrent use.
func (f *Forwarder) Status() Status {
	s := Status{
		Enabled: f.enabled, Connected: f.connected.Load(),
		Sent: f.sent.Load(), Acked: f.acked.Load(), Retries: f.retries.Load(),
		Probes: f.probes.Load(), ProbeFailures: f.probeFails.Load(),
		WireBatches: f.hook.batches.Load(), WireRecords: f.hook.records.Load(),
		WireBytes: f.hook.wireBytes.Load(), RawBytes: f.hook.rawBytes.Load(),
		Outboxes: make(map[string]OutboxStats, len(f.outboxes)),
	}
	if ns := f.lastSuccess.Load(); ns != 0 {
		s.LastSuccess = time.Unix(0, ns)
	}
	f.mu.Lock()
	s.LastError, s.LastErrorAt = f.lastErr, f.lastErrAt
	s.Errors = maps.Clone(f.errs)
	f.mu.Unlock()
	for _, o := range f.outboxes {
		s.Outboxes[o.kind] = o.Stats()
	}
	s.Delivery = f.delivery()
	if s.Delivery == DeliveryExactlyOnce {
		s.TxnCommitted, s.TxnAborted = f.txn.committed.Load(), f.txn.aborted.Load()
		s.TxnFenced, s.TxnRecords = f.txn.fenced.Load(), f.txn.records.Load()
		s.Committed = make(map[string]uint64, len(f.outboxes))
		f.txnSendersMu.Lock()
		for _, ts := range f.txnSenders {
			s.Committed[ts.o.kind] = ts.committedPos.Load()
			if r := ts.fenced.Load(); r != nil {
				s.Fenced = true
				if s.FencedReason != "" {
					s.FencedReason += "; "
				}
				s.FencedReason += *r
			}
		}
		f.txnSendersMu.Unlock()
	}
	return s
}

func (f *Forwarder) delivery() string {
	if f.cfg.Delivery == "" {
		return DeliveryAtLeastOnce
	}
	return f.cfg.Delivery
}
