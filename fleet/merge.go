package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Changelog keys: a window's key (starting "s|" or "k|") holds its state;
// lineagePrefix+lineage a lineage; idPrefix+window key+"|"+runnel-id one
// merged record's id (its value is "1").
const (
	lineagePrefix = "L|"
	idPrefix      = "I|"
)

func idKey(window, id string) string { return idPrefix + window + "|" + id }

// parseIDKey splits an id key; ids are hex, so the last '|' ends the
// window key.
func parseIDKey(k string) (window, id string, ok bool) {
	rest, ok := strings.CutPrefix(k, idPrefix)
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '|')
	if i < 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

type idRec struct {
	window, id string
	part       int32
}

// batch collects what one transaction writes.
type batch struct {
	state    map[string]*windowState // changelog: window state
	outputs  map[string]*windowState // runnel.fleet: closed or corrected windows
	lineages map[string]*lineageState
	deleted  map[string]int32 // changelog tombstones, key -> partition
	ids      []idRec          // new de-duplication ids
}

func newBatch() *batch {
	return &batch{state: map[string]*windowState{}, outputs: map[string]*windowState{},
		lineages: map[string]*lineageState{}, deleted: map[string]int32{}}
}

func (b *batch) empty() bool {
	return len(b.state)+len(b.outputs)+len(b.lineages)+len(b.deleted)+len(b.ids) == 0
}

// mergeLoop is the second stage: the repartition topic in, fleet windows
// out to runnel.fleet with their state to the changelog, in one
// transaction per poll.
func (s *Service) mergeLoop(ctx context.Context) error {
	sess, err := kgo.NewGroupTransactSession(s.seeds(),
		kgo.ConsumerGroup(s.cfg.Group+".merge"),
		kgo.ConsumeTopics(s.cfg.Topics.Repartition),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.TransactionalID(s.cfg.Group+".merge."+s.cfg.Instance),
		kgo.TransactionTimeout(s.txnTimeout),
		kgo.SessionTimeout(s.sessionTimeout), kgo.HeartbeatInterval(s.sessionTimeout/5),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			s.cbMu.Lock()
			defer s.cbMu.Unlock()
			for _, p := range m[s.cfg.Topics.Repartition] {
				s.owned[p], s.pending[p] = true, true
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.drop(m) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.drop(m) }),
	)
	if err != nil {
		return fmt.Errorf("merge session: %w", err)
	}
	defer sess.Close()
	s.ready.Store(true)
	defer s.ready.Store(false)
	for {
		pctx, cancel := context.WithTimeout(ctx, s.tick)
		fs := sess.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errorsIsDeadline(err) {
				s.log.Warn("fleet merge fetch", "topic", t, "partition", p, "err", err)
			}
		})
		s.mu.Lock()
		s.dropState()
		if err := s.restorePending(ctx); err != nil {
			s.mu.Unlock()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		b := newBatch()
		fs.EachRecord(func(r *kgo.Record) { s.apply(r, b) })
		s.sweep(b)
		if b.empty() && fs.NumRecords() == 0 {
			s.mu.Unlock()
			continue
		}
		if err := sess.Begin(); err != nil {
			s.mu.Unlock()
			return fmt.Errorf("merge begin: %w", err)
		}
		var failed atomic.Bool
		s.produce(ctx, sess, b, &failed)
		s.mu.Unlock()
		try := kgo.TryCommit
		if err := sess.Client().Flush(ctx); err != nil || failed.Load() {
			try = kgo.TryAbort
		}
		committed, err := sess.End(ctx, try)
		if err == nil && committed {
			s.m.outputs.Add(uint64(len(b.outputs)))
			s.m.committed.Add(uint64(fs.NumRecords()))
			continue
		}
		// The transaction's changelog writes are gone and the session
		// rewinds to the committed offsets: state is rebuilt from the
		// changelog, as after a rebalance.
		s.m.aborts.Add(1)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("fleet merge transaction aborted", "err", err)
		}
		s.mu.Lock()
		clear(s.windows)
		clear(s.lineages)
		clear(s.linPart)
		s.mu.Unlock()
		s.cbMu.Lock()
		for p := range s.owned {
			s.pending[p] = true
		}
		s.cbMu.Unlock()
	}
}

