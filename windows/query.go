package windows

import (
	"cmp"
	"slices"
	"strings"

	"github.com/runnel-iot/runnel/sketches"
)

// Series lists the series matching f, sorted by series key: the page
// [offset, offset+limit) (limit ≤ 0: to the end) and the number matching.
// It takes the read lock; the result is owned by the caller.
func (e *Engine) Series(f SeriesFilter, offset, limit int) (items []SeriesInfo, total int) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	all := e.sortedSeries()
	// A prefix narrows the sorted keys to one run, found by binary search.
	if f.Prefix != "" {
		lo, _ := slices.BinarySearchFunc(all, f.Prefix, func(s *series, p string) int { return strings.Compare(s.key, p) })
		hi := lo
		for hi < len(all) && strings.HasPrefix(all[hi].key, f.Prefix) {
			hi++
		}
		all = all[lo:hi]
	}
	offset = max(offset, 0)
	if limit <= 0 {
		limit = len(all)
	}
	for _, s := range all {
		// A series with no reading yet is the reserved overflow series.
		if s.readings == 0 || !f.matches(s) {
			continue
		}
		if total >= offset && total < offset+limit {
			items = append(items, s.info())
		}
		total++
	}
	if items == nil {
		items = []SeriesInfo{}
	}
	return items, total
}

// sortedSeries returns every series sorted by key, from the cache when the
// set of series is unchanged. The caller holds mu (read or write); the
// slice is read-only.
func (e *Engine) sortedSeries() []*series {
	e.sortedMu.Lock()
	defer e.sortedMu.Unlock()
	if e.sortedFor != e.seriesGen+1 {
		keys := e.sorted[:0]
		for s := range e.series.all() {
			keys = append(keys, s)
		}
		clear(keys[len(keys):cap(keys)]) // let evicted series go
		slices.SortFunc(keys, func(a, b *series) int { return strings.Compare(a.key, b.key) })
		e.sorted, e.sortedFor = keys, e.seriesGen+1
	}
	return e.sorted
}

func (s *series) info() SeriesInfo {
	fields := make([]string, len(s.pairs))
	for i, p := range s.pairs {
		fields[i] = p.field
	}
	slices.Sort(fields)
	return SeriesInfo{Series: s.key, Fields: fields, Readings: s.readings, LastEventNs: s.lastEventNs}
}

func (f *SeriesFilter) matches(s *series) bool {
	if f.Prefix != "" && !strings.HasPrefix(s.key, f.Prefix) {
		return false
	}
	if f.Measurement != "" && s.meas != f.Measurement {
		return false
	}
	if len(f.Tags) > 0 {
		pk := parseSeriesKey(s.key)
		for k, v := range f.Tags {
			if got, ok := pk.tag(k); !ok || got != v {
				return false
			}
		}
	}
	return true
}

// specIndex finds a spec by name; "" is -1 (all).
func (e *Engine) specIndex(name string) (int, bool) {
	if name == "" {
		return -1, true
	}
	for i := range e.specs {
		if e.specs[i].name == name {
			return i, true
		}
	}
	return 0, false
}

// Windows reports a series field's windows of the spec named spec ("" for
// all specs): the open ones (Open true; tumbling before sliding, in spec
// order, by start; sliding windows that hold at least one reading) and up
// to last closed ones, newest end first (last ≤ 0: all kept). ok is false
// for an unknown series, field or spec. It takes the read lock; the result
// is owned by the caller.
func (e *Engine) Windows(series, field, spec string, last int) (open []WindowSummary, closed []WindowSummary, ok bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	p, si, ok := e.lookup(series, field, spec)
	if !ok {
		return nil, nil, false
	}
	for i := range e.specs {
		if si >= 0 && i != si {
			continue
		}
		open = e.openWindows(p, i, open)
		sp := &e.specs[i]
		p.specs[i].histNewestFirst(sp.histUnit(), func(r *closedRec) bool {
			closed = append(closed, p.summary(sp, r))
			return true
		})
	}
	slices.SortStableFunc(closed, func(a, b WindowSummary) int { return cmp.Compare(b.EndNs, a.EndNs) })
	if last > 0 && len(closed) > last {
		closed = closed[:last]
	}
	return open, closed, true
}

