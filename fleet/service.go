package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Service is one fleet instance. Any number run in one consumer group;
// each owns the fleet keys of the repartition partitions assigned to it.
type Service struct {
	cfg FleetConfig
	log *slog.Logger
	now func() time.Time

	// Tuning that tests shorten.
	sessionTimeout time.Duration
	txnTimeout     time.Duration
	tick           time.Duration

	nRepart, nOut, nChangelog int32 // partition counts, learnt at start

	mu       sync.Mutex
	windows  map[string]*windowState
	lineages map[string]*lineageState
	linPart  map[string]int32
	gwSeen   map[string]gatewaySeen

	// The group callbacks touch only these, under their own lock, so a
	// rebalance never waits for a merge or a restore holding mu.
	cbMu    sync.Mutex
	owned   map[int32]bool // repartition partitions assigned
	pending map[int32]bool // owned, state not yet restored
	dropped map[int32]bool // revoked or lost, state not yet dropped

	admin *kgo.Client
	view  *view
	m     metrics
	ready atomic.Bool
}

type gatewaySeen struct {
	LastSeen   time.Time `json:"last_seen"`
	LastEndNs  int64     `json:"last_window_end_ns"`
	Records    uint64    `json:"records"`
	LagSeconds float64   `json:"lag_seconds"`
}

type metrics struct {
	rekeyed, invalid, duplicates, merged, closedComplete, closedGrace atomic.Uint64
	lateCorrections, tooLate, expired, restores, restoredRecords      atomic.Uint64
	aborts, outputs, committed                                        atomic.Uint64
}

// New returns a service for cfg; log may be nil.
func New(cfg Config, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{cfg: cfg.Fleet, log: log, now: time.Now,
		sessionTimeout: cfg.Fleet.SessionTimeout, txnTimeout: cfg.Fleet.TransactionTimeout, tick: time.Second,
		windows: map[string]*windowState{}, lineages: map[string]*lineageState{}, linPart: map[string]int32{},
		owned: map[int32]bool{}, pending: map[int32]bool{}, dropped: map[int32]bool{}, gwSeen: map[string]gatewaySeen{},
		view: newView()}
}

func (s *Service) seeds() kgo.Opt { return kgo.SeedBrokers(s.cfg.Brokers...) }

// Run runs the instance until ctx ends: the re-key stage, the merge stage
// and the HTTP API. It returns nil when ctx ended, else the first error.
func (s *Service) Run(ctx context.Context) error {
	admin, err := kgo.NewClient(s.seeds())
	if err != nil {
		return fmt.Errorf("fleet: kafka client: %w", err)
	}
	defer admin.Close()
	s.admin = admin
	if err := s.ensureTopics(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	start := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("fleet %s: %w", name, err)
				cancel()
			}
		})
	}
	start("rekey", s.rekeyLoop)
	start("merge", s.mergeLoop)
	start("view", func(ctx context.Context) error { return s.viewLoop(ctx, s.view) })
	if s.cfg.HTTP != "" {
		srv := &http.Server{Addr: s.cfg.HTTP, Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
		start("http", func(ctx context.Context) error {
			go func() { <-ctx.Done(); srv.Close() }()
			if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// ensureTopics creates the fleet's topics when missing (the changelog and
// the output compacted) and learns the partition counts.
func (s *Service) ensureTopics(ctx context.Context) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 30000
	for _, t := range []struct {
		name    string
		compact bool
	}{{s.cfg.Topics.Repartition, false}, {s.cfg.Topics.Changelog, true}, {s.cfg.Topics.Output, true}} {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = t.name, int32(s.cfg.Partitions), -1
		if t.compact {
			c := kmsg.NewCreateTopicsRequestTopicConfig()
			c.Name, c.Value = "cleanup.policy", kmsg.StringPtr("compact")
			rt.Configs = append(rt.Configs, c)
		}
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, s.admin)
	if err != nil {
		return fmt.Errorf("fleet: create topics: %w", err)
	}
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("fleet: create topic %s: %w", t.Topic, err)
		}
	}
	mreq := kmsg.NewPtrMetadataRequest()
	for _, n := range []string{s.cfg.Topics.Repartition, s.cfg.Topics.Changelog, s.cfg.Topics.Output} {
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr(n)
		mreq.Topics = append(mreq.Topics, mt)
	}
	mresp, err := mreq.RequestWith(ctx, s.admin)
	if err != nil {
		return fmt.Errorf("fleet: topic metadata: %w", err)
	}
	counts := map[string]int32{}
	for _, t := range mresp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return fmt.Errorf("fleet: metadata of %s: %w", *t.Topic, err)
		}
		counts[*t.Topic] = int32(len(t.Partitions))
	}
	s.nRepart, s.nOut, s.nChangelog = counts[s.cfg.Topics.Repartition], counts[s.cfg.Topics.Output], counts[s.cfg.Topics.Changelog]
	if c := counts[s.cfg.Topics.Changelog]; c < s.nRepart || s.nRepart == 0 || s.nOut == 0 {
		return fmt.Errorf("fleet: topic %s has %d partitions, %s %d: the changelog needs at least the repartition topic's",
			s.cfg.Topics.Changelog, c, s.cfg.Topics.Repartition, s.nRepart)
	}
	return nil
}