func errorsIsDeadline(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// drop records revoked or lost partitions; the loop forgets their state
// (dropState) and their new owner restores it from the changelog.
func (s *Service) drop(m map[string][]int32) {
	s.cbMu.Lock()
	defer s.cbMu.Unlock()
	for _, p := range m[s.cfg.Topics.Repartition] {
		delete(s.owned, p)
		delete(s.pending, p)
		s.dropped[p] = true
	}
}

// dropState forgets the state of dropped partitions. s.mu is held.
func (s *Service) dropState() {
	s.cbMu.Lock()
	dropped := maps.Clone(s.dropped)
	clear(s.dropped)
	s.cbMu.Unlock()
	for p := range dropped {
		for k, w := range s.windows {
			if w.part == p {
				delete(s.windows, k)
			}
		}
		for k, lp := range s.linPart {
			if lp == p {
				delete(s.linPart, k)
				delete(s.lineages, k)
			}
		}
	}
}

// apply merges one repartitioned record into its fleet window.
func (s *Service) apply(r *kgo.Record, b *batch) {
	id, _ := header(r, "runnel-id")
	in, err := decodeInput(r.Value, s.cfg.GroupBy)
	if err != nil {
		s.m.invalid.Add(1)
		return
	}
	now := s.now()
	s.seen(&in, now)
	w := s.windows[in.key]
	if w == nil {
		start := in.startNs()
		if l := s.lineages[in.lineage]; l != nil && l.StartNs >= start {
			// Its window closed and expired (retain): too late to correct.
			s.m.tooLate.Add(1)
			return
		}
		w = newWindow(&in, r.Partition, now)
		s.windows[in.key] = w
	}
	if _, dup := w.IDs[id]; dup {
		s.m.duplicates.Add(1)
		return
	}
	if err := w.merge(&in); err != nil {
		s.m.invalid.Add(1)
		s.log.Warn("fleet cannot merge a record", "key", in.key, "err", err)
		return
	}
	w.IDs[id] = struct{}{}
	b.ids = append(b.ids, idRec{w.Key, id, w.part})
	s.m.merged.Add(1)
	b.state[w.Key] = w
	if w.Closed != "" {
		w.Revision++
		w.Late++
		s.m.lateCorrections.Add(1)
		b.outputs[w.Key] = w
	}
}

func (in *input) startNs() int64 {
	if in.summary != nil {
		return in.summary.StartNs
	}
	return in.sketch.StartNs
}

func (s *Service) seen(in *input, now time.Time) {
	g := s.gwSeen[in.gateway]
	g.LastSeen = now
	g.Records++
	end := in.startNs()
	if in.summary != nil {
		end = in.summary.EndNs
	} else {
		end = in.sketch.EndNs
	}
	if end > g.LastEndNs {
		g.LastEndNs = end
	}
	g.LagSeconds = now.Sub(time.Unix(0, g.LastEndNs)).Seconds()
	s.gwSeen[in.gateway] = g
}

// sweep closes the open windows that are complete or past grace, and
// forgets closed ones past retain.
func (s *Service) sweep(b *batch) {
	now := s.now()
	for _, w := range sortedWindows(s.windows) {
		if w.Closed != "" {
			if now.UnixNano()-w.ClosedAtNs >= int64(s.cfg.Retain) {
				delete(s.windows, w.Key)
				delete(b.state, w.Key)
				delete(b.outputs, w.Key)
				b.deleted[w.Key] = w.part
				for id := range w.IDs {
					b.deleted[idKey(w.Key, id)] = w.part
				}
				s.m.expired.Add(1)
			}
			continue
		}
		l := s.lineages[w.Lineage]
		switch {
		case w.complete(l):
			w.Closed = "complete"
			s.m.closedComplete.Add(1)
		case now.UnixNano()-w.FirstSeenNs >= int64(s.cfg.Grace):
			w.Closed = "grace"
			s.m.closedGrace.Add(1)
		default:
			continue
		}
		w.ClosedAtNs = now.UnixNano()
		b.state[w.Key], b.outputs[w.Key] = w, w
		if l == nil || w.StartNs > l.StartNs {
			l = &lineageState{Lineage: w.Lineage, StartNs: w.StartNs, Gateways: maps.Clone(w.Gateways)}
			s.lineages[w.Lineage], s.linPart[w.Lineage] = l, w.part
			b.lineages[w.Lineage] = l
		}
	}
}

// produce writes the batch inside the open transaction: changelog records
// to the window's own partition number, outputs keyed by fleet key.
func (s *Service) produce(ctx context.Context, sess *kgo.GroupTransactSession, b *batch, failed *atomic.Bool) {
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.Store(true)
		}
	}
	cl := s.cfg.Topics.Changelog
	for _, k := range slices.Sorted(maps.Keys(b.state)) {
		w := b.state[k]
		w.encode()
		sess.Produce(ctx, &kgo.Record{Topic: cl, Partition: w.part, Key: []byte(k),
			Value: marshal(changelogValue{Window: w})}, promise)
	}
	for _, r := range b.ids {
		sess.Produce(ctx, &kgo.Record{Topic: cl, Partition: r.part, Key: []byte(idKey(r.window, r.id)),
			Value: []byte("1")}, promise)
	}
	for _, k := range slices.Sorted(maps.Keys(b.lineages)) {
		sess.Produce(ctx, &kgo.Record{Topic: cl, Partition: s.linPart[k], Key: []byte(lineagePrefix + k),
			Value: marshal(changelogValue{Lineage: b.lineages[k]})}, promise)
	}
	for _, k := range slices.Sorted(maps.Keys(b.deleted)) {
		sess.Produce(ctx, &kgo.Record{Topic: cl, Partition: b.deleted[k], Key: []byte(k)}, promise)
	}
	for _, k := range slices.Sorted(maps.Keys(b.outputs)) {
		w := b.outputs[k]
		if _, ok := b.state[k]; !ok {
			w.encode()
		}
		o := w.output(s.cfg.GroupBy)
		sess.Produce(ctx, &kgo.Record{Topic: s.cfg.Topics.Output, Partition: w.part % s.nOut, Key: []byte(k),
			Value: marshal(o), Headers: []kgo.RecordHeader{
				{Key: "runnel-id", Value: []byte(messageID(k, fmt.Sprint(w.Revision)))},
				{Key: "runnel-schema", Value: []byte(schemaFleet)},
			}}, promise)
	}
}