func (e *Engine) lookup(seriesKey, field, spec string) (*pair, int, bool) {
	s := e.series.get(seriesKey)
	if s == nil {
		return nil, 0, false
	}
	p := s.pair(field)
	if p == nil {
		return nil, 0, false
	}
	si, ok := e.specIndex(spec)
	return p, si, ok
}

func (e *Engine) openWindows(p *pair, i int, out []WindowSummary) []WindowSummary {
	sp := &e.specs[i]
	ps := &p.specs[i]
	if sp.kind == KindTumbling {
		var scratch sketches.Quantile // readers share the engine: no scratch of its own
		for _, w := range ps.wins {
			a := &w.agg
			q := w.sketch(&scratch)
			rec := closedRec{
				start: w.start, count: a.count, sum: a.sum, min: a.min, max: a.max, std: a.stddev(),
				first: a.first, last: a.last,
				p50: q.Quantile(0.5), p90: q.Quantile(0.9), p99: q.Quantile(0.99),
			}
			out = append(out, p.summary(sp, &rec))
		}
		return out
	}
	if len(ps.panes) == 0 {
		return out
	}
	for w := ps.nextWindowStart(sp); w <= ps.panes[len(ps.panes)-1].start; w += sp.slide {
		var a agg
		for k := range ps.panes {
			if st := ps.panes[k].start; st >= w && st < w+sp.size {
				a.merge(&ps.panes[k].agg)
			}
		}
		if a.count == 0 {
			continue
		}
		rec := closedRec{start: w, count: a.count, sum: a.sum, min: a.min, max: a.max, std: a.stddev(), first: a.first, last: a.last}
		out = append(out, p.summary(sp, &rec))
	}
	return out
}

// Quantiles reports the qs quantiles of the latest open window of the
// tumbling spec named spec for a series field. ok is false for an unknown
// series, field or spec, a sliding spec, or when no window is open. It
// takes the read lock.
func (e *Engine) Quantiles(series, field, spec string, qs []float64) (values []float64, ok bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	p, si, ok := e.lookup(series, field, spec)
	if !ok || si < 0 || e.specs[si].kind != KindTumbling {
		return nil, false
	}
	wins := p.specs[si].wins
	if len(wins) == 0 {
		return nil, false
	}
	var scratch sketches.Quantile
	sk := wins[len(wins)-1].sketch(&scratch)
	values = make([]float64, len(qs))
	for i, q := range qs {
		values[i] = sk.Quantile(q)
	}
	return values, true
}

// Samples reports the reservoir sample of a series field, in no particular
// order. It takes the read lock; the slice is a copy owned by the caller.
func (e *Engine) Samples(series, field string) ([]sketches.Sample, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	p, _, ok := e.lookup(series, field, "")
	if !ok {
		return nil, false
	}
	return slices.Clone(p.res.Samples()), true
}

// Groups reports a group key's open windows (by start, Open true) and its
// last ClosedHistory closed ones, newest first; HLL and CountMin are nil in
// both. It takes the read lock; the result is owned by the caller.
func (e *Engine) Groups(name, key string) (open []GroupSummary, closed []GroupSummary) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var gk *groupKey
	for _, g := range e.groups {
		if g.spec.Name == name {
			gk = g.keys[key]
		}
	}
	if gk == nil {
		return nil, nil
	}
	for _, gw := range gk.open {
		gs := gw.summary()
		gs.Open = true
		open = append(open, *gs)
	}
	n := len(gk.hist)
	for k := range n {
		i := (gk.histHead - 1 - k + 2*n) % n
		gs := gk.hist[i]
		gs.TopK = slices.Clone(gs.TopK)
		closed = append(closed, gs)
	}
	return open, closed
}

// Stats reports the engine's counters and gauges. It takes the read lock.
func (e *Engine) Stats() Stats {
	e.mu.RLock()
	defer e.mu.RUnlock()
	st := e.st
	st.Series = e.series.len()
	for s := range e.series.all() {
		st.Pairs += len(s.pairs)
	}
	st.Devices = len(e.devices)
	if e.overflow != nil && e.overflow.readings == 0 {
		// The reserved overflow series (and its device) counts once it
		// holds readings, as the series list shows it.
		st.Series--
		st.Devices--
	}
	st.OverflowSeries = e.overflowHLL.Estimate()
	st.MemoryBytes = e.mem
	st.BudgetBytes = e.budget
	st.AppliedIndex = e.applied
	st.ProcessingNs = e.procNs
	return st
}