// partitionOf places a fleet window by its lineage, so a window and the
// one before it (the completeness rule) live on the same instance.
func (s *Service) partitionOf(lineage string) int32 {
	return int32(xxhash.Sum64String(lineage) % uint64(s.nRepart))
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// rekeyLoop is the first stage: gateway records in, the same records out
// to the repartition topic keyed by fleet key, exactly once.
func (s *Service) rekeyLoop(ctx context.Context) error {
	sess, err := kgo.NewGroupTransactSession(s.seeds(),
		kgo.ConsumerGroup(s.cfg.Group+".rekey"),
		kgo.ConsumeTopics(s.cfg.Topics.Summaries, s.cfg.Topics.Sketches),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.TransactionalID(s.cfg.Group+".rekey."+s.cfg.Instance),
		kgo.TransactionTimeout(s.txnTimeout),
		kgo.SessionTimeout(s.sessionTimeout), kgo.HeartbeatInterval(s.sessionTimeout/5),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	if err != nil {
		return fmt.Errorf("rekey session: %w", err)
	}
	defer sess.Close()
	for {
		fs := sess.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			s.log.Warn("fleet rekey fetch", "topic", t, "partition", p, "err", err)
		})
		if fs.NumRecords() == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("rekey begin: %w", err)
		}
		var failed atomic.Bool
		fs.EachRecord(func(r *kgo.Record) {
			in, err := decodeInput(r.Value, s.cfg.GroupBy)
			if err != nil {
				s.m.invalid.Add(1)
				s.log.Warn("fleet drops a record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
				return
			}
			hs := append([]kgo.RecordHeader(nil), r.Headers...)
			if _, ok := header(r, "runnel-id"); !ok {
				// At-least-once input without ids: the value identifies it.
				hs = append(hs, kgo.RecordHeader{Key: "runnel-id", Value: []byte(messageID(string(r.Value)))})
			}
			out := &kgo.Record{Topic: s.cfg.Topics.Repartition, Partition: s.partitionOf(in.lineage),
				Key: []byte(in.key), Value: r.Value, Headers: hs}
			sess.Produce(ctx, out, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Store(true)
				}
			})
			s.m.rekeyed.Add(1)
		})
		try := kgo.TryCommit
		if err := sess.Client().Flush(ctx); err != nil || failed.Load() {
			try = kgo.TryAbort
		}
		if committed, err := sess.End(ctx, try); err != nil || !committed {
			s.m.aborts.Add(1)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("fleet rekey transaction aborted", "err", err)
			}
		}
	}
}