// restorePending rebuilds the state of newly owned partitions from the
// changelog, read_committed up to its last stable offset: the state that
// matches the input offsets the group committed with it. s.mu is held.
func (s *Service) restorePending(ctx context.Context) error {
	s.cbMu.Lock()
	parts := slices.Sorted(maps.Keys(s.pending))
	s.cbMu.Unlock()
	if len(parts) == 0 {
		return nil
	}
	ends, err := s.stableEnds(ctx, parts)
	if err != nil {
		return err
	}
	offsets := map[int32]kgo.Offset{}
	for _, p := range parts {
		if ends[p] > 0 {
			offsets[p] = kgo.NewOffset().AtStart()
		}
	}
	s.m.restores.Add(1)
	if len(offsets) > 0 {
		ids := map[string]map[string]struct{}{}
		if err := s.readChangelog(ctx, offsets, ends, ids); err != nil {
			return err
		}
		// Ids attach after the whole read: compaction may leave an id's
		// record before its window's latest state record.
		for wk, set := range ids {
			if w := s.windows[wk]; w != nil {
				maps.Copy(w.IDs, set)
			}
		}
	}
	s.cbMu.Lock()
	for _, p := range parts {
		delete(s.pending, p)
	}
	s.cbMu.Unlock()
	return nil
}

// stableEnds lists the changelog partitions' last stable offsets.
func (s *Service) stableEnds(ctx context.Context, parts []int32) (map[int32]int64, error) {
	ends, err := s.listOffsets(ctx, s.cfg.Topics.Changelog, parts, -1)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	return ends, nil
}

// readChangelog applies the changelog partitions up to ends (exclusive).
// Control records are kept so the end is seen even when a transaction
// marker is the last offset before it.
func (s *Service) readChangelog(ctx context.Context, offsets map[int32]kgo.Offset, ends map[int32]int64, ids map[string]map[string]struct{}) error {
	cl, err := kgo.NewClient(s.seeds(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{s.cfg.Topics.Changelog: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return fmt.Errorf("restore: changelog client: %w", err)
	}
	defer cl.Close()
	left := maps.Clone(offsets)
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for len(left) > 0 {
		fs := cl.PollFetches(rctx)
		if rctx.Err() != nil {
			return fmt.Errorf("restore: changelog partitions %v not read to their end: %w", slices.Sorted(maps.Keys(left)), rctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			end := ends[r.Partition]
			if r.Offset >= end {
				return
			}
			if r.Offset >= end-1 {
				delete(left, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			s.m.restoredRecords.Add(1)
			s.restoreRecord(r, ids)
		})
	}
	return nil
}

func (s *Service) restoreRecord(r *kgo.Record, ids map[string]map[string]struct{}) {
	k := string(r.Key)
	if wk, id, ok := parseIDKey(k); ok {
		if len(r.Value) == 0 {
			delete(ids[wk], id)
			return
		}
		if ids[wk] == nil {
			ids[wk] = map[string]struct{}{}
		}
		ids[wk][id] = struct{}{}
		return
	}
	if len(r.Value) == 0 {
		delete(s.windows, k)
		if lin, ok := strings.CutPrefix(k, lineagePrefix); ok {
			delete(s.lineages, lin)
			delete(s.linPart, lin)
		}
		return
	}
	var v changelogValue
	if err := json.Unmarshal(r.Value, &v); err != nil {
		s.log.Error("fleet changelog record unreadable", "key", k, "err", err)
		return
	}
	if v.Window != nil {
		if err := v.Window.decode(r.Partition); err != nil {
			s.log.Error("fleet changelog window unreadable", "key", k, "err", err)
			return
		}
		s.windows[k] = v.Window
	}
	if v.Lineage != nil {
		s.lineages[v.Lineage.Lineage] = v.Lineage
		s.linPart[v.Lineage.Lineage] = r.Partition
	}
}
