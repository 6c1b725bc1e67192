package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The HTTP API answers every query alike on every instance, whoever owns
// the fleet keys: it never reads the instance's own merge state, only a
// view that each instance keeps of two topics every instance can read,
// read_committed, all partitions:
//
//   - runnel.fleet (the output): the latest record per key, the closed
//     windows ending within fleet.retain of the newest;
//   - the changelog: the latest committed state of every open window, the
//     same state a new owner restores from. A window leaves this part when
//     its output record (or a tombstone) is read; its closing state
//     answers until then, as the two topics are read in any order.
//
// So an answer holds what the merge transactions committed (never a merge
// that may still abort), lags the owner by one transaction, and survives
// the owner's crash. The cost, as a Kafka Streams standby replica of every
// partition: each instance reads the whole changelog and holds every open
// window's state, with its sketches still encoded (rendered once per
// change, on the first query that needs it). Nothing is forwarded between
// instances, so no answer depends on another instance being reachable.
//
// Until the view has read both topics up to their last stable offsets of
// its start, answers carry "partial": true.

// view is the read side of the HTTP API. Its lock is taken after s.mu
// where both are held (never the other way).
type view struct {
	mu      sync.Mutex
	windows map[string]Output      // closed, from the output topic
	open    map[string]*openWindow // from the changelog: open, or closed until its output record is read
	newest  int64                  // the latest window end seen

	// pending are the partitions not yet read up to their target, the
	// last stable offset when the view started; caughtUp is set once
	// none is left.
	pending  map[topicPart]int64
	caughtUp atomic.Bool
}

type topicPart struct {
	topic string
	part  int32
}

// openWindow is an open window's latest committed state; out is rendered
// from it on the first query after it changed (w is then dropped).
type openWindow struct {
	w   *windowState
	out Output
}

func newView() *view {
	return &view{windows: map[string]Output{}, open: map[string]*openWindow{}}
}

// prune forgets windows that ended more than horizon before the newest.
func (v *view) prune(horizon time.Duration) {
	for k, o := range v.windows {
		if o.EndNs < v.newest-int64(horizon) {
			delete(v.windows, k)
		}
	}
}

// reached notes that the view has read offset of topic/part. v.mu is held.
func (v *view) reached(topic string, part int32, offset int64) {
	tp := topicPart{topic, part}
	if target, ok := v.pending[tp]; ok && offset+1 >= target {
		delete(v.pending, tp)
		if len(v.pending) == 0 {
			v.caughtUp.Store(true)
		}
	}
}

// applyOutput keeps a runnel.fleet record. v.mu is held.
func (v *view) applyOutput(r *kgo.Record) {
	k := string(r.Key)
	if len(r.Value) == 0 {
		delete(v.windows, k)
		return
	}
	var o Output
	if json.Unmarshal(r.Value, &o) != nil {
		return
	}
	stripSketches(&o)
	v.windows[k] = o
	v.newest = max(v.newest, o.EndNs)
	delete(v.open, k)
}

// applyChangelog keeps an open window's state record; ids and lineages
// are skipped. v.mu is held.
func (v *view) applyChangelog(r *kgo.Record) {
	k := string(r.Key)
	if strings.HasPrefix(k, idPrefix) || strings.HasPrefix(k, lineagePrefix) {
		return
	}
	if len(r.Value) == 0 {
		delete(v.open, k)
		return
	}
	var c changelogValue
	if json.Unmarshal(r.Value, &c) != nil || c.Window == nil {
		return
	}
	if o, ok := v.windows[k]; ok && c.Window.Closed != "" && o.Revision >= c.Window.Revision {
		// Its output record, written in the same transaction, was read
		// first and answers for the closed window.
		delete(v.open, k)
		return
	}
	// A closing state answers until its output record is read (the two
	// topics' records arrive in any order); applyOutput then drops it.
	v.open[k] = &openWindow{w: c.Window}
}

func stripSketches(o *Output) {
	if o.Summary != nil {
		o.Summary.Quantiles = nil
	}
	if o.Sketch != nil {
		o.Sketch.HLL, o.Sketch.CountMin = nil, nil
	}
}

// render returns the open window's answer, decoding its sketches once per
// change. v.mu is held.
func (ow *openWindow) render(groupBy []string) Output {
	if ow.w != nil {
		w := ow.w
		ow.w = nil
		if err := w.decode(0); err != nil {
			// Unreadable sketches: the moments and counts still answer.
			w.q, w.hll, w.topk = nil, nil, nil
		}
		ow.out = w.output(groupBy)
		stripSketches(&ow.out)
	}
	return ow.out
}

// viewLoop keeps v until ctx ends.
func (s *Service) viewLoop(ctx context.Context, v *view) error {
	topics := []string{s.cfg.Topics.Output, s.cfg.Topics.Changelog}
	// The targets are retried, not fatal: right after the topics were
	// created a partition may have no leader yet. Answers stay partial.
	var pending map[topicPart]int64
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		var err error
		if pending, err = s.viewTargets(ctx, topics); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("fleet query view: cannot list the topics' offsets yet", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	v.mu.Lock()
	v.pending = pending
	v.caughtUp.Store(len(pending) == 0)
	v.mu.Unlock()
	// Control records are kept so a partition whose last offset before
	// the target is a transaction marker is seen to reach it.
	cl, err := kgo.NewClient(s.seeds(), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords())
	if err != nil {
		return fmt.Errorf("view client: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		v.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			v.reached(r.Topic, r.Partition, r.Offset)
			switch {
			case r.Attrs.IsControl():
			case r.Topic == s.cfg.Topics.Output:
				v.applyOutput(r)
			default:
				v.applyChangelog(r)
			}
		})
		v.prune(s.cfg.Retain)
		v.mu.Unlock()
	}
}

// viewTargets lists, per partition of topics that holds records, the
// offset the view must read up to before it has caught up: the last
// stable offset now.
func (s *Service) viewTargets(ctx context.Context, topics []string) (map[topicPart]int64, error) {
	pending := map[topicPart]int64{}
	for _, t := range topics {
		n := s.nOut
		if t == s.cfg.Topics.Changelog {
			n = s.nChangelog
		}
		parts := make([]int32, n)
		for i := range parts {
			parts[i] = int32(i)
		}
		starts, err := s.listOffsets(ctx, t, parts, -2)
		if err != nil {
			return nil, err
		}
		ends, err := s.listOffsets(ctx, t, parts, -1)
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			if ends[p] > starts[p] {
				pending[topicPart{t, p}] = ends[p]
			}
		}
	}
	return pending, nil
}

// listOffsets lists topic's partition offsets at ts (-1: the last stable
// offset, read_committed; -2: the log start).
func (s *Service) listOffsets(ctx context.Context, topic string, parts []int32, ts int64) (map[int32]int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.IsolationLevel = 1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, p := range parts {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = p, ts
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, s.admin)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	out := map[int32]int64{}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("list offsets of %s[%d]: %w", t.Topic, p.Partition, err)
			}
			out[p.Partition] = p.Offset
		}
	}
	return out, nil
}

// snapshot is every window the view holds, closed and open, newest first
// (then by key), each rendered without its sketch bytes; keep selects by
// fleet key before an open window's sketches are decoded. partial says
// the view has not caught up yet.
func (s *Service) snapshot(keep func(key string) bool) (out []Output, partial bool) {
	v := s.view
	v.mu.Lock()
	for k, o := range v.windows {
		if keep(k) {
			out = append(out, o)
		}
	}
	for k, ow := range v.open {
		if _, closed := v.windows[k]; closed || !keep(k) {
			continue
		}
		out = append(out, ow.render(s.cfg.GroupBy))
	}
	v.mu.Unlock()
	slices.SortFunc(out, func(a, b Output) int {
		return cmp.Or(cmp.Compare(b.StartNs, a.StartNs), cmp.Compare(a.Key, b.Key))
	})
	return out, !v.caughtUp.Load()
}

// gatewayEnds is the latest window end of each gateway in the view.
func (s *Service) gatewayEnds() map[string]int64 {
	v := s.view
	ends := map[string]int64{}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, o := range v.windows {
		for _, g := range o.Gateways {
			ends[g] = max(ends[g], o.EndNs)
		}
	}
	for _, ow := range v.open {
		if ow.w != nil {
			for g := range ow.w.Gateways {
				ends[g] = max(ends[g], ow.w.EndNs)
			}
			continue
		}
		for _, g := range ow.out.Gateways {
			ends[g] = max(ends[g], ow.out.EndNs)
		}
	}
	return ends
}
